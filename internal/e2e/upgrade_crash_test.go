package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// TestUpgradeSurvivesWorkerKills runs a zone's router upgrade on `sysvm worker` processes and
// kills the worker twice while routers are being recreated (each clone takes 1.5 s on vcsim).
// Afterwards every router that required upgrade was upgraded exactly once — one lifecycle run
// on its workflow ID, one VM for it on vcsim (its new instance), running — none skipped, none left down, and
// the database has the current version. (Health checks are off in the zone: no simulated SSH
// routers here, so the gate requires Running only.)
func TestUpgradeSurvivesWorkerKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim and worker processes")
	}
	dsn := modelstest.MySQLDSN(t)
	store, err := models.OpenAndMigrate(context.Background(), dsn, modelstest.TestKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	s := newStack(t, store, false)
	ctx := context.Background()
	var zone models.Zone
	if err := store.DB.First(&zone).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := store.Settings.Set(ctx, activities.SettingHealthEnabled, models.ScopeGlobal, "", "false"); err != nil {
		t.Fatal(err)
	}
	var outdated []models.SystemVM
	if err := store.DB.Where("type = ? AND version = ? AND state = ?", models.TypeRouter, devcloud.OldVersion, models.StateRunning).
		Order("name").Find(&outdated).Error; err != nil || len(outdated) < 4 {
		t.Fatalf("outdated routers: %d (%v)", len(outdated), err)
	}
	simulator.TaskDelay.MethodDelay = map[string]int{"CloneVm": 1500}
	t.Cleanup(func() { simulator.TaskDelay.MethodDelay = nil })

	worker := startWorkerProcess(t, dsn, s.temporal.Address)
	var out struct {
		Operation operation `json:"operation"`
		Error     any       `json:"error"`
	}
	if code := s.do("POST", "/api/v1/router-upgrades", map[string]any{"zoneid": zone.ID, "parallelism": 2}, &out); code != 202 {
		t.Fatalf("POST /router-upgrades = %d (%v)", code, out.Error)
	}
	op := out.Operation
	upgraded := func() int {
		var n int64
		store.DB.Model(&models.SystemVM{}).Where("type = ? AND version = ? AND id IN ?", models.TypeRouter, devcloud.CurrentVersion,
			ids(outdated)).Count(&n)
		return int(n)
	}
	for kill, at := range []int{1, 3} {
		deadline := time.Now().Add(2 * time.Minute)
		for upgraded() < at {
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: %d routers upgraded, waited for %d", kill+1, upgraded(), at)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond) // the next routers' clones are under way
		if err := worker.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_, _ = worker.Process.Wait()
		t.Logf("worker killed with %d of %d routers at the new version", upgraded(), len(outdated))
		worker = startWorkerProcess(t, dsn, s.temporal.Address)
	}
	done := s.wait(op, 5*time.Minute)
	if done.Status != models.OpCompleted {
		t.Fatalf("upgrade ended %s: %s", done.Status, done.Error)
	}
	var res workflows.RouterUpgradeResult
	if err := json.Unmarshal(done.Result, &res); err != nil {
		t.Fatal(err)
	}
	if res.Counts[workflows.UpgradeDone] != len(outdated) {
		t.Fatalf("counts %v, want all %d done (none skipped, none failed)", res.Counts, len(outdated))
	}
	d, err := s.acts.Drivers.For(ctx, outdated[0].ClusterID)
	if err != nil {
		t.Fatal(err)
	}
	all, err := d.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range outdated {
		n, running := 0, false
		row := s.vm(r.ID)
		instance := row.HypervisorName() // a make-before-break recreate names a new instance
		for _, vm := range all {
			if vm.Name == instance || vm.Name == r.Name {
				n++
				running = vm.State == hypervisors.PowerRunning
			}
		}
		if n != 1 || !running {
			t.Errorf("%s: %d VMs of that name on vcsim (running %v), want one running", r.Name, n, running)
		}
		if vm := s.vm(r.ID); vm.Version != devcloud.CurrentVersion || vm.State != models.StateRunning {
			t.Errorf("%s in the database: %s %s", r.Name, vm.Version, vm.State)
		}
		runs, err := s.client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf("WorkflowId = '%s'", workflows.LifecycleWorkflowID(r.ID))})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs.Executions) != 1 {
			t.Errorf("%s: %d lifecycle runs, want exactly one recreate", r.Name, len(runs.Executions))
		}
	}
}

func ids(vms []models.SystemVM) []string {
	out := make([]string, len(vms))
	for i, v := range vms {
		out[i] = v.ID
	}
	return out
}
