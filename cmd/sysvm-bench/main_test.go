package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sysvm/sysvm/devcloud/bench"
	"github.com/sysvm/sysvm/internal/testenv"
)

// TestHealthBenchSmoke runs the whole benchmark on a fleet of 50 routers: Temporal dev server,
// SQLite, simulated routers over real SSH, `sysvm worker` as its own process, a cold and a warm
// sweep. It asserts that each sweep checked every router (the benchmark verifies the database
// itself and fails otherwise) and that the figures are measured, not zero.
func TestHealthBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Temporal dev server and builds the sysvm worker")
	}
	bin, err := testenv.TemporalBinary()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	logger := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	require.NoError(t, runHealth(ctx, logger, []string{"--routers", "50", "--per-host", "10", "--json",
		"--temporal-bin", bin, "--timeout", "2m"}, &out))

	var rep healthReport
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
	require.Len(t, rep.Results, 1)
	r := rep.Results[0]
	assert.Equal(t, 50, r.Routers)
	assert.Equal(t, 5, r.Hosts)
	assert.Equal(t, "sqlite", r.Database)
	require.Len(t, r.Sweeps, 2)
	assert.Equal(t, bench.PhaseCold, r.Sweeps[0].Phase)
	assert.Equal(t, bench.PhaseWarm, r.Sweeps[1].Phase)
	for _, s := range r.Sweeps {
		assert.Equal(t, 50, s.Checked, s.Phase)
		assert.Equal(t, 50, s.Summary.Routers, s.Phase)
		assert.Equal(t, 50, s.Summary.Reachable, s.Phase)
		assert.Zero(t, s.Summary.Errors, s.Phase)
		assert.Greater(t, s.WallSeconds, 0.0, s.Phase)
		assert.InDelta(t, 50/s.WallSeconds, s.RoutersPerSecond, 1e-6, s.Phase)
		// A one-batch sweep: started, settings, a page of IDs, a batch, completed.
		assert.Greater(t, s.HistoryEvents, 10, s.Phase)
		assert.Equal(t, 1, s.Runs, s.Phase)
		assert.Equal(t, 1, s.Batches, s.Phase)
	}
	// The cold sweep makes 100 SSH connections with RSA sign-ins in the worker and serves them
	// in this process: both use measurable CPU.
	assert.Greater(t, r.Sweeps[0].WorkerCPU, 0.0)
	assert.Greater(t, r.Sweeps[0].FleetCPU, 0.0)
}

// TestUpgradeBenchSmoke runs the upgrade benchmark on 3 routers at parallelism 2 with short
// injected latencies: the real workflows, recreate and gate on the XAPI simulator and the
// fleet. The benchmark verifies the upgrade itself (every router done, at the new version,
// once on the pool from the new template); here the figures are checked to be measured: each
// router's time includes the injected clone and boot, two routers ran at once, and CPU and
// history were counted.
func TestUpgradeBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Temporal dev server, the XAPI simulator and a fleet")
	}
	bin, err := testenv.TemporalBinary()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out bytes.Buffer
	logger := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	require.NoError(t, runUpgrade(ctx, logger, []string{"--routers", "3", "--parallelism", "2", "--per-host", "2",
		"--clone-latency", "100ms", "--boot-latency", "300ms", "--json", "--temporal-bin", bin}, &out))
	var r bench.UpgradeResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &r), out.String())
	assert.Equal(t, 3, r.Routers)
	assert.Equal(t, 3, r.Hosts) // 3 + 2 warm-up routers, 2 a host
	assert.Equal(t, 3, r.Done)
	assert.GreaterOrEqual(t, r.Single, 400*time.Millisecond, "one router's upgrade pays the clone and the boot")
	assert.Equal(t, 2*r.Single, r.Ideal) // ceil(3/2) waves
	assert.InDelta(t, float64(r.Makespan)/float64(r.Ideal), r.Ratio, 1e-9)
	assert.Equal(t, 2, r.MaxInFlight)
	assert.Equal(t, 1, r.Runs)
	assert.Greater(t, r.HistoryEvents, 20)
	assert.Greater(t, r.ChildEvents, 3*20, "three recreate runs of a dozen activities each")
	assert.Positive(t, r.WorkerCPU)
	assert.Positive(t, r.TemporalCPU)
	assert.GreaterOrEqual(t, r.ProcessCPU, r.WorkerCPU+r.SimulatorCPU)
	// Where the time went, from the histories: the parts of a recreate run add up to it, the
	// boot's injected latency is in the start step, the gate and the upgrade's tasks are seen.
	for name, b := range map[string]bench.Breakdown{"alone": r.SingleBreakdown, "upgrade": r.BatchBreakdown} {
		var sum time.Duration
		for _, d := range b.Parts {
			sum += d
		}
		assert.InDelta(t, float64(b.ChildRun), float64(sum), float64(time.Millisecond), "%s: parts %v", name, b.Parts)
		assert.GreaterOrEqual(t, b.Parts["activity run: RecreateStep start-replacement"], 300*time.Millisecond, name)
		assert.Positive(t, b.GateRun, name)
		assert.Positive(t, b.UpgradeWFTs, name)
		assert.LessOrEqual(t, b.Recreate+b.Gate, b.Total+time.Millisecond, name)
	}
	assert.Equal(t, 1, r.SingleBreakdown.Routers)
	assert.Equal(t, 3, r.BatchBreakdown.Routers)
}

func TestRunUpgradeRefusesBadFlags(t *testing.T) {
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	var out bytes.Buffer
	assert.ErrorContains(t, runUpgrade(ctx, logger, []string{"--routers", "0"}, &out), "--routers")
	assert.ErrorContains(t, runUpgrade(ctx, logger, []string{"--parallelism", "1001"}, &out), "--parallelism")
	assert.ErrorContains(t, runUpgrade(ctx, logger, []string{"--boot-latency", "0s"}, &out), "--boot-latency")
	assert.ErrorContains(t, runUpgrade(ctx, logger, []string{"extra"}, &out), "unexpected arguments")
	assert.Empty(t, out.String())
}

func TestParseSizes(t *testing.T) {
	got, err := parseSizes("1000, 10000,")
	require.NoError(t, err)
	assert.Equal(t, []int{1000, 10000}, got)
	for _, bad := range []string{"", "0", "x", "-5", "70000"} {
		_, err := parseSizes(bad)
		assert.Error(t, err, bad)
	}
}

func TestRunHealthRefusesBadFlags(t *testing.T) {
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	var out bytes.Buffer
	assert.ErrorContains(t, runHealth(ctx, logger, []string{"--routers", "abc"}, &out), "--routers")
	assert.ErrorContains(t, runHealth(ctx, logger, []string{"--warm", "-1"}, &out), "negative")
	assert.ErrorContains(t, runHealth(ctx, logger, []string{"--key", "dsa"}, &out), "--key")
	assert.ErrorContains(t, runHealth(ctx, logger, []string{"extra"}, &out), "unexpected arguments")
	assert.Empty(t, out.String())
}

// testWriter sends the benchmark's logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
