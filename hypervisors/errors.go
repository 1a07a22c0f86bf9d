package hypervisors

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// Sentinel error kinds. Drivers return *Error values wrapping one of these.
var (
	// ErrNotFound: the VM, host, pool or template does not exist. Final.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: an object of that name already exists. Final (often means "done").
	ErrAlreadyExists = errors.New("already exists")
	// ErrBadState: the object is in a state that does not allow the operation. Final.
	ErrBadState = errors.New("bad state")
	// ErrUnreachable: the endpoint did not answer. Retryable.
	ErrUnreachable = errors.New("unreachable")
	// ErrAuth: the credentials were refused. Final.
	ErrAuth = errors.New("authentication failed")
	// ErrInvalid: the request itself is wrong (bad spec, checksum mismatch). Final.
	ErrInvalid = errors.New("invalid request")
	// ErrUnsupported: this driver cannot do that. Final.
	ErrUnsupported = errors.New("unsupported")
)

// Error is a driver error with its operation, object and kind.
type Error struct {
	Op     string // e.g. "start"
	Object string // e.g. the VM name
	Kind   error  // one of the sentinels above
	Err    error  // the underlying cause, may be nil
}

// Error renders "start r-1-VM: bad state: VM is running".
func (e *Error) Error() string {
	s := e.Op
	if e.Object != "" {
		s += " " + e.Object
	}
	s += ": " + e.Kind.Error()
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap exposes both the kind and the cause to errors.Is / errors.As.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Errorf builds an *Error of a kind with a formatted cause.
func Errorf(kind error, op, object, format string, args ...any) error {
	return &Error{Op: op, Object: object, Kind: kind, Err: fmt.Errorf(format, args...)}
}

// Wrap builds an *Error of a kind around a cause.
func Wrap(kind error, op, object string, err error) error {
	return &Error{Op: op, Object: object, Kind: kind, Err: err}
}

// Retryable reports whether an error may succeed when tried again (only ErrUnreachable and
// errors of unknown kind, such as transport hiccups, are).
func Retryable(err error) bool {
	for _, k := range []error{ErrNotFound, ErrAlreadyExists, ErrBadState, ErrAuth, ErrInvalid, ErrUnsupported} {
		if errors.Is(err, k) {
			return false
		}
	}
	return true
}

// KindName names an error's kind for API answers and non-retryable error types
// ("NotFound", "BadState", ...), or "" when it has none.
func KindName(err error) string {
	switch {
	case errors.Is(err, ErrNotFound):
		return "NotFound"
	case errors.Is(err, ErrAlreadyExists):
		return "AlreadyExists"
	case errors.Is(err, ErrBadState):
		return "BadState"
	case errors.Is(err, ErrUnreachable):
		return "Unreachable"
	case errors.Is(err, ErrAuth):
		return "Auth"
	case errors.Is(err, ErrInvalid):
		return "Invalid"
	case errors.Is(err, ErrUnsupported):
		return "Unsupported"
	}
	return ""
}

// IsCertificateError reports whether err says a TLS server certificate did not verify
// (unknown authority, wrong host name, expired or otherwise invalid). Drivers report it as
// ErrInvalid: the URL or the trust settings are wrong, and retrying will not help.
func IsCertificateError(err error) bool {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
	)
	return errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify)
}
