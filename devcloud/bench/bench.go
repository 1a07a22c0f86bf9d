// Package bench measures router health sweeps on the embedded stack: a Temporal dev server,
// SQLite (or a scratch MySQL database), a simulated fleet of routers reachable over real SSH
// on loopback, and the production `sysvm worker` as a separate process, so the CPU time of
// the worker, of the Temporal server and of the simulated routers is measured apart. It backs
// `sysvm-bench health` (cmd/sysvm-bench).
package bench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/codec"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/devcloud/temporaldev"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// Phases of a measured sweep.
const (
	// PhaseCold is the first basic sweep after the worker starts: no pooled SSH connection, no
	// recorded host key, no configuration pushed to the routers yet (each router is sent its
	// configuration, then checked), as after a deployment.
	PhaseCold = "cold"
	// PhaseWarm is a basic sweep after that: host keys known and configurations in place, the
	// steady state every basic interval.
	PhaseWarm = "warm"
)

// Defaults of Options.
const (
	DefaultSweepTimeout = 15 * time.Minute
	DefaultWarmSweeps   = 1
	// workerReadyTimeout bounds the worker's start: polling its task queue, schedules synced.
	workerReadyTimeout = 90 * time.Second
	// workerStopTimeout is how long a worker gets to stop after an interrupt before it is killed.
	workerStopTimeout = 15 * time.Second
)

// Options configure the benchmark of one fleet size.
type Options struct {
	// Routers is the fleet size (required, 1 to MaxRouters).
	Routers int
	// RoutersPerHost places this many routers on one simulated KVM host (0 = DefaultRoutersPerHost).
	RoutersPerHost int
	// DB is "" for an embedded SQLite database in a temporary directory, or the mysql:// DSN of
	// a MySQL or MariaDB server, on which a scratch database is created and dropped afterwards.
	DB string
	// TemporalBin is the temporal CLI (bin/temporal); SysvmBin the built sysvm command. Required.
	TemporalBin string
	SysvmBin    string
	// Concurrency sets router.health.checks.sweep.concurrency (0 keeps the default).
	Concurrency int
	// BatchSize is SweepInput.BatchSize (0 = workflows.DefaultSweepBatchSize).
	BatchSize int
	// WarmSweeps is how many warm sweeps follow the cold one (0 = DefaultWarmSweeps, <0 none).
	WarmSweeps int
	// SweepTimeout bounds each sweep (0 = DefaultSweepTimeout).
	SweepTimeout time.Duration
	// Key is the type of the system VM key pair the platform signs in with on both SSH hops:
	// "" or KeyRSA lets the platform generate its own (RSA-3072, see sshexec.RSAKeyBits);
	// KeyECDSA (P-256) and KeyEd25519 store one of that type first, to compare.
	Key string
	// WorkerEnv is added to the worker's environment (e.g. SYSVM_LOG_LEVEL=debug).
	WorkerEnv []string
	// KeepLogs copies the worker's and the Temporal server's logs to this directory ("" = not kept).
	KeepLogs string
	// Logger receives progress (default slog.Default()).
	Logger *slog.Logger
}

// Result is the benchmark of one fleet size.
type Result struct {
	Routers  int    `json:"routers"`
	Hosts    int    `json:"hosts"`
	Database string `json:"database"`
	// Key is the system VM key type ("rsa-3072", "ecdsa-p256", "ed25519").
	Key string `json:"key"`
	// BatchSize and Concurrency are the values the sweeps used.
	BatchSize   int `json:"batchSize"`
	Concurrency int `json:"concurrency"`
	// SeedSeconds is the time to write the inventory; FleetSeconds to start the simulated routers.
	SeedSeconds  float64 `json:"seedSeconds"`
	FleetSeconds float64 `json:"fleetSeconds"`
	Sweeps       []Sweep `json:"sweeps"`
}

// Sweep is one measured basic sweep.
type Sweep struct {
	Phase      string `json:"phase"`
	WorkflowID string `json:"workflowId"`
	// WallSeconds from the start request to the result; RoutersPerSecond is Routers / WallSeconds.
	WallSeconds      float64 `json:"wallSeconds"`
	RoutersPerSecond float64 `json:"routersPerSecond"`
	// CPU seconds used during the sweep by the worker process, the Temporal dev server, this
	// process (the simulated routers and their SSH servers) and everything else on the machine.
	WorkerCPU   float64 `json:"workerCpuSeconds"`
	TemporalCPU float64 `json:"temporalCpuSeconds"`
	FleetCPU    float64 `json:"fleetCpuSeconds"`
	OtherCPU    float64 `json:"otherCpuSeconds"`
	// LoadAverage is the machine's 1-minute load average when the sweep started.
	LoadAverage float64 `json:"loadAverage"`
	// HistoryEvents of all runs of the sweep (continue-as-new included); Runs is their number.
	HistoryEvents int `json:"historyEvents"`
	Runs          int `json:"runs"`
	Batches       int `json:"batches"`
	// Checked is how many routers have a fresh passing connectivity.test and fresh basic
	// results from their agent in the database after the sweep.
	Checked int                     `json:"checked"`
	Summary activities.BatchSummary `json:"summary"`
}

// Run benchmarks one fleet size: it starts a Temporal dev server and a database, seeds a zone
// of Routers routers, starts their simulated fleet and a `sysvm worker` process, runs a cold
// basic sweep and WarmSweeps warm ones, and measures and verifies each. Everything it starts
// is stopped, and temporary files removed, before it returns (also when ctx ends).
func Run(ctx context.Context, o Options) (res Result, err error) {
	if o.Routers < 1 || o.Routers > MaxRouters {
		return res, fmt.Errorf("benchmark: %d routers: want 1 to %d", o.Routers, MaxRouters)
	}
	if o.TemporalBin == "" || o.SysvmBin == "" {
		return res, errors.New("benchmark: TemporalBin and SysvmBin are required")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("routers", o.Routers)
	if o.SweepTimeout <= 0 {
		o.SweepTimeout = DefaultSweepTimeout
	}
	switch {
	case o.WarmSweeps == 0:
		o.WarmSweeps = DefaultWarmSweeps
	case o.WarmSweeps < 0:
		o.WarmSweeps = 0
	}
	res.Routers = o.Routers
	if res.Key, err = keyName(o.Key); err != nil {
		return res, fmt.Errorf("benchmark: %w", err)
	}

	dir, err := os.MkdirTemp("", "sysvm-bench-")
	if err != nil {
		return res, fmt.Errorf("benchmark: temporary directory: %w", err)
	}
	defer func() {
		if o.KeepLogs != "" {
			keepLogs(dir, o.KeepLogs, o.Routers, log)
		}
		_ = os.RemoveAll(dir)
	}()

	// The Temporal dev server, in memory and headless, on a free loopback port.
	tlog, err := os.Create(filepath.Join(dir, "temporal.log"))
	if err != nil {
		return res, err
	}
	defer tlog.Close()
	before, err := ChildPIDs(os.Getpid(), "temporal")
	if err != nil {
		return res, err
	}
	log.Info("starting Temporal dev server")
	srv, err := temporaldev.Start(ctx, temporaldev.Options{Binary: o.TemporalBin, UIPort: -1,
		SearchAttributes: workflows.SearchAttributeNames(), Output: tlog})
	if err != nil {
		return res, fmt.Errorf("benchmark: %w", err)
	}
	defer srv.Stop()
	temporalPID, err := newChild(before, "temporal")
	if err != nil {
		return res, fmt.Errorf("benchmark: find the Temporal server process: %w", err)
	}

	// The database, with a fresh master key.
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return res, err
	}
	dsn := "sqlite://" + filepath.Join(dir, "sysvm.db")
	res.Database = "sqlite"
	if o.DB != "" {
		scratch, drop, err := ScratchMySQL(ctx, o.DB)
		if err != nil {
			return res, fmt.Errorf("benchmark: %w", err)
		}
		defer drop()
		dsn, res.Database = scratch, "mysql"
	}
	store, err := models.OpenAndMigrate(ctx, dsn, key)
	if err != nil {
		return res, fmt.Errorf("benchmark: open database: %w", err)
	}
	defer store.Close()

	log.Info("seeding the inventory", "database", res.Database)
	start := time.Now()
	inv, err := SeedZone(ctx, store, o.Routers, o.RoutersPerHost)
	if err != nil {
		return res, fmt.Errorf("benchmark: %w", err)
	}
	if err := PauseHealthSchedules(ctx, store); err != nil {
		return res, fmt.Errorf("benchmark: %w", err)
	}
	if o.Concurrency > 0 {
		if _, err := store.Settings.Set(ctx, activities.SettingHealthSweepConcurrency, models.ScopeGlobal, "",
			fmt.Sprint(o.Concurrency)); err != nil {
			return res, fmt.Errorf("benchmark: %w", err)
		}
	}
	res.Hosts = inv.Hosts
	res.SeedSeconds = time.Since(start).Seconds()
	settings, err := (&activities.Health{Store: store}).HealthSweepSettings(ctx, inv.ZoneID)
	if err != nil {
		return res, fmt.Errorf("benchmark: %w", err)
	}
	res.Concurrency = settings.Concurrency
	res.BatchSize = o.BatchSize
	if res.BatchSize <= 0 {
		res.BatchSize = workflows.DefaultSweepBatchSize
	}

	// The simulated fleet, rendered from the configuration the worker will push (both read the
	// expected guest VMs and rules from the inventory; SeedZone seeds none), accepting the
	// platform's key.
	log.Info("starting the simulated routers", "hosts", inv.Hosts)
	start = time.Now()
	if err := storeKey(ctx, store, o.Key); err != nil {
		return res, fmt.Errorf("benchmark: %w", err)
	}
	kp, err := activities.SystemVMKeyPair(ctx, store.Secrets)
	if err != nil {
		return res, fmt.Errorf("benchmark: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return res, fmt.Errorf("benchmark: %w", err)
	}
	configs := &activities.Health{Store: store}
	routers, err := devcloud.StartRouters(ctx, store, pub, configs.RouterConfig, log, fleet.Options{NoSampleCheck: true})
	if err != nil {
		return res, fmt.Errorf("benchmark: start simulated routers: %w", err)
	}
	defer routers.Close()
	res.FleetSeconds = time.Since(start).Seconds()

	// The worker, a process of its own.
	w, err := startWorker(o.SysvmBin, filepath.Join(dir, "worker.log"), append([]string{
		"SYSVM_DB_DSN=" + dsn,
		"SYSVM_SECRET_KEY=" + base64.StdEncoding.EncodeToString(key),
		"SYSVM_TEMPORAL_ADDRESS=" + srv.Address,
		"SYSVM_TEMPORAL_NAMESPACE=" + srv.Namespace,
	}, o.WorkerEnv...))
	if err != nil {
		return res, fmt.Errorf("benchmark: %w", err)
	}
	defer func() {
		if serr := w.stop(); serr != nil && err == nil {
			err = fmt.Errorf("benchmark: %w", serr)
		}
		if err != nil && ctx.Err() == nil {
			log.Error("worker log (last lines)", "log", w.tail(4096))
		}
	}()
	// The worker encrypts payloads under a codec derived from the master key; so does this client.
	cdc, err := codec.New(key)
	if err != nil {
		return res, fmt.Errorf("benchmark: %w", err)
	}
	tc, err := srv.Client(cdc.Apply)
	if err != nil {
		return res, fmt.Errorf("benchmark: dial Temporal: %w", err)
	}
	defer tc.Close()
	if err := waitWorkerReady(ctx, tc, w, inv.ZoneID); err != nil {
		return res, fmt.Errorf("benchmark: %w", err)
	}

	b := &sweeper{o: o, log: log, tc: tc, store: store, zoneID: inv.ZoneID, workerPID: w.pid(), temporalPID: temporalPID}
	phases := []string{PhaseCold}
	for range o.WarmSweeps {
		phases = append(phases, PhaseWarm)
	}
	for i, phase := range phases {
		s, err := b.sweep(ctx, phase, i)
		if err != nil {
			return res, fmt.Errorf("benchmark: %s sweep of %d routers: %w", phase, o.Routers, err)
		}
		res.Sweeps = append(res.Sweeps, s)
		log.Info("sweep done", "phase", phase, "seconds", fmt.Sprintf("%.2f", s.WallSeconds),
			"routersPerSecond", fmt.Sprintf("%.0f", s.RoutersPerSecond))
	}
	return res, nil
}

// newChild finds the one child process named comm that was not in before.
func newChild(before []int, comm string) (int, error) {
	now, err := ChildPIDs(os.Getpid(), comm)
	if err != nil {
		return 0, err
	}
	var fresh []int
	for _, p := range now {
		if !slices.Contains(before, p) {
			fresh = append(fresh, p)
		}
	}
	if len(fresh) != 1 {
		return 0, fmt.Errorf("%d new child processes named %q", len(fresh), comm)
	}
	return fresh[0], nil
}

// waitWorkerReady waits until the worker polls both halves of the task queue and has created
// the zone's health schedules, and checks that every one of them is paused (a schedule that
// ran would add work to the measured sweeps).
func waitWorkerReady(ctx context.Context, tc client.Client, w *workerProc, zoneID string) error {
	ctx, cancel := context.WithTimeout(ctx, workerReadyTimeout)
	defer cancel()
	var last error
	for {
		last = workerReady(ctx, tc, zoneID)
		if last == nil {
			return nil
		}
		var notPaused *unpausedError
		if errors.As(last, &notPaused) {
			return last
		}
		select {
		case <-w.done:
			return fmt.Errorf("the worker exited during start-up: %v", w.err)
		case <-ctx.Done():
			return fmt.Errorf("worker not ready after %s: %w", workerReadyTimeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type unpausedError struct{ id string }

func (e *unpausedError) Error() string {
	return fmt.Sprintf("health schedule %s is not paused: the benchmark would measure scheduled sweeps too", e.id)
}

func workerReady(ctx context.Context, tc client.Client, zoneID string) error {
	for _, t := range []struct {
		name string
		typ  enumspb.TaskQueueType
	}{{"workflow", enumspb.TASK_QUEUE_TYPE_WORKFLOW}, {"activity", enumspb.TASK_QUEUE_TYPE_ACTIVITY}} {
		resp, err := tc.DescribeTaskQueue(ctx, workflows.TaskQueue, t.typ)
		if err != nil {
			return fmt.Errorf("describe task queue %s: %w", workflows.TaskQueue, err)
		}
		if len(resp.GetPollers()) == 0 {
			return fmt.Errorf("no %s poller on task queue %s yet", t.name, workflows.TaskQueue)
		}
	}
	for _, k := range activities.HealthKinds() {
		id := workflows.HealthScheduleID(k, zoneID)
		d, err := tc.ScheduleClient().GetHandle(ctx, id).Describe(ctx)
		if err != nil {
			return fmt.Errorf("health schedule %s not created yet: %w", id, err)
		}
		if d.Schedule.State == nil || !d.Schedule.State.Paused {
			return &unpausedError{id: id}
		}
	}
	return nil
}

// keepLogs copies the logs of a run to dst, named by fleet size.
func keepLogs(dir, dst string, n int, log *slog.Logger) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		log.Warn("keep logs", "error", err)
		return
	}
	for _, name := range []string{"worker.log", "temporal.log"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dst, fmt.Sprintf("%d-%s", n, name)), b, 0o644); err != nil {
			log.Warn("keep logs", "error", err)
		}
	}
}

// System VM key types of Options.Key.
const (
	KeyRSA     = "rsa"
	KeyECDSA   = "ecdsa"
	KeyEd25519 = "ed25519"
)

func keyName(t string) (string, error) {
	switch t {
	case "", KeyRSA:
		return fmt.Sprintf("rsa-%d", sshexec.RSAKeyBits), nil
	case KeyECDSA:
		return "ecdsa-p256", nil
	case KeyEd25519:
		return "ed25519", nil
	}
	return "", fmt.Errorf("system VM key type %q: want rsa, ecdsa or ed25519", t)
}

// storeKey stores a system VM key pair of type t where the platform looks for it, so the
// platform uses it instead of generating its RSA key ("" and KeyRSA store nothing).
func storeKey(ctx context.Context, s *models.Store, t string) error {
	var priv crypto.PrivateKey
	var err error
	switch t {
	case "", KeyRSA:
		return nil
	case KeyECDSA:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyEd25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		_, err = keyName(t)
		return err
	}
	if err != nil {
		return fmt.Errorf("generate %s key: %w", t, err)
	}
	block, err := ssh.MarshalPrivateKey(priv, sshexec.KeyComment)
	if err != nil {
		return fmt.Errorf("encode %s key: %w", t, err)
	}
	if err := s.Secrets.PutSecret(ctx, activities.SystemVMKeyName, pem.EncodeToMemory(block)); err != nil {
		return fmt.Errorf("store %s system VM key: %w", t, err)
	}
	return nil
}
