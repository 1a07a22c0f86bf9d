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
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// sysvmUpgradeWorker counts what the stand-ins of SystemVMUpgrade's children did.
type sysvmUpgradeWorker struct {
	mu       sync.Mutex
	hold     time.Duration
	recreate map[string]int
	destroy  map[string]int
	deploy   map[string]int // new VM ID -> deploys
}

// startSystemVMUpgradeWorker runs SystemVMUpgrade on a real Temporal dev server with the real
// plan, check, alert and journal activities over the store; stand-ins for the lifecycle child
// (recreate: the row at 4.15.0; destroy: the row Destroyed) and the deploy child (a new
// Running row at 4.15.0), each taking `hold`; and a gate stand-in that passes.
func startSystemVMUpgradeWorker(t *testing.T, s *models.Store) (*sysvmUpgradeWorker, Config) {
	t.Helper()
	u := &sysvmUpgradeWorker{hold: 200 * time.Millisecond, recreate: map[string]int{}, destroy: map[string]int{}, deploy: map[string]int{}}
	held := func(ctx workflow.Context) error {
		u.mu.Lock()
		hold := u.hold
		u.mu.Unlock()
		return workflow.Sleep(ctx, hold)
	}
	actx := func(ctx workflow.Context) workflow.Context {
		return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 10 * time.Second})
	}
	cfg := startUpgradeTestWorker(t, s, func(w sdkworker.Worker) {
		w.RegisterWorkflowWithOptions(workflows.SystemVMUpgrade, workflow.RegisterOptions{Name: workflows.SystemVMUpgradeWorkflowName})
		w.RegisterWorkflowWithOptions(func(ctx workflow.Context, in workflows.LifecycleInput) (workflows.LifecycleResult, error) {
			if err := held(ctx); err != nil {
				return workflows.LifecycleResult{}, err
			}
			var state string
			err := workflow.ExecuteActivity(actx(ctx), "TestSysvmLifecycle", in.VMID, string(in.Action)).Get(ctx, &state)
			return workflows.LifecycleResult{VMID: in.VMID, Action: string(in.Action), State: state}, err
		}, workflow.RegisterOptions{Name: workflows.LifecycleWorkflowName})
		w.RegisterWorkflowWithOptions(func(ctx workflow.Context, in workflows.DeployInput) (workflows.DeployResult, error) {
			if err := held(ctx); err != nil {
				return workflows.DeployResult{}, err
			}
			err := workflow.ExecuteActivity(actx(ctx), "TestSysvmDeployed", in).Get(ctx, nil)
			return workflows.DeployResult{VMID: in.VMID, Name: "new-" + in.Type, Type: in.Type, ZoneID: in.ZoneID, State: models.StateRunning}, err
		}, workflow.RegisterOptions{Name: workflows.SystemVMDeployWorkflowName})
		w.RegisterActivityWithOptions(func(ctx context.Context, id, action string) (string, error) {
			u.mu.Lock()
			defer u.mu.Unlock()
			q := s.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", id)
			if action == string(workflows.ActionDestroy) {
				u.destroy[id]++
				return models.StateDestroyed, q.Update("state", models.StateDestroyed).Error
			}
			u.recreate[id]++
			return models.StateRunning, q.Update("version", "4.15.0").Error
		}, activity.RegisterOptions{Name: "TestSysvmLifecycle"})
		w.RegisterActivityWithOptions(func(ctx context.Context, in workflows.DeployInput) error {
			u.mu.Lock()
			u.deploy[in.VMID]++
			u.mu.Unlock()
			vm := models.SystemVM{Base: models.Base{ID: in.VMID}, Name: "s-99-VM", Type: in.Type, ZoneID: in.ZoneID,
				State: models.StateRunning, Version: "4.15.0"}
			return s.DB.WithContext(ctx).Create(&vm).Error
		}, activity.RegisterOptions{Name: "TestSysvmDeployed"})
		w.RegisterActivityWithOptions(func(ctx context.Context, in activities.SystemVMGateInput) (activities.UpgradeGateResult, error) {
			return passingGate(ctx, s, in.VMID)
		}, activity.RegisterOptions{Name: "SystemVMUpgradeGate", DisableAlreadyRegisteredCheck: true})
	})
	return u, cfg
}

func TestSystemVMUpgradeAPI(t *testing.T) {
	s := modelstest.SQLite(t)
	u, cfg := startSystemVMUpgradeWorker(t, s)
	e := newEnv(t, s, cfg)
	f := seed(t, s)
	op := models.RoleOperator
	e.want(e.do("PUT", "/settings/minreq.sysvmtemplate.version", models.RoleAdmin, map[string]any{"value": "4.15"}), 200, "minreq")

	// requiresupgrade on /system-vms, as on /routers: s-3-VM (4.14.0) only.
	if got := names(items(t, e.want(e.do("GET", "/system-vms?requiresupgrade=true", models.RoleReadOnly, nil), 200, "list"))); len(got) != 1 || got[0] != "s-3-VM" {
		t.Errorf("requiresupgrade=true = %v, want [s-3-VM]", got)
	}
	if got := names(items(t, e.want(e.do("GET", "/system-vms?requiresupgrade=false", models.RoleReadOnly, nil), 200, "list"))); len(got) != 2 {
		t.Errorf("requiresupgrade=false = %v, want the two current ones", got)
	}
	one := e.want(e.do("GET", "/system-vms/"+f.ssvm2, models.RoleReadOnly, nil), 200, "get")
	if one.JSON["requiresupgrade"] != true {
		t.Errorf("GET /system-vms/%s requiresupgrade = %v", f.ssvm2, one.JSON["requiresupgrade"])
	}
	one = e.want(e.do("GET", "/system-vms/"+f.cpvm1, models.RoleReadOnly, nil), 200, "get")
	if one.JSON["requiresupgrade"] != false {
		t.Errorf("GET /system-vms/%s requiresupgrade = %v", f.cpvm1, one.JSON["requiresupgrade"])
	}

	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"zoneid": f.zone1, "id": f.cpvm1}, "id"},
		{map[string]any{"systemvmtype": "domainrouter"}, "systemvmtype"},
		{map[string]any{"parallelism": 0}, "parallelism"},
		{map[string]any{"failureBudget": "some"}, "failureBudget"},
		{map[string]any{"healthGateTimeout": "1s"}, "healthGateTimeout"},
		{map[string]any{"window": map[string]any{"dailyStart": "22:00"}}, "window"},
		{map[string]any{"zoneid": f.zone1, "force": true, "windows": map[string]any{"no-such-zone": map[string]any{"dailyStart": "22:00", "dailyEnd": "23:00"}}}, "windows"},
	} {
		e.wantErr(e.do("POST", "/system-vms/upgrades", op, c.body), 400, CodeBadRequest, c.field, c.field)
	}
	e.wantErr(e.do("POST", "/system-vms/upgrades", models.RoleReadOnly, nil), 403, CodeForbidden, "", "read-only")
	e.wantErr(e.do("POST", "/system-vms/upgrades", op, map[string]any{"zoneid": "nope"}), 404, CodeNotFound, "", "unknown zone")
	e.wantErr(e.do("POST", "/system-vms/upgrades", op, map[string]any{"id": f.r4}), 404, CodeNotFound, "", "a router")
	e.wantErr(e.do("POST", "/system-vms/upgrades", op, map[string]any{"zoneid": f.zone1}), 409, CodeConflict, "", "nothing to upgrade")

	// Every one that requires upgrade: s-3-VM, which is Stopped: skipped at its turn.
	r := e.want(e.do("POST", "/system-vms/upgrades", op, map[string]any{"systemvmtype": "secondarystorage"}), 202, "start")
	o := r.JSON["operation"].(map[string]any)
	if o["workflowId"] != "systemvm-upgrade:all" || o["kind"] != workflows.SystemVMUpgradeOperationKind {
		t.Errorf("workflowId %v kind %v", o["workflowId"], o["kind"])
	}
	done := e.waitUpgradeAt("/system-vms/upgrades/", o["id"].(string), "completed", func(op map[string]any) bool { return op["status"] == models.OpCompleted })
	counts := done["result"].(map[string]any)["counts"].(map[string]any)
	if counts["skipped"] != float64(1) || counts["done"] != float64(0) {
		t.Fatalf("counts = %v, want the stopped SSVM skipped", counts)
	}
	// A router upgrade's id is not a system VM upgrade.
	e.wantErr(e.do("GET", "/system-vms/upgrades/nope", models.RoleReadOnly, nil), 404, CodeNotFound, "", "unknown upgrade")

	// Zone 1 forced, one at a time: paused, parallelism changed, resumed, canceled.
	u.mu.Lock()
	u.hold = 1500 * time.Millisecond
	u.mu.Unlock()
	r = e.want(e.do("POST", "/system-vms/upgrades", op, map[string]any{"zoneid": f.zone1, "force": true, "parallelism": 1}), 202, "forced")
	id := r.JSON["operation"].(map[string]any)["id"].(string)
	e.wantErr(e.do("POST", "/system-vms/upgrades", op, map[string]any{"zoneid": f.zone1, "force": true}), 409, CodeConflict, "", "same scope")
	e.waitUpgradeAt("/system-vms/upgrades/", id, "first VM in flight", func(op map[string]any) bool {
		p, _ := op["progress"].(map[string]any)
		return p != nil && p["inFlight"] == float64(1)
	})
	e.want(e.do("POST", "/system-vms/upgrades/"+id+"/pause", op, nil), 202, "pause")
	paused := e.waitUpgradeAt("/system-vms/upgrades/", id, "paused", func(op map[string]any) bool {
		p, _ := op["progress"].(map[string]any)
		return p != nil && p["status"] == "paused"
	})
	if reason := paused["progress"].(map[string]any)["pauseReason"]; reason != "paused by operator-key" {
		t.Errorf("pauseReason = %v", reason)
	}
	e.wantErr(e.do("POST", "/system-vms/upgrades/"+id+"/parallelism", op, map[string]any{"parallelism": 0}), 400, CodeBadRequest, "parallelism", "parallelism 0")
	e.want(e.do("POST", "/system-vms/upgrades/"+id+"/parallelism", op, map[string]any{"parallelism": 3}), 202, "parallelism")
	e.waitUpgradeAt("/system-vms/upgrades/", id, "parallelism 3", func(op map[string]any) bool {
		p, _ := op["progress"].(map[string]any)
		return p != nil && p["parallelism"] == float64(3)
	})
	e.want(e.do("POST", "/system-vms/upgrades/"+id+"/resume", op, nil), 202, "resume")
	e.waitUpgradeAt("/system-vms/upgrades/", id, "resumed", func(op map[string]any) bool {
		p, _ := op["progress"].(map[string]any)
		return p != nil && p["status"] == "running"
	})
	e.want(e.do("POST", "/system-vms/upgrades/"+id+"/cancel", op, nil), 202, "cancel")
	end := e.waitUpgradeAt("/system-vms/upgrades/", id, "ended", func(op map[string]any) bool { return op["status"] != models.OpRunning })
	if end["status"] != models.OpCanceled && end["status"] != models.OpCompleted {
		t.Fatalf("after cancel: status %v, error %v", end["status"], end["error"])
	}
	e.wantErr(e.do("POST", "/system-vms/upgrades/"+id+"/pause", op, nil), 409, CodeConflict, "", "pause after the end")
	list := e.want(e.do("GET", "/system-vms/upgrades", models.RoleReadOnly, nil), 200, "list")
	if count(list) != 2 {
		t.Errorf("system VM upgrades listed = %d, want 2", count(list))
	}
	// Zone 1 has one CPVM and one SSVM: each is replaced (deployed, gated, the old one
	// destroyed), never recreated; the VM in flight at the cancel finished.
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.recreate) != 0 {
		t.Errorf("the zone's only CPVM or SSVM was recreated: %v", u.recreate)
	}
	if len(u.deploy) == 0 {
		t.Error("the forced upgrade deployed nothing")
	}
	for id, n := range u.deploy {
		var vm models.SystemVM
		modelstest.Must(t, s.Get(context.Background(), &vm, id), "deployed VM")
		if n != 1 || vm.State != models.StateRunning {
			t.Errorf("new VM %s deployed %d times, %s", id, n, vm.State)
		}
	}
	for id, n := range u.destroy {
		var vm models.SystemVM
		modelstest.Must(t, s.Get(context.Background(), &vm, id), "retired VM")
		if n != 1 || (id != f.cpvm1 && id != f.ssvm1) || vm.State != models.StateDestroyed {
			t.Errorf("retired %s %d times (%s)", vm.Name, n, vm.State)
		}
	}
	if len(u.destroy) != len(u.deploy) {
		t.Errorf("%d deployed, %d retired: every new VM that passed its gate retires its old one", len(u.deploy), len(u.destroy))
	}
}
