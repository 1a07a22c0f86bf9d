package xapisim

import (
	"context"
	"time"
)

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
	rules     []*faultRule
	latencies []*latencyRule
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

// Latency makes calls of one XAPI method slow, as a real pool's are (a VM.clone copies or
// snapshots a disk, a VM.start boots the guest): a matching call waits Delay, with the server
// lock released so other calls go on meanwhile, then runs as usual. Rules are checked in the
// order they were added; the first match applies. For Async.<method> the wait is inside the
// task (the task ref is returned at once). A call whose client goes away while it waits is
// dropped without running (it changes nothing).
type Latency struct {
	// Method is the wire name without "Async." (it applies to both), e.g. "VM.clone" or
	// "VM.start_on"; "*" matches every method.
	Method string
	Delay  time.Duration
	// Times is how many matching calls are delayed; 0 means every call until ClearLatencies.
	Times int
}

type latencyRule struct {
	Latency
	left int // remaining delayed calls; -1 = unlimited
}

// matchLatency consumes one delay of the first rule matching method (without "Async.").
func (fs *faultSet) matchLatency(method string) time.Duration {
	for i, r := range fs.latencies {
		if r.Method != method && r.Method != "*" {
			continue
		}
		if r.left > 0 {
			r.left--
			if r.left == 0 {
				fs.latencies = append(fs.latencies[:i], fs.latencies[i+1:]...)
			}
		}
		return r.Delay
	}
	return 0
}

// InjectLatency adds a latency rule.
func (s *Server) InjectLatency(l Latency) {
	s.mu.Lock()
	defer s.mu.Unlock()
	left := l.Times
	if left <= 0 {
		left = -1
	}
	s.faults.latencies = append(s.faults.latencies, &latencyRule{Latency: l, left: left})
}

// ClearLatencies removes every latency rule.
func (s *Server) ClearLatencies() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.latencies = nil
}

// wait sleeps d (no-op when 0) unless ctx or the server ends first; it reports whether the
// full wait passed. It is called without the server lock.
func (s *Server) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.stopCtx.Done():
	}
	return false
}
