// Command sysvm-agent runs inside a virtual router (it is installed in the system VM template)
// and is invoked by the sysvm platform over SSH on port 3922:
//
//	sysvm-agent [--root DIR] push-config          < health_checks_data.json
//	sysvm-agent [--root DIR] run basic|advanced
//	sysvm-agent [--root DIR] results basic|advanced
//	sysvm-agent [--root DIR] version
//
// All the logic is in package agent; this is the wiring to the real Linux system.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sysvm/sysvm/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := agent.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, agent.NewLinuxSystem(), "/")
	stop()
	os.Exit(code)
}
