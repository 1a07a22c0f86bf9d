// Package diagnostics builds the network diagnostics commands (CloudStack's runDiagnostics)
// that sysvm runs inside a system VM: ping, traceroute and arping. It validates what an
// operator types — the target address and the extra parameters — and turns it into an
// argument vector that is executed over SSH without any shell, so nothing typed can become
// another command. It is free of I/O; activities.RunDiagnostics runs the vector.
package diagnostics

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Type is a diagnostics command.
type Type string

// The diagnostics types of runDiagnostics.
const (
	Ping       Type = "ping"
	Traceroute Type = "traceroute"
	Arping     Type = "arping"
)

// Types lists the diagnostics types, in the order the API documents them.
func Types() []Type { return []Type{Ping, Traceroute, Arping} }

// DefaultTimeout bounds one diagnostics command inside the VM (coreutils' timeout ends it and
// the partial output is kept, with exit code 124).
const DefaultTimeout = 30 * time.Second

// MaxTimeout is the longest time limit a request may ask for; it stays under the SSH
// executor's own run limit (60 s), so the VM's timeout always ends the command first.
const MaxTimeout = 50 * time.Second

// MaxParamsLength bounds the extra parameters.
const MaxParamsLength = 256

// TimedOutExitCode is the exit code coreutils' timeout gives a command it had to end.
const TimedOutExitCode = 124

// Error is a refused request, naming the field at fault.
type Error struct {
	// Field is the request field ("type", "ipaddress", "params", "timeout").
	Field string
	// Message says what is wrong, for an operator.
	Message string
}

func (e *Error) Error() string { return e.Field + ": " + e.Message }

func fieldError(field, format string, args ...any) *Error {
	return &Error{Field: field, Message: fmt.Sprintf(format, args...)}
}

// ParseType validates a diagnostics type.
func ParseType(s string) (Type, error) {
	switch t := Type(strings.ToLower(strings.TrimSpace(s))); t {
	case Ping, Traceroute, Arping:
		return t, nil
	}
	if strings.TrimSpace(s) == "" {
		return "", fieldError("type", "type is required (ping, traceroute or arping)")
	}
	return "", fieldError("type", "unknown diagnostics type %q (want ping, traceroute or arping)", s)
}

// ParseAddress validates the target: an IPv4 or IPv6 address, nothing else (no host name,
// no option, no zone with spaces). CloudStack never checks it and pastes it into a command
// line; sysvm passes it as one argument after checking it.
func ParseAddress(s string) (netip.Addr, error) {
	if strings.TrimSpace(s) == "" {
		return netip.Addr{}, fieldError("ipaddress", "ipaddress is required (an IPv4 or IPv6 address)")
	}
	addr, err := netip.ParseAddr(s)
	if err != nil || addr.Zone() != "" {
		return netip.Addr{}, fieldError("ipaddress", "%q is not an IPv4 or IPv6 address", s)
	}
	return addr.Unmap(), nil
}

// ValidateParams checks the extra parameters as an operator typed them: only letters, digits,
// '-', '.' and spaces are allowed. The first other character is refused, naming it and its
// position (1-based, in characters).
func ValidateParams(params string) error {
	if n := len([]rune(params)); n > MaxParamsLength {
		return fieldError("params", "params is %d characters long, at most %d are allowed", n, MaxParamsLength)
	}
	pos := 0
	for _, r := range params {
		pos++
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == ' ':
			continue
		}
		return fieldError("params", "character %q at position %d is not allowed (only letters, digits, '-', '.' and spaces)", r, pos)
	}
	return nil
}

// Request is one validated diagnostics request.
type Request struct {
	Type    Type
	Address netip.Addr
	// Params are the operator's extra parameters, split on spaces; nil uses the defaults.
	Params []string
	// Timeout is the time limit inside the VM (DefaultTimeout when 0).
	Timeout time.Duration
}

// NewRequest validates the fields of a request. timeoutSeconds 0 is the default.
func NewRequest(typ, ipaddress, params string, timeoutSeconds int) (Request, error) {
	t, err := ParseType(typ)
	if err != nil {
		return Request{}, err
	}
	addr, err := ParseAddress(ipaddress)
	if err != nil {
		return Request{}, err
	}
	if err := ValidateParams(params); err != nil {
		return Request{}, err
	}
	if timeoutSeconds < 0 || time.Duration(timeoutSeconds)*time.Second > MaxTimeout {
		return Request{}, fieldError("timeout", "timeout %d s is out of range (1 to %d s, 0 for the default %d s)",
			timeoutSeconds, int(MaxTimeout/time.Second), int(DefaultTimeout/time.Second))
	}
	return Request{Type: t, Address: addr, Params: strings.Fields(params), Timeout: time.Duration(timeoutSeconds) * time.Second}, nil
}

// TimeLimit is the request's time limit.
func (r Request) TimeLimit() time.Duration {
	if r.Timeout <= 0 {
		return DefaultTimeout
	}
	return r.Timeout
}

// NeedsInterface reports whether the command needs the VM's interface towards the address
// (arping without an -I of its own).
func (r Request) NeedsInterface() bool {
	if r.Type != Arping {
		return false
	}
	for _, p := range r.Params {
		if p == "-I" || strings.HasPrefix(p, "-I") {
			return false
		}
	}
	return true
}

// Defaults are the parameters a VR uses when the operator gives none, per type.
func Defaults(t Type) []string {
	switch t {
	case Ping:
		return []string{"-c", "4"}
	case Traceroute:
		return []string{"-m", "20"}
	case Arping:
		return []string{"-c", "4"}
	}
	return nil
}

// Program is the program a type runs (ping, traceroute, arping; ping -6 on IPv6 is iputils').
func (r Request) Program() string { return string(r.Type) }

// Argv is the argument vector run inside the VM: coreutils' timeout with the time limit, the
// program, the operator's parameters (or the defaults), the interface for arping
// (`-I <iface>`, iface found from the VM's route to the address) and the address last. Every
// element is one argument; none is ever interpreted by a shell.
func (r Request) Argv(iface string) []string {
	limit := int(r.TimeLimit() / time.Second)
	if limit < 1 {
		limit = 1
	}
	argv := []string{"timeout", fmt.Sprint(limit), r.Program()}
	params := r.Params
	if len(params) == 0 {
		params = Defaults(r.Type)
	}
	if r.Type == Ping && r.Address.Is6() && !containsAny(params, "-6", "-4") {
		argv = append(argv, "-6")
	}
	if r.Type == Traceroute && r.Address.Is6() && !containsAny(params, "-6", "-4") {
		argv = append(argv, "-6")
	}
	argv = append(argv, params...)
	if r.NeedsInterface() && iface != "" {
		argv = append(argv, "-I", iface)
	}
	return append(argv, r.Address.String())
}

// RouteArgv is the argument vector that asks the VM which interface reaches the address.
func (r Request) RouteArgv() []string {
	argv := []string{"ip"}
	if r.Address.Is6() {
		argv = append(argv, "-6")
	}
	return append(argv, "-o", "route", "get", r.Address.String())
}

// InterfaceFromRoute reads the device of `ip -o route get` output ("... dev eth0 ...").
func InterfaceFromRoute(out string) (string, error) {
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			return f[i+1], nil
		}
	}
	return "", fmt.Errorf("no interface in route %q", strings.TrimSpace(out))
}

func containsAny(list []string, want ...string) bool {
	for _, l := range list {
		for _, w := range want {
			if l == w {
				return true
			}
		}
	}
	return false
}

// Result is what one diagnostics command produced.
type Result struct {
	// ID is the stored diagnostics result's ID.
	ID        string `json:"id"`
	VMID      string `json:"vmId"`
	Name      string `json:"name"`
	Type      Type   `json:"type"`
	IPAddress string `json:"ipAddress"`
	// Command is the argument vector that ran, joined by spaces (for reading only).
	Command  string `json:"command"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exitcode"`
	// TimedOut: the time limit ended the command (exit code 124).
	TimedOut   bool  `json:"timedOut,omitempty"`
	DurationMs int64 `json:"durationMs"`
	// Truncated: the output was longer than the executor keeps.
	Truncated bool `json:"truncated,omitempty"`
}
