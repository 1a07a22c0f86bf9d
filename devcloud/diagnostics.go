package devcloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/sysvm/sysvm/agent"
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
//
// With files set, cat and iptables-save read the simulated VM's own sandbox root (its
// /etc/hosts, haproxy.cfg, etc/iptables/rules.v4, ...), as getDiagnosticsData collects them;
// attach the fleet to files once it runs.
func DiagnosticsCommands(netns string, files *SandboxFiles) map[string]fleet.CommandFunc {
	out := map[string]fleet.CommandFunc{}
	for _, prog := range DiagnosticsPrograms() {
		out[prog] = realCommand(prog, netns)
	}
	if files != nil {
		out["cat"] = files.cat
		out["iptables-save"] = files.iptablesSave
	}
	return out
}

// SandboxFiles gives the diagnostics commands the sandbox roots of the fleet's simulated
// system VMs, once the fleet is attached (the commands are built before the fleet starts).
type SandboxFiles struct {
	fleet atomic.Pointer[fleet.Fleet]
}

// Attach names the fleet whose sandboxes cat and iptables-save read.
func (s *SandboxFiles) Attach(f *fleet.Fleet) { s.fleet.Store(f) }

func (s *SandboxFiles) root(id string) (string, error) {
	f := s.fleet.Load()
	if f == nil {
		return "", errors.New("the fleet is not attached")
	}
	return f.Root(id)
}

// cat is coreutils' cat of absolute paths inside the VM's sandbox root (never outside it).
func (s *SandboxFiles) cat(_ context.Context, id string, argv []string, _ io.Reader, stdout, stderr io.Writer) int {
	root, err := s.root(id)
	if err != nil {
		fmt.Fprintf(stderr, "cat: %v\n", err)
		return 1
	}
	code := 0
	for _, p := range argv[1:] {
		if p == "--" {
			continue
		}
		b, err := readInRoot(root, p)
		if err != nil {
			fmt.Fprintf(stderr, "cat: %s: No such file or directory\n", p)
			code = 1
			continue
		}
		_, _ = stdout.Write(b)
	}
	return code
}

// iptablesSave prints the sandbox's rules file, as the agent's sandbox reads it.
func (s *SandboxFiles) iptablesSave(_ context.Context, id string, _ []string, _ io.Reader, stdout, stderr io.Writer) int {
	root, err := s.root(id)
	if err != nil {
		fmt.Fprintf(stderr, "iptables-save: %v\n", err)
		return 1
	}
	b, err := readInRoot(root, "/"+agent.IptablesSaveFile)
	if err != nil {
		fmt.Fprintf(stderr, "iptables-save: %v\n", err)
		return 1
	}
	_, _ = stdout.Write(b)
	return 0
}

// readInRoot reads an absolute path of the VM inside its sandbox root; a path that would
// leave the root (.., a symbolic link out of it) is refused.
func readInRoot(root, p string) ([]byte, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("%s: not an absolute path", p)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	f, err := r.Open(strings.TrimPrefix(filepath.Clean(p), "/"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 16<<20))
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
