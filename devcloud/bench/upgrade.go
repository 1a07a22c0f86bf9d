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

	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/codec"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/devcloud/temporaldev"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/xen/xapisim"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/worker"
	"github.com/sysvm/sysvm/workflows"
)

// Defaults of UpgradeOptions: the latency a real XenServer pool adds to each router's
// recreate. A clone of the template on shared storage is a fast (copy-on-write) clone of
// about 2 s; a system VM boots to an answering SSH in about 10 s on a fast host (tens of
// seconds on a loaded one). 12 s a router keeps 20 waves of a 1,000-router upgrade at
// parallelism 50 within about 5 minutes.
const (
	DefaultCloneLatency = 2 * time.Second
	DefaultBootLatency  = 10 * time.Second
	// upgradeWarmups routers are upgraded one at a time before the measurement: the first
	// after the worker starts pays for the task queue, the driver's XAPI session, SSH
	// connections to the host and template seeding; the last of them is the one measured.
	upgradeWarmups = 2
)

// UpgradeOptions configure RunUpgrade.
type UpgradeOptions struct {
	Routers     int
	Parallelism int
	// RoutersPerHost places this many routers on one simulated XenServer host (0 =
	// DefaultRoutersPerHost).
	RoutersPerHost int
	// CloneLatency and BootLatency are injected into the XAPI simulator: every VM.clone
	// waits CloneLatency, every VM.start and VM.start_on BootLatency (0 = the defaults; <0
	// none).
	CloneLatency, BootLatency time.Duration
	// DB is "" for SQLite in a temporary directory, or the mysql:// DSN of a MySQL or MariaDB
	// server, on which a scratch database is created and dropped afterwards (as Options.DB).
	DB string
	// TemporalBin is the temporal CLI. Required.
	TemporalBin string
	// CPUProfile writes the process's CPU profile of the measured upgrade there ("" = not
	// written); its samples carry the label ProfileRoleKey (go tool pprof -tagfocus).
	CPUProfile string
	Logger     *slog.Logger
}

// UpgradeResult is what RunUpgrade measured. Durations are nanoseconds in JSON; the *Seconds
// fields say the same in seconds.
type UpgradeResult struct {
	Routers      int           `json:"routers"`
	Parallelism  int           `json:"parallelism"`
	Hosts        int           `json:"hosts"`
	Database     string        `json:"database"`
	CloneLatency time.Duration `json:"cloneLatency"`
	BootLatency  time.Duration `json:"bootLatency"`
	// Single is one router's upgrade measured alone (after upgradeWarmups-1 warm-ups):
	// from the start of its operation to the upgrade's result.
	Single time.Duration `json:"single"`
	// Makespan is the upgrade of Routers routers at Parallelism, from the start of its
	// operation to its result.
	Makespan time.Duration `json:"makespan"`
	// Ideal is ceil(Routers/Parallelism) × Single; Ratio is Makespan / Ideal.
	Ideal           time.Duration `json:"ideal"`
	Ratio           float64       `json:"ratio"`
	SingleSeconds   float64       `json:"singleSeconds"`
	MakespanSeconds float64       `json:"makespanSeconds"`
	IdealSeconds    float64       `json:"idealSeconds"`
	// CPU over the measured upgrade: this whole process (ProcessCPU), split by profiler
	// labels into the worker (its activities, workflow code, Temporal client, the XAPI and
	// SSH clients), the simulators (XAPI pool, SSH fleet and agents) and the rest (the Go
	// runtime's background work such as garbage collection, the benchmark itself); and the
	// Temporal dev server's process.
	ProcessCPU   time.Duration `json:"processCpu"`
	WorkerCPU    time.Duration `json:"workerCpu"`
	SimulatorCPU time.Duration `json:"simulatorCpu"`
	OtherCPU     time.Duration `json:"otherCpu"`
	TemporalCPU  time.Duration `json:"temporalCpu"`
	// WorkerCPUPerRouter and TemporalCPUPerRouter divide those by Routers.
	WorkerCPUPerRouter   time.Duration `json:"workerCpuPerRouter"`
	TemporalCPUPerRouter time.Duration `json:"temporalCpuPerRouter"`
	// HistoryEvents and Runs count the upgrade's own history over its continue-as-new
	// chain; ChildEvents the histories of the routers' recreate runs (SystemVMLifecycle).
	HistoryEvents int `json:"historyEvents"`
	Runs          int `json:"runs"`
	ChildEvents   int `json:"childEvents"`
	MaxInFlight   int `json:"maxInFlight"`
	Done          int `json:"done"`
	// LoadAverage is the machine's 1-minute load average when the upgrade started.
	LoadAverage float64 `json:"loadAverage"`
	// SingleBreakdown and BatchBreakdown say where the routers' time went, alone and in the
	// measured upgrade (from the histories).
	SingleBreakdown Breakdown `json:"singleBreakdown"`
	BatchBreakdown  Breakdown `json:"batchBreakdown"`
}

// RunUpgrade benchmarks a batched router upgrade on the embedded stack, everything real but
// the hypervisor and the routers: a Temporal dev server; SQLite (or a scratch MySQL
// database); one simulated XenServer pool
// (xapisim over HTTPS) holding every router's VM, with CloneLatency and BootLatency injected
// into it; the routers simulated by the fleet over real SSH through their hosts, running the
// real agent; and a worker in this process (the fleet follows its hypervisor calls in
// process) with every workflow and activity registered as `sysvm worker` registers them
// (worker.New, worker.BuildPlatform) and payloads encrypted by the codec. Upgrades are
// started as the API starts them (an operation of the operations engine): RouterUpgrade with
// the real make-before-break SystemVMLifecycle recreate of each router and the real health
// gate. It upgrades upgradeWarmups routers one at a time (the last measured: Single), then
// the Routers others of the zone at Parallelism, and verifies the result: every router done,
// at the required version in the database, and once on the pool, running, from the new
// template.
func RunUpgrade(ctx context.Context, o UpgradeOptions) (res UpgradeResult, err error) {
	if o.CloneLatency == 0 {
		o.CloneLatency = DefaultCloneLatency
	}
	if o.BootLatency == 0 {
		o.BootLatency = DefaultBootLatency
	}
	o.CloneLatency, o.BootLatency = max(0, o.CloneLatency), max(0, o.BootLatency)
	if o.RoutersPerHost <= 0 {
		o.RoutersPerHost = DefaultRoutersPerHost
	}
	res = UpgradeResult{Routers: o.Routers, Parallelism: o.Parallelism, CloneLatency: o.CloneLatency, BootLatency: o.BootLatency}
	if o.TemporalBin == "" || o.Routers < 1 || o.Parallelism < 1 || o.Parallelism > workflows.MaxUpgradeParallelism {
		return res, fmt.Errorf("upgrade benchmark: TemporalBin, Routers ≥ 1 and Parallelism 1..%d are required", workflows.MaxUpgradeParallelism)
	}
	total := o.Routers + upgradeWarmups
	if total > MaxRouters {
		return res, fmt.Errorf("upgrade benchmark: at most %d routers", MaxRouters-upgradeWarmups)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	dir, err := os.MkdirTemp("", "sysvm-bench-upgrade-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

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
		return res, fmt.Errorf("upgrade benchmark: %w", err)
	}
	defer srv.Stop()
	temporalPID, err := newChild(before, "temporal")
	if err != nil {
		return res, fmt.Errorf("upgrade benchmark: find the Temporal server process: %w", err)
	}

	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return res, err
	}
	dsn := "sqlite://" + filepath.Join(dir, "sysvm.db")
	res.Database = "sqlite"
	if o.DB != "" {
		scratch, drop, err := ScratchMySQL(ctx, o.DB)
		if err != nil {
			return res, fmt.Errorf("upgrade benchmark: %w", err)
		}
		defer drop()
		dsn, res.Database = scratch, "mysql"
	}
	store, err := models.OpenAndMigrate(ctx, dsn, key)
	if err != nil {
		return res, fmt.Errorf("upgrade benchmark: database: %w", err)
	}
	defer store.Close()

	// The simulators, labeled as such for the CPU profile.
	res.Hosts = (total + o.RoutersPerHost - 1) / o.RoutersPerHost
	var xen *xapisim.Server
	var pool XenPool
	var routers *devcloud.Routers
	var inv Inventory
	withRole(ctx, RoleSimulators, func(ctx context.Context) {
		log.Info("starting the simulated XenServer pool", "hosts", res.Hosts)
		if xen, pool, err = StartXenPool(res.Hosts, log); err != nil {
			return
		}
		if inv, err = SeedXenZone(ctx, store, total, o.RoutersPerHost, pool); err != nil {
			return
		}
		log.Info("creating the routers' VMs on the pool", "routers", total)
		plain := activities.NewDriverPool(store, worker.Drivers())
		err = MaterializeRouters(ctx, store, plain, 8)
		plain.Close()
		if err != nil {
			return
		}
		// The fleet accepts the platform's key (generated once, stored encrypted).
		kp, kerr := activities.SystemVMKeyPair(ctx, store.Secrets)
		if kerr != nil {
			err = kerr
			return
		}
		pub, kerr := kp.PublicKey()
		if kerr != nil {
			err = kerr
			return
		}
		log.Info("starting the simulated routers")
		configs := &activities.Health{Store: store}
		routers, err = devcloud.StartRouters(ctx, store, pub, configs.RouterConfig, log, fleet.Options{NoSampleCheck: true})
	})
	if xen != nil {
		defer xen.Close()
	}
	if routers != nil {
		defer routers.Close()
	}
	if err != nil {
		return res, fmt.Errorf("upgrade benchmark: %w", err)
	}
	// A real pool's time, in the simulator: from here on every clone and boot takes it.
	xen.InjectLatency(xapisim.Latency{Method: "VM.clone", Delay: o.CloneLatency})
	xen.InjectLatency(xapisim.Latency{Method: "VM.start", Delay: o.BootLatency})
	xen.InjectLatency(xapisim.Latency{Method: "VM.start_on", Delay: o.BootLatency})

	// The worker, wired as `sysvm worker` and `sysvm dev` wire it, its goroutines labeled.
	cdc, err := codec.New(key)
	if err != nil {
		return res, fmt.Errorf("upgrade benchmark: %w", err)
	}
	var tc client.Client
	var p *worker.Platform
	stopWorker := func() {}
	withRole(ctx, RoleWorker, func(ctx context.Context) {
		if tc, err = srv.Client(cdc.Apply); err != nil {
			return
		}
		if p, err = worker.BuildPlatform(ctx, store, log, routers.Observe(worker.Drivers()), routers.Fleet.DialContext); err != nil {
			return
		}
		w := worker.New(worker.Config{Client: tc, Activities: p.Activities, Health: p.Health, Logger: log})
		if err = w.Start(); err != nil {
			return
		}
		stopWorker = w.Stop
	})
	if tc != nil {
		defer tc.Close()
	}
	if p != nil {
		defer p.Close()
	}
	if err != nil {
		return res, fmt.Errorf("upgrade benchmark: worker: %w", err)
	}
	defer stopWorker()
	eng, err := operations.New(operations.Config{Store: store, Temporal: tc, DataConverter: cdc.DataConverter(), Logger: log})
	if err != nil {
		return res, err
	}
	u := &upgrader{tc: tc, eng: eng, zoneID: inv.ZoneID, log: log, budget: total}

	var firsts []models.SystemVM
	if err := store.DB.WithContext(ctx).Where("type = ?", models.TypeRouter).Order("name").Limit(upgradeWarmups).
		Find(&firsts).Error; err != nil {
		return res, err
	}
	log.Info("upgrading routers one at a time (warm-up, then measured)", "routers", len(firsts),
		"cloneLatency", o.CloneLatency, "bootLatency", o.BootLatency)
	for i, r := range firsts {
		d, out, err := u.run(ctx, activities.UpgradeSelection{RouterID: r.ID}, 1, 1)
		if err != nil {
			return res, fmt.Errorf("single router upgrade: %w", err)
		}
		if out.Counts[workflows.UpgradeDone] != 1 {
			return res, fmt.Errorf("single router upgrade of %s: %v", r.Name, out.Counts)
		}
		log.Info("one router", "attempt", i+1, "router", r.Name, "time", d.Round(time.Millisecond))
		res.Single = d
		if res.SingleBreakdown, err = breakdown(ctx, tc, u.workflowID, out); err != nil {
			return res, fmt.Errorf("single router upgrade: %w", err)
		}
	}

	res.LoadAverage, _ = LoadAverage()
	prof, err := startCPUProfile()
	if err != nil {
		return res, err
	}
	profiling := true
	defer func() {
		if profiling {
			_, _ = prof.stop("")
		}
	}()
	cpu0, err := SelfCPU()
	if err != nil {
		return res, err
	}
	t0, err := ProcessCPU(temporalPID)
	if err != nil {
		return res, err
	}
	log.Info("upgrading the zone", "routers", o.Routers, "parallelism", o.Parallelism, "load", res.LoadAverage)
	res.Makespan, u.last, err = u.run(ctx, activities.UpgradeSelection{ZoneID: inv.ZoneID}, o.Parallelism, o.Routers)
	cpu1, _ := SelfCPU()
	t1, _ := ProcessCPU(temporalPID)
	profiling = false
	roles, perr := prof.stop(o.CPUProfile)
	if err != nil {
		return res, fmt.Errorf("upgrade: %w", err)
	}
	if perr != nil {
		return res, perr
	}
	res.ProcessCPU, res.TemporalCPU = cpu1-cpu0, t1-t0
	res.WorkerCPU, res.SimulatorCPU = roles[RoleWorker], roles[RoleSimulators]
	res.OtherCPU = max(0, res.ProcessCPU-res.WorkerCPU-res.SimulatorCPU)
	res.WorkerCPUPerRouter = res.WorkerCPU / time.Duration(o.Routers)
	res.TemporalCPUPerRouter = res.TemporalCPU / time.Duration(o.Routers)
	res.Done = u.last.Counts[workflows.UpgradeDone]
	if res.Done != o.Routers {
		return res, fmt.Errorf("upgrade: %d of %d routers done (%v)", res.Done, o.Routers, u.last.Counts)
	}
	waves := (o.Routers + o.Parallelism - 1) / o.Parallelism
	res.Ideal = time.Duration(waves) * res.Single
	res.Ratio = float64(res.Makespan) / float64(res.Ideal)
	res.SingleSeconds, res.MakespanSeconds, res.IdealSeconds = res.Single.Seconds(), res.Makespan.Seconds(), res.Ideal.Seconds()

	hctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if res.HistoryEvents, res.Runs, err = HistoryEvents(hctx, tc, u.workflowID); err != nil {
		return res, err
	}
	if res.ChildEvents, err = childEvents(hctx, tc, u.last); err != nil {
		return res, err
	}
	if res.BatchBreakdown, err = breakdown(hctx, tc, u.workflowID, u.last); err != nil {
		return res, err
	}
	if q, err := tc.QueryWorkflow(hctx, u.workflowID, "", workflows.QueryProgress); err == nil {
		var pr workflows.RouterUpgradeProgress
		if q.Get(&pr) == nil {
			res.MaxInFlight = pr.MaxInFlight
		}
	}
	if err := verifyUpgraded(hctx, store, p.Activities.Drivers, inv.ZoneID, total); err != nil {
		return res, err
	}
	return res, nil
}

// upgrader starts upgrades of a zone's routers as the API does and waits for them.
type upgrader struct {
	tc     client.Client
	eng    *operations.Engine
	zoneID string
	log    *slog.Logger
	budget int
	// workflowID and last are those of the last upgrade run.
	workflowID string
	last       workflows.RouterUpgradeResult
}

// upgradeTimeout bounds one benchmarked upgrade.
const upgradeTimeout = 30 * time.Minute

// run upgrades the selection at parallelism (the failure budget lets every router fail, so
// the upgrade never pauses: the result is checked instead) and returns the time from the
// operation's start to its result.
func (u *upgrader) run(ctx context.Context, sel activities.UpgradeSelection, parallelism, routers int) (time.Duration, workflows.RouterUpgradeResult, error) {
	var out workflows.RouterUpgradeResult
	ctx, cancel := context.WithTimeout(ctx, upgradeTimeout)
	defer cancel()
	req := workflows.RouterUpgradeRequest{Selection: sel, Parallelism: parallelism, Budget: workflows.FailureBudget{Count: u.budget},
		Mode: workflows.UpgradeModeRecreate}
	kind, id := sel.Scope()
	target := workflows.ZoneTarget(workflows.RouterUpgradeWorkflowID(kind, id), u.zoneID, workflows.RouterUpgradeOperationKind)
	begin := time.Now()
	op, err := u.eng.Start(ctx, operations.Spec{Target: target, Workflow: workflows.RouterUpgradeWorkflowName,
		TargetType: kind, TargetID: id, TargetName: kind + " " + id, RequestedBy: "sysvm-bench",
		Input: func(opID string) any { return workflows.RouterUpgradeInput{OperationID: opID, Request: req} },
		Memo:  map[string]any{"routers": routers, "parallelism": parallelism}})
	if err != nil {
		return 0, out, fmt.Errorf("start the upgrade: %w", err)
	}
	u.workflowID = op.WorkflowID
	stop := u.logProgress(ctx, op.WorkflowID)
	err = u.tc.GetWorkflow(ctx, op.WorkflowID, "").Get(ctx, &out)
	d := time.Since(begin)
	stop()
	if err != nil {
		return d, out, fmt.Errorf("upgrade %s: %w", op.WorkflowID, err)
	}
	return d, out, nil
}

// logProgress logs the upgrade's progress query every progressEvery until the returned stop.
func (u *upgrader) logProgress(ctx context.Context, workflowID string) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
			v, err := u.tc.QueryWorkflow(qctx, workflowID, "", workflows.QueryProgress)
			var p workflows.RouterUpgradeProgress
			if err == nil {
				err = v.Get(&p)
			}
			qcancel()
			if err == nil {
				u.log.Info("upgrade progress", "step", p.Step, "inFlight", p.InFlight, "run", p.Run)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// childEvents sums the history lengths of the routers' recreate runs (each router's own
// SystemVMLifecycle workflow, on its router's workflow ID).
func childEvents(ctx context.Context, tc client.Client, out workflows.RouterUpgradeResult) (int, error) {
	n := 0
	for _, r := range out.Routers {
		id := workflows.RouterTarget(r.ID, r.ZoneID, workflows.RouterUpgradeOperationKind).WorkflowID
		d, err := tc.DescribeWorkflowExecution(ctx, id, "")
		if err != nil {
			return n, fmt.Errorf("describe the recreate of %s: %w", r.Name, err)
		}
		n += int(d.GetWorkflowExecutionInfo().GetHistoryLength())
	}
	return n, nil
}

// verifyUpgraded checks the upgrade on both sides: every router of the zone is Running at
// TemplateVersion in the database, and the pool holds exactly one VM per router, under the
// router's current instance name, running, from the TemplateVersion template (no old VM and
// no replacement left behind).
func verifyUpgraded(ctx context.Context, s *models.Store, drivers *activities.DriverPool, zoneID string, n int) error {
	var vms []models.SystemVM
	if err := s.DB.WithContext(ctx).Where("zone_id = ? AND type = ?", zoneID, models.TypeRouter).Find(&vms).Error; err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if len(vms) != n {
		return fmt.Errorf("verify: %d routers in the zone, want %d", len(vms), n)
	}
	var bad []string
	want := "systemvmtemplate-" + TemplateVersion + "-" + hypervisors.XenServer.SettingSuffix()
	onPool := map[string]hypervisors.VMInfo{}
	if d, err := drivers.For(ctx, vms[0].ClusterID); err != nil {
		return fmt.Errorf("verify: %w", err)
	} else {
		all, err := d.ListVMs(ctx)
		if err != nil {
			return fmt.Errorf("verify: list the pool's VMs: %w", err)
		}
		for _, v := range all {
			onPool[v.Name] = v
		}
		if len(all) != n {
			bad = append(bad, fmt.Sprintf("the pool has %d VMs, want %d", len(all), n))
		}
	}
	for _, vm := range vms {
		info, ok := onPool[vm.HypervisorName()]
		switch {
		case vm.Version != TemplateVersion || vm.State != models.StateRunning:
			bad = append(bad, fmt.Sprintf("%s is %s at version %q", vm.Name, vm.State, vm.Version))
		case !ok:
			bad = append(bad, fmt.Sprintf("%s: no VM %s on the pool", vm.Name, vm.HypervisorName()))
		case info.State != hypervisors.PowerRunning || info.Template != want:
			bad = append(bad, fmt.Sprintf("%s: VM %s is %s from %q", vm.Name, info.Name, info.State, info.Template))
		case vm.HypervisorName() == vm.Name:
			bad = append(bad, fmt.Sprintf("%s still runs its first VM: not recreated", vm.Name))
		}
		if len(bad) > 10 {
			break
		}
	}
	if len(bad) > 0 {
		return errors.New("verify: " + fmt.Sprint(bad))
	}
	return nil
}
