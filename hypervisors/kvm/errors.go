package kvm

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	libvirt "github.com/digitalocean/go-libvirt"

	"github.com/sysvm/sysvm/hypervisors"
)

// ErrorKind maps a libvirt error number to the driver contract's error kind, or nil when the number
// has no specific kind (the error is then reported as is and counts as retryable).
func ErrorKind(code libvirt.ErrorNumber) error {
	switch code {
	case libvirt.ErrNoDomain, libvirt.ErrNoStoragePool, libvirt.ErrNoStorageVol,
		libvirt.ErrNoNetwork, libvirt.ErrNoNodeDevice, libvirt.ErrNoSecret:
		return hypervisors.ErrNotFound
	case libvirt.ErrOperationInvalid:
		return hypervisors.ErrBadState
	case libvirt.ErrOperationDenied, libvirt.ErrAuthFailed, libvirt.ErrAuthCancelled,
		libvirt.ErrAuthUnavailable, libvirt.ErrAccessDenied:
		return hypervisors.ErrAuth
	case libvirt.ErrDomExist, libvirt.ErrStorageVolExist, libvirt.ErrNetworkExist:
		return hypervisors.ErrAlreadyExists
	case libvirt.ErrNoSupport, libvirt.ErrOperationUnsupported, libvirt.ErrArgumentUnsupported:
		return hypervisors.ErrUnsupported
	case libvirt.ErrInvalidArg, libvirt.ErrXMLError, libvirt.ErrXMLDetail,
		libvirt.ErrConfigUnsupported, libvirt.ErrInvalidMac:
		return hypervisors.ErrInvalid
	case libvirt.ErrNoConnect, libvirt.ErrRPC, libvirt.ErrOperationTimeout, libvirt.ErrAgentUnresponsive:
		return hypervisors.ErrUnreachable
	}
	return nil
}

// libvirtCode returns the libvirt error number inside err, if any.
func libvirtCode(err error) (libvirt.ErrorNumber, bool) {
	var le libvirt.Error
	if errors.As(err, &le) {
		return libvirt.ErrorNumber(le.Code), true
	}
	var lp *libvirt.Error
	if errors.As(err, &lp) && lp != nil {
		return libvirt.ErrorNumber(lp.Code), true
	}
	return 0, false
}

// isCode reports whether err carries libvirt error number code.
func isCode(err error, code libvirt.ErrorNumber) bool {
	c, ok := libvirtCode(err)
	return ok && c == code
}

// classify turns any error of a libvirt call into a *hypervisors.Error with the right kind. An
// error that already is a *hypervisors.Error is returned unchanged.
func classify(op, object string, err error) error {
	if err == nil {
		return nil
	}
	var he *hypervisors.Error
	if errors.As(err, &he) {
		return err
	}
	if code, ok := libvirtCode(err); ok {
		// Some drivers (the test driver; domain name clashes everywhere) report an existing
		// object as a generic failure; libvirt's message is the only distinction.
		if code == libvirt.ErrOperationFailed && strings.Contains(err.Error(), "already exists") {
			return hypervisors.Wrap(hypervisors.ErrAlreadyExists, op, object, err)
		}
		if k := ErrorKind(code); k != nil {
			return hypervisors.Wrap(k, op, object, err)
		}
		return &hypervisors.Error{Op: op, Object: object, Kind: errUnknown, Err: err}
	}
	if errors.Is(err, libvirt.ErrUnsupported) {
		return hypervisors.Wrap(hypervisors.ErrUnsupported, op, object, err)
	}
	if transportError(err) {
		return hypervisors.Wrap(hypervisors.ErrUnreachable, op, object, err)
	}
	return &hypervisors.Error{Op: op, Object: object, Kind: errUnknown, Err: err}
}

// errUnknown is the kind of errors that match no sentinel: hypervisors.KindName gives "" for
// them and hypervisors.Retryable true.
var errUnknown = errors.New("libvirt error")

// transportError reports whether err comes from the socket to libvirtd rather than from libvirt.
func transportError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &oe), errors.As(err, &ne):
		return true
	case errors.Is(err, libvirt.ErrInterrupted), errors.Is(err, io.ErrClosedPipe),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EINVAL):
		return true
	}
	return false
}
