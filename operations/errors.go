package operations

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.temporal.io/api/serviceerror"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kinds of failure the engine reports; test them with errors.Is. The API maps them to
// ErrAlreadyRunning 409, ErrNotRunning 409, ErrStarting 409, ErrUnavailable 503 and
// ErrNotFound 404.
var (
	// ErrAlreadyRunning: another run holds the target's workflow ID (Error.Operation is that
	// operation; its ID is empty when the run was not started through the engine).
	ErrAlreadyRunning = errors.New("another operation runs on the target")
	// ErrNotRunning: the operation has ended (Error.Operation shows how).
	ErrNotRunning = errors.New("operation is not running")
	// ErrStarting: the operation's start is not confirmed yet; retry in a moment.
	ErrStarting = errors.New("operation is still starting")
	// ErrUnavailable: Temporal is not configured or does not answer. When the start of a
	// recorded operation is in doubt, Error.Operation is that operation, kept running.
	ErrUnavailable = errors.New("temporal is unavailable")
	// ErrNotFound: no operation has the ID.
	ErrNotFound = errors.New("no such operation")
)

// Error is a failure of the engine: its kind (one of the Err values), a message for an
// operator, the operation concerned when there is one, and the cause.
type Error struct {
	Kind    error
	Message string
	// Operation is the operation the error is about (see the kinds), or nil.
	Operation *Operation
	// Err is the underlying cause, when there is one.
	Err error
}

// Error is the message.
func (e *Error) Error() string { return e.Message }

// Unwrap gives the kind and the cause to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func newError(kind error, op *Operation, cause error, format string, args ...any) *Error {
	return &Error{Kind: kind, Operation: op, Err: cause, Message: fmt.Sprintf(format, args...)}
}

// neverDialed is in gRPC's message for a call failed before sending because the server could
// not be dialed.
const neverDialed = "transport: Error while dialing"

// ambiguous reports whether a failed start may still have been accepted by the server: the
// client gave up waiting, or the connection failed with the request possibly sent. A request
// that failed because no connection could be dialed never left the client (gRPC fails it
// before sending anything), so it is a definite refusal.
func ambiguous(err error) bool {
	if strings.Contains(err.Error(), neverDialed) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var (
		unavailable *serviceerror.Unavailable
		deadline    *serviceerror.DeadlineExceeded
		canceled    *serviceerror.Canceled
		internal    *serviceerror.Internal
	)
	if errors.As(err, &unavailable) || errors.As(err, &deadline) || errors.As(err, &canceled) || errors.As(err, &internal) {
		return true
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Internal, codes.Unknown, codes.Aborted:
			return true
		}
	}
	return false
}
