package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/sysvm/sysvm/devcloud/bench"
)

// runUpgrade is `sysvm-bench upgrade`: one batched router upgrade of N routers at parallelism
// P with a fixed per-router latency, against ceil(N/P) × one router's upgrade measured alone.
func runUpgrade(ctx context.Context, logger *slog.Logger, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("upgrade", flag.ContinueOnError)
	n := fs.Int("routers", 1000, "routers to upgrade")
	p := fs.Int("parallelism", 50, "routers in flight at once")
	lat := fs.Duration("latency", 2*time.Second, "fixed time of each router's recreate")
	jsonOut := fs.Bool("json", false, "print JSON instead of text")
	bin := fs.String("temporal-bin", os.Getenv("SYSVM_TEMPORAL_BIN"), "temporal CLI (SYSVM_TEMPORAL_BIN; default <repo>/bin/temporal)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bin == "" {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		*bin = filepath.Join(root, "bin", "temporal")
	}
	if *n < 1 || *n > bench.MaxRouters || *p < 1 || *lat <= 0 {
		return fmt.Errorf("--routers 1..%d, --parallelism ≥ 1 and --latency > 0 are required", bench.MaxRouters)
	}
	res, err := bench.RunUpgrade(ctx, bench.UpgradeOptions{Routers: *n, Parallelism: *p, Latency: *lat, TemporalBin: *bin, Logger: logger})
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(stdout, "routers %d, parallelism %d, injected latency %s per router\n", res.Routers, res.Parallelism, res.Latency)
	fmt.Fprintf(stdout, "one router alone:  %s\n", res.Single.Round(time.Millisecond))
	fmt.Fprintf(stdout, "makespan:          %s\n", res.Makespan.Round(time.Millisecond))
	fmt.Fprintf(stdout, "ideal ceil(N/P)×1: %s\n", res.Ideal.Round(time.Millisecond))
	fmt.Fprintf(stdout, "ratio:             %.3f\n", res.Ratio)
	fmt.Fprintf(stdout, "worker CPU:        %s (Temporal server %s)\n", res.WorkerCPU.Round(time.Millisecond), res.TemporalCPU.Round(time.Millisecond))
	fmt.Fprintf(stdout, "history events:    %d over %d runs (continue-as-new)\n", res.HistoryEvents, res.Runs)
	fmt.Fprintf(stdout, "max in flight:     %d; done %d\n", res.MaxInFlight, res.Done)
	return nil
}
