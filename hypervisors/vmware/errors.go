package vmware

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sysvm/sysvm/hypervisors"
)

// mapErr turns a govmomi error (SOAP fault, task fault, transport error) into a
// *hypervisors.Error of the matching kind. Errors of no known kind (transient vCenter faults
// such as TaskInProgress, HTTP 5xx) are wrapped without a kind, which callers retry.
func mapErr(op, object string, err error) error {
	if err == nil {
		return nil
	}
	var he *hypervisors.Error
	if errors.As(err, &he) {
		return err // already classified further down
	}
	if kind := kindOf(err); kind != nil {
		return hypervisors.Wrap(kind, op, object, err)
	}
	if object != "" {
		return fmt.Errorf("%s %s: %w", op, object, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// kindOf classifies an error; nil means "no known kind".
func kindOf(err error) error {
	if k := faultKind(err); k != nil {
		return k
	}
	return transportKind(err)
}

// faultKind walks the vSphere fault tree of err (the fault itself first, then its causes)
// and returns the kind of the first fault it knows.
func faultKind(err error) (kind error) {
	fault.In(err, func(f types.BaseMethodFault, _ string, _ []types.LocalizableMessage) bool {
		kind = faultTypeKind(f)
		return kind != nil
	})
	return kind
}

func faultTypeKind(f types.BaseMethodFault) error {
	switch f.(type) {
	case *types.InvalidLogin, *types.NoPermission, *types.NotAuthenticated, *types.NoClientCertificate:
		return hypervisors.ErrAuth
	case *types.ManagedObjectNotFound, *types.NotFound, *types.FileNotFound,
		*types.InvalidDatastorePath:
		return hypervisors.ErrNotFound
	case *types.InvalidPowerState, *types.InvalidState, *types.InvalidHostState,
		*types.ToolsUnavailable,
		*types.DisallowedOperationOnFailoverHost, *types.VmConfigIncompatibleForFaultTolerance:
		return hypervisors.ErrBadState
	case *types.DuplicateName, *types.AlreadyExists, *types.FileAlreadyExists:
		return hypervisors.ErrAlreadyExists
	case *types.HostCommunication, *types.HostNotConnected, *types.HostNotReachable,
		*types.NoHost:
		return hypervisors.ErrUnreachable
	case *types.NotSupported, *types.NotImplemented, *types.MethodNotFound:
		return hypervisors.ErrUnsupported
	case *types.InvalidArgument, *types.InvalidRequest, *types.InvalidName,
		*types.InvalidDeviceSpec, *types.InvalidVmConfig, *types.InvalidType,
		*types.InvalidDatastore, *types.OvfFault, *types.InvalidFolder:
		return hypervisors.ErrInvalid
	}
	return nil
}

// transportKind classifies errors below SOAP: a peer that cannot be reached or does not
// answer in time is ErrUnreachable; a TLS certificate we do not trust is ErrInvalid (the
// connection settings are wrong; retrying will not help).
func transportKind(err error) error {
	switch {
	case hypervisors.IsCertificateError(err):
		return hypervisors.ErrInvalid
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return hypervisors.ErrUnreachable
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return hypervisors.ErrUnreachable
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return hypervisors.ErrUnreachable
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return hypervisors.ErrUnreachable
	}
	return nil
}

// isNotAuthenticated reports a fault saying our session is not (or no longer) valid.
func isNotAuthenticated(err error) bool {
	return fault.Is(err, &types.NotAuthenticated{})
}
