// Command sysvm-bench measures sysvm on the embedded stack. `sysvm-bench health` runs basic
// router health sweeps over simulated fleets (real SSH on loopback, a Temporal dev server,
// SQLite or a scratch MySQL database, the `sysvm worker` as a separate process) and prints
// routers checked per second, sweep time, CPU seconds of the worker and of the Temporal
// server, and Temporal history events per sweep. See devcloud/bench.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sysvm/sysvm/devcloud/bench"
)

const usage = `sysvm-bench — benchmarks of sysvm on the embedded stack

Usage:
  sysvm-bench health [flags]   basic health sweeps over simulated fleets of routers
  sysvm-bench upgrade [flags]  a batched router upgrade's makespan against the ideal
  sysvm-bench template [flags] template download + checksum + seed of a 1 GiB image into two pools, against a plain copy

Run "sysvm-bench health -h" for the flags.
`

// basicInterval is the default router.health.checks.basic.interval: a sweep must fit well in it.
const basicInterval = 3 * time.Minute

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "health":
		err = runHealth(ctx, logger, os.Args[2:], os.Stdout)
	case "upgrade":
		err = runUpgrade(ctx, logger, os.Args[2:], os.Stdout)
	case "template":
		err = runTemplate(ctx, logger, os.Args[2:], os.Stdout)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		logger.Error("sysvm-bench failed", "error", err)
		os.Exit(1)
	}
}

// healthFlags are the flags of `sysvm-bench health`.
type healthFlags struct {
	routers     string
	perHost     int
	db          string
	concurrency int
	batch       int
	warm        int
	timeout     time.Duration
	jsonOut     bool
	temporalBin string
	sysvmBin    string
	keepLogs    string
	cpuProfile  string
	key         string
	workerEnv   envList
}

// envList is a repeatable KEY=VALUE flag.
type envList []string

func (e *envList) String() string { return strings.Join(*e, ",") }
func (e *envList) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("%q: want KEY=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

// healthReport is the machine-readable output of `sysvm-bench health --json`.
type healthReport struct {
	CPUs    int            `json:"cpus"`
	Kind    string         `json:"kind"`
	Results []bench.Result `json:"results"`
}

func runHealth(ctx context.Context, logger *slog.Logger, args []string, stdout io.Writer) error {
	var f healthFlags
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.StringVar(&f.routers, "routers", "1000,10000", "fleet sizes to measure, comma separated")
	fs.IntVar(&f.perHost, "per-host", bench.DefaultRoutersPerHost, "routers per simulated KVM host")
	fs.StringVar(&f.db, "db", "", "MySQL/MariaDB server DSN (mysql://root:@tcp(127.0.0.1:3306)/): a scratch database is created and dropped; default embedded SQLite")
	fs.IntVar(&f.concurrency, "concurrency", 0, "router.health.checks.sweep.concurrency (0 = the setting's default)")
	fs.IntVar(&f.batch, "batch", 0, "routers per batch activity, SweepInput.BatchSize (0 = the workflow's default)")
	fs.IntVar(&f.warm, "warm", bench.DefaultWarmSweeps, "warm sweeps measured after the cold one")
	fs.DurationVar(&f.timeout, "timeout", bench.DefaultSweepTimeout, "bound on each sweep")
	fs.BoolVar(&f.jsonOut, "json", false, "print JSON instead of a table")
	fs.StringVar(&f.temporalBin, "temporal-bin", os.Getenv("SYSVM_TEMPORAL_BIN"), "temporal CLI (SYSVM_TEMPORAL_BIN; default <repo>/bin/temporal, built by `go tool task build:temporal`)")
	fs.StringVar(&f.sysvmBin, "sysvm-bin", "", "sysvm command to run as the worker (default: go build ./cmd/sysvm into the user cache)")
	fs.StringVar(&f.keepLogs, "keep-logs", "", "copy the worker's and Temporal server's logs into this directory")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the simulated routers) to this file")
	fs.StringVar(&f.key, "key", bench.KeyRSA, "system VM key type the platform signs in with: rsa (its own RSA-3072, as in production), ecdsa (P-256) or ed25519")
	fs.Var(&f.workerEnv, "worker-env", "KEY=VALUE added to the worker's environment (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	sizes, err := parseSizes(f.routers)
	if err != nil {
		return err
	}
	if f.warm < 0 || f.concurrency < 0 || f.batch < 0 || f.perHost < 1 {
		return errors.New("--warm, --concurrency and --batch must not be negative, --per-host at least 1")
	}
	switch f.key {
	case bench.KeyRSA, bench.KeyECDSA, bench.KeyEd25519:
	default:
		return fmt.Errorf("--key %q: want rsa, ecdsa or ed25519", f.key)
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if f.temporalBin == "" {
		f.temporalBin = filepath.Join(root, "bin", "temporal")
	}
	if _, err := os.Stat(f.temporalBin); err != nil {
		return fmt.Errorf("temporal CLI not found at %s (build it with `go tool task build:temporal`): %w", f.temporalBin, err)
	}
	if f.sysvmBin == "" {
		if f.sysvmBin, err = buildSysvm(ctx, root, logger); err != nil {
			return err
		}
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	warm := f.warm
	if warm == 0 {
		warm = -1 // bench.Options: <0 is none
	}
	rep := healthReport{CPUs: runtime.NumCPU(), Kind: "basic"}
	for _, n := range sizes {
		r, err := bench.Run(ctx, bench.Options{Routers: n, RoutersPerHost: f.perHost, DB: f.db, TemporalBin: f.temporalBin,
			SysvmBin: f.sysvmBin, Concurrency: f.concurrency, BatchSize: f.batch, WarmSweeps: warm, SweepTimeout: f.timeout,
			Key: f.key, WorkerEnv: f.workerEnv, KeepLogs: f.keepLogs, Logger: logger})
		if err != nil {
			return err
		}
		rep.Results = append(rep.Results, r)
	}
	if f.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return printTable(stdout, rep)
}

// parseSizes reads "1000,10000".
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > bench.MaxRouters {
			return nil, fmt.Errorf("--routers: %q is not a fleet size from 1 to %d", p, bench.MaxRouters)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("--routers: no fleet size given")
	}
	return out, nil
}

// moduleRoot finds the sysvm module's directory from the working directory upwards.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/sysvm/sysvm\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run sysvm-bench inside the sysvm repository (no go.mod of github.com/sysvm/sysvm above the working directory)")
		}
		dir = parent
	}
}

// buildSysvm builds ./cmd/sysvm into the user cache directory (go build skips the link when
// the binary there is up to date) and returns its path.
func buildSysvm(ctx context.Context, root string, logger *slog.Logger) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "sysvm-bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "sysvm")
	logger.Info("building the worker", "bin", out)
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, "go", "build", "-o", out, "./cmd/sysvm")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/sysvm: %w\n%s", err, b)
	}
	return out, nil
}

// printTable writes one line per fleet size and sweep, with the settings used.
func printTable(w io.Writer, rep healthReport) error {
	if len(rep.Results) == 0 {
		return nil
	}
	r0 := rep.Results[0]
	fmt.Fprintf(w, "sysvm health sweep benchmark: basic checks over one zone, %d routers per simulated KVM host, %s database, %s system VM key, %d CPUs\n",
		max(1, r0.Routers/max(1, r0.Hosts)), r0.Database, r0.Key, rep.CPUs)
	fmt.Fprintf(w, "settings: batch size %d routers per activity, sweep concurrency %d routers at once\n", r0.BatchSize, r0.Concurrency)
	fmt.Fprintln(w, "cpu columns: CPU seconds used during the sweep by the `sysvm worker` process, the Temporal dev server,")
	fmt.Fprintln(w, "the simulated routers (the bench process) and everything else on the machine (other users)")
	fmt.Fprintln(w, "cold: the first sweep after the worker starts (no pooled SSH connection, host keys recorded on first use,")
	fmt.Fprintln(w, "each router sent its configuration before its checks); warm: the sweeps after it (the steady state)")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "routers\thosts\tsweep\twall s\trouters/s\tworker cpu\ttemporal cpu\tfleet cpu\tother cpu\tload\tevents\truns\tbatches\tchecked\t")
	for _, r := range rep.Results {
		for _, s := range r.Sweeps {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%.2f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%d\t%d\t%d\t\n",
				r.Routers, r.Hosts, s.Phase, s.WallSeconds, s.RoutersPerSecond, s.WorkerCPU, s.TemporalCPU, s.FleetCPU,
				s.OtherCPU, s.LoadAverage, s.HistoryEvents, s.Runs, s.Batches, s.Checked)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, r := range rep.Results {
		for _, s := range r.Sweeps {
			if s.Phase != bench.PhaseWarm {
				continue
			}
			fmt.Fprintf(w, "%d routers: a warm sweep takes %.0f%% of the %s basic interval (setup: seed %.1fs, fleet %.1fs)\n",
				r.Routers, 100*s.WallSeconds/basicInterval.Seconds(), basicInterval, r.SeedSeconds, r.FleetSeconds)
			break
		}
	}
	return nil
}
