package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/labstack/echo/v4"
)

// Error codes of the JSON error envelope.
const (
	CodeBadRequest       = "bad_request"
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeConflict         = "conflict"
	CodeTooLarge         = "request_too_large"
	CodeUnavailable      = "unavailable"
	CodeInternal         = "internal"
)

// Error is an API error, rendered as {"error": {"code", "message", "field"}} with any Extra
// members beside "error" (a 409 carries the conflicting "operation").
type Error struct {
	Status  int
	Code    string
	Message string
	// Field names the parameter or body field the error is about, when there is one.
	Field string
	// Extra members of the response object, next to "error".
	Extra map[string]any
	// Err is the underlying cause, logged but never sent to the client for 5xx errors.
	Err error
}

// Error describes the error for logs (the cause included).
func (e *Error) Error() string {
	msg := e.Code + ": " + e.Message
	if e.Field != "" {
		msg += " (field " + e.Field + ")"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// errorBody is the "error" member of every error response.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// BadRequest is a 400 about one parameter or body field (field may be empty).
func BadRequest(field, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeBadRequest, Field: field, Message: fmt.Sprintf(format, args...)}
}

// NotFound is a 404 for an unknown resource.
func NotFound(format string, args ...any) *Error {
	return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf(format, args...)}
}

// Conflict is a 409: the request is valid but the resource's state refuses it.
func Conflict(format string, args ...any) *Error {
	return &Error{Status: http.StatusConflict, Code: CodeConflict, Message: fmt.Sprintf(format, args...)}
}

// Internal is a 500 whose cause is logged; the client sees only what.
func Internal(err error, format string, args ...any) *Error {
	return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: fmt.Sprintf(format, args...), Err: err}
}

// Unavailable is a 503: a dependency (Temporal, the database) does not answer.
func Unavailable(err error, format string, args ...any) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: fmt.Sprintf(format, args...), Err: err}
}

// errorHandler renders every error a handler or middleware returns as the JSON envelope.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	apiErr := toAPIError(err)
	if apiErr.Status >= 500 {
		level := slog.LevelError
		if apiErr.Status == http.StatusServiceUnavailable {
			level = slog.LevelWarn
		}
		attrs := []any{"method", c.Request().Method, "path", c.Request().URL.Path, "status", apiErr.Status,
			"message", apiErr.Message}
		if apiErr.Err != nil {
			attrs = append(attrs, "cause", apiErr.Err.Error())
		}
		s.log.Log(c.Request().Context(), level, "request failed", attrs...)
	}
	body := map[string]any{"error": errorBody{Code: apiErr.Code, Message: apiErr.Message, Field: apiErr.Field}}
	for k, v := range apiErr.Extra {
		body[k] = v
	}
	if apiErr.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="sysvm"`)
	}
	var werr error
	if c.Request().Method == http.MethodHead {
		werr = c.NoContent(apiErr.Status)
	} else {
		werr = c.JSON(apiErr.Status, body)
	}
	if werr != nil {
		s.log.Error("write error response", "error", werr)
	}
}

// toAPIError maps any error to an *Error: echo's own errors (unknown route, wrong method, body
// too large) keep their status with a JSON message; anything else is a 500.
func toAPIError(err error) *Error {
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		if m, ok := he.Message.(string); ok && m != "" {
			msg = m
		}
		switch he.Code {
		case http.StatusNotFound:
			return &Error{Status: he.Code, Code: CodeNotFound, Message: "no such API path; see /api/v1/openapi.json"}
		case http.StatusMethodNotAllowed:
			return &Error{Status: he.Code, Code: CodeMethodNotAllowed, Message: "method not allowed on this path; see /api/v1/openapi.json"}
		case http.StatusRequestEntityTooLarge:
			return &Error{Status: he.Code, Code: CodeTooLarge, Message: "request body too large (limit " + maxBody + ")"}
		case http.StatusUnauthorized:
			return &Error{Status: he.Code, Code: CodeUnauthorized, Message: msg}
		case http.StatusForbidden:
			return &Error{Status: he.Code, Code: CodeForbidden, Message: msg}
		}
		if he.Code >= 400 && he.Code < 500 {
			return &Error{Status: he.Code, Code: CodeBadRequest, Message: msg}
		}
		return &Error{Status: he.Code, Code: CodeInternal, Message: msg, Err: he.Internal}
	}
	return Internal(err, "internal error; see the server log")
}

// recoverMiddleware turns a panic in a handler into a logged 500 JSON error.
func (s *Server) recoverMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("handler panic", "method", c.Request().Method, "path", c.Request().URL.Path,
					"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = Internal(fmt.Errorf("panic: %v", r), "internal error; see the server log")
			}
		}()
		return next(c)
	}
}

// decodeBody reads a JSON request body into dst, refusing unknown fields and naming the field
// a type error is about. An empty body leaves dst as it is when optional.
func decodeBody(c echo.Context, dst any, optional bool) error {
	req := c.Request()
	if req.Body == nil || req.Body == http.NoBody {
		if optional {
			return nil
		}
		return BadRequest("body", "a JSON request body is required")
	}
	dec := json.NewDecoder(req.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if errors.Is(err, io.EOF) {
		if optional {
			return nil
		}
		return BadRequest("body", "a JSON request body is required")
	}
	if err != nil {
		return bodyError(err)
	}
	if dec.More() {
		return BadRequest("body", "the body must hold one JSON object")
	}
	return nil
}

// bodyError turns a JSON decoding error into a 400 naming the field where it can.
func bodyError(err error) *Error {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		return toAPIError(he)
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return BadRequest("body", "invalid JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		return BadRequest(field, "%s must be a JSON %s, got %s", field, jsonTypeName(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return BadRequest(name, "unknown field %q", name)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return BadRequest("body", "truncated JSON body")
	}
	return BadRequest("body", "invalid JSON body: %v", err)
}

func jsonTypeName(kind string) string {
	switch kind {
	case "bool":
		return "boolean"
	case "string":
		return "string"
	case "slice", "array":
		return "array"
	case "map", "struct":
		return "object"
	}
	return "number"
}
