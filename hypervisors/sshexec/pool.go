package sshexec

import (
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// pconn is one SSH client known to the pool.
type pconn struct {
	key    string
	client *ssh.Client
	// parent is the host connection a VM connection is tunnelled through; the VM connection
	// holds one use of it for as long as it lives.
	parent *pconn
	// limit is how many concurrent uses (sessions, or child tunnels for a host) it takes.
	limit    int
	users    int
	lastUsed time.Time
	// pooled connections count toward the pool's bound and stay open while idle; others are
	// closed as soon as their last user releases them.
	pooled  bool
	retired bool
}

// pool keeps a bounded set of SSH clients by key, each shared by up to its limit of users.
type pool struct {
	mu        sync.Mutex
	conns     map[string][]*pconn
	size      int // pooled connections
	max       int // bound on pooled connections; 0 disables pooling
	maxPerKey int
	idle      time.Duration
	closed    bool
	now       func() time.Time
}

func newPool(max, maxPerKey int, idle time.Duration) *pool {
	return &pool{conns: map[string][]*pconn{}, max: max, maxPerKey: maxPerKey, idle: idle, now: time.Now}
}

// PoolStats describe the connection pool.
type PoolStats struct {
	// Open is every SSH client open now, pooled or temporary, host and VM hops alike.
	Open int
	// Pooled is the clients kept for reuse (at most Config.MaxConns).
	Pooled int
	// Idle is the pooled clients nobody is using.
	Idle int
}

func (p *pool) stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s PoolStats
	for _, list := range p.conns {
		for _, c := range list {
			s.Open++
			if c.pooled {
				s.Pooled++
				if c.users == 0 {
					s.Idle++
				}
			}
		}
	}
	return s
}

// get returns a pooled connection for key with room for one more user, taking that use, or nil.
func (p *pool) get(key string) *pconn {
	p.mu.Lock()
	expired := p.expireLocked()
	var found *pconn
	if !p.closed {
		for _, c := range p.conns[key] {
			if c.pooled && !c.retired && c.users < c.limit {
				c.users++
				c.lastUsed = p.now()
				found = c
				break
			}
		}
	}
	p.mu.Unlock()
	p.closeAll(expired)
	return found
}

// add registers a newly dialled client with one user taken. It is pooled when the pool has
// room (evicting the least recently used idle connection if needed) and the key is under its
// per-key bound; otherwise it is temporary. It returns nil if the pool is closed (the client
// has then been closed and the parent use released).
func (p *pool) add(key string, client *ssh.Client, parent *pconn, limit int) *pconn {
	c := &pconn{key: key, client: client, parent: parent, limit: limit, users: 1}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = client.Close()
		if parent != nil {
			p.release(parent, false)
		}
		return nil
	}
	c.lastUsed = p.now()
	var evicted []*pconn
	perKey := 0
	for _, o := range p.conns[key] {
		if o.pooled {
			perKey++
		}
	}
	if p.max > 0 && perKey < p.maxPerKey {
		if p.size >= p.max {
			if v := p.lruIdleLocked(); v != nil {
				p.retireLocked(v)
				evicted = append(evicted, v)
			}
		}
		if p.size < p.max {
			c.pooled = true
			p.size++
		}
	}
	p.conns[key] = append(p.conns[key], c)
	p.mu.Unlock()
	p.closeAll(evicted)
	go p.watch(c)
	return c
}

// watch retires a connection when its transport ends (server closed it, network failure).
func (p *pool) watch(c *pconn) {
	_ = c.client.Wait()
	p.retire(c)
}

// release gives back one use of c; broken retires it at once.
func (p *pool) release(c *pconn, broken bool) {
	p.mu.Lock()
	c.users--
	c.lastUsed = p.now()
	var done []*pconn
	if !c.retired && (broken || p.closed || (!c.pooled && c.users <= 0)) {
		p.retireLocked(c)
		done = append(done, c)
	}
	p.mu.Unlock()
	p.closeAll(done)
}

// drain stops handing c out; it is closed when its last user releases it.
func (p *pool) drain(c *pconn) {
	p.mu.Lock()
	if c.pooled && !c.retired {
		c.pooled = false
		p.size--
	}
	p.mu.Unlock()
}

// retire removes c from the pool and closes it (idempotent).
func (p *pool) retire(c *pconn) {
	p.mu.Lock()
	var done []*pconn
	if !c.retired {
		p.retireLocked(c)
		done = append(done, c)
	}
	p.mu.Unlock()
	p.closeAll(done)
}

func (p *pool) retireLocked(c *pconn) {
	c.retired = true
	if c.pooled {
		p.size--
	}
	list := p.conns[c.key]
	for i, o := range list {
		if o == c {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(p.conns, c.key)
	} else {
		p.conns[c.key] = list
	}
}

// closeAll closes retired connections outside the lock and gives back their parent's use.
func (p *pool) closeAll(list []*pconn) {
	for _, c := range list {
		_ = c.client.Close()
		if c.parent != nil {
			p.release(c.parent, false)
		}
	}
}

func (p *pool) lruIdleLocked() *pconn {
	var best *pconn
	for _, list := range p.conns {
		for _, c := range list {
			if c.pooled && !c.retired && c.users == 0 && (best == nil || c.lastUsed.Before(best.lastUsed)) {
				best = c
			}
		}
	}
	return best
}

// expireLocked retires pooled connections idle for longer than the idle timeout.
func (p *pool) expireLocked() []*pconn {
	if p.idle <= 0 {
		return nil
	}
	var out []*pconn
	cutoff := p.now().Add(-p.idle)
	for _, list := range p.conns {
		for _, c := range list {
			if c.users == 0 && !c.retired && c.lastUsed.Before(cutoff) {
				out = append(out, c)
			}
		}
	}
	for _, c := range out {
		p.retireLocked(c)
	}
	return out
}

// expire closes connections idle past the idle timeout now.
func (p *pool) expire() {
	p.mu.Lock()
	out := p.expireLocked()
	p.mu.Unlock()
	p.closeAll(out)
}

// close retires every connection, in use or not; later adds are refused.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	var all []*pconn
	for _, list := range p.conns {
		all = append(all, list...)
	}
	for _, c := range all {
		p.retireLocked(c)
	}
	p.mu.Unlock()
	p.closeAll(all)
}
