package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
)

// benchRoutersPerHost is how many simulated routers share one simulated KVM host.
const benchRoutersPerHost = 50

// benchParallel is how many routers are checked at once.
const benchParallel = 32

// BenchmarkFleetBasicRun runs `sysvm-agent run basic` on every router of a simulated fleet
// through real SSH (host, then a direct-tcpip jump to the router's link-local address and a
// second SSH handshake), benchParallel routers at a time, and reports routers checked per
// second. Each basic run includes the sample custom check, a real /bin/sh process.
//
//   - fresh-router-ssh: one SSH connection per host is kept; every router run makes a new
//     router SSH connection through it (what CloudStack does: one ssh per command);
//   - sshexec-pooled: the platform's executor (hypervisors/sshexec) with its connection pool,
//     so after the first round router connections are reused.
//
// SYSVM_FLEET_BENCH_ROUTERS sets the fleet size (default 200).
func BenchmarkFleetBasicRun(b *testing.B) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("SYSVM_FLEET_BENCH_ROUTERS")); err == nil && v > 0 {
		n = v
	}
	kp, err := sshexec.GenerateKeyPair()
	if err != nil {
		b.Fatal(err)
	}
	key, err := kp.Signer()
	if err != nil {
		b.Fatal(err)
	}
	f := testFleet(b, key, Options{})
	ids := make([]string, n)
	for i := range n {
		spec := kvmSpec(i, fmt.Sprintf("bench-host-%d", i/benchRoutersPerHost))
		if err := f.Add(spec); err != nil {
			b.Fatal(err)
		}
		ids[i] = spec.ID
	}
	exec, err := sshexec.New(sshexec.Config{Key: kp, HostKeys: &sshexec.MemoryHostKeyStore{}, Dialer: f.DialContext,
		MaxConns: n + len(f.Hosts()) + 8, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer exec.Close()
	ctx := context.Background()
	targets := make([]sshexec.Target, n)
	for i, id := range ids {
		if targets[i], err = f.Target(id); err != nil {
			b.Fatal(err)
		}
		spec, _ := f.Spec(id)
		cfg, _ := json.Marshal(spec.Config())
		res, err := exec.Run(ctx, targets[i], []string{"sysvm-agent", "push-config"}, cfg)
		if err != nil || res.ExitCode != 0 {
			b.Fatalf("push-config %s: %v %s", id, err, res.Stderr)
		}
	}

	check := func(id string, stdout []byte) error {
		var run agent.Run
		if err := json.Unmarshal(stdout, &run); err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		if len(run.Failed()) > 0 || len(run.Results) == 0 {
			return fmt.Errorf("%s: failed checks %+v", id, run.Failed())
		}
		return nil
	}

	b.Run(fmt.Sprintf("fresh-router-ssh/routers=%d", n), func(b *testing.B) {
		hosts := map[string]*ssh.Client{}
		for _, h := range f.Hosts() {
			c, err := ssh.Dial("tcp", f.HostAddr(h), clientConfig(f, key, "root"))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			hosts[h] = c
		}
		specs := make([]RouterSpec, n)
		for i, id := range ids {
			specs[i], _ = f.Spec(id)
		}
		runOne := func(i int) error {
			s := specs[i]
			addr := net.JoinHostPort(s.LinkLocalIP, "3922")
			conn, err := hosts[s.HostName].Dial("tcp", addr)
			if err != nil {
				return err
			}
			c, chans, reqs, err := ssh.NewClientConn(conn, addr, clientConfig(f, key, "root"))
			if err != nil {
				return err
			}
			client := ssh.NewClient(c, chans, reqs)
			defer client.Close()
			code, stdout, stderr, err := remote(client, nil, "sysvm-agent", "run", "basic")
			if err != nil || code != 0 {
				return fmt.Errorf("%s: exit %d %v %s", s.ID, code, err, stderr)
			}
			return check(s.ID, []byte(stdout))
		}
		benchFleet(b, n, runOne)
	})

	b.Run(fmt.Sprintf("sshexec-pooled/routers=%d", n), func(b *testing.B) {
		runOne := func(i int) error {
			res, err := exec.Run(ctx, targets[i], []string{"sysvm-agent", "run", "basic"}, nil)
			if err != nil || res.ExitCode != 0 {
				return fmt.Errorf("%s: exit %d %v %s", ids[i], res.ExitCode, err, res.Stderr)
			}
			return check(ids[i], res.Stdout)
		}
		benchFleet(b, n, runOne)
	})
}

// benchFleet runs runOne over all n routers b.N times, benchParallel at a time, and reports
// routers/s and the mean time per router.
func benchFleet(b *testing.B, n int, runOne func(i int) error) {
	b.ResetTimer()
	start := time.Now()
	var busy atomic.Int64
	for range b.N {
		next := atomic.Int64{}
		var wg sync.WaitGroup
		errs := make(chan error, benchParallel)
		for range benchParallel {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					t0 := time.Now()
					if err := runOne(i); err != nil {
						errs <- err
						return
					}
					busy.Add(int64(time.Since(t0)))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	total := float64(n * b.N)
	b.ReportMetric(total/elapsed.Seconds(), "routers/s")
	b.ReportMetric(float64(busy.Load())/total/1e6, "ms/router")
}
