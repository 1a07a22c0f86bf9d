package xen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/sysvm/sysvm/hypervisors"
)

// errXAPI is the kind of XAPI failures that say nothing final about the request
// (OTHER_OPERATION_IN_PROGRESS, HOST_NOT_ENOUGH_FREE_MEMORY, SESSION_INVALID after a
// re-login, codes this driver does not know): not one of the contract's sentinels, so
// hypervisors.Retryable reports them retryable.
var errXAPI = errors.New("xapi failure")

// codeKinds maps XAPI error codes to the contract's kinds.
var codeKinds = map[string]error{
	"SESSION_AUTHENTICATION_FAILED":      hypervisors.ErrAuth,
	"HANDLE_INVALID":                     hypervisors.ErrNotFound,
	"UUID_INVALID":                       hypervisors.ErrNotFound,
	"VM_BAD_POWER_STATE":                 hypervisors.ErrBadState,
	"VM_IS_TEMPLATE":                     hypervisors.ErrBadState,
	"OPERATION_NOT_ALLOWED":              hypervisors.ErrBadState,
	"VDI_IN_USE":                         hypervisors.ErrBadState,
	"DEVICE_ALREADY_ATTACHED":            hypervisors.ErrBadState,
	"HOST_DISABLED":                      hypervisors.ErrBadState,
	"PROVISION_ONLY_ALLOWED_ON_TEMPLATE": hypervisors.ErrBadState,
	"DEVICE_ALREADY_EXISTS":              hypervisors.ErrAlreadyExists,
	"MAP_DUPLICATE_KEY":                  hypervisors.ErrAlreadyExists,
	"MESSAGE_METHOD_UNKNOWN":             hypervisors.ErrUnsupported,
	"MESSAGE_PARAMETER_COUNT_MISMATCH":   hypervisors.ErrInvalid,
	"FIELD_TYPE_ERROR":                   hypervisors.ErrInvalid,
	"VALUE_NOT_SUPPORTED":                hypervisors.ErrInvalid,
	"MEMORY_CONSTRAINT_VIOLATION":        hypervisors.ErrInvalid,
	"MAC_INVALID":                        hypervisors.ErrInvalid,
	"INVALID_CIDR_ADDRESS_SPECIFIED":     hypervisors.ErrInvalid,
	"INVALID_IP_ADDRESS_SPECIFIED":       hypervisors.ErrInvalid,
	"VDI_TOO_SMALL":                      hypervisors.ErrInvalid,
	"VDI_IO_ERROR":                       hypervisors.ErrInvalid,
	"HOST_OFFLINE":                       hypervisors.ErrUnreachable,
	"HOST_STILL_BOOTING":                 hypervisors.ErrUnreachable,
	"HOST_IS_SLAVE":                      hypervisors.ErrUnreachable,
	"TOO_BUSY":                           hypervisors.ErrUnreachable,
}

// wrap turns any error of a XAPI exchange into the contract's *hypervisors.Error.
func wrap(op, object string, err error) error {
	if err == nil {
		return nil
	}
	var he *hypervisors.Error
	if errors.As(err, &he) {
		return err
	}
	return hypervisors.Wrap(kindOf(err), op, object, err)
}

func kindOf(err error) error {
	var f *Failure
	if errors.As(err, &f) {
		if k, ok := codeKinds[f.Code]; ok {
			return k
		}
		return errXAPI
	}
	var te *transportError
	if errors.As(err, &te) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return hypervisors.ErrUnreachable
	}
	var he *httpError
	if errors.As(err, &he) {
		switch {
		case he.status == http.StatusUnauthorized || he.status == http.StatusForbidden:
			return hypervisors.ErrAuth
		case he.status == http.StatusNotFound:
			return hypervisors.ErrNotFound
		case he.status >= 400 && he.status < 500:
			return hypervisors.ErrInvalid
		}
		return hypervisors.ErrUnreachable
	}
	return errXAPI
}

// Failure is an error answer from XAPI: its ErrorDescription, code first, then parameters
// (on JSON-RPC v2: error.message and error.data).
type Failure struct {
	Method string
	Code   string
	Params []string
}

// Error renders "VM.start: VM_BAD_POWER_STATE(OpaqueRef:..., halted, running)".
func (f *Failure) Error() string {
	return fmt.Sprintf("%s: %s(%s)", f.Method, f.Code, strings.Join(f.Params, ", "))
}

// transportError is a call that got no XAPI answer: connection refused or reset, TLS
// failure, an HTTP error status, an unreadable body.
type transportError struct {
	method string
	err    error
}

// isCode reports whether err is a XAPI failure with this code.
func isCode(err error, code string) bool {
	var f *Failure
	return errors.As(err, &f) && f.Code == code
}

func (e *transportError) Error() string { return fmt.Sprintf("%s: %v", e.method, e.err) }

func (e *transportError) Unwrap() error { return e.err }

// redacted replaces a secret in error text.
const redacted = "[redacted]"

// scrub returns err with every secret (a session ID, the password) removed from its text, and
// any URL in a url.Error cut to scheme, host and path (no user info, no query), keeping what
// kindOf and isCode look at: a Failure stays a Failure with its code, a transportError a
// transportError, an httpError an httpError with its status.
func scrub(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	clean := func(s string) string {
		for _, sec := range secrets {
			if sec != "" {
				s = strings.ReplaceAll(s, sec, redacted)
			}
		}
		return s
	}
	var (
		f  *Failure
		te *transportError
		he *httpError
	)
	switch {
	case errors.As(err, &f):
		out := &Failure{Method: f.Method, Code: f.Code, Params: make([]string, len(f.Params))}
		for i, p := range f.Params {
			out.Params[i] = clean(p)
		}
		return out
	case errors.As(err, &te):
		inner := te.err
		var ue *url.Error
		if errors.As(inner, &ue) {
			inner = &url.Error{Op: ue.Op, URL: redactURL(ue.URL), Err: scrub(ue.Err, secrets...)}
		}
		if msg := inner.Error(); clean(msg) != msg {
			inner = errors.New(clean(msg))
		}
		return &transportError{method: te.method, err: inner}
	case errors.As(err, &he):
		return &httpError{path: he.path, status: he.status, body: clean(he.body)}
	}
	if msg := err.Error(); clean(msg) != msg {
		return errors.New(clean(msg))
	}
	return err
}

// redactURL is a URL without user info and query, for error text and logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return redacted
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment = nil, "", false, ""
	return u.String()
}
