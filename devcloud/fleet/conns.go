package fleet

import (
	"net"
	"sync"
)

// connSet is the set of open connections of a simulated router or host, so that all of them
// can be dropped at once (a router moved or removed, an unreachable fault, a host shut down).
// While it refuses, new connections are turned away: an unreachable router, a host that is
// down. The zero value accepts connections.
type connSet struct {
	mu     sync.Mutex
	refuse bool
	conns  map[net.Conn]struct{}
}

// add records an open connection; false means the set refuses it (the caller drops it).
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

// remove forgets a connection that has ended.
func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// closeAll closes every open connection; with refuse, new ones are refused from now on
// (until accept).
func (s *connSet) closeAll(refuse bool) {
	s.mu.Lock()
	s.refuse = s.refuse || refuse
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// accept takes new connections again.
func (s *connSet) accept() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse = false
}

// refusing reports whether new connections are refused.
func (s *connSet) refusing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refuse
}
