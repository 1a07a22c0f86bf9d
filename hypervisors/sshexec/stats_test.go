package sshexec_test

import (
	"context"
	"net"
	"testing"

	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/hypervisors/sshexec/sshtest"
)

// Failed connections are counted by hop, stage and reason, for the metrics.
func TestConnectErrorsCountedByHopAndReason(t *testing.T) {
	ctx := context.Background()
	counts := func(e *sshexec.Executor) map[sshexec.ConnectErrorCount]bool {
		out := map[sshexec.ConnectErrorCount]bool{}
		for _, c := range e.ConnectErrors() {
			out[c] = true
		}
		return out
	}

	// A refused key on a VM reached directly, twice; then a closed port.
	srv := vmServer(t, "127.0.0.1:0", nil)
	wrong := newExecutor(t, sshexec.Config{Signer: sshtest.NewSigner(t)})
	for range 2 {
		if _, err := wrong.Run(ctx, directTarget("v-10-VM", srv), []string{"true"}, nil); err == nil {
			t.Fatal("a wrong key was accepted")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := directTarget("v-11-VM", srv)
	closed.Port = ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	if _, err := wrong.Run(ctx, closed, []string{"true"}, nil); err == nil {
		t.Fatal("a closed port answered")
	}
	got := counts(wrong)
	for _, want := range []sshexec.ConnectErrorCount{
		{Hop: sshexec.HopVM, Stage: sshexec.StageHandshake, Reason: sshexec.ReasonAuth, Count: 2},
		{Hop: sshexec.HopVM, Stage: sshexec.StageDial, Reason: sshexec.ReasonUnreachable, Count: 1},
	} {
		if !got[want] {
			t.Errorf("connect errors %v lack %+v", wrong.ConnectErrors(), want)
		}
	}
	if len(got) != 2 {
		t.Errorf("connect errors %v, want the two above only", wrong.ConnectErrors())
	}

	// Through a jump host that refuses the key: the host hop is counted.
	rig := newJumpRig(t, "r-21-VM")
	vmOnly := newExecutor(t, sshexec.Config{})
	if _, err := vmOnly.Run(ctx, rig.target, []string{"true"}, nil); err == nil {
		t.Fatal("the host accepted a wrong key")
	}
	if got := vmOnly.ConnectErrors(); len(got) != 1 || got[0] != (sshexec.ConnectErrorCount{Hop: sshexec.HopHost,
		Stage: sshexec.StageHandshake, Reason: sshexec.ReasonAuth, Count: 1}) {
		t.Errorf("connect errors through a refusing host = %+v", got)
	}

	// A successful run counts nothing.
	good := newExecutor(t, sshexec.Config{})
	if _, err := good.Run(ctx, directTarget("v-12-VM", srv), []string{"true"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := good.ConnectErrors(); len(got) != 0 {
		t.Errorf("connect errors after a good run = %+v", got)
	}
}
