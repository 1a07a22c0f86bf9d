// Package sshexec runs commands inside system VMs over SSH on port 3922, along CloudStack's
// access path (SPEC §1):
//
//   - KVM and XenServer (hypervisors.Capabilities.LinkLocalControl): SSH to the hypervisor
//     host the VM runs on, then through that connection (a direct-tcpip forward, like
//     `ssh -J`) to the VM's link-local address, port 3922, as root with the system VM key;
//   - VMware: straight from the management server to the VM's private IP, port 3922.
//
// Commands are argv lists, each argument quoted for the remote POSIX shell. Host keys are
// trusted on first use and recorded in a HostKeyStore; a changed key is refused. Clients are
// kept in a small bounded pool, so health checks over thousands of routers reuse connections
// (one host connection carries the tunnels to every VM on that host).
package sshexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/hypervisors"
)

// Defaults of Config and Target.
const (
	DefaultPort               = 3922
	DefaultHostPort           = 22
	DefaultUser               = "root"
	DefaultConnectTimeout     = 10 * time.Second
	DefaultRunTimeout         = 60 * time.Second
	DefaultMaxConns           = 64
	DefaultMaxConnsPerAddress = 2
	// DefaultMaxSessionsPerConn stays under OpenSSH's MaxSessions (10) on the system VM.
	DefaultMaxSessionsPerConn = 8
	// DefaultMaxTunnelsPerHostConn bounds the VM tunnels one host connection carries
	// (direct-tcpip channels do not count against OpenSSH's MaxSessions).
	DefaultMaxTunnelsPerHostConn = 64
	DefaultIdleTimeout           = 2 * time.Minute
	DefaultMaxOutputBytes        = 8 << 20
)

// Target says where a system VM is and how to reach it.
type Target struct {
	// VMName is the instance name (e.g. "r-12-VM"); it names the VM in errors and keys its
	// recorded host key, so a VM keeps its key across migrations and address reuse.
	VMName string
	// Hypervisor is informational (errors, Access descriptions); the path is chosen by
	// LinkLocalControl.
	Hypervisor hypervisors.Type
	// LinkLocalControl is the driver's Capabilities.LinkLocalControl: true reaches the VM
	// through HostAddress on LinkLocalIP, false reaches PrivateIP directly.
	LinkLocalControl bool
	// HostAddress and HostPort (default 22) are the SSH endpoint of the VM's hypervisor host.
	HostAddress string
	HostPort    int
	// LinkLocalIP is the VM's 169.254/16 control address (KVM, XenServer).
	LinkLocalIP string
	// PrivateIP is the VM's management address (VMware).
	PrivateIP string
	// Port is the VM's SSH port, default 3922.
	Port int
}

func (t Target) port() int {
	if t.Port > 0 {
		return t.Port
	}
	return DefaultPort
}

func (t Target) hostPort() int {
	if t.HostPort > 0 {
		return t.HostPort
	}
	return DefaultHostPort
}

// hostAddr is the jump host's host:port.
func (t Target) hostAddr() string {
	return net.JoinHostPort(t.HostAddress, strconv.Itoa(t.hostPort()))
}

// vmIP is the address the VM is reached on along its path.
func (t Target) vmIP() string {
	if t.LinkLocalControl {
		return t.LinkLocalIP
	}
	return t.PrivateIP
}

// vmAddr is the VM's ip:port along its path.
func (t Target) vmAddr() string { return net.JoinHostPort(t.vmIP(), strconv.Itoa(t.port())) }

// vmAddrDesc is the VM's address as errors show it ("169.254.3.4:3922 via 10.0.0.5:22").
func (t Target) vmAddrDesc() string {
	if t.LinkLocalControl {
		return t.vmAddr() + " via " + t.hostAddr()
	}
	return t.vmAddr()
}

// String describes the target, e.g. "r-12-VM (169.254.3.4:3922 via 10.0.0.5:22)".
func (t Target) String() string {
	name := t.VMName
	if name == "" {
		name = "system VM"
	}
	return name + " (" + t.vmAddrDesc() + ")"
}

// Validate checks that the target names the addresses its path needs.
func (t Target) Validate() error {
	var problems []string
	if t.LinkLocalControl {
		if t.HostAddress == "" {
			problems = append(problems, "no host address (the link-local path goes through the VM's host)")
		}
		if t.LinkLocalIP == "" {
			problems = append(problems, "no link-local IP")
		}
	} else if t.PrivateIP == "" {
		problems = append(problems, "no private IP")
	}
	if t.Port < 0 || t.Port > 65535 || t.HostPort < 0 || t.HostPort > 65535 {
		problems = append(problems, "port out of range")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// HostKeyAddress is the address under which the jump host's key is recorded ("host:port"),
// or "" on the direct path.
func (t Target) HostKeyAddress() string {
	if !t.LinkLocalControl {
		return ""
	}
	return t.hostAddr()
}

// VMKeyAddress is the address under which the VM's host key is recorded: "vm:<VMName>" when
// the name is known (CloudStack instance names carry the VM's database id, so they are never
// reused, while link-local and private IPs are), else the VM's address along its path.
func (t Target) VMKeyAddress() string {
	if t.VMName != "" {
		return "vm:" + t.VMName
	}
	if t.LinkLocalControl {
		return t.hostAddr() + "/" + t.vmAddr()
	}
	return t.vmAddr()
}

// Config configures an Executor.
type Config struct {
	// Key is the system VM key pair (used when Signer is nil).
	Key KeyPair
	// Signer, when set, is used for the VM hop instead of Key.
	Signer ssh.Signer
	// HostSigner authenticates the jump to hypervisor hosts. Nil uses the VM key, as
	// CloudStack does: its management key is the one installed on hosts and in system VMs.
	HostSigner ssh.Signer
	// HostUser is the user on hypervisor hosts (default "root"); VMUser the user in system
	// VMs (default "root").
	HostUser string
	VMUser   string
	// HostKeys records host keys (trust on first use). Required.
	HostKeys HostKeyStore
	// ConnectTimeout bounds connecting (TCP, SSH handshake and auth) of all hops of one Run
	// (default 10s). RunTimeout bounds the command itself (default 60s).
	ConnectTimeout time.Duration
	RunTimeout     time.Duration
	// Dialer opens TCP connections (default net.Dialer). Tests point it at loopback servers.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxConns bounds the SSH clients kept open for reuse across all addresses (default 64;
	// negative disables reuse: every Run connects and disconnects). Runs beyond the bound
	// still proceed, on temporary clients closed after use. Host and VM clients both count;
	// a host client stays open while pooled VM clients tunnel through it.
	MaxConns int
	// MaxConnsPerAddress bounds pooled clients per address (default 2).
	MaxConnsPerAddress int
	// MaxSessionsPerConn bounds concurrent commands on one VM client (default 8).
	MaxSessionsPerConn int
	// MaxTunnelsPerHostConn bounds VM tunnels through one host client (default 64).
	MaxTunnelsPerHostConn int
	// IdleTimeout closes pooled clients unused for that long (default 2m).
	IdleTimeout time.Duration
	// MaxOutputBytes caps the stdout and stderr kept per command, each (default 8 MiB);
	// the excess is dropped and Result.Truncated set.
	MaxOutputBytes int
	// RemoteKill runs each command under coreutils timeout ("timeout -s KILL N argv..."), N
	// being the run timeout rounded up plus one second, so the VM kills a command that
	// outlives it. Without it a timed-out command keeps running in the VM: the executor does
	// send a KILL "signal" request and closes the session, but OpenSSH refuses signal requests
	// for root sessions ("session signalling requires privilege separation"), and a command
	// that does not write never notices the closed session. The VM must have timeout(1)
	// (CloudStack's Debian system VM templates do).
	RemoteKill bool
	// Logger receives debug and info logs (default slog.Default()). Arguments of commands
	// are never logged, only the program name.
	Logger *slog.Logger
}

// Result is a finished command.
type Result struct {
	Stdout []byte
	Stderr []byte
	// ExitCode is the command's exit status (a non-zero status is not a Run error).
	ExitCode int
	// Signal is set when the command was killed by a signal ("KILL", "TERM", ...).
	Signal   string
	Duration time.Duration
	// Truncated: output exceeded Config.MaxOutputBytes and was cut.
	Truncated bool
	// Reused: the command ran on a pooled connection.
	Reused bool
}

// Executor runs commands in system VMs. Safe for concurrent use; Close it when done.
type Executor struct {
	cfg        Config
	vmSigner   ssh.Signer
	hostSigner ssh.Signer
	log        *slog.Logger
	pool       *pool
	errs       errorCounts

	mu     sync.Mutex
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

// New builds an Executor, applying defaults.
func New(cfg Config) (*Executor, error) {
	if cfg.HostKeys == nil {
		return nil, errors.New("sshexec: Config.HostKeys is required (host keys are verified, trust on first use)")
	}
	signer := cfg.Signer
	if signer == nil {
		s, err := cfg.Key.Signer()
		if err != nil {
			return nil, fmt.Errorf("sshexec: system VM key: %w", err)
		}
		signer = s
	}
	hostSigner := cfg.HostSigner
	if hostSigner == nil {
		hostSigner = signer
	}
	if cfg.HostUser == "" {
		cfg.HostUser = DefaultUser
	}
	if cfg.VMUser == "" {
		cfg.VMUser = DefaultUser
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.RunTimeout <= 0 {
		cfg.RunTimeout = DefaultRunTimeout
	}
	if cfg.Dialer == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		cfg.Dialer = d.DialContext
	}
	switch {
	case cfg.MaxConns == 0:
		cfg.MaxConns = DefaultMaxConns
	case cfg.MaxConns < 0:
		cfg.MaxConns = 0
	}
	if cfg.MaxConnsPerAddress <= 0 {
		cfg.MaxConnsPerAddress = DefaultMaxConnsPerAddress
	}
	if cfg.MaxSessionsPerConn <= 0 {
		cfg.MaxSessionsPerConn = DefaultMaxSessionsPerConn
	}
	if cfg.MaxTunnelsPerHostConn <= 0 {
		cfg.MaxTunnelsPerHostConn = DefaultMaxTunnelsPerHostConn
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxOutputBytes <= 0 {
		cfg.MaxOutputBytes = DefaultMaxOutputBytes
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	e := &Executor{
		cfg: cfg, vmSigner: signer, hostSigner: hostSigner, log: log.With("component", "sshexec"),
		pool: newPool(cfg.MaxConns, cfg.MaxConnsPerAddress, cfg.IdleTimeout),
		stop: make(chan struct{}),
	}
	e.wg.Add(1)
	go e.reaper()
	return e, nil
}

// reaper closes idle pooled clients even when no Run comes along to notice them.
func (e *Executor) reaper() {
	defer e.wg.Done()
	t := time.NewTicker(e.cfg.IdleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.pool.expire()
		}
	}
}

// Close closes every client, including those of Runs in progress (which then fail).
func (e *Executor) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.stop)
	e.mu.Unlock()
	e.pool.close()
	e.wg.Wait()
	return nil
}

// Stats describe the connection pool.
func (e *Executor) Stats() PoolStats { return e.pool.stats() }

// Run runs argv in the target VM with stdin (nil for none) and returns its output and exit
// status. A non-zero exit status is reported in Result.ExitCode, not as an error. Errors are
// *Error values naming the hop and stage that failed. On a run timeout or cancellation the
// remote session is signalled and closed, and the partial output is returned with the error.
func (e *Executor) Run(ctx context.Context, t Target, argv []string, stdin []byte) (Result, error) {
	start := time.Now()
	runTimeout := e.cfg.RunTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < runTimeout {
		runTimeout = max(time.Until(dl), 0)
	}
	what := describeArgv(argv)
	if e.cfg.RemoteKill && len(argv) > 0 {
		secs := int64(math.Ceil(runTimeout.Seconds())) + 1
		argv = append([]string{"timeout", "-s", "KILL", strconv.FormatInt(secs, 10)}, argv...)
	}
	cmd, err := commandLine(argv)
	if err != nil {
		return Result{}, &Error{VM: t.VMName, Stage: StageValidate, Kind: hypervisors.ErrInvalid, Err: err}
	}
	if err := t.Validate(); err != nil {
		return Result{}, &Error{VM: t.VMName, Stage: StageValidate, Kind: hypervisors.ErrInvalid,
			Err: fmt.Errorf("target: %w", err)}
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return Result{}, &Error{VM: t.VMName, Stage: StageValidate, Err: ErrClosed}
	}
	if err := ctx.Err(); err != nil {
		// An ended context never runs anything, not even on a pooled client that would not
		// need the context to connect.
		return Result{}, &Error{VM: t.VMName, Stage: StageDial, Err: err}
	}
	log := e.log.With("vm", t.VMName, "addr", t.vmAddrDesc(), "cmd", what)

	for attempt := 0; ; attempt++ {
		pc, reused, err := e.connect(ctx, t, attempt > 0)
		if err != nil {
			e.errs.record(err)
			return Result{Duration: time.Since(start)}, err
		}
		sess, err := pc.client.NewSession()
		if err != nil {
			e.pool.release(pc, true)
			if reused && attempt == 0 && ctx.Err() == nil {
				// A pooled client went stale (the VM rebooted, the server dropped it):
				// nothing ran yet, so connect afresh once.
				log.Debug("pooled SSH client failed, reconnecting", "err", err)
				continue
			}
			return Result{Duration: time.Since(start)}, &Error{VM: t.VMName, Hop: HopVM, Stage: StageSession,
				Address: t.vmAddrDesc(), Kind: hypervisors.ErrUnreachable, Err: err}
		}
		res, broken, err := e.runSession(ctx, t, pc, sess, cmd, stdin, runTimeout)
		e.pool.release(pc, broken)
		res.Reused = reused
		res.Duration = time.Since(start)
		log.Debug("ssh command done", "exit", res.ExitCode, "reused", reused, "duration", res.Duration, "err", err)
		return res, err
	}
}

// closeGrace is how long a timed-out or cancelled Run waits for the server to confirm the
// session's close before returning and draining the client.
const closeGrace = 250 * time.Millisecond

// runSession runs cmd in sess. broken reports that the client should not be reused.
func (e *Executor) runSession(ctx context.Context, t Target, pc *pconn, sess *ssh.Session, cmd string, stdin []byte, runTimeout time.Duration) (res Result, broken bool, err error) {
	defer sess.Close()
	stdout := &capBuffer{max: e.cfg.MaxOutputBytes}
	stderr := &capBuffer{max: e.cfg.MaxOutputBytes}
	sess.Stdout, sess.Stderr = stdout, stderr
	if stdin != nil {
		sess.Stdin = bytes.NewReader(stdin)
	}
	fail := func(kind, cause error) *Error {
		return &Error{VM: t.VMName, Hop: HopVM, Stage: StageRun, Address: t.vmAddrDesc(), Kind: kind, Err: cause}
	}
	if err := sess.Start(cmd); err != nil {
		return Result{}, true, fail(hypervisors.ErrUnreachable, fmt.Errorf("start command: %w", err))
	}
	runCtx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()

	var waitErr error
	select {
	case waitErr = <-done:
	case <-runCtx.Done():
		// Ask the remote to kill the command, then close our end of the session.
		_ = sess.Signal(ssh.SIGKILL)
		_ = sess.Close()
		select {
		case <-done:
		case <-time.After(closeGrace):
			// OpenSSH confirms the close only when the command exits (and refuses the
			// signal for root), so the session would hold one of the server's MaxSessions
			// slots for as long as the command runs. Hand this client out no more; it is
			// closed when its other sessions end. Wait returns then, ending the goroutine.
			e.pool.drain(pc)
		}
		res = Result{Stdout: stdout.bytes(), Stderr: stderr.bytes(), ExitCode: -1,
			Truncated: stdout.truncated() || stderr.truncated()}
		if ctx.Err() != nil {
			return res, broken, fail(nil, fmt.Errorf("command interrupted: %w", ctx.Err()))
		}
		return res, broken, fail(nil, fmt.Errorf("%w after %s: %w", ErrRunTimeout, runTimeout, context.DeadlineExceeded))
	}
	res = Result{Stdout: stdout.bytes(), Stderr: stderr.bytes(),
		Truncated: stdout.truncated() || stderr.truncated()}
	var exitErr *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case waitErr == nil:
		return res, false, nil
	case errors.As(waitErr, &exitErr):
		res.ExitCode = exitErr.ExitStatus()
		res.Signal = exitErr.Signal()
		return res, false, nil
	case errors.As(waitErr, &missing):
		res.ExitCode = -1
		return res, false, fail(hypervisors.ErrUnreachable, waitErr)
	default:
		res.ExitCode = -1
		return res, true, fail(hypervisors.ErrUnreachable, waitErr)
	}
}

// connect returns a client to the VM, from the pool unless fresh, with one use taken.
func (e *Executor) connect(ctx context.Context, t Target, fresh bool) (pc *pconn, reused bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, e.cfg.ConnectTimeout)
	defer cancel()
	vmAddr := t.vmAddr()

	if !t.LinkLocalControl {
		key := "direct|" + vmAddr
		if !fresh {
			if pc := e.pool.get(key); pc != nil {
				return pc, true, nil
			}
		}
		conn, err := e.cfg.Dialer(cctx, "tcp", vmAddr)
		if err != nil {
			return nil, false, e.dialError(ctx, cctx, t, HopVM, vmAddr, err)
		}
		client, err := e.handshake(ctx, cctx, conn, t, HopVM, vmAddr, e.cfg.VMUser, e.vmSigner, t.VMKeyAddress())
		if err != nil {
			return nil, false, err
		}
		pc := e.pool.add(key, client, nil, e.cfg.MaxSessionsPerConn)
		if pc == nil {
			return nil, false, &Error{VM: t.VMName, Hop: HopVM, Stage: StageDial, Address: vmAddr, Err: ErrClosed}
		}
		return pc, false, nil
	}

	hostAddr := t.hostAddr()
	vmKey := "jump|" + hostAddr + "|" + vmAddr
	if !fresh {
		if pc := e.pool.get(vmKey); pc != nil {
			return pc, true, nil
		}
	}
	host, hostReused, err := e.connectHost(ctx, cctx, t, fresh)
	if err != nil {
		return nil, false, err
	}
	nc, err := host.client.DialContext(cctx, "tcp", vmAddr)
	var rejected *ssh.OpenChannelError
	if err != nil && hostReused && !errors.As(err, &rejected) && cctx.Err() == nil {
		// The pooled host client is dead; try one fresh host connection.
		e.pool.release(host, true)
		host, _, err = e.connectHost(ctx, cctx, t, true)
		if err != nil {
			return nil, false, err
		}
		nc, err = host.client.DialContext(cctx, "tcp", vmAddr)
	}
	if err != nil {
		e.pool.release(host, !errors.As(err, &rejected) && cctx.Err() == nil)
		return nil, false, e.dialError(ctx, cctx, t, HopVM, t.vmAddrDesc(), fmt.Errorf("forward through host: %w", err))
	}
	client, err := e.handshake(ctx, cctx, nc, t, HopVM, t.vmAddrDesc(), e.cfg.VMUser, e.vmSigner, t.VMKeyAddress())
	if err != nil {
		e.pool.release(host, false)
		return nil, false, err
	}
	// The VM client keeps the use of the host client taken above until it is closed.
	pc = e.pool.add(vmKey, client, host, e.cfg.MaxSessionsPerConn)
	if pc == nil {
		return nil, false, &Error{VM: t.VMName, Hop: HopVM, Stage: StageDial, Address: t.vmAddrDesc(), Err: ErrClosed}
	}
	return pc, false, nil
}

// connectHost returns a client to the target's hypervisor host with one use taken.
func (e *Executor) connectHost(ctx, cctx context.Context, t Target, fresh bool) (*pconn, bool, error) {
	hostAddr := t.hostAddr()
	key := "host|" + hostAddr
	if !fresh {
		if pc := e.pool.get(key); pc != nil {
			return pc, true, nil
		}
	}
	conn, err := e.cfg.Dialer(cctx, "tcp", hostAddr)
	if err != nil {
		return nil, false, e.dialError(ctx, cctx, t, HopHost, hostAddr, err)
	}
	client, err := e.handshake(ctx, cctx, conn, t, HopHost, hostAddr, e.cfg.HostUser, e.hostSigner, t.HostKeyAddress())
	if err != nil {
		return nil, false, err
	}
	pc := e.pool.add(key, client, nil, e.cfg.MaxTunnelsPerHostConn)
	if pc == nil {
		return nil, false, &Error{VM: t.VMName, Hop: HopHost, Stage: StageDial, Address: hostAddr, Err: ErrClosed}
	}
	return pc, false, nil
}

// dialError classifies a failure to open the TCP connection (or tunnel) of a hop.
func (e *Executor) dialError(ctx, cctx context.Context, t Target, hop Hop, addr string, err error) error {
	out := &Error{VM: t.VMName, Hop: hop, Stage: StageDial, Address: addr, Kind: hypervisors.ErrUnreachable, Err: err}
	switch {
	case ctx.Err() != nil:
		out.Kind, out.Err = nil, fmt.Errorf("%w (%v)", ctx.Err(), err)
	case cctx.Err() != nil:
		out.Err = fmt.Errorf("%w after %s: %w", ErrConnectTimeout, e.cfg.ConnectTimeout, err)
	}
	return out
}

// handshake runs the SSH handshake over conn within cctx, checking the host key against the
// store under keyAddr, and returns the client. conn is closed on failure.
func (e *Executor) handshake(ctx, cctx context.Context, conn net.Conn, t Target, hop Hop, addr, user string, signer ssh.Signer, keyAddr string) (*ssh.Client, error) {
	known, recorded, err := e.cfg.HostKeys.LookupHostKey(cctx, keyAddr)
	if err != nil {
		_ = conn.Close()
		return nil, &Error{VM: t.VMName, Hop: hop, Stage: StageHandshake, Address: addr,
			Err: fmt.Errorf("look up host key for %s: %w", keyAddr, err)}
	}
	refusal := &refusal{}
	cfg := &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: tofuCallback(cctx, e.cfg.HostKeys, keyAddr, known, recorded, e.log, refusal),
		ClientVersion:   "SSH-2.0-sysvm",
	}
	if recorded {
		cfg.HostKeyAlgorithms = hostKeyAlgorithms(known)
	}
	// Closing the connection is the only way to abort a handshake in progress (deadlines do
	// not work on tunnelled connections).
	stop := context.AfterFunc(cctx, func() { _ = conn.Close() })
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if !stop() {
		// The context ended and conn was closed, maybe right after the handshake succeeded.
		if err == nil {
			_ = c.Close()
			err = errors.New("connection closed")
		}
	} else if err == nil {
		return ssh.NewClient(c, chans, reqs), nil
	}
	_ = conn.Close()
	out := &Error{VM: t.VMName, Hop: hop, Stage: StageHandshake, Address: addr, Kind: hypervisors.ErrUnreachable, Err: err}
	refused := refusal.get()
	switch {
	case refused != nil:
		// Host key changed (or the store failed): final until an operator acts.
		out.Kind, out.Err = hypervisors.ErrAuth, refused
		var changed *HostKeyChangedError
		if !errors.As(refused, &changed) {
			out.Kind = nil
		}
		e.log.Warn("SSH host key refused", "vm", t.VMName, "hop", hop, "address", addr, "err", refused)
	case ctx.Err() != nil:
		out.Kind, out.Err = nil, fmt.Errorf("%w (%v)", ctx.Err(), err)
	case cctx.Err() != nil:
		out.Err = fmt.Errorf("%w after %s: %w", ErrConnectTimeout, e.cfg.ConnectTimeout, err)
	case strings.Contains(err.Error(), "unable to authenticate"):
		out.Kind = hypervisors.ErrAuth
		out.Err = fmt.Errorf("user %s with key %s: %w", user, ssh.FingerprintSHA256(signer.PublicKey()), err)
	}
	return nil, out
}

// capBuffer keeps at most max bytes written to it, safe for concurrent use.
type capBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	max  int
	over bool
}

func (b *capBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - b.buf.Len()
	if room < len(p) {
		b.over = true
		if room > 0 {
			b.buf.Write(p[:room])
		}
		return len(p), nil
	}
	b.buf.Write(p)
	return len(p), nil
}

func (b *capBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf.Bytes()...)
}

func (b *capBuffer) truncated() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.over
}
