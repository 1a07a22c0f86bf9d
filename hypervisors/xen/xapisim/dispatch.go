package xapisim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// handler implements one XAPI message. It runs with the server lock held. It returns a wire
// value (string, int64, bool, float64, time.Time, []any, map[string]any), or a *deferred when
// the operation takes simulated time, and a *Failure on error.
type handler func(c *call) (any, error)

type method struct {
	name string
	// params are the parameters after session_id, decoded by decodeArgs (XAPI counts
	// session_id too when it reports MESSAGE_PARAMETER_COUNT_MISMATCH).
	params []param
	// optional is how many trailing params may be left out (session.login_with_password's
	// version and originator).
	optional int
	// noSession: the message takes no session_id (login).
	noSession bool
	// readOnly: a generated getter; XAPI has no Async variant for those.
	readOnly bool
	fn       handler
}

// deferred is an operation that holds its objects busy for Options.OpDelay: the server lock
// is released while it "runs", then finish completes it under the lock again.
type deferred struct {
	finish func() (any, error)
}

// errDrop asks the transport to close the connection without answering (fault injection).
var errDrop = errors.New("xapisim: drop connection")

type call struct {
	s      *Server
	m      *method
	ctx    context.Context
	method string
	// params are the wire values after session_id; args the same decoded by m.params.
	params     []any
	args       []any
	sessionRef string
	session    *sessionRec
}

// dispatch runs one call as XAPI would: fault rules, method lookup, parameter count,
// session check, then the handler. Async.<method> returns a task ref at once.
func (s *Server) dispatch(ctx context.Context, name string, params []any) (any, error) {
	s.mu.Lock()
	s.calls[name]++
	if f := s.faults.match(name); f != nil {
		s.mu.Unlock()
		if f.Drop {
			return nil, errDrop
		}
		return nil, fail(f.Code, f.Params...)
	}
	async := false
	mname := name
	if rest, ok := strings.CutPrefix(name, "Async."); ok {
		async, mname = true, rest
	}
	m, ok := s.methods[mname]
	if !ok || (async && (m.noSession || m.readOnly)) {
		s.mu.Unlock()
		return nil, fail(CodeMessageMethodUnknown, name)
	}
	want := len(m.params)
	if !m.noSession {
		want++
	}
	if len(params) > want || len(params) < want-m.optional {
		s.mu.Unlock()
		return nil, fail(CodeMessageParameterCountMismatch, name, strconv.Itoa(want), strconv.Itoa(len(params)))
	}
	delay := s.faults.matchLatency(mname)
	c := &call{s: s, m: m, ctx: ctx, method: mname, params: params}
	if !m.noSession {
		ref, _ := params[0].(string)
		sess, ok := s.db.classes[classSession].objs[ref].(*sessionRec)
		if !ok {
			s.mu.Unlock()
			return nil, fail(CodeSessionInvalid, ref)
		}
		sess.LastActive = time.Now().UTC()
		c.sessionRef, c.session, c.params = ref, sess, params[1:]
	}
	if async {
		taskRef := s.newTask(mname)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			c.ctx = s.stopCtx
			if !s.wait(s.stopCtx, delay) {
				s.mu.Lock()
				s.completeTask(taskRef, nil, fail(CodeInternalError, "server stopped"))
				s.mu.Unlock()
				return
			}
			res, err := s.run(m, c, false)
			s.mu.Lock()
			s.completeTask(taskRef, res, err)
			s.mu.Unlock()
		}()
		return taskRef, nil
	}
	if delay > 0 {
		s.mu.Unlock()
		if !s.wait(ctx, delay) {
			return nil, errDrop
		}
		return s.run(m, c, false)
	}
	return s.run(m, c, true)
}

// run executes a handler; it is entered with the lock held when locked is true and always
// returns with it released.
func (s *Server) run(m *method, c *call, locked bool) (res any, err error) {
	if !locked {
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	s.log.Debug("xapi call", "method", m.name)
	// Arguments decode when the call runs (for Async.<method>, inside its task, as in XAPI).
	args, f := decodeArgs(s.db, m.params, c.params)
	if f != nil {
		return nil, f
	}
	c.args = args
	res, err = m.fn(c)
	if d, ok := res.(*deferred); ok && err == nil {
		if s.opts.OpDelay > 0 {
			s.mu.Unlock()
			t := time.NewTimer(s.opts.OpDelay)
			select {
			case <-t.C:
			case <-s.stopCtx.Done():
				t.Stop()
			}
			s.mu.Lock()
		}
		res, err = d.finish()
	}
	if err != nil && !errors.As(err, &f) {
		return nil, fail(CodeInternalError, err.Error())
	}
	return res, err
}

// later makes an operation take Options.OpDelay: the objects named in busy are marked with
// op in their current_operations until finish has run.
func (c *call) later(busy []opHolder, op string, finish func() (any, error)) (any, error) {
	id := newRef()
	for _, b := range busy {
		b.ops()[id] = op
	}
	return &deferred{finish: func() (any, error) {
		for _, b := range busy {
			delete(b.ops(), id)
		}
		return finish()
	}}, nil
}

// opHolder is a record with current_operations (VM, VDI, SR).
type opHolder interface{ ops() map[string]string }

// busy returns OTHER_OPERATION_IN_PROGRESS when an object is in the middle of an operation.
func busy(className, ref string, h opHolder) *Failure {
	for _, op := range h.ops() {
		return fail(CodeOtherOperationInProgress, className, ref, op)
	}
	return nil
}

func asInt(v any) (int64, error) {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, nil
		}
		f, err := x.Float64()
		if err != nil || f != float64(int64(f)) {
			return 0, fmt.Errorf("not an int: %s", x)
		}
		return int64(f), nil
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	case float64:
		if x != float64(int64(x)) {
			return 0, fmt.Errorf("not an int: %v", x)
		}
		return int64(x), nil
	case string:
		return strconv.ParseInt(x, 10, 64)
	}
	return 0, fmt.Errorf("not an int: %T", v)
}

func asFloat(v any) (float64, error) {
	switch x := v.(type) {
	case json.Number:
		return x.Float64()
	case float64:
		return x, nil
	case int64:
		return float64(x), nil
	case string:
		return strconv.ParseFloat(x, 64)
	}
	return 0, fmt.Errorf("not a float: %T", v)
}

func asBool(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		return strconv.ParseBool(x)
	}
	return false, fmt.Errorf("not a bool: %T", v)
}

func asStrings(v any) ([]string, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("not an array: %T", v)
	}
	out := make([]string, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("array element %d not a string: %T", i, e)
		}
		out[i] = s
	}
	return out, nil
}

func asStringMap(v any) (map[string]string, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("not a struct: %T", v)
	}
	out := make(map[string]string, len(m))
	for k, e := range m {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("map value %q not a string: %T", k, e)
		}
		out[k] = s
	}
	return out, nil
}
