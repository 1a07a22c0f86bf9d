package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// newUpgradeZone starts a stack on MariaDB (on temporal, or a dev server of its own when nil)
// for an upgrade test of its zone's outdated routers, at least 5 of them Running: health checks
// off (no simulated SSH routers here, so the gate requires Running only) and vcsim's clones
// taking 1.5 s from now on, so routers are caught in their recreate.
func newUpgradeZone(t *testing.T, temporal *testenv.Temporal) (*stack, *models.Store, string, models.Zone, []models.SystemVM) {
	t.Helper()
	dsn := modelstest.MySQLDSN(t)
	store, err := models.OpenAndMigrate(context.Background(), dsn, modelstest.TestKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	s := newStackOn(t, store, false, temporal)
	var zone models.Zone
	if err := store.DB.First(&zone).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := store.Settings.Set(context.Background(), activities.SettingHealthEnabled, models.ScopeGlobal, "", "false"); err != nil {
		t.Fatal(err)
	}
	var outdated []models.SystemVM
	if err := store.DB.Where("type = ? AND version = ? AND state = ?", models.TypeRouter, devcloud.OldVersion, models.StateRunning).
		Order("name").Find(&outdated).Error; err != nil || len(outdated) < 5 {
		t.Fatalf("outdated routers: %d (%v), want at least 5", len(outdated), err)
	}
	simulator.TaskDelay.MethodDelay = map[string]int{"CloneVm": 1500}
	t.Cleanup(func() { simulator.TaskDelay.MethodDelay = nil })
	return s, store, dsn, zone, outdated
}

// TestUpgradeSurvivesWorkerKillsAndServerRestart runs a zone's router upgrade on `sysvm worker`
// processes over its own Temporal dev server, which keeps its state in a SQLite file on a
// fixed loopback port, and crashes the platform three times while routers are being recreated
// (each clone takes 1.5 s on vcsim), each time once Temporal reports a router's recreate step
// STARTED on a worker: kill -9 of the worker; kill -9 of the Temporal server, started again on
// the same port and file (the API, the worker and the test's client reconnect by themselves:
// the API answers the progress query and takes a signal, and the next crash waits for a step
// started by the restarted server); kill -9 of the worker again. Afterwards every router that
// required upgrade was upgraded exactly once — one lifecycle recreate run on its workflow ID,
// completed, one VM for it on vcsim (its new instance), running — none skipped, none left
// down, the database has the current version, and the operation row was finished by the
// workflow with its result. (Health checks are off in the zone: no simulated SSH routers
// here, so the gate requires Running only. vcsim only: the stack of this test has one
// hypervisor.)
func TestUpgradeSurvivesWorkerKillsAndServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim and worker processes")
	}
	begin := time.Now()
	temporal := testenv.PersistentTemporalT(t)
	s, store, dsn, zone, outdated := newUpgradeZone(t, temporal)
	ctx := context.Background()

	worker := startWorkerProcess(t, dsn, temporal.Address)
	t.Logf("%s: platform up", time.Since(begin).Round(time.Millisecond))
	var out struct {
		Operation operation `json:"operation"`
		Error     any       `json:"error"`
	}
	if code := s.do(http.MethodPost, "/api/v1/router-upgrades", map[string]any{"zoneid": zone.ID, "parallelism": 2}, &out); code != http.StatusAccepted {
		t.Fatalf("POST /router-upgrades = %d (%v)", code, out.Error)
	}
	op := out.Operation
	upgraded := func() int {
		var n int64
		store.DB.Model(&models.SystemVM{}).Where("type = ? AND version = ? AND id IN ?", models.TypeRouter, devcloud.CurrentVersion,
			ids(outdated)).Count(&n)
		return int(n)
	}
	killWorker := func() {
		t.Helper()
		if err := worker.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_, _ = worker.Process.Wait()
		worker = startWorkerProcess(t, dsn, temporal.Address)
	}
	restartServer := func() {
		t.Helper()
		temporal.Kill()
		down := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		if err := temporal.Restart(rctx); err != nil {
			t.Fatalf("restart the Temporal dev server: %v", err)
		}
		up := time.Now()
		s.waitUpgradeAnswers(op, time.Minute)
		t.Logf("Temporal dev server killed and started again on %s in %s; the API got the upgrade's progress from a worker %s later",
			temporal.Address, up.Sub(down).Round(time.Millisecond), time.Since(up).Round(time.Millisecond))
	}
	// Each crash comes once enough routers are upgraded (so the three spread over the upgrade)
	// and a router's recreate step is STARTED on a worker, started after the previous crash.
	since := time.Now()
	for i, crash := range []struct {
		what     string
		upgraded int
		do       func()
	}{
		{"kill -9 the worker", 1, killWorker},
		{"kill -9 the Temporal server and start it again", 2, restartServer},
		{"kill -9 the worker", 3, killWorker},
	} {
		router := waitForRecreateStarted(t, s, outdated, crash.upgraded, upgraded, since, 2*time.Minute)
		t.Logf("%s: crash %d (%s): %d of %d routers at the new version, %s's recreate step STARTED", time.Since(begin).Round(time.Millisecond),
			i+1, crash.what, upgraded(), len(outdated), router)
		crash.do()
		since = time.Now()
	}

	// The workflow's own result, read from Temporal (following continue-as-new), and the
	// operation row the workflow's last activity wrote, read before the API reconciles it.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var res workflows.RouterUpgradeResult
	if err := s.client.GetWorkflow(wctx, op.WorkflowID, "").Get(wctx, &res); err != nil {
		t.Fatalf("upgrade workflow: %v", err)
	}
	t.Logf("%s: the upgrade workflow ended", time.Since(begin).Round(time.Millisecond))
	var row models.Operation
	if err := store.DB.Where("id = ?", op.ID).Take(&row).Error; err != nil {
		t.Fatal(err)
	}
	if row.Status != models.OpCompleted || row.CompletedAt == nil || row.Error != "" {
		t.Fatalf("operation row after the workflow ended: %s (completed at %v) %q, want completed by the workflow", row.Status, row.CompletedAt, row.Error)
	}
	var rowRes workflows.RouterUpgradeResult
	if err := json.Unmarshal([]byte(row.Result), &rowRes); err != nil {
		t.Fatalf("operation row result %q: %v", row.Result, err)
	}
	if !reflect.DeepEqual(rowRes, res) {
		t.Errorf("operation row result %+v differs from the workflow's %+v", rowRes, res)
	}
	if done := s.wait(op, time.Minute); done.Status != models.OpCompleted {
		t.Fatalf("upgrade through the API: %s: %s", done.Status, done.Error)
	}
	if res.Counts[workflows.UpgradeDone] != len(outdated) || len(res.Routers) != len(outdated) {
		for _, r := range res.Routers {
			if r.State != workflows.UpgradeDone {
				t.Logf("%s: %s (%s)", r.Name, r.State, r.Reason)
			}
		}
		t.Fatalf("counts %v over %d routers, want all %d done (none skipped, none failed)", res.Counts, len(res.Routers), len(outdated))
	}
	for _, r := range res.Routers {
		if r.State != workflows.UpgradeDone || r.ToVersion != devcloud.CurrentVersion {
			t.Errorf("%s in the result: %s to %q (%s)", r.Name, r.State, r.ToVersion, r.Reason)
		}
	}

	checkUpgradedOnce(t, s, outdated)
	t.Logf("upgraded %d routers through 2 worker kills and a Temporal server restart in %s", len(outdated), time.Since(begin).Round(time.Millisecond))
}

// checkUpgradedOnce checks the hypervisor side and the database after an upgrade of routers
// (all in one cluster) on a stack: each is exactly one VM on the hypervisor, its new instance
// (the old one gone), running; the database has it at the current version, Running; its
// workflow ID had exactly one lifecycle run, a completed recreate. It returns the run ID of
// each router's lifecycle run.
func checkUpgradedOnce(t *testing.T, s *stack, routers []models.SystemVM) map[string]string {
	t.Helper()
	ctx := context.Background()
	lifecycleRuns := map[string]string{}
	d, err := s.acts.Drivers.For(ctx, routers[0].ClusterID)
	if err != nil {
		t.Fatal(err)
	}
	all, err := d.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routers {
		old := r.HypervisorName()
		after := s.vm(r.ID)
		instance := after.HypervisorName() // a make-before-break recreate names a new instance
		var found []hypervisors.VMInfo
		for _, vm := range all {
			if vm.Name == instance || vm.Name == old {
				found = append(found, vm)
			}
		}
		if instance == old || len(found) != 1 || found[0].Name != instance || found[0].State != hypervisors.PowerRunning {
			t.Errorf("%s (was %s, now %s): VMs on vcsim %+v, want only the replacement, running", r.Name, old, instance, found)
		}
		if after.Version != devcloud.CurrentVersion || after.State != models.StateRunning {
			t.Errorf("%s in the database: %s %s", r.Name, after.Version, after.State)
		}
		runs, err := s.client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf("WorkflowId = '%s'", workflows.LifecycleWorkflowID(r.ID))})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs.Executions) != 1 {
			t.Errorf("%s: %d lifecycle runs, want exactly one recreate", r.Name, len(runs.Executions))
			continue
		}
		e := runs.Executions[0]
		if e.Status != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED || e.Type.GetName() != workflows.LifecycleWorkflowName {
			t.Errorf("%s: lifecycle run %s %s, want a completed %s", r.Name, e.Type.GetName(), e.Status, workflows.LifecycleWorkflowName)
		}
		lifecycleRuns[r.ID] = e.Execution.GetRunId()
	}
	return lifecycleRuns
}

// waitForRecreateStarted waits until at least upgraded routers of the upgrade are at the new
// version and Temporal reports a RecreateStep activity STARTED, after since, on the lifecycle run
// of one of the routers not upgraded yet; it returns that router's name.
func waitForRecreateStarted(t *testing.T, s *stack, routers []models.SystemVM, upgraded int, count func() int, since time.Time,
	timeout time.Duration) string {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		if count() >= upgraded {
			for _, r := range routers {
				if s.vm(r.ID).Version == devcloud.CurrentVersion {
					continue
				}
				dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				desc, err := s.client.DescribeWorkflowExecution(dctx, workflows.LifecycleWorkflowID(r.ID), "")
				cancel()
				var nf *serviceerror.NotFound
				if errors.As(err, &nf) {
					continue // its turn has not come
				}
				if err != nil {
					t.Fatalf("describe the lifecycle run of %s: %v", r.Name, err)
				}
				if startedActivity(desc, "RecreateStep", since) {
					return r.Name
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recreate step started with %d routers upgraded (waited for %d) within %s", count(), upgraded, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitUpgradeAnswers waits until the API answers a running upgrade's progress query (the API's
// Temporal client and a worker are connected) and takes a signal through it.
func (s *stack) waitUpgradeAnswers(op operation, timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var env struct {
			Operation struct {
				Status   string                           `json:"status"`
				Progress *workflows.RouterUpgradeProgress `json:"progress"`
			} `json:"operation"`
		}
		code := s.do(http.MethodGet, "/api/v1/router-upgrades/"+op.ID, nil, &env)
		if code == http.StatusOK && env.Operation.Progress != nil && env.Operation.Progress.Status != "" {
			break
		}
		if code == http.StatusOK && env.Operation.Status != models.OpRunning {
			s.t.Fatalf("upgrade %s ended %s while waiting for it to answer", op.ID, env.Operation.Status)
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("upgrade %s: the API got no progress within %s of the restart (GET = %d)", op.ID, timeout, code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var out struct{ Error any }
	if code := s.do(http.MethodPost, "/api/v1/router-upgrades/"+op.ID+"/parallelism", map[string]int{"parallelism": 2}, &out); code != http.StatusOK &&
		code != http.StatusAccepted {
		s.t.Fatalf("signal the upgrade after the restart = %d (%v)", code, out.Error)
	}
}

func ids(vms []models.SystemVM) []string {
	out := make([]string, len(vms))
	for i, v := range vms {
		out[i] = v.ID
	}
	return out
}
