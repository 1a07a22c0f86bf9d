package devcloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"

	"github.com/sysvm/sysvm/devcloud/fleet"
)

// DiagnosticsPrograms are the real Debian tools the simulated system VMs run for diagnostics
// (iputils-ping, traceroute, arping) and iproute2's ip for the read-only lookups diagnostics
// make (the interface towards an address, the addresses, rules and routes of a data archive).
func DiagnosticsPrograms() []string { return []string{"ping", "traceroute", "arping", "ip"} }

// DiagnosticsCommands are fleet commands (fleet.Options.Commands) that make every simulated
// system VM run the REAL ping, traceroute and arping binaries of this machine with the argv the
// platform sent, executed directly (never through a shell). With netns set, they run inside
// that network namespace (`ip netns exec <netns> <program> <args>...`, also without a shell),
// so a test can give the simulated VMs a network of its own. ip is limited to read-only
// queries (address, rule and route show/list/get).
func DiagnosticsCommands(netns string) map[string]fleet.CommandFunc {
	out := map[string]fleet.CommandFunc{}
	for _, prog := range DiagnosticsPrograms() {
		out[prog] = realCommand(prog, netns)
	}
	return out
}

func realCommand(prog, netns string) fleet.CommandFunc {
	return func(ctx context.Context, _ string, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
		args := argv[1:]
		if prog == "ip" && !readOnlyIP(args) {
			fmt.Fprintf(stderr, "ip: only address, rule and route show/list/get are allowed on a simulated system VM\n")
			return 1
		}
		path, err := exec.LookPath(prog)
		if err != nil {
			fmt.Fprintf(stderr, "sh: 1: %s: not found (install iputils-ping, traceroute, arping and iproute2)\n", prog)
			return 127
		}
		var cmd *exec.Cmd
		if netns != "" {
			cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netns, path}, args...)...)
		} else {
			cmd = exec.CommandContext(ctx, path, args...)
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
		err = cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &exit):
			if code := exit.ExitCode(); code >= 0 {
				return code
			}
			return 137 // ended by a signal (the session's timeout)
		}
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 126
	}
}

// readOnlyIP reports whether an ip argv (after "ip") only reads: [-4|-6|-o|-d|-s]... then
// address/addr/a, rule/ru or route/r with show, list, get or nothing.
func readOnlyIP(args []string) bool {
	i := 0
	for i < len(args) && slices.Contains([]string{"-4", "-6", "-o", "-d", "-s", "-oneline", "-details"}, args[i]) {
		i++
	}
	if i == len(args) {
		return false
	}
	if !slices.Contains([]string{"address", "addr", "a", "rule", "ru", "route", "r", "link", "l", "neigh", "n"}, args[i]) {
		return false
	}
	if i+1 == len(args) {
		return true
	}
	return slices.Contains([]string{"show", "list", "get", "ls", "lst"}, args[i+1])
}
