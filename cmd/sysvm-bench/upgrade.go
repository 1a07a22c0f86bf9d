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
// P on the embedded stack (real workflows, recreate and health gate; a simulated XenServer
// pool with a real pool's clone and boot latency injected; routers over real SSH), against
// ceil(N/P) × one router's upgrade measured alone.
func runUpgrade(ctx context.Context, logger *slog.Logger, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("upgrade", flag.ContinueOnError)
	n := fs.Int("routers", 1000, "routers to upgrade")
	p := fs.Int("parallelism", 50, "routers in flight at once")
	perHost := fs.Int("per-host", bench.DefaultRoutersPerHost, "routers per simulated XenServer host")
	clone := fs.Duration("clone-latency", bench.DefaultCloneLatency, "time each VM.clone takes in the XAPI simulator (-1s: none)")
	boot := fs.Duration("boot-latency", bench.DefaultBootLatency, "time each VM.start takes in the XAPI simulator (-1s: none)")
	profile := fs.String("cpuprofile", "", "write the CPU profile of the measured upgrade here (labels: "+bench.ProfileRoleKey+")")
	db := fs.String("db", "", "mysql://user:pass@tcp(host:port)/ to use a scratch MySQL/MariaDB database (default: SQLite)")
	jsonOut := fs.Bool("json", false, "print JSON instead of text")
	bin := fs.String("temporal-bin", os.Getenv("SYSVM_TEMPORAL_BIN"), "temporal CLI (SYSVM_TEMPORAL_BIN; default <repo>/bin/temporal)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *n < 1 || *n > bench.MaxRouters-2 || *p < 1 || *p > 1000 || *perHost < 1 {
		return fmt.Errorf("--routers 1..%d, --parallelism 1..1000 and --per-host ≥ 1 are required", bench.MaxRouters-2)
	}
	if *clone == 0 || *boot == 0 {
		return fmt.Errorf("--clone-latency and --boot-latency: 0 means the default; give -1s for none")
	}
	if *bin == "" {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		*bin = filepath.Join(root, "bin", "temporal")
	}
	res, err := bench.RunUpgrade(ctx, bench.UpgradeOptions{Routers: *n, Parallelism: *p, RoutersPerHost: *perHost, DB: *db,
		CloneLatency: *clone, BootLatency: *boot, TemporalBin: *bin, CPUProfile: *profile, Logger: logger})
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	fmt.Fprintf(stdout, "routers %d on %d simulated XenServer hosts, parallelism %d, %s; injected: VM.clone %s, VM.start %s\n",
		res.Routers, res.Hosts, res.Parallelism, res.Database, res.CloneLatency, res.BootLatency)
	fmt.Fprintf(stdout, "one router alone:     %s\n", ms(res.Single))
	fmt.Fprintf(stdout, "makespan:             %s\n", ms(res.Makespan))
	fmt.Fprintf(stdout, "ideal ceil(N/P)×one:  %s\n", ms(res.Ideal))
	fmt.Fprintf(stdout, "ratio:                %.3f (target ≤ 1.05)\n", res.Ratio)
	fmt.Fprintf(stdout, "worker CPU:           %s (%s a router); simulators %s, other %s; process %s\n",
		ms(res.WorkerCPU), ms(res.WorkerCPUPerRouter), ms(res.SimulatorCPU), ms(res.OtherCPU), ms(res.ProcessCPU))
	fmt.Fprintf(stdout, "Temporal server CPU:  %s (%s a router)\n", ms(res.TemporalCPU), ms(res.TemporalCPUPerRouter))
	fmt.Fprintf(stdout, "history events:       %d over %d runs (continue-as-new); routers' recreate runs %d\n",
		res.HistoryEvents, res.Runs, res.ChildEvents)
	fmt.Fprintf(stdout, "max in flight:        %d; done %d; load average %.1f at the start\n", res.MaxInFlight, res.Done, res.LoadAverage)
	res.SingleBreakdown.Print(stdout, "one router alone")
	res.BatchBreakdown.Print(stdout, "the upgrade")
	return nil
}
