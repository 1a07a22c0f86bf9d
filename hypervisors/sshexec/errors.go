package sshexec

import (
	"errors"
	"fmt"
)

// Hop names which leg of the access path failed.
type Hop string

// The hops of an access path. On KVM/XenServer the host hop is the SSH connection to the
// hypervisor host and the VM hop the SSH connection to the VM's link-local address through it;
// on VMware there is only the VM hop, straight to the private IP.
const (
	HopHost Hop = "host"
	HopVM   Hop = "vm"
)

// The stages of a Run, as reported in Error.Stage.
const (
	StageValidate  = "validate"  // the target or argv is wrong
	StageDial      = "dial"      // TCP connect (or, for a VM behind a host, the forward through it)
	StageHandshake = "handshake" // SSH key exchange, host key check and authentication
	StageSession   = "session"   // opening the exec session
	StageRun       = "run"       // running the command
)

var (
	// ErrConnectTimeout is wrapped when a hop did not connect within Config.ConnectTimeout.
	ErrConnectTimeout = errors.New("connect timeout")
	// ErrRunTimeout is wrapped when a command did not finish within Config.RunTimeout.
	ErrRunTimeout = errors.New("command timeout")
	// ErrClosed is returned by Run after Close.
	ErrClosed = errors.New("executor closed")
)

// Error is a failed Run: which VM, which hop and stage, the address of that hop, and a kind
// from the hypervisors package (hypervisors.ErrUnreachable, ErrAuth, ErrInvalid) when one
// applies, so hypervisors.Retryable and hypervisors.KindName work on it.
type Error struct {
	// VM is the target's VMName.
	VM string
	// Hop is the leg that failed (HopHost or HopVM); empty for validation errors.
	Hop Hop
	// Stage is one of the Stage* constants.
	Stage string
	// Address is the failing hop's address ("10.0.0.5:22", "169.254.3.4:3922 via 10.0.0.5:22").
	Address string
	// Kind is a hypervisors sentinel (ErrUnreachable, ErrAuth, ErrInvalid) or nil.
	Kind error
	// Err is the cause.
	Err error
}

// Error renders e.g. "ssh r-12-VM: vm hop 169.254.3.4:3922 via 10.0.0.5:22: handshake:
// authentication failed: ssh: unable to authenticate ...".
func (e *Error) Error() string {
	s := "ssh"
	if e.VM != "" {
		s += " " + e.VM
	}
	if e.Hop != "" {
		s += fmt.Sprintf(": %s hop", e.Hop)
		if e.Address != "" {
			s += " " + e.Address
		}
	}
	s += ": " + e.Stage
	if e.Kind != nil {
		s += ": " + e.Kind.Error()
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap exposes the kind and the cause to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	var out []error
	if e.Kind != nil {
		out = append(out, e.Kind)
	}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}
