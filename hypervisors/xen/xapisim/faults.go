package xapisim

// Fault makes calls of one XAPI method fail, like vcsim's method faults, so tests can drive a
// client's error and retry paths. Rules are checked in the order they were added, before the
// method runs (a failed call changes nothing).
type Fault struct {
	// Method is the wire name, e.g. "VM.start" or "Async.VM.pool_migrate"; "*" matches every
	// method.
	Method string
	// Code and Params are the ErrorDescription returned (e.g. "SESSION_INVALID").
	Code   string
	Params []string
	// Times is how many matching calls fail; 0 means every call until ClearFaults.
	Times int
	// Drop closes the connection without an answer instead of returning Code: the client sees
	// a transport failure.
	Drop bool
}

type faultRule struct {
	Fault
	left int // remaining failures; -1 = unlimited
}

type faultSet struct {
	rules []*faultRule
}

// match consumes one failure of the first rule matching method.
func (fs *faultSet) match(method string) *Fault {
	for i, r := range fs.rules {
		if r.Method != method && r.Method != "*" {
			continue
		}
		f := r.Fault
		if r.left > 0 {
			r.left--
			if r.left == 0 {
				fs.rules = append(fs.rules[:i], fs.rules[i+1:]...)
			}
		}
		return &f
	}
	return nil
}

// InjectFault adds a fault rule.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	left := f.Times
	if left <= 0 {
		left = -1
	}
	if f.Params == nil {
		f.Params = []string{}
	}
	s.faults.rules = append(s.faults.rules, &faultRule{Fault: f, left: left})
}

// ClearFaults removes every fault rule.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.rules = nil
}

// CallCount is how many calls of a method (wire name) the server has received, failed ones
// included.
func (s *Server) CallCount(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}
