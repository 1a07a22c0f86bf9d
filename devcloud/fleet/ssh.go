package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
)

// handshakeTimeout bounds an SSH handshake on any simulated endpoint.
const handshakeTimeout = 15 * time.Second

// acceptHost serves a simulated host's listener until it is closed.
func (f *Fleet) acceptHost(h *host) {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				f.log.Warn("simulated host stopped accepting", "host", h.name, "err", err)
			}
			return
		}
		if !h.conns.add(c) {
			_ = c.Close()
			return
		}
		f.wg.Go(func() {
			defer h.conns.remove(c)
			f.serveHost(h, c)
		})
	}
}

// serveHost runs one SSH connection to a simulated host: it only forwards (direct-tcpip) to
// the link-local address of a router on this host, port 3922, as `ssh -J` does.
func (f *Fleet) serveHost(h *host, c net.Conn) {
	defer c.Close()
	sconn, chans, reqs, err := handshake(c, f.serverCfg)
	if err != nil {
		f.log.Debug("host handshake failed", "host", h.name, "err", err)
		return
	}
	defer sconn.Close()
	f.wg.Go(func() { ssh.DiscardRequests(reqs) })
	for nc := range chans {
		switch nc.ChannelType() {
		case "direct-tcpip":
			f.forward(h, sconn, nc)
		case "session":
			_ = nc.Reject(ssh.Prohibited, "this simulated host only forwards to its routers (direct-tcpip)")
		default:
			_ = nc.Reject(ssh.UnknownChannelType, "unsupported channel type "+nc.ChannelType())
		}
	}
}

// directTCPIP is the payload of a direct-tcpip channel open (RFC 4254 §7.2).
type directTCPIP struct {
	Host       string
	Port       uint32
	OriginHost string
	OriginPort uint32
}

// forward accepts a direct-tcpip channel to a router on this host and serves that router's
// SSH server inside it.
func (f *Fleet) forward(h *host, sconn *ssh.ServerConn, nc ssh.NewChannel) {
	var d directTCPIP
	if err := ssh.Unmarshal(nc.ExtraData(), &d); err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	target := net.JoinHostPort(d.Host, strconv.Itoa(int(d.Port)))
	f.mu.Lock()
	r := h.byLinkLocal[canonical(d.Host)]
	f.mu.Unlock()
	switch {
	case r == nil || r.isUnreachable():
		// What OpenSSH's sshd answers when the VM does not answer ARP.
		_ = nc.Reject(ssh.ConnectionFailed, fmt.Sprintf("connect to %s port %d failed: No route to host", d.Host, d.Port))
		return
	case d.Port != RouterPort:
		_ = nc.Reject(ssh.ConnectionFailed, fmt.Sprintf("connect to %s port %d failed: Connection refused", d.Host, d.Port))
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	f.wg.Go(func() { ssh.DiscardRequests(reqs) })
	conn := &channelConn{Channel: ch,
		local:  addr(target),
		remote: addr(net.JoinHostPort(d.OriginHost, strconv.Itoa(int(d.OriginPort))))}
	f.wg.Go(func() { f.serveRouter(r, conn) })
}

// DialContext dials like net.Dialer.DialContext, except that "<private IP>:3922" of a
// simulated VMware router connects in process to that router's SSH server, and
// "<host name>:22" of a simulated host (the name given in RouterSpec.HostName or AddHost, as
// the inventory would hold the host's address) connects to that host's listener. Other
// loopback addresses are dialled for real; anything else is refused, so the fleet never sends
// traffic off the machine.
func (f *Fleet) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	f.mu.Lock()
	r := f.byPrivate[canonical(host)]
	if r != nil && port == strconv.Itoa(RouterPort) {
		defer f.mu.Unlock()
		if f.closed || r.isUnreachable() {
			return nil, &net.OpError{Op: "dial", Net: network, Addr: addr(address), Err: syscall.EHOSTUNREACH}
		}
		client, server, err := socketPair()
		if err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Addr: addr(address), Err: err}
		}
		local := addr(net.JoinHostPort("127.0.0.1", "0"))
		// Started under f.mu, so Close (which sets closed under f.mu before waiting) never
		// waits while a session is being added.
		f.wg.Go(func() { f.serveRouter(r, &pipeConn{Conn: server, local: addr(address), remote: local}) })
		return &pipeConn{Conn: client, local: local, remote: addr(address)}, nil
	}
	if h, ok := f.hosts[host]; ok && port == strconv.Itoa(sshexec.DefaultHostPort) {
		// "<host name>:22", as the inventory knows the host: its simulated listener.
		address = h.ln.Addr().String()
		host = "127.0.0.1"
	}
	f.mu.Unlock()
	if a, err := netip.ParseAddr(host); (err == nil && a.IsLoopback()) || host == "localhost" {
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
	return nil, &net.OpError{Op: "dial", Net: network, Addr: addr(address),
		Err: fmt.Errorf("no simulated router at %s (the fleet dials loopback only): %w", address, syscall.EHOSTUNREACH)}
}

// serveRouter runs one SSH connection to a router's own SSH server.
func (f *Fleet) serveRouter(r *router, c net.Conn) {
	defer c.Close()
	if !r.conns.add(c) {
		return
	}
	defer r.conns.remove(c)
	sconn, chans, reqs, err := handshake(c, f.serverCfg)
	if err != nil {
		f.log.Debug("router handshake failed", "router", r.id(), "err", err)
		return
	}
	defer sconn.Close()
	f.wg.Go(func() { ssh.DiscardRequests(reqs) })
	var sessions sync.WaitGroup
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions are supported")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		sessions.Go(func() { f.session(r, ch, creqs) })
	}
	sessions.Wait()
}

// session serves one session channel: env is accepted and ignored, exec runs the command,
// signal (any) kills it; shells, ptys and subsystems are refused.
func (f *Fleet) session(r *router, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	done := make(chan struct{})
	started := false
	for {
		select {
		case req, ok := <-reqs:
			if !ok {
				// The client closed the channel: stop the command.
				cancel()
				if started {
					<-done
				}
				return
			}
			switch req.Type {
			case "exec":
				var payload struct{ Command string }
				if started || ssh.Unmarshal(req.Payload, &payload) != nil {
					_ = req.Reply(false, nil)
					continue
				}
				_ = req.Reply(true, nil)
				started = true
				f.wg.Go(func() {
					defer close(done)
					code := f.exec(ctx, r, ch, payload.Command)
					_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
					_ = ch.CloseWrite()
					_ = ch.Close()
				})
			case "env":
				_ = req.Reply(true, nil)
			case "signal":
				cancel()
				_ = req.Reply(true, nil)
			default:
				_ = req.Reply(false, nil)
			}
		case <-done:
			// Drain what is left until the client closes.
			for req := range reqs {
				_ = req.Reply(false, nil)
			}
			return
		}
	}
}

// exec runs one command line in a router and returns its exit status.
func (f *Fleet) exec(ctx context.Context, r *router, ch ssh.Channel, line string) int {
	stderr := ch.Stderr()
	argv, err := sshexec.Split(line)
	if err != nil {
		fmt.Fprintf(stderr, "sh: %v\n", err)
		return 2
	}
	return f.run(ctx, r, ch, argv)
}

// run runs one argv in a router: the agent, coreutils' timeout (which the platform wraps
// commands in, as on a real system VM), or a command of Options.Commands.
func (f *Fleet) run(ctx context.Context, r *router, ch ssh.Channel, argv []string) int {
	stderr := ch.Stderr()
	prog := path.Base(argv[0])
	if prog == "timeout" {
		return f.timeout(ctx, r, ch, argv)
	}
	if prog == "sysvm-agent" {
		if slices.ContainsFunc(argv[1:], func(a string) bool { return a == "--root" || len(a) > 7 && a[:7] == "--root=" }) {
			fmt.Fprintln(stderr, "sysvm-agent: --root is not allowed on a simulated router (its root is its sandbox)")
			return agent.ExitUsage
		}
		return agent.Main(ctx, argv[1:], ch, ch, stderr, r.sys, r.root)
	}
	if cmd, ok := f.opts.Commands[prog]; ok {
		return cmd(ctx, r.id(), argv, ch, ch, stderr)
	}
	fmt.Fprintf(stderr, "sh: 1: %s: not found\n", argv[0])
	return 127
}

// timeout is coreutils' `timeout [-s SIGNAL] DURATION COMMAND...`: it ends the command when
// the duration passes and exits 124 (137 when the signal is KILL).
func (f *Fleet) timeout(ctx context.Context, r *router, ch ssh.Channel, argv []string) int {
	args, kill := argv[1:], false
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch {
		case args[0] == "-s" && len(args) > 1:
			kill = args[1] == "KILL" || args[1] == "9" || args[1] == "SIGKILL"
			args = args[2:]
		case strings.HasPrefix(args[0], "--signal="):
			sig := strings.TrimPrefix(args[0], "--signal=")
			kill = sig == "KILL" || sig == "9" || sig == "SIGKILL"
			args = args[1:]
		default:
			args = args[1:]
		}
	}
	if len(args) < 2 {
		fmt.Fprintln(ch.Stderr(), "timeout: missing operand")
		return 125
	}
	d, err := time.ParseDuration(args[0])
	if err != nil {
		if n, nerr := strconv.ParseFloat(args[0], 64); nerr == nil {
			d, err = time.Duration(n*float64(time.Second)), nil
		}
	}
	if err != nil {
		fmt.Fprintf(ch.Stderr(), "timeout: invalid time interval %q\n", args[0])
		return 125
	}
	tctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	code := f.run(tctx, r, ch, args[1:])
	if errors.Is(tctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		if kill {
			return 137
		}
		return 124
	}
	return code
}

func (r *router) id() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spec.ID
}

// handshake runs the server side of an SSH handshake, bounded in time.
func handshake(c net.Conn, cfg *ssh.ServerConfig) (*ssh.ServerConn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	timer := time.AfterFunc(handshakeTimeout, func() { _ = c.Close() })
	sconn, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if !timer.Stop() && err == nil {
		_ = sconn.Close()
		return nil, nil, nil, errors.New("handshake timed out")
	}
	return sconn, chans, reqs, err
}

// canonical prints an IP address canonically (so "169.254.003.004"-style spellings are not a
// way around the index), or returns s unchanged.
func canonical(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String()
	}
	return s
}

// addr is a net.Addr for "host:port".
type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }

// channelConn is an SSH channel seen as a net.Conn, so the router's SSH server runs inside
// the host's direct-tcpip channel. Deadlines are not supported (the SSH server does not use
// them; the handshake is bounded by closing the channel).
type channelConn struct {
	ssh.Channel
	local, remote net.Addr
}

func (c *channelConn) LocalAddr() net.Addr              { return c.local }
func (c *channelConn) RemoteAddr() net.Addr             { return c.remote }
func (c *channelConn) SetDeadline(time.Time) error      { return nil }
func (c *channelConn) SetReadDeadline(time.Time) error  { return nil }
func (c *channelConn) SetWriteDeadline(time.Time) error { return nil }

// socketPair returns the two ends of a connected AF_UNIX stream socket pair: an in-process
// connection with kernel buffers (net.Pipe is unbuffered, and two SSH peers that both send
// their version line first deadlock on it).
func socketPair() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		file := os.NewFile(uintptr(fd), "fleet-socketpair")
		c, err := net.FileConn(file) // dups fd
		_ = file.Close()
		if err != nil {
			for _, c := range conns[:i] {
				_ = c.Close()
			}
			if i == 0 {
				_ = syscall.Close(fds[1])
			}
			return nil, nil, fmt.Errorf("socketpair: %w", err)
		}
		conns[i] = c
	}
	return conns[0], conns[1], nil
}

// pipeConn is one end of a socket pair with the addresses of a TCP connection.
type pipeConn struct {
	net.Conn
	local, remote net.Addr
}

func (c *pipeConn) LocalAddr() net.Addr  { return c.local }
func (c *pipeConn) RemoteAddr() net.Addr { return c.remote }
