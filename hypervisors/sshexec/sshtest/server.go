// Package sshtest is a real SSH server (golang.org/x/crypto/ssh, server side) for tests and
// simulators: public key authentication, "exec" sessions handled by a Go function, and
// "direct-tcpip" forwarding (what `ssh -J` and sshexec's host jump use). It listens on
// loopback only and forwards only to loopback addresses unless told otherwise.
//
// Listen and the Server type are free of the testing package's life cycle, so simulators (the
// simulated router fleet) can run them; NewServer ties a Server to a test.
package sshtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/hypervisors/sshexec"
)

// ExecHandler runs one "exec" request: argv is the command line split as a POSIX shell splits
// a simple command (sshexec.Split); it reads stdin, writes stdout and stderr, and returns the exit status.
// SessionDone(stdout) tells it when the client went away or sent a signal.
type ExecHandler func(argv []string, stdin io.Reader, stdout, stderr io.Writer) int

// Options configure a Server.
type Options struct {
	// Addr is the listen address, default "127.0.0.1:0". It must be a loopback address.
	Addr string
	// HostKey is the server's host key; nil generates an ed25519 key.
	HostKey ssh.Signer
	// ExtraHostKeys are further host keys of other types (as sshd has RSA, ECDSA and ed25519).
	ExtraHostKeys []ssh.Signer
	// AuthorizedKeys are the public keys accepted (for any user, unless Users is set).
	AuthorizedKeys []ssh.PublicKey
	// Users, when non-empty, are the only user names accepted.
	Users []string
	// Exec handles exec requests; nil uses Builtins.
	Exec ExecHandler
	// LikeOpenSSHRoot makes sessions behave as OpenSSH's sshd does for root logins: "signal"
	// requests are refused ("session signalling requires privilege separation") and a session
	// closed by the client does not interrupt its command, which runs on until it ends by
	// itself (or the server closes). Unlike sshd, the close itself is confirmed at once
	// (x/crypto/ssh answers channel closes by itself); sshd confirms it when the command ends.
	LikeOpenSSHRoot bool
	// NoForward refuses direct-tcpip channels.
	NoForward bool
	// AllowForward decides whether a direct-tcpip target may be dialled; nil allows loopback
	// addresses (127.0.0.0/8, ::1, "localhost") only.
	AllowForward func(host string, port int) bool
	// Logger receives connection logs (default: discarded).
	Logger *slog.Logger
}

// ExecRecord is one exec request as the server received it.
type ExecRecord struct {
	User    string
	Command string   // the raw command line
	Argv    []string // as split; nil when it did not split
}

// Stats count what the server has seen.
type Stats struct {
	Accepted    int // TCP connections accepted
	Active      int // SSH connections open now
	AuthRejects int // public keys offered and refused
	Handshakes  int // successful SSH handshakes (authenticated connections)
	Execs       int
	Forwards    int // direct-tcpip channels opened
}

// maxExecRecords bounds the exec history kept.
const maxExecRecords = 1000

// Server is a running SSH server.
type Server struct {
	opts    Options
	cfg     *ssh.ServerConfig
	ln      net.Listener
	hostKey ssh.PublicKey
	log     *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	stats  Stats
	execs  []ExecRecord
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup
}

// Listen starts a server.
func Listen(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("sshtest: listen address %q: %w", opts.Addr, err)
	}
	if !isLoopback(host) {
		return nil, fmt.Errorf("sshtest: listen address %q is not loopback", opts.Addr)
	}
	if opts.HostKey == nil {
		if opts.HostKey, err = generateSigner(); err != nil {
			return nil, fmt.Errorf("sshtest: host key: %w", err)
		}
	}
	if opts.Exec == nil {
		opts.Exec = Builtins
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, hostKey: opts.HostKey.PublicKey(), log: log,
		conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	s.cfg = &ssh.ServerConfig{
		PublicKeyCallback: s.checkKey,
		ServerVersion:     "SSH-2.0-sysvm-sshtest",
	}
	s.cfg.AddHostKey(opts.HostKey)
	for _, k := range opts.ExtraHostKeys {
		s.cfg.AddHostKey(k)
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("sshtest: listen: %w", err)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// NewSigner makes a throwaway ed25519 key for a test (a client key, a host key, a key the
// server must refuse); it fails the test if it cannot.
func NewSigner(t testing.TB) ssh.Signer {
	t.Helper()
	s, err := generateSigner()
	if err != nil {
		t.Fatalf("generate ed25519 key: %v", err)
	}
	return s
}

func generateSigner() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// NewServer starts a server for a test and closes it when the test ends.
func NewServer(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Listen(opts)
	if err != nil {
		t.Fatalf("start SSH test server: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Host is the server's IP address.
func (s *Server) Host() string { return s.ln.Addr().(*net.TCPAddr).IP.String() }

// Port is the server's TCP port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// HostKey is the server's public host key.
func (s *Server) HostKey() ssh.PublicKey { return s.hostKey }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Execs returns the exec requests received (the last 1000).
func (s *Server) Execs() []ExecRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ExecRecord(nil), s.execs...)
}

// DropConnections closes every open SSH connection (as a rebooting VM would) and keeps
// listening.
func (s *Server) DropConnections() {
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Close stops listening, closes every connection and waits for the handlers to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	err := s.ln.Close()
	s.DropConnections()
	s.wg.Wait()
	return err
}

func (s *Server) checkKey(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	userOK := len(s.opts.Users) == 0
	for _, u := range s.opts.Users {
		if u == meta.User() {
			userOK = true
		}
	}
	if userOK {
		for _, k := range s.opts.AuthorizedKeys {
			if k.Type() == key.Type() && string(k.Marshal()) == string(key.Marshal()) {
				return &ssh.Permissions{}, nil
			}
		}
	}
	s.mu.Lock()
	s.stats.AuthRejects++
	s.mu.Unlock()
	return nil, fmt.Errorf("public key %s not authorized for %q", ssh.FingerprintSHA256(key), meta.User())
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.stats.Accepted++
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn)
	}
}

// handshakeTimeout bounds a client that connects and says nothing.
const handshakeTimeout = 10 * time.Second

func (s *Server) serveConn(conn net.Conn) {
	defer s.wg.Done()
	defer func() {
		_ = conn.Close()
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(conn, s.cfg)
	if err != nil {
		s.log.Debug("ssh handshake failed", "remote", conn.RemoteAddr().String(), "err", err)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	s.mu.Lock()
	s.stats.Handshakes++
	s.stats.Active++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.stats.Active--
		s.mu.Unlock()
	}()
	s.log.Debug("ssh connection", "user", sc.User(), "remote", sc.RemoteAddr().String())
	go ssh.DiscardRequests(reqs)
	var chWG sync.WaitGroup
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			chWG.Add(1)
			go func() { defer chWG.Done(); s.session(sc.User(), nc) }()
		case "direct-tcpip":
			chWG.Add(1)
			go func() { defer chWG.Done(); s.forward(nc) }()
		default:
			_ = nc.Reject(ssh.UnknownChannelType, "unsupported channel type "+nc.ChannelType())
		}
	}
	_ = sc.Close()
	chWG.Wait()
}

// sessionWriter carries the session's done channel to the handler through its writers.
type sessionWriter struct {
	io.Writer
	done <-chan struct{}
}

func (w sessionWriter) sessionDone() <-chan struct{} { return w.done }

// SessionDone returns a channel closed when the session that owns w (an ExecHandler's stdout
// or stderr) is closed by the client, receives a signal, or the server closes. For any other
// writer it returns nil (a channel that never closes).
func SessionDone(w io.Writer) <-chan struct{} {
	if sw, ok := w.(interface{ sessionDone() <-chan struct{} }); ok {
		return sw.sessionDone()
	}
	return nil
}

func (s *Server) session(user string, nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	done := make(chan struct{})
	var once sync.Once
	finish := func() { once.Do(func() { close(done) }) }
	defer finish()
	reqsClosed := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-s.done:
			finish()
		}
	}()
	execStarted := make(chan string, 1)
	go func() {
		defer close(reqsClosed)
		if !s.opts.LikeOpenSSHRoot {
			defer finish()
		}
		started := false
		for req := range reqs {
			switch req.Type {
			case "exec":
				var p struct{ Command string }
				if started || ssh.Unmarshal(req.Payload, &p) != nil {
					_ = req.Reply(false, nil)
					continue
				}
				started = true
				_ = req.Reply(true, nil)
				execStarted <- p.Command
			case "signal":
				if s.opts.LikeOpenSSHRoot {
					_ = req.Reply(false, nil)
					continue
				}
				// Any signal interrupts the handler; the builtins treat it as KILL.
				finish()
				if req.WantReply {
					_ = req.Reply(true, nil)
				}
			case "env":
				_ = req.Reply(true, nil)
			default:
				// shell, pty-req, subsystem...: not supported.
				_ = req.Reply(false, nil)
			}
		}
	}()
	var command string
	select {
	case command = <-execStarted:
	case <-done:
		return
	case <-reqsClosed:
		select {
		case command = <-execStarted:
		default:
			return
		}
	}
	argv, splitErr := sshexec.Split(command)
	s.mu.Lock()
	s.stats.Execs++
	if len(s.execs) >= maxExecRecords {
		s.execs = s.execs[1:]
	}
	s.execs = append(s.execs, ExecRecord{User: user, Command: command, Argv: argv})
	s.mu.Unlock()

	stdout := sessionWriter{Writer: ch, done: done}
	stderr := sessionWriter{Writer: ch.Stderr(), done: done}
	var code int
	if splitErr != nil {
		fmt.Fprintf(stderr, "sh: %v\n", splitErr)
		code = 2
	} else {
		code = s.opts.Exec(argv, ch, stdout, stderr)
	}
	_ = ch.CloseWrite()
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
}

// forwardTimeout bounds dialling a direct-tcpip target.
const forwardTimeout = 5 * time.Second

func (s *Server) forward(nc ssh.NewChannel) {
	var p struct {
		Addr     string
		Port     uint32
		OrigAddr string
		OrigPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "bad direct-tcpip request")
		return
	}
	allowed := !s.opts.NoForward
	if allowed {
		if s.opts.AllowForward != nil {
			allowed = s.opts.AllowForward(p.Addr, int(p.Port))
		} else {
			allowed = isLoopback(p.Addr)
		}
	}
	if !allowed {
		_ = nc.Reject(ssh.Prohibited, fmt.Sprintf("forwarding to %s:%d is not allowed", p.Addr, p.Port))
		return
	}
	target, err := net.DialTimeout("tcp", net.JoinHostPort(p.Addr, strconv.Itoa(int(p.Port))), forwardTimeout)
	if err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		_ = target.Close()
		return
	}
	s.mu.Lock()
	s.stats.Forwards++
	s.mu.Unlock()
	go ssh.DiscardRequests(reqs)
	var once sync.Once
	closeBoth := func() { once.Do(func() { _ = ch.Close(); _ = target.Close() }) }
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(target, ch); closeBoth() }()
	go func() { defer wg.Done(); _, _ = io.Copy(ch, target); closeBoth() }()
	select {
	case <-s.done:
		closeBoth()
	case <-waitChan(&wg):
	}
	wg.Wait()
}

func waitChan(wg *sync.WaitGroup) <-chan struct{} {
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	return c
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
