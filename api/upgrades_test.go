package api

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// upgradeWorker runs RouterUpgrade on a real Temporal dev server with the real plan, check,
// alert and journal activities over the store; the lifecycle child is a stand-in that takes
// `hold` and then records the router at version 4.15.0 in the store (as a recreate from the
// current template does), and the health gate a stand-in that passes.
type upgradeWorker struct {
	mu       sync.Mutex
	hold     time.Duration
	recreate map[string]int
}

func (u *upgradeWorker) lifecycle(store *models.Store) func(ctx workflow.Context, in workflows.LifecycleInput) (workflows.LifecycleResult, error) {
	return func(ctx workflow.Context, in workflows.LifecycleInput) (workflows.LifecycleResult, error) {
		u.mu.Lock()
		hold := u.hold
		u.mu.Unlock()
		if err := workflow.Sleep(ctx, hold); err != nil {
			return workflows.LifecycleResult{}, err
		}
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 10 * time.Second})
		if err := workflow.ExecuteActivity(actx, "TestUpgradeRecreated", in.VMID).Get(ctx, nil); err != nil {
			return workflows.LifecycleResult{}, err
		}
		return workflows.LifecycleResult{VMID: in.VMID, Action: string(in.Action), State: models.StateRunning}, nil
	}
}

func startUpgradeWorker(t *testing.T, s *models.Store) (*upgradeWorker, Config) {
	t.Helper()
	u := &upgradeWorker{hold: 200 * time.Millisecond, recreate: map[string]int{}}
	cfg := startUpgradeTestWorker(t, s, func(w sdkworker.Worker) {
		w.RegisterWorkflowWithOptions(workflows.RouterUpgrade, workflow.RegisterOptions{Name: workflows.RouterUpgradeWorkflowName})
		w.RegisterWorkflowWithOptions(u.lifecycle(s), workflow.RegisterOptions{Name: workflows.LifecycleWorkflowName})
		w.RegisterActivityWithOptions(func(ctx context.Context, id string) error {
			u.mu.Lock()
			u.recreate[id]++
			u.mu.Unlock()
			return s.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", id).Update("version", "4.15.0").Error
		}, activity.RegisterOptions{Name: "TestUpgradeRecreated"})
		w.RegisterActivityWithOptions(func(ctx context.Context, in activities.UpgradeGateInput) (activities.UpgradeGateResult, error) {
			return passingGate(ctx, s, in.RouterID)
		}, activity.RegisterOptions{Name: "UpgradeHealthGate"})
	})
	return u, cfg
}

// startUpgradeTestWorker runs a worker on a real Temporal dev server with the real activities
// over the store and what register adds (the upgrade workflow and its stand-ins).
func startUpgradeTestWorker(t *testing.T, s *models.Store, register func(w sdkworker.Worker)) Config {
	t.Helper()
	tsrv := testenv.TemporalT(t, false)
	tc, err := tsrv.Client()
	modelstest.Must(t, err, "temporal client")
	t.Cleanup(tc.Close)
	w := sdkworker.New(tc, workflows.TaskQueue, sdkworker.Options{})
	w.RegisterActivity(&activities.Activities{Store: s})
	register(w)
	modelstest.Must(t, w.Start(), "start worker")
	t.Cleanup(w.Stop)
	return Config{Temporal: tc, Namespace: tsrv.Namespace}
}

// passingGate is the health gate stand-in of the upgrade tests: it passes at once with the
// VM's version in the store.
func passingGate(ctx context.Context, s *models.Store, id string) (activities.UpgradeGateResult, error) {
	var vm models.SystemVM
	if err := s.Get(ctx, &vm, id); err != nil {
		return activities.UpgradeGateResult{}, err
	}
	return activities.UpgradeGateResult{RouterID: id, Version: vm.Version, Attempts: 1}, nil
}

// waitUpgrade polls GET /router-upgrades/{id} until cond holds on the operation.
func (e *env) waitUpgrade(id string, what string, cond func(op map[string]any) bool) map[string]any {
	e.t.Helper()
	return e.waitUpgradeAt("/router-upgrades/", id, what, cond)
}

// waitUpgradeAt polls GET base+id (an upgrade of either kind) until cond holds on the operation.
func (e *env) waitUpgradeAt(base, id string, what string, cond func(op map[string]any) bool) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := e.want(e.do("GET", base+id, models.RoleReadOnly, nil), 200, "get upgrade")
		op := r.JSON["operation"].(map[string]any)
		if cond(op) {
			return op
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("upgrade %s: %s not reached: %s", id, what, r.Raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRouterUpgradeAPI(t *testing.T) {
	s := modelstest.SQLite(t)
	u, cfg := startUpgradeWorker(t, s)
	e := newEnv(t, s, cfg)
	f := seed(t, s)
	op := models.RoleOperator
	e.want(e.do("PUT", "/settings/minreq.sysvmtemplate.version", models.RoleAdmin, map[string]any{"value": "4.15"}), 200, "minreq")

	// Bad requests name the field, before anything starts.
	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"zoneid": f.zone1, "podid": f.pod1}, "id"},
		{map[string]any{"domainid": "d"}, "account"},
		{map[string]any{"parallelism": 0}, "parallelism"},
		{map[string]any{"failureBudget": "some"}, "failureBudget"},
		{map[string]any{"mode": "reimage"}, "mode"},
		{map[string]any{"forced": true}, "forced"},
		{map[string]any{"groupBy": "rack"}, "groupBy"},
		{map[string]any{"healthGateTimeout": "soon"}, "healthGateTimeout"},
		{map[string]any{"window": map[string]any{"dailyStart": "22:00"}}, "window"},
		{map[string]any{"windows": map[string]any{"no-such-zone": map[string]any{"dailyStart": "22:00", "dailyEnd": "23:00"}}}, "windows"},
	} {
		e.wantErr(e.do("POST", "/router-upgrades", op, c.body), 400, CodeBadRequest, c.field, c.field)
	}
	e.wantErr(e.do("POST", "/router-upgrades", op, map[string]any{"zoneid": "nope"}), 404, CodeNotFound, "", "unknown zone")
	// Zone 2 has no router that requires upgrade.
	e.wantErr(e.do("POST", "/router-upgrades", op, map[string]any{"zoneid": f.zone2}), 409, CodeConflict, "", "nothing to upgrade")

	// Every router that requires upgrade: r-4 (4.14.0) and r-6 (unknown; a BACKUP).
	r := e.want(e.do("POST", "/router-upgrades", op, map[string]any{"parallelism": 2, "failureBudget": "10%"}), 202, "start")
	id := r.JSON["operation"].(map[string]any)["id"].(string)
	if wid := r.JSON["operation"].(map[string]any)["workflowId"]; wid != "router-upgrade:all" {
		t.Errorf("workflowId = %v, want router-upgrade:all", wid)
	}
	done := e.waitUpgrade(id, "completed", func(op map[string]any) bool { return op["status"] == models.OpCompleted })
	res := done["result"].(map[string]any)
	counts := res["counts"].(map[string]any)
	if counts["done"] != float64(2) || counts["failed"] != float64(0) {
		t.Fatalf("counts = %v, want 2 done", counts)
	}
	for _, id := range []string{f.r4, f.r6} {
		var vm models.SystemVM
		modelstest.Must(t, s.Get(context.Background(), &vm, id), "router")
		if vm.Version != "4.15.0" {
			t.Errorf("%s version = %q after the upgrade", vm.Name, vm.Version)
		}
		if u.recreate[id] != 1 {
			t.Errorf("%s recreated %d times, want 1", vm.Name, u.recreate[id])
		}
	}
	if got := names(items(t, e.want(e.do("GET", "/routers?requiresupgrade=true", models.RoleReadOnly, nil), 200, "routers"))); len(got) != 0 {
		t.Errorf("requiresupgrade=true after the upgrade = %v", got)
	}
	// Nothing left to upgrade.
	e.wantErr(e.do("POST", "/router-upgrades", op, nil), 409, CodeConflict, "", "again")
	list := e.want(e.do("GET", "/router-upgrades", models.RoleReadOnly, nil), 200, "list")
	if count(list) != 1 {
		t.Errorf("router upgrades listed = %d, want 1", count(list))
	}

	// Control: a forced upgrade, one at a time, paused, its parallelism changed, resumed,
	// then canceled (the router in flight finishes; the operation ends canceled).
	u.mu.Lock()
	u.hold = 1500 * time.Millisecond
	u.mu.Unlock()
	r = e.want(e.do("POST", "/router-upgrades", op, map[string]any{"zoneid": f.zone1, "force": true, "parallelism": 1}), 202, "forced")
	id = r.JSON["operation"].(map[string]any)["id"].(string)
	e.waitUpgrade(id, "first router in flight", func(op map[string]any) bool {
		p, _ := op["progress"].(map[string]any)
		return p != nil && p["inFlight"] == float64(1)
	})
	e.want(e.do("POST", "/router-upgrades/"+id+"/pause", op, nil), 202, "pause")
	paused := e.waitUpgrade(id, "paused", func(op map[string]any) bool {
		p, _ := op["progress"].(map[string]any)
		return p != nil && p["status"] == "paused"
	})
	if reason := paused["progress"].(map[string]any)["pauseReason"]; reason != "paused by operator-key" {
		t.Errorf("pauseReason = %v", reason)
	}
	e.wantErr(e.do("POST", "/router-upgrades/"+id+"/parallelism", op, map[string]any{"parallelism": 0}), 400, CodeBadRequest, "parallelism", "parallelism 0")
	e.want(e.do("POST", "/router-upgrades/"+id+"/parallelism", op, map[string]any{"parallelism": 3}), 202, "parallelism")
	e.waitUpgrade(id, "parallelism 3", func(op map[string]any) bool {
		p, _ := op["progress"].(map[string]any)
		return p != nil && p["parallelism"] == float64(3)
	})
	e.want(e.do("POST", "/router-upgrades/"+id+"/resume", op, nil), 202, "resume")
	e.waitUpgrade(id, "resumed", func(op map[string]any) bool {
		p, _ := op["progress"].(map[string]any)
		return p != nil && p["status"] == "running" && p["inFlight"].(float64) >= 1
	})
	e.want(e.do("POST", "/router-upgrades/"+id+"/cancel", op, nil), 202, "cancel")
	end := e.waitUpgrade(id, "canceled", func(op map[string]any) bool { return op["status"] != models.OpRunning })
	if end["status"] != models.OpCanceled {
		t.Fatalf("after cancel: status %v, error %v", end["status"], end["error"])
	}
	e.wantErr(e.do("POST", "/router-upgrades/"+id+"/pause", op, nil), 409, CodeConflict, "", "pause after the end")
	// The routers started before the cancel each ran their recreate once, to its end.
	u.mu.Lock()
	defer u.mu.Unlock()
	for rid, n := range u.recreate {
		if n > 2 {
			t.Errorf("router %s recreated %d times over two upgrades", rid, n)
		}
	}
}
