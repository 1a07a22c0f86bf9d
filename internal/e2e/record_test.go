package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/xen/xapisim"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// recordEnv turns TestRecordHistories on: SYSVM_RECORD_HISTORIES=1.
const recordEnv = "SYSVM_RECORD_HISTORIES"

// recording reports whether TestRecordHistories is to write histories.
func recording() bool { return os.Getenv(recordEnv) == "1" }

// recordDir is where histories go: $SYSVM_RECORD_DIR or the repo's workflows/testdata, which
// workflows' replay test replays.
func recordDir() string {
	if d := os.Getenv("SYSVM_RECORD_DIR"); d != "" {
		return d
	}
	return filepath.Join(testenv.RepoRoot(), "workflows", "testdata")
}

// recordHistory writes a run's history when SYSVM_RECORD_HISTORY is set (the older, per-test
// recorder; TestRecordHistories records every workflow type). It is a separate switch so that
// SYSVM_RECORD_HISTORIES=1 over the whole package never overwrites lifecycle_recreate.json, a
// history of older code that replay keeps.
func (s *stack) recordHistory(name string, op operation) {
	s.t.Helper()
	if os.Getenv("SYSVM_RECORD_HISTORY") == "" {
		return
	}
	s.record(name, op.WorkflowID, op.RunID)
}

// record writes the history of one run (runID "" = the latest run of workflowID) as
// `temporal workflow show --output json` does, into recordDir()/name.
func (s *stack) record(name, workflowID, runID string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The operation row is finished by the run's last activity, a moment before the run closes:
	// wait for the close (a failed run answers its failure, which is fine here).
	_ = s.client.GetWorkflow(ctx, workflowID, runID).Get(ctx, nil)
	h := s.history(workflowID, runID)
	if len(h.Events) == 0 {
		s.t.Fatalf("history of %s/%s is empty", workflowID, runID)
	}
	last := h.Events[len(h.Events)-1].GetEventType()
	if last != enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED && last != enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED &&
		last != enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW {
		s.t.Fatalf("history of %s/%s ends with %s: record closed runs only", workflowID, runID, last)
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(h)
	if err != nil {
		s.t.Fatal(err)
	}
	path := filepath.Join(recordDir(), name)
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		s.t.Fatal(err)
	}
	s.t.Logf("recorded %d events of %s to %s", len(h.Events), workflowID, path)
}

// history reads the whole history of a run (runID "" = the latest run of workflowID),
// decoded: in clear, as replay needs it.
func (s *stack) history(workflowID, runID string) *historypb.History {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	it := s.client.GetWorkflowHistory(ctx, workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var h historypb.History
	for it.HasNext() {
		ev, err := it.Next()
		if err == nil {
			err = s.codec.DecodeMessage(ctx, ev) // payloads are encrypted in history
		}
		if err != nil {
			s.t.Fatalf("history of %s/%s: %v", workflowID, runID, err)
		}
		h.Events = append(h.Events, ev)
	}
	return &h
}

// sweepRun runs one health sweep of the zone as its schedule would and returns the run.
func (p *platform) sweepRun(kind activities.HealthKind) (workflows.SweepResult, client.WorkflowRun) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run, err := p.client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:        workflows.HealthScheduleID(kind, p.zoneID) + "-record-" + time.Now().UTC().Format("150405.000000000"),
		TaskQueue: workflows.TaskQueue},
		workflows.HealthSweepWorkflowName, workflows.SweepInput{ZoneID: p.zoneID, Kind: kind})
	if err != nil {
		p.t.Fatalf("start %s sweep: %v", kind, err)
	}
	var res workflows.SweepResult
	if err := run.Get(ctx, &res); err != nil {
		p.t.Fatalf("%s sweep %s: %v", kind, run.GetID(), err)
	}
	return res, run
}

// TestRecordHistories records a history of every workflow type, and of each of its paths that
// matter for replay, from real runs on a Temporal dev server, the demo zone (vcsim and the XAPI
// simulator) and the simulated router fleet, into workflows/testdata/<WorkflowType>_<case>.json
// (one command; the README's test paragraph names it):
//
//	SYSVM_RECORD_HISTORIES=1 go test -count=1 -timeout 15m ./internal/e2e -run TestRecordHistories
//
// workflows' TestReplayRecordedHistories replays every file there with today's code. Re-record
// after a workflow change that is meant to change new runs only, and keep the old files: they
// are what running workflows replay (workflow.GetVersion). -run 'TestRecordHistories/HealthSweep'
// records one group. Without SYSVM_RECORD_HISTORIES=1 it is skipped: it is a tool, not a test.
func TestRecordHistories(t *testing.T) {
	if !recording() {
		t.Skip("records workflow histories into workflows/testdata only with " + recordEnv + "=1")
	}
	files := &devcloud.SandboxFiles{}
	p := newPlatform(t, modelstest.SQLite(t), platformOptions{vmware: true, xen: true, fleet: true,
		commands: devcloud.DiagnosticsCommands("", files), files: files, consoles: true})

	t.Run("SystemVMLifecycle", func(t *testing.T) {
		// A VMware router with a network of its own goes through every action; destroying a
		// member of a redundant pair is allowed, destroying an isolated network's only router
		// is refused (a failed run).
		r := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND network_id <> ?", string(hypervisors.VMware), false, "")
		for _, action := range []string{"stop", "start", "reboot", "recreate"} {
			op := p.wait(p.start("/api/v1/routers/"+r.ID+"/"+action), 3*time.Minute)
			if op.Status != models.OpCompleted {
				t.Fatalf("%s of %s ended %s: %s", action, r.Name, op.Status, op.Error)
			}
			name := action
			if action == "recreate" {
				// SystemVMLifecycle_recreate.json is a history of the one-step switch, kept for
				// replay; runs with address takeover (stop-old, take-over) have their own.
				name = "recreate_takeover"
			}
			p.record(workflows.LifecycleWorkflowName+"_"+name+".json", op.WorkflowID, op.RunID)
		}
		var out struct {
			Operation operation `json:"operation"`
		}
		only := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND network_id <> ? AND id <> ?", string(hypervisors.VMware), false, "", r.ID)
		if code := p.do(http.MethodPost, "/api/v1/routers/"+only.ID+"/destroy", nil, &out); code == http.StatusAccepted {
			if done := p.wait(out.Operation, time.Minute); done.Status == models.OpFailed {
				p.record(workflows.LifecycleWorkflowName+"_destroy_refused.json", done.WorkflowID, done.RunID)
			}
		}
	})

	t.Run("NetworkRestart", func(t *testing.T) {
		var isolated, redundant models.Network
		if err := p.store.DB.Where("type = ? AND redundant = ?", models.NetworkIsolated, false).Order("name").First(&isolated).Error; err != nil {
			t.Fatalf("no isolated network: %v", err)
		}
		if err := p.store.DB.Where("type = ? AND redundant = ?", models.NetworkIsolated, true).Order("name").First(&redundant).Error; err != nil {
			t.Fatalf("no redundant isolated network: %v", err)
		}
		for name, path := range map[string]string{
			"reboot":  "/api/v1/networks/" + isolated.ID + "/restart",
			"cleanup": "/api/v1/networks/" + redundant.ID + "/restart?cleanup=true",
		} {
			op := p.wait(p.start(path), 5*time.Minute)
			if op.Status != models.OpCompleted {
				t.Fatalf("restart %s ended %s: %s", path, op.Status, op.Error)
			}
			p.record(workflows.NetworkRestartWorkflowName+"_"+name+".json", op.WorkflowID, op.RunID)
		}
	})

	t.Run("HealthSweep", func(t *testing.T) {
		// Every kind on a healthy zone with the default settings (no recreate list: the rules
		// still run, the GetVersion branch "rules-without-recreate-list").
		for _, kind := range []activities.HealthKind{activities.HealthBasic, activities.HealthAdvanced, activities.HealthConfig, activities.HealthFetch} {
			_, run := p.sweepRun(kind)
			p.record(workflows.HealthSweepWorkflowName+"_"+string(kind)+".json", run.GetID(), run.GetRunID())
		}
		// A failing router with its check listed: the second failing sweep plans a recreation
		// and starts it as a child.
		a := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND network_id <> ? AND state = ?",
			string(hypervisors.XenServer), false, "", models.StateRunning)
		p.setting(activities.SettingHealthRecreateChecks, agent.CheckDHCPService)
		p.fault(a.ID, fleet.FaultServiceDown, "dnsmasq")
		p.sweepRun(activities.HealthBasic)
		res, run := p.sweepRun(activities.HealthBasic)
		if len(res.Recreations) != 1 || !res.Recreations[0].Started {
			t.Fatalf("second failing sweep started %+v (plan %+v), want one recreation", res.Recreations, res.Plan)
		}
		p.record(workflows.HealthSweepWorkflowName+"_basic_recreate.json", run.GetID(), run.GetRunID())
		rec := res.Recreations[0]
		op := p.wait(operation{ID: rec.OperationID}, 3*time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("health recreation ended %s: %s", op.Status, op.Error)
		}
		// _recreate_by_health.json is kept: a run of the one-step switch.
		p.record(workflows.LifecycleWorkflowName+"_recreate_by_health_takeover.json", op.WorkflowID, op.RunID)
		p.clearFaults(a.ID)
		p.setting(activities.SettingHealthRecreateChecks, "")
	})

	t.Run("RouterHealthCheck", func(t *testing.T) {
		r := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND state = ?", string(hypervisors.VMware), false, models.StateRunning)
		var out map[string]any
		if code := p.do(http.MethodPost, "/api/v1/routers/"+r.ID+"/health-checks", nil, &out); code != http.StatusOK {
			t.Fatalf("POST health-checks of %s = %d (%v)", r.Name, code, out)
		}
		p.record(workflows.RouterHealthCheckWorkflowName+"_ondemand.json", workflows.RouterHealthCheckWorkflowID(r.ID), "")
	})

	t.Run("SystemVMDiagnostics", func(t *testing.T) {
		// A real ping of loopback inside a router.
		r := p.pickRouter("hypervisor_type = ? AND state = ?", string(hypervisors.VMware), models.StateRunning)
		op, res := p.diagnose(r, map[string]any{"type": "ping", "ipaddress": "127.0.0.1", "params": "-c 1"})
		if op.Status != models.OpCompleted || res.ExitCode != 0 {
			t.Fatalf("ping in %s ended %s (%s), exit %d", r.Name, op.Status, op.Error, res.ExitCode)
		}
		p.record(workflows.DiagnosticsWorkflowName+"_ping.json", op.WorkflowID, op.RunID)
		op = p.wait(p.start("/api/v1/routers/"+r.ID+"/diagnostics/data"), 2*time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("diagnostics data of %s ended %s (%s)", r.Name, op.Status, op.Error)
		}
		p.record(workflows.DiagnosticsDataWorkflowName+"_collect.json", op.WorkflowID, op.RunID)
	})

	t.Run("SystemVMMigrate", func(t *testing.T) {
		// A live migration (VMware), and a scale that stops, changes and starts the VM.
		r := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND state = ?", string(hypervisors.VMware), false, models.StateRunning)
		op := p.postWait("/api/v1/routers/"+r.ID+"/migrate", nil)
		if op.Status != models.OpCompleted {
			t.Fatalf("migrate %s ended %s (%s)", r.Name, op.Status, op.Error)
		}
		p.record(workflows.MigrateWorkflowName+"_live.json", op.WorkflowID, op.RunID)
		so := models.ServiceOffering{Base: models.Base{ID: models.NewID()}, Name: "Bigger router", CPUs: 2, MemoryMB: 1024, SystemVMType: models.TypeRouter}
		if err := p.store.DB.Create(&so).Error; err != nil {
			t.Fatal(err)
		}
		op = p.postWait("/api/v1/routers/"+r.ID+"/scale", map[string]any{"serviceofferingid": so.ID})
		if op.Status != models.OpCompleted {
			t.Fatalf("scale %s ended %s (%s)", r.Name, op.Status, op.Error)
		}
		p.record(workflows.ScaleWorkflowName+"_cold.json", op.WorkflowID, op.RunID)
	})

	t.Run("RouterUpgrade", func(t *testing.T) {
		// One outdated router upgraded (a recreate child and its health gate), then a gated
		// change on its network pushed to its routers.
		r := p.pickRouter("version = ? AND is_redundant = ? AND network_id <> ? AND vpc_id = ? AND hypervisor_type = ?",
			devcloud.OldVersion, false, "", "", string(hypervisors.VMware))
		var up struct {
			Operation operation `json:"operation"`
			Error     any       `json:"error"`
		}
		if code := p.do(http.MethodPost, "/api/v1/router-upgrades", map[string]any{"id": r.ID}, &up); code != http.StatusAccepted {
			t.Fatalf("upgrade %s = %d (%v)", r.Name, code, up.Error)
		}
		op := p.wait(up.Operation, 3*time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("upgrade of %s ended %s: %s", r.Name, op.Status, op.Error)
		}
		p.record(workflows.RouterUpgradeWorkflowName+"_one.json", op.WorkflowID, op.RunID)
		var n models.Network
		if err := p.store.Get(context.Background(), &n, r.NetworkID); err != nil {
			t.Fatal(err)
		}
		vm := map[string]any{"name": "vm-recorded-1", "macaddress": "02:00:aa:00:00:61",
			"ipaddress": strings.TrimSuffix(n.CIDR, "0/24") + "61"}
		var out struct {
			Operation operation `json:"operation"`
			Error     any       `json:"error"`
		}
		if code := p.do(http.MethodPost, "/api/v1/networks/"+n.ID+"/guest-vms", vm, &out); code != http.StatusAccepted {
			t.Fatalf("guest VM on %s = %d (%v)", n.Name, code, out.Error)
		}
		op = p.wait(operation{ID: out.Operation.ID, Kind: workflows.NetworkRulesOperationKind}, 2*time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("push to %s ended %s: %s", n.Name, op.Status, op.Error)
		}
		p.record(workflows.NetworkRulesWorkflowName+"_guest_vm.json", op.WorkflowID, op.RunID)

		// Another outdated router live-patched (mode patch: the PatchRouter activity instead of
		// the recreate child, then the gate).
		pr := p.pickRouter("version = ? AND state = ?", devcloud.OldVersion, models.StateRunning)
		if code := p.do(http.MethodPost, "/api/v1/router-upgrades", map[string]any{"id": pr.ID, "mode": "patch"}, &up); code != http.StatusAccepted {
			t.Fatalf("patch %s = %d (%v)", pr.Name, code, up.Error)
		}
		op = p.wait(up.Operation, 2*time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("patch of %s ended %s: %s", pr.Name, op.Status, op.Error)
		}
		p.record(workflows.RouterUpgradeWorkflowName+"_patch.json", op.WorkflowID, op.RunID)

		// The zone's other outdated routers, continued as new with routers in flight
		// (RoutersPerRun 1, parallelism 3): the run that hands them over (the
		// upgrade-continue-without-drain marker, Carried in its continue-as-new) and the run
		// that takes them over (AwaitRecreate on their children, then their gates).
		// The chain is read from the first run (the ended operation names the last one).
		// The first two clones on each XenServer pool take 3 s, so two of the three routers in
		// flight are still in their recreate when the third ends: they are handed over.
		for _, x := range p.xen {
			x.InjectLatency(xapisim.Latency{Method: "VM.clone", Delay: 3 * time.Second, Times: 2})
			defer x.ClearLatencies()
		}
		started := p.startRouterUpgrade(workflows.RouterUpgradeRequest{Selection: activities.UpgradeSelection{ZoneID: p.zoneID},
			Parallelism: 3, RoutersPerRun: 1, Budget: workflows.FailureBudget{Percent: 100}, Mode: workflows.UpgradeModeRecreate})
		op = p.wait(started, 5*time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("upgrade of the zone ended %s: %s", op.Status, op.Error)
		}
		chain := p.upgradeChain(started)
		handedOver := slices.IndexFunc(chain, func(r upgradeRun) bool { return len(r.carried) > 0 })
		if handedOver < 0 {
			t.Fatalf("none of the %d runs handed a router over in flight: record again (result %s)", len(chain), op.Result)
		}
		p.record(workflows.RouterUpgradeWorkflowName+"_handover.json", op.WorkflowID, chain[handedOver].runID)
		p.record(workflows.RouterUpgradeWorkflowName+"_takeover.json", op.WorkflowID, chain[handedOver+1].runID)
	})

	t.Run("SystemVMDeploy", func(t *testing.T) {
		// A new CPVM (verified over SSH and its console's TLS) and a new SSVM.
		for _, typ := range []string{models.TypeCPVM, models.TypeSSVM} {
			op, res := p.deploy(typ)
			if op.Status != models.OpCompleted {
				t.Fatalf("deploy of a %s ended %s: %s", typ, op.Status, op.Error)
			}
			p.record(workflows.SystemVMDeployWorkflowName+"_"+typ+".json", op.WorkflowID, op.RunID)
			_ = res
		}
	})

	t.Run("SystemVMUpgrade", func(t *testing.T) {
		// One CPVM of two recreated (make-before-break while the other serves), then the zone's
		// only SSVM replaced (a new one deployed, gated, the old one destroyed).
		ofType := func(typ string) []models.SystemVM {
			var vms []models.SystemVM
			modelstest.Must(t, p.store.DB.Where("zone_id = ? AND type = ? AND state = ?", p.zoneID, typ, models.StateRunning).
				Order("name").Find(&vms).Error, "system VMs")
			return vms
		}
		if len(ofType(models.TypeCPVM)) < 2 {
			if op, _ := p.deploy(models.TypeCPVM); op.Status != models.OpCompleted {
				t.Fatalf("deploy a second CPVM: %s %s", op.Status, op.Error)
			}
		}
		for ssvms := ofType(models.TypeSSVM); len(ssvms) > 1; ssvms = ssvms[1:] {
			if op := p.wait(p.start("/api/v1/system-vms/"+ssvms[0].ID+"/destroy"), 3*time.Minute); op.Status != models.OpCompleted {
				t.Fatalf("destroy %s: %s %s", ssvms[0].Name, op.Status, op.Error)
			}
		}
		upgrade := func(vm models.SystemVM, name string) {
			var up struct {
				Operation operation `json:"operation"`
				Error     any       `json:"error"`
			}
			if code := p.do(http.MethodPost, "/api/v1/system-vms/upgrades", map[string]any{"id": vm.ID, "force": true}, &up); code != http.StatusAccepted {
				t.Fatalf("upgrade %s = %d (%v)", vm.Name, code, up.Error)
			}
			op := p.wait(up.Operation, 3*time.Minute)
			if op.Status != models.OpCompleted || !strings.Contains(string(op.Result), `"done":1`) {
				t.Fatalf("upgrade of %s ended %s: %s %s", vm.Name, op.Status, op.Error, op.Result)
			}
			p.record(workflows.SystemVMUpgradeWorkflowName+"_"+name+".json", op.WorkflowID, op.RunID)
		}
		upgrade(ofType(models.TypeCPVM)[0], "recreate")
		upgrade(ofType(models.TypeSSVM)[0], "replace")
	})

	t.Run("CapacityScan", func(t *testing.T) {
		// A scan that deploys one CPVM (1 session per CPVM, a standby of 2 more than the zone has).
		var n int64
		modelstest.Must(t, p.store.DB.Model(&models.SystemVM{}).Where("zone_id = ? AND type = ? AND state = ?", p.zoneID,
			models.TypeCPVM, models.StateRunning).Count(&n).Error, "CPVMs")
		p.setting("consoleproxy.session.max", "1")
		p.setting("consoleproxy.capacity.standby", fmt.Sprint(n))
		res, wid, rid := p.scanCapacityRun(1)
		if len(res.Pools[0].Deployed) != 1 {
			t.Fatalf("recorded scan deployed %v", res.Pools[0].Deployed)
		}
		p.record(workflows.CapacityScanWorkflowName+"_grow.json", wid, rid)
		p.setting("consoleproxy.session.max", "50")
		p.setting("consoleproxy.capacity.standby", "10")
	})

	// Last, as it leaves a network with one router: destroy the BACKUP of a redundant pair.
	t.Run("SystemVMLifecycle destroy", func(t *testing.T) {
		pair := p.pickRouter("is_redundant = ? AND redundant_state = ? AND state = ?", true, models.RedundantBackup, models.StateRunning)
		op := p.wait(p.start("/api/v1/routers/"+pair.ID+"/destroy"), 3*time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("destroy of %s ended %s: %s", pair.Name, op.Status, op.Error)
		}
		p.record(workflows.LifecycleWorkflowName+"_destroy.json", op.WorkflowID, op.RunID)
	})
}
