package sshexec_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/hypervisors/sshexec/sshtest"
)

func asError(t *testing.T, err error) *sshexec.Error {
	t.Helper()
	var e *sshexec.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *sshexec.Error", err, err)
	}
	return e
}

func TestRunDirect(t *testing.T) {
	srv := vmServer(t, "127.0.0.1:0", nil)
	e := newExecutor(t, sshexec.Config{})
	res, err := e.Run(context.Background(), directTarget("v-1-VM", srv), []string{"echo", "hello", "world"}, nil)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if string(res.Stdout) != "hello world\n" || res.ExitCode != 0 || len(res.Stderr) != 0 {
		t.Fatalf("got stdout %q stderr %q exit %d", res.Stdout, res.Stderr, res.ExitCode)
	}
	if res.Duration <= 0 {
		t.Errorf("duration not measured: %v", res.Duration)
	}
	execs := srv.Execs()
	if len(execs) != 1 || execs[0].User != "root" || execs[0].Command != "echo hello world" {
		t.Fatalf("server saw %+v", execs)
	}
}

func TestRunJump(t *testing.T) {
	rig := newJumpRig(t, "r-7-VM")
	store := &sshexec.MemoryHostKeyStore{}
	var mu sync.Mutex
	var dialed []string
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, addr)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	e := newExecutor(t, sshexec.Config{HostSigner: rig.hostKey, HostKeys: store, Dialer: dialer})
	res, err := e.Run(context.Background(), rig.target, []string{"argv", "a b", "c"}, nil)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	var got []string
	if err := json.Unmarshal(res.Stdout, &got); err != nil || strings.Join(got, "|") != "a b|c" {
		t.Fatalf("argv arrived as %q (%v)", res.Stdout, err)
	}
	// Only the host was dialled from here; the link-local address was reached through it.
	mu.Lock()
	if len(dialed) != 1 || dialed[0] != rig.host.Addr() {
		t.Errorf("dialled %q, want only the host %s", dialed, rig.host.Addr())
	}
	mu.Unlock()
	// The command ran in the VM, reached through one forward on the host; nothing ran on the host.
	if h, v := rig.host.Stats(), rig.vm.Stats(); h.Execs != 0 || h.Forwards != 1 || v.Execs != 1 {
		t.Fatalf("host stats %+v, vm stats %+v", h, v)
	}
	// Both hops' host keys were recorded under their documented addresses.
	for addr, want := range map[string]ssh.PublicKey{
		rig.target.HostKeyAddress(): rig.host.HostKey(),
		"vm:r-7-VM":                 rig.vm.HostKey(),
	} {
		k, ok, _ := store.LookupHostKey(context.Background(), addr)
		if !ok || string(k) != string(want.Marshal()) {
			t.Errorf("host key for %s: recorded=%v, matches=%v", addr, ok, string(k) == string(want.Marshal()))
		}
	}
	if rig.target.HostKeyAddress() != net.JoinHostPort("127.0.0.1", strconv.Itoa(rig.host.Port())) {
		t.Errorf("host key address %q", rig.target.HostKeyAddress())
	}
}

// hostile arguments: each must arrive as exactly one argument, byte for byte.
var hostileArgs = []string{
	"; rm -rf /",
	"&& touch /tmp/sysvm-pwned",
	"$(touch /tmp/sysvm-pwned)",
	"`touch /tmp/sysvm-pwned`",
	"it's",
	`"double" and 'single'`,
	"'",
	"''",
	`\`,
	`\'`,
	"line1\nline2\n",
	"tab\there",
	"  leading and trailing  ",
	"",
	"*",
	"~root",
	"#comment",
	"$HOME ${PATH}",
	"a|b>c<d",
	"-rf",
	"ünïcødé ✓",
	"\x01\x7f\xff",
}

func TestRunHostileArgvArrivesIntact(t *testing.T) {
	srv := vmServer(t, "127.0.0.1:0", nil)
	rig := newJumpRig(t, "r-8-VM")
	e := newExecutor(t, sshexec.Config{HostSigner: rig.hostKey})
	for _, tgt := range []sshexec.Target{directTarget("v-2-VM", srv), rig.target} {
		argv := append([]string{"argv"}, hostileArgs...)
		res, err := e.Run(context.Background(), tgt, argv, nil)
		if err != nil {
			t.Fatalf("%s: run: %v", tgt, err)
		}
		if res.ExitCode != 0 {
			t.Fatalf("%s: exit %d, stderr %q", tgt, res.ExitCode, res.Stderr)
		}
		var got []string
		if err := json.Unmarshal(res.Stdout, &got); err != nil {
			t.Fatalf("%s: output %q: %v", tgt, res.Stdout, err)
		}
		if len(got) != len(hostileArgs) {
			t.Fatalf("%s: %d args arrived, want %d: %q", tgt, len(got), len(hostileArgs), got)
		}
		for i := range got {
			// JSON cannot carry the invalid UTF-8 byte \xff; it arrives as U+FFFD in the echo.
			want := strings.ToValidUTF8(hostileArgs[i], "\uFFFD")
			if got[i] != want {
				t.Errorf("%s: arg %d arrived as %q, want %q", tgt, i, got[i], want)
			}
		}
	}
	// The invalid-UTF-8 argument checked byte for byte on the server side, where argv is kept raw.
	last := srv.Execs()[len(srv.Execs())-1].Argv
	if last[len(last)-1] != "\x01\x7f\xff" {
		t.Errorf("raw last arg %q", last[len(last)-1])
	}
}

func TestRunNaiveJoinWouldBeRefused(t *testing.T) {
	// Guard for the test above: the server's parser is strict enough that an unquoted line
	// fails rather than being taken word for word.
	if _, err := sshexec.Split("argv " + strings.Join(hostileArgs, " ")); err == nil {
		t.Fatal("server parser accepted an unquoted hostile command line")
	}
}

func TestRunExitCodesStderrStdin(t *testing.T) {
	srv := vmServer(t, "127.0.0.1:0", nil)
	e := newExecutor(t, sshexec.Config{})
	tgt := directTarget("v-3-VM", srv)
	ctx := context.Background()
	cases := []struct {
		argv       []string
		stdin      []byte
		exit       int
		out, errOu string
	}{
		{[]string{"exit", "3"}, nil, 3, "", ""},
		{[]string{"exit", "255"}, nil, 255, "", ""},
		{[]string{"false"}, nil, 1, "", ""},
		{[]string{"stderr", "disk", "full"}, nil, 0, "", "disk full\n"},
		{[]string{"no-such-command"}, nil, 127, "", "sh: no-such-command: not found\n"},
		{[]string{"cat"}, []byte("line one\nline two\x00binary"), 0, "line one\nline two\x00binary", ""},
		{[]string{"cat"}, nil, 0, "", ""},
	}
	for _, c := range cases {
		res, err := e.Run(ctx, tgt, c.argv, c.stdin)
		if err != nil {
			t.Fatalf("%q: %v", c.argv, err)
		}
		if res.ExitCode != c.exit || string(res.Stdout) != c.out || string(res.Stderr) != c.errOu {
			t.Errorf("%q: exit %d stdout %q stderr %q; want %d %q %q", c.argv, res.ExitCode, res.Stdout, res.Stderr, c.exit, c.out, c.errOu)
		}
	}
	// A big stdin goes through whole (several SSH window sizes).
	big := []byte(strings.Repeat("0123456789abcdef", 1<<16)) // 1 MiB
	res, err := e.Run(ctx, tgt, []string{"cat"}, big)
	if err != nil || string(res.Stdout) != string(big) {
		t.Fatalf("1 MiB cat: err %v, got %d bytes", err, len(res.Stdout))
	}
}

func TestRunOutputCap(t *testing.T) {
	srv := vmServer(t, "127.0.0.1:0", nil)
	e := newExecutor(t, sshexec.Config{MaxOutputBytes: 10})
	res, err := e.Run(context.Background(), directTarget("v-4-VM", srv), []string{"echo", "0123456789ABCDEF"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "0123456789" || !res.Truncated {
		t.Fatalf("stdout %q truncated %v", res.Stdout, res.Truncated)
	}
}

func TestRunRejectsBadInputWithoutConnecting(t *testing.T) {
	srv := vmServer(t, "127.0.0.1:0", nil)
	e := newExecutor(t, sshexec.Config{})
	tgt := directTarget("v-5-VM", srv)
	for _, argv := range [][]string{nil, {}, {""}, {"echo", "a\x00b"}} {
		_, err := e.Run(context.Background(), tgt, argv, nil)
		if !errors.Is(err, hypervisors.ErrInvalid) || asError(t, err).Stage != sshexec.StageValidate {
			t.Errorf("argv %q: got %v, want invalid", argv, err)
		}
	}
	for _, bad := range []sshexec.Target{
		{VMName: "x"},
		{VMName: "x", LinkLocalControl: true, LinkLocalIP: "169.254.0.9"},
		{VMName: "x", LinkLocalControl: true, HostAddress: "127.0.0.1"},
		{VMName: "x", PrivateIP: "127.0.0.1", Port: 70000},
	} {
		_, err := e.Run(context.Background(), bad, []string{"true"}, nil)
		if !errors.Is(err, hypervisors.ErrInvalid) {
			t.Errorf("target %+v: got %v, want invalid", bad, err)
		}
	}
	if n := srv.Stats().Accepted; n != 0 {
		t.Fatalf("server accepted %d connections for invalid requests", n)
	}
}

func TestConnectErrors(t *testing.T) {
	e := newExecutor(t, sshexec.Config{ConnectTimeout: 300 * time.Millisecond})
	ctx := context.Background()

	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		_, err = e.Run(ctx, sshexec.Target{VMName: "v-9-VM", PrivateIP: "127.0.0.1", Port: port}, []string{"true"}, nil)
		se := asError(t, err)
		if se.Hop != sshexec.HopVM || se.Stage != sshexec.StageDial || !errors.Is(err, hypervisors.ErrUnreachable) || !hypervisors.Retryable(err) {
			t.Fatalf("got %v (hop %s stage %s)", err, se.Hop, se.Stage)
		}
	})

	t.Run("direct handshake timeout", func(t *testing.T) {
		ln := silentListener(t, "127.0.0.1:0")
		start := time.Now()
		_, err := e.Run(ctx, sshexec.Target{VMName: "v-9-VM", PrivateIP: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port}, []string{"true"}, nil)
		elapsed := time.Since(start)
		se := asError(t, err)
		if !errors.Is(err, sshexec.ErrConnectTimeout) || !errors.Is(err, hypervisors.ErrUnreachable) || se.Hop != sshexec.HopVM || se.Stage != sshexec.StageHandshake {
			t.Fatalf("got %v", err)
		}
		if elapsed < 250*time.Millisecond || elapsed > 3*time.Second {
			t.Fatalf("connect timeout took %v, want about 300ms", elapsed)
		}
	})

	t.Run("jump: host hangs", func(t *testing.T) {
		ln := silentListener(t, "127.0.0.1:0")
		tgt := sshexec.Target{VMName: "r-9-VM", LinkLocalControl: true, HostAddress: "127.0.0.1",
			HostPort: ln.Addr().(*net.TCPAddr).Port, LinkLocalIP: "127.0.0.2"}
		_, err := e.Run(ctx, tgt, []string{"true"}, nil)
		se := asError(t, err)
		if !errors.Is(err, sshexec.ErrConnectTimeout) || se.Hop != sshexec.HopHost || se.Stage != sshexec.StageHandshake {
			t.Fatalf("got %v", err)
		}
		if !strings.Contains(err.Error(), "host hop 127.0.0.1:") {
			t.Errorf("message does not name the host hop: %v", err)
		}
	})

	t.Run("jump: vm hangs behind host", func(t *testing.T) {
		rig := newJumpRig(t, "r-10-VM")
		ln := silentListener(t, "127.0.0.2:0")
		tgt := rig.target
		tgt.Port = ln.Addr().(*net.TCPAddr).Port
		e := newExecutor(t, sshexec.Config{HostSigner: rig.hostKey, ConnectTimeout: 300 * time.Millisecond})
		_, err := e.Run(ctx, tgt, []string{"true"}, nil)
		se := asError(t, err)
		if !errors.Is(err, sshexec.ErrConnectTimeout) || se.Hop != sshexec.HopVM || se.Stage != sshexec.StageHandshake ||
			!strings.Contains(se.Address, " via 127.0.0.1:") {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("jump: vm port closed", func(t *testing.T) {
		rig := newJumpRig(t, "r-11-VM")
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		tgt := rig.target
		tgt.Port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		e := newExecutor(t, sshexec.Config{HostSigner: rig.hostKey})
		_, err = e.Run(ctx, tgt, []string{"true"}, nil)
		se := asError(t, err)
		var oce *ssh.OpenChannelError
		if se.Hop != sshexec.HopVM || se.Stage != sshexec.StageDial || !errors.As(err, &oce) || oce.Reason != ssh.ConnectionFailed {
			t.Fatalf("got %v", err)
		}
		// The host connection is fine and stays pooled for the next VM on that host.
		if st := e.Stats(); st.Pooled != 1 || st.Open != 1 {
			t.Errorf("pool after refused forward: %+v", st)
		}
	})
}

// interruptRecorder wraps the builtins and reports how each sleep ended.
func interruptRecorder() (sshtest.ExecHandler, <-chan int) {
	codes := make(chan int, 10)
	return func(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
		code := sshtest.Builtins(argv, stdin, stdout, stderr)
		if argv[0] == "sleep" {
			codes <- code
		}
		return code
	}, codes
}

func TestRunTimeoutKillsSessionAndKeepsConnection(t *testing.T) {
	exec, codes := interruptRecorder()
	srv := vmServer(t, "127.0.0.1:0", exec)
	e := newExecutor(t, sshexec.Config{RunTimeout: 300 * time.Millisecond})
	tgt := directTarget("v-6-VM", srv)
	start := time.Now()
	res, err := e.Run(context.Background(), tgt, []string{"sleep", "20"}, nil)
	elapsed := time.Since(start)
	if !errors.Is(err, sshexec.ErrRunTimeout) || !errors.Is(err, context.DeadlineExceeded) || asError(t, err).Stage != sshexec.StageRun {
		t.Fatalf("got %v", err)
	}
	if res.ExitCode != -1 || elapsed > 3*time.Second {
		t.Fatalf("exit %d after %v", res.ExitCode, elapsed)
	}
	select {
	case code := <-codes:
		if code != 137 {
			t.Fatalf("remote sleep ended with %d, want 137 (interrupted)", code)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("remote command was not interrupted")
	}
	res, err = e.Run(context.Background(), tgt, []string{"echo", "after"}, nil)
	if err != nil || string(res.Stdout) != "after\n" || !res.Reused {
		t.Fatalf("run after timeout: %v %q reused=%v", err, res.Stdout, res.Reused)
	}
}

func TestRunCancellation(t *testing.T) {
	exec, codes := interruptRecorder()
	srv := vmServer(t, "127.0.0.1:0", exec)
	e := newExecutor(t, sshexec.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err := e.Run(ctx, directTarget("v-7-VM", srv), []string{"sleep", "20"}, nil)
	if !errors.Is(err, context.Canceled) || errors.Is(err, sshexec.ErrRunTimeout) {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("cancellation took %v", time.Since(start))
	}
	select {
	case code := <-codes:
		if code != 137 {
			t.Fatalf("remote sleep ended with %d", code)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("remote command was not interrupted by cancellation")
	}
	// A context already cancelled never connects.
	before := srv.Stats().Accepted
	_, err = e.Run(ctx, sshexec.Target{VMName: "v-8-VM", PrivateIP: "127.0.0.1", Port: srv.Port() + 0}, []string{"true"}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: got %v", err)
	}
	if srv.Stats().Accepted != before {
		t.Errorf("a cancelled context still dialled")
	}
}

func TestHostKeyTrustOnFirstUse(t *testing.T) {
	store := &sshexec.MemoryHostKeyStore{}
	first := vmServer(t, "127.0.0.1:0", nil)
	e := newExecutor(t, sshexec.Config{HostKeys: store, MaxConns: -1})
	ctx := context.Background()
	if _, err := e.Run(ctx, directTarget("s-1-VM", first), []string{"true"}, nil); err != nil {
		t.Fatal(err)
	}
	k, ok, _ := store.LookupHostKey(ctx, "vm:s-1-VM")
	if !ok || string(k) != string(first.HostKey().Marshal()) {
		t.Fatal("first use did not record the host key")
	}
	// Same key again: accepted.
	if _, err := e.Run(ctx, directTarget("s-1-VM", first), []string{"true"}, nil); err != nil {
		t.Fatalf("known key refused: %v", err)
	}
	// Another server (another key) answering for the same VM: refused, nothing runs.
	impostor := vmServer(t, "127.0.0.1:0", nil)
	_, err := e.Run(ctx, directTarget("s-1-VM", impostor), []string{"true"}, nil)
	var changed *sshexec.HostKeyChangedError
	if !errors.Is(err, sshexec.ErrHostKeyChanged) || !errors.As(err, &changed) || !errors.Is(err, hypervisors.ErrAuth) {
		t.Fatalf("changed key: got %v", err)
	}
	if hypervisors.Retryable(err) {
		t.Error("a changed host key must not be retried automatically")
	}
	msg := err.Error()
	for _, want := range []string{"vm:s-1-VM", ssh.FingerprintSHA256(first.HostKey()), ssh.FingerprintSHA256(impostor.HostKey())} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if impostor.Stats().Execs != 0 || impostor.Stats().Handshakes != 0 {
		t.Errorf("impostor got as far as %+v", impostor.Stats())
	}
	if k2, _, _ := store.LookupHostKey(ctx, "vm:s-1-VM"); string(k2) != string(k) {
		t.Error("the recorded key was overwritten")
	}
	// After the operator forgets the key (VM rebuilt), the new key is accepted and recorded.
	if err := store.ForgetHostKey(ctx, "vm:s-1-VM"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Run(ctx, directTarget("s-1-VM", impostor), []string{"true"}, nil); err != nil {
		t.Fatalf("after forget: %v", err)
	}

	// The jump host's key is checked the same way, and the error names the host hop.
	rig := newJumpRig(t, "r-20-VM")
	ej := newExecutor(t, sshexec.Config{HostKeys: store, HostSigner: rig.hostKey, MaxConns: -1})
	if err := store.RecordHostKey(ctx, rig.target.HostKeyAddress(), first.HostKey().Marshal()); err != nil {
		t.Fatal(err)
	}
	_, err = ej.Run(ctx, rig.target, []string{"true"}, nil)
	if !errors.Is(err, sshexec.ErrHostKeyChanged) || asError(t, err).Hop != sshexec.HopHost {
		t.Fatalf("changed host key on jump host: got %v", err)
	}
}

func TestWrongKeyIsAuthError(t *testing.T) {
	ctx := context.Background()
	srv := vmServer(t, "127.0.0.1:0", nil)
	wrong := newExecutor(t, sshexec.Config{Signer: sshtest.NewSigner(t)})
	_, err := wrong.Run(ctx, directTarget("v-10-VM", srv), []string{"true"}, nil)
	se := asError(t, err)
	if !errors.Is(err, hypervisors.ErrAuth) || errors.Is(err, sshexec.ErrHostKeyChanged) || se.Stage != sshexec.StageHandshake || se.Hop != sshexec.HopVM {
		t.Fatalf("got %v", err)
	}
	if hypervisors.KindName(err) != "Auth" || hypervisors.Retryable(err) {
		t.Errorf("kind %q retryable %v", hypervisors.KindName(err), hypervisors.Retryable(err))
	}
	if srv.Stats().AuthRejects == 0 || srv.Stats().Execs != 0 {
		t.Errorf("server stats %+v", srv.Stats())
	}

	// Jump: host accepts, VM refuses the key -> the VM hop is blamed.
	rig := newJumpRig(t, "r-21-VM")
	hostOnly := newExecutor(t, sshexec.Config{Signer: rig.hostKey})
	_, err = hostOnly.Run(ctx, rig.target, []string{"true"}, nil)
	if se := asError(t, err); !errors.Is(err, hypervisors.ErrAuth) || se.Hop != sshexec.HopVM {
		t.Fatalf("vm refuses: got %v", err)
	}
	// Jump: the host refuses -> the host hop is blamed.
	vmOnly := newExecutor(t, sshexec.Config{})
	_, err = vmOnly.Run(ctx, rig.target, []string{"true"}, nil)
	if se := asError(t, err); !errors.Is(err, hypervisors.ErrAuth) || se.Hop != sshexec.HopHost {
		t.Fatalf("host refuses: got %v", err)
	}
	if rig.vm.Stats().Execs != 0 {
		t.Error("a command ran despite failed auth")
	}
}

func TestPoolReuse(t *testing.T) {
	ctx := context.Background()
	srv := vmServer(t, "127.0.0.1:0", nil)
	e := newExecutor(t, sshexec.Config{})
	tgt := directTarget("v-11-VM", srv)
	for i := range 5 {
		res, err := e.Run(ctx, tgt, []string{"echo", strconv.Itoa(i)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Reused != (i > 0) {
			t.Errorf("run %d reused=%v", i, res.Reused)
		}
	}
	if n := srv.Stats().Accepted; n != 1 {
		t.Fatalf("5 runs made %d connections, want 1", n)
	}

	// Jump: three VMs behind one host share one host connection.
	rig := newJumpRig(t, "r-30-VM")
	vm2 := vmServer(t, "127.0.0.2:0", nil)
	vm3 := vmServer(t, "127.0.0.2:0", nil)
	ej := newExecutor(t, sshexec.Config{HostSigner: rig.hostKey})
	for round := range 2 {
		for i, vm := range []*sshtest.Server{rig.vm, vm2, vm3} {
			tgt := rig.target
			tgt.VMName = "r-" + strconv.Itoa(30+i) + "-VM"
			tgt.Port = vm.Port()
			if _, err := ej.Run(ctx, tgt, []string{"true"}, nil); err != nil {
				t.Fatalf("round %d vm %d: %v", round, i, err)
			}
		}
	}
	if h := rig.host.Stats(); h.Accepted != 1 || h.Forwards != 3 {
		t.Fatalf("host saw %+v, want 1 connection carrying 3 forwards", h)
	}
	if st := ej.Stats(); st.Pooled != 4 || st.Idle != 3 {
		// 1 host client (in use by its 3 tunnels) + 3 VM clients idle.
		t.Errorf("pool %+v", st)
	}
}

func TestPoolReconnectsAfterDrop(t *testing.T) {
	ctx := context.Background()
	srv := vmServer(t, "127.0.0.1:0", nil)
	e := newExecutor(t, sshexec.Config{})
	tgt := directTarget("v-12-VM", srv)
	if _, err := e.Run(ctx, tgt, []string{"true"}, nil); err != nil {
		t.Fatal(err)
	}
	srv.DropConnections() // the VM rebooted
	res, err := e.Run(ctx, tgt, []string{"echo", "back"}, nil)
	if err != nil || string(res.Stdout) != "back\n" {
		t.Fatalf("after drop: %v %q", err, res.Stdout)
	}
	if n := srv.Stats().Accepted; n != 2 {
		t.Fatalf("accepted %d, want 2", n)
	}

	// The same through a jump host whose connection dropped.
	rig := newJumpRig(t, "r-40-VM")
	ej := newExecutor(t, sshexec.Config{HostSigner: rig.hostKey})
	if _, err := ej.Run(ctx, rig.target, []string{"true"}, nil); err != nil {
		t.Fatal(err)
	}
	rig.host.DropConnections()
	if _, err := ej.Run(ctx, rig.target, []string{"true"}, nil); err != nil {
		t.Fatalf("after host drop: %v", err)
	}
	if n := rig.host.Stats().Accepted; n != 2 {
		t.Fatalf("host accepted %d, want 2", n)
	}
}

func TestPoolBounded(t *testing.T) {
	ctx := context.Background()
	e := newExecutor(t, sshexec.Config{MaxConns: 2})
	var servers []*sshtest.Server
	for i := range 4 {
		srv := vmServer(t, "127.0.0.1:0", nil)
		servers = append(servers, srv)
		if _, err := e.Run(ctx, directTarget("v-"+strconv.Itoa(50+i)+"-VM", srv), []string{"true"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if st := e.Stats(); st.Open != 2 || st.Pooled != 2 {
		t.Fatalf("pool %+v, want 2 open", st)
	}
	// The least recently used were evicted and closed; the server side sees it.
	eventually(t, "evicted connections to close", func() bool {
		return servers[0].Stats().Active == 0 && servers[1].Stats().Active == 0 &&
			servers[2].Stats().Active == 1 && servers[3].Stats().Active == 1
	})
}

func TestPoolConcurrentRunsStayBounded(t *testing.T) {
	ctx := context.Background()
	srv := vmServer(t, "127.0.0.1:0", nil)
	e := newExecutor(t, sshexec.Config{MaxSessionsPerConn: 3, MaxConnsPerAddress: 2})
	tgt := directTarget("v-60-VM", srv)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.Run(ctx, tgt, []string{"sleep", "0.2"}, nil)
			if err == nil && res.ExitCode != 0 {
				err = errors.New("exit " + strconv.Itoa(res.ExitCode))
			}
			if err != nil {
				errs <- err
			}
			_ = i
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// 20 concurrent runs needed more than 2 clients; the extra ones were temporary.
	if st := e.Stats(); st.Open > 2 || st.Pooled > 2 {
		t.Fatalf("pool after burst %+v, want at most 2", st)
	}
	if srv.Stats().Accepted < 3 {
		t.Errorf("expected temporary clients beyond the per-address bound, server accepted %d", srv.Stats().Accepted)
	}
	eventually(t, "temporary connections to close", func() bool { return srv.Stats().Active <= 2 })
}

func TestPoolIdleTimeoutAndClose(t *testing.T) {
	ctx := context.Background()
	srv := vmServer(t, "127.0.0.1:0", nil)
	e := newExecutor(t, sshexec.Config{IdleTimeout: 200 * time.Millisecond})
	tgt := directTarget("v-70-VM", srv)
	if _, err := e.Run(ctx, tgt, []string{"true"}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "idle client to close", func() bool { return e.Stats().Open == 0 && srv.Stats().Active == 0 })

	e2 := newExecutor(t, sshexec.Config{})
	if _, err := e2.Run(ctx, tgt, []string{"true"}, nil); err != nil {
		t.Fatal(err)
	}
	if srv.Stats().Active != 1 {
		t.Fatalf("active %d", srv.Stats().Active)
	}
	// Close ends in-flight runs too.
	done := make(chan error, 1)
	go func() {
		_, err := e2.Run(ctx, tgt, []string{"sleep", "20"}, nil)
		done <- err
	}()
	eventually(t, "sleep to start", func() bool { return srv.Stats().Execs == 3 })
	if err := e2.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("in-flight run succeeded after Close")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("in-flight run not ended by Close")
	}
	eventually(t, "server to see the close", func() bool { return srv.Stats().Active == 0 })
	if _, err := e2.Run(ctx, tgt, []string{"true"}, nil); !errors.Is(err, sshexec.ErrClosed) {
		t.Fatalf("run after close: %v", err)
	}
}

func TestNewRequiresHostKeysAndKey(t *testing.T) {
	if _, err := sshexec.New(sshexec.Config{Key: testKey(t)}); err == nil {
		t.Error("New without HostKeys succeeded")
	}
	if _, err := sshexec.New(sshexec.Config{HostKeys: &sshexec.MemoryHostKeyStore{}}); err == nil {
		t.Error("New without a key succeeded")
	}
}

func TestHostKeyTypeOfRecordedKeyIsPreferred(t *testing.T) {
	ctx := context.Background()
	rsaHostKey, err := testKey(t).Signer()
	if err != nil {
		t.Fatal(err)
	}
	edHostKey := sshtest.NewSigner(t)
	// A server with two host key types, as sshd has. Left alone the client would negotiate the
	// RSA one; the recorded ed25519 key must be the one checked.
	srv := sshtest.NewServer(t, sshtest.Options{
		HostKey: edHostKey, ExtraHostKeys: []ssh.Signer{rsaHostKey},
		AuthorizedKeys: []ssh.PublicKey{pubKey(t, testKey(t))},
	})
	store := &sshexec.MemoryHostKeyStore{}
	_ = store.RecordHostKey(ctx, "vm:v-80-VM", edHostKey.PublicKey().Marshal())
	e := newExecutor(t, sshexec.Config{HostKeys: store, MaxConns: -1})
	if _, err := e.Run(ctx, directTarget("v-80-VM", srv), []string{"true"}, nil); err != nil {
		t.Fatalf("recorded ed25519 key, server also has RSA: %v", err)
	}
	_ = store.RecordHostKey(ctx, "vm:v-81-VM", rsaHostKey.PublicKey().Marshal())
	if _, err := e.Run(ctx, directTarget("v-81-VM", srv), []string{"true"}, nil); err != nil {
		t.Fatalf("recorded RSA key, server also has ed25519: %v", err)
	}
	// A server whose key type changed altogether is still reached and refused by fingerprint.
	rsaOnly := sshtest.NewServer(t, sshtest.Options{HostKey: rsaHostKey, AuthorizedKeys: []ssh.PublicKey{pubKey(t, testKey(t))}})
	_, err = e.Run(ctx, directTarget("v-80-VM", rsaOnly), []string{"true"}, nil)
	if !errors.Is(err, sshexec.ErrHostKeyChanged) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(rsaHostKey.PublicKey())) {
		t.Fatalf("key type changed: %v", err)
	}
}

// endRecorder wraps the builtins and reports each command's name and status when it ends.
func endRecorder() (sshtest.ExecHandler, <-chan string) {
	ends := make(chan string, 10)
	return func(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
		code := sshtest.Builtins(argv, stdin, stdout, stderr)
		ends <- argv[0] + " " + strconv.Itoa(code)
		return code
	}, ends
}

// TestRemoteKill: against a server that, like OpenSSH for root, ignores signal requests and
// lets a command outlive its closed session, only RemoteKill stops a timed-out command.
func TestRemoteKill(t *testing.T) {
	ctx := context.Background()
	exec, ends := endRecorder()
	srv := sshtest.NewServer(t, sshtest.Options{
		AuthorizedKeys: []ssh.PublicKey{pubKey(t, testKey(t))}, Exec: exec, LikeOpenSSHRoot: true,
	})
	tgt := directTarget("r-90-VM", srv)

	plain := newExecutor(t, sshexec.Config{RunTimeout: 200 * time.Millisecond})
	if _, err := plain.Run(ctx, tgt, []string{"sleep", "20"}, nil); !errors.Is(err, sshexec.ErrRunTimeout) {
		t.Fatalf("plain: %v", err)
	}
	select {
	case end := <-ends:
		t.Fatalf("without RemoteKill the command should outlive the session on this server, but ended: %s", end)
	case <-time.After(1500 * time.Millisecond):
	}

	killing := newExecutor(t, sshexec.Config{RunTimeout: 200 * time.Millisecond, RemoteKill: true})
	start := time.Now()
	if _, err := killing.Run(ctx, tgt, []string{"sleep", "20"}, nil); !errors.Is(err, sshexec.ErrRunTimeout) {
		t.Fatalf("remote kill: %v", err)
	}
	execs := srv.Execs()
	if got := strings.Join(execs[len(execs)-1].Argv, " "); got != "timeout -s KILL 2 sleep 20" {
		t.Fatalf("wrapped command %q", got)
	}
	select {
	case end := <-ends:
		if end != "timeout 137" || time.Since(start) > 4*time.Second {
			t.Fatalf("remote command ended as %q after %v", end, time.Since(start))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RemoteKill did not stop the remote command")
	}
	// Commands that finish in time are unaffected by the wrapper.
	res, err := killing.Run(ctx, tgt, []string{"argv", "a b", "it's"}, nil)
	if err != nil || string(res.Stdout) != "[\"a b\",\"it's\"]\n" {
		t.Fatalf("wrapped argv: %v %q", err, res.Stdout)
	}
	// A shorter context deadline sets the remote limit.
	dctx, cancel := context.WithTimeout(ctx, 2500*time.Millisecond)
	defer cancel()
	killing2 := newExecutor(t, sshexec.Config{RunTimeout: time.Minute, RemoteKill: true})
	if _, err := killing2.Run(dctx, tgt, []string{"true"}, nil); err != nil {
		t.Fatal(err)
	}
	execs = srv.Execs()
	if got := execs[len(execs)-1].Argv; len(got) < 4 || got[3] != "4" {
		t.Fatalf("context deadline not used for the remote limit: %q", got)
	}
}
