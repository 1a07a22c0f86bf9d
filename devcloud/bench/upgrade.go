package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/devcloud/temporaldev"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// UpgradeOptions configure RunUpgrade.
type UpgradeOptions struct {
	Routers     int
	Parallelism int
	// Latency is the fixed time each router's upgrade takes (its recreate's hypervisor work).
	Latency time.Duration
	// TemporalBin is the temporal CLI. Required.
	TemporalBin string
	Logger      *slog.Logger
}

// UpgradeResult is what RunUpgrade measured.
type UpgradeResult struct {
	Routers     int           `json:"routers"`
	Parallelism int           `json:"parallelism"`
	Latency     time.Duration `json:"latency"`
	// Single is one router's upgrade measured alone (an upgrade of one router).
	Single time.Duration `json:"single"`
	// Makespan is the whole upgrade, start to end.
	Makespan time.Duration `json:"makespan"`
	// Ideal is ceil(Routers/Parallelism) × Single.
	Ideal time.Duration `json:"ideal"`
	Ratio float64       `json:"ratio"`
	// WorkerCPU is this process's CPU over the upgrade (the worker runs in it).
	WorkerCPU   time.Duration `json:"workerCpu"`
	TemporalCPU time.Duration `json:"temporalCpu"`
	// HistoryEvents and Runs count the upgrade's history over its continue-as-new chain.
	HistoryEvents int `json:"historyEvents"`
	Runs          int `json:"runs"`
	MaxInFlight   int `json:"maxInFlight"`
	Done          int `json:"done"`
}

// RunUpgrade measures the router upgrade's orchestration on the embedded stack: a Temporal dev
// server, SQLite, a worker in this process running the real RouterUpgrade workflow with the real
// plan, check and journal activities. Each router's recreate is a child SystemVMLifecycle
// stand-in whose one activity takes Latency (where the hypervisor calls would be) and records
// the new version; the health gate is a stand-in that passes. So the figures are the upgrade's
// own overhead — the sliding window, child starts, continue-as-new — over an injected fixed
// per-router latency, not the simulators' speed.
func RunUpgrade(ctx context.Context, o UpgradeOptions) (UpgradeResult, error) {
	res := UpgradeResult{Routers: o.Routers, Parallelism: o.Parallelism, Latency: o.Latency}
	if o.TemporalBin == "" || o.Routers < 1 || o.Parallelism < 1 {
		return res, errors.New("upgrade benchmark: TemporalBin, Routers and Parallelism are required")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	before, err := ChildPIDs(os.Getpid(), "temporal")
	if err != nil {
		return res, err
	}
	srv, err := temporaldev.Start(ctx, temporaldev.Options{Binary: o.TemporalBin, UIPort: -1,
		SearchAttributes: workflows.SearchAttributeNames()})
	if err != nil {
		return res, fmt.Errorf("upgrade benchmark: %w", err)
	}
	defer srv.Stop()
	temporalPID, err := newChild(before, "temporal")
	if err != nil {
		return res, fmt.Errorf("upgrade benchmark: find the Temporal server process: %w", err)
	}
	dir, err := os.MkdirTemp("", "sysvm-bench-upgrade-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return res, err
	}
	store, err := models.OpenAndMigrate(ctx, "sqlite://"+filepath.Join(dir, "sysvm.db"), key)
	if err != nil {
		return res, fmt.Errorf("upgrade benchmark: database: %w", err)
	}
	defer store.Close()
	inv, err := SeedZone(ctx, store, o.Routers, DefaultRoutersPerHost)
	if err != nil {
		return res, err
	}
	tc, err := srv.Client()
	if err != nil {
		return res, err
	}
	defer tc.Close()

	w := sdkworker.New(tc, workflows.TaskQueue, sdkworker.Options{MaxConcurrentActivityExecutionSize: 4 * o.Parallelism,
		MaxConcurrentWorkflowTaskExecutionSize: 64})
	w.RegisterWorkflowWithOptions(workflows.RouterUpgrade, workflow.RegisterOptions{Name: workflows.RouterUpgradeWorkflowName})
	w.RegisterWorkflowWithOptions(func(ctx workflow.Context, in workflows.LifecycleInput) (workflows.LifecycleResult, error) {
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute + 2*o.Latency})
		if err := workflow.ExecuteActivity(actx, "BenchRecreate", in.VMID).Get(ctx, nil); err != nil {
			return workflows.LifecycleResult{}, err
		}
		return workflows.LifecycleResult{VMID: in.VMID, Action: string(in.Action), State: models.StateRunning}, nil
	}, workflow.RegisterOptions{Name: workflows.LifecycleWorkflowName})
	w.RegisterActivity(&activities.Activities{Store: store})
	w.RegisterActivityWithOptions(func(ctx context.Context, id string) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.Latency):
		}
		return store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", id).Update("version", TemplateVersion).Error
	}, activity.RegisterOptions{Name: "BenchRecreate"})
	w.RegisterActivityWithOptions(func(ctx context.Context, in activities.UpgradeGateInput) (activities.UpgradeGateResult, error) {
		return activities.UpgradeGateResult{RouterID: in.RouterID, Version: TemplateVersion, Attempts: 1}, nil
	}, activity.RegisterOptions{Name: "UpgradeHealthGate"})
	if err := w.Start(); err != nil {
		return res, err
	}
	defer w.Stop()

	run := func(id string, sel activities.UpgradeSelection, parallelism int) (time.Duration, workflows.RouterUpgradeResult, error) {
		var out workflows.RouterUpgradeResult
		sel.Force = true
		begin := time.Now()
		r, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue},
			workflows.RouterUpgradeWorkflowName, workflows.RouterUpgradeInput{Request: workflows.RouterUpgradeRequest{
				Selection: sel, Parallelism: parallelism, Budget: workflows.FailureBudget{Count: o.Routers}}})
		if err != nil {
			return 0, out, err
		}
		err = r.Get(ctx, &out)
		return time.Since(begin), out, err
	}
	var firsts []models.SystemVM
	if err := store.DB.WithContext(ctx).Where("type = ?", models.TypeRouter).Order("name").Limit(2).Find(&firsts).Error; err != nil {
		return res, err
	}
	// A warm-up upgrade first (the first run after a worker starts pays for task queue and
	// namespace set-up), then one router alone, measured.
	log.Info("measuring one router alone")
	for i, r := range firsts {
		d, _, err := run(fmt.Sprintf("bench-upgrade-single-%d", i), activities.UpgradeSelection{RouterID: r.ID}, 1)
		if err != nil {
			return res, fmt.Errorf("single router upgrade: %w", err)
		}
		log.Info("one router", "attempt", i+1, "time", d)
		res.Single = d
	}
	cpu0, err := SelfCPU()
	if err != nil {
		return res, err
	}
	t0, err := ProcessCPU(temporalPID)
	if err != nil {
		return res, err
	}
	log.Info("upgrading", "routers", o.Routers, "parallelism", o.Parallelism, "latency", o.Latency)
	var out workflows.RouterUpgradeResult
	if res.Makespan, out, err = run("bench-upgrade", activities.UpgradeSelection{ZoneID: inv.ZoneID}, o.Parallelism); err != nil {
		return res, fmt.Errorf("upgrade: %w", err)
	}
	cpu1, _ := SelfCPU()
	t1, _ := ProcessCPU(temporalPID)
	res.WorkerCPU, res.TemporalCPU = cpu1-cpu0, t1-t0
	res.Done = out.Counts[workflows.UpgradeDone]
	if res.Done != o.Routers {
		return res, fmt.Errorf("upgrade: %d of %d routers done (%v)", res.Done, o.Routers, out.Counts)
	}
	waves := (o.Routers + o.Parallelism - 1) / o.Parallelism
	res.Ideal = time.Duration(waves) * res.Single
	res.Ratio = float64(res.Makespan) / float64(res.Ideal)
	if res.HistoryEvents, res.Runs, err = HistoryEvents(ctx, tc, "bench-upgrade"); err != nil {
		return res, err
	}
	if q, err := tc.QueryWorkflow(ctx, "bench-upgrade", "", workflows.QueryProgress); err == nil {
		var p workflows.RouterUpgradeProgress
		if q.Get(&p) == nil {
			res.MaxInFlight = p.MaxInFlight
		}
	}
	return res, nil
}
