package sshexec_test

import (
	"context"
	"testing"

	"github.com/sysvm/sysvm/hypervisors/sshexec"
)

func benchRun(b *testing.B, maxConns int, jump bool) {
	var tgt sshexec.Target
	cfg := sshexec.Config{MaxConns: maxConns}
	if jump {
		rig := newJumpRig(b, "r-1-VM")
		tgt, cfg.HostSigner = rig.target, rig.hostKey
	} else {
		tgt = directTarget("v-1-VM", vmServer(b, "127.0.0.1:0", nil))
	}
	e := newExecutor(b, cfg)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		res, err := e.Run(ctx, tgt, []string{"echo", "ok"}, nil)
		if err != nil || string(res.Stdout) != "ok\n" {
			b.Fatalf("%v %q", err, res.Stdout)
		}
	}
}

func BenchmarkRunDirectPooled(b *testing.B) { benchRun(b, 0, false) }
func BenchmarkRunDirectFresh(b *testing.B)  { benchRun(b, -1, false) }
func BenchmarkRunJumpPooled(b *testing.B)   { benchRun(b, 0, true) }
func BenchmarkRunJumpFresh(b *testing.B)    { benchRun(b, -1, true) }

func BenchmarkGenerateKeyPair(b *testing.B) {
	for b.Loop() {
		if _, err := sshexec.GenerateKeyPair(); err != nil {
			b.Fatal(err)
		}
	}
}
