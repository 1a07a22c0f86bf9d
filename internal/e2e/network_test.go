package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// TestNetworkRestartCleanup restarts a redundant network with cleanup=true through the API on
// vcsim and SQLite: both routers are recreated make-before-break from the current template,
// BACKUP first and the PRIMARY only once the BACKUP's replacement took over, and the database
// and vcsim agree each has one VM, the replacement, running on a fresh private IP. Then the
// refusal to destroy the only router of an isolated network points at this endpoint, and
// following the pointer (without cleanup) reboots that router.
func TestNetworkRestartCleanup(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal and vcsim")
	}
	p := newPlatform(t, modelstest.SQLite(t), platformOptions{vmware: true, fleet: true})
	ctx := context.Background()
	var netw models.Network
	if err := p.store.DB.Where("type = ? AND redundant = ?", models.NetworkIsolated, true).Order("name").First(&netw).Error; err != nil {
		t.Fatalf("no redundant isolated network: %v", err)
	}
	before, err := activities.RoutersOfNetwork(ctx, p.store.DB, netw)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 2 || before[0].RedundantState != models.RedundantBackup || before[1].RedundantState != models.RedundantPrimary {
		t.Fatalf("routers of %s: %+v, want BACKUP then PRIMARY", netw.Name, before)
	}
	for _, r := range before {
		if info, err := p.hv(r); err != nil || info.State != hypervisors.PowerRunning {
			t.Fatalf("vcsim %s before: %+v %v", r.Name, info, err)
		}
	}
	var tpl models.Template
	if err := p.store.DB.Where("name = ?", devcloud.TemplateName(hypervisors.VMware, devcloud.CurrentVersion)).First(&tpl).Error; err != nil {
		t.Fatalf("current VMware template: %v", err)
	}

	conflicts := len(p.routers.Fleet.Conflicts())
	begin := time.Now()
	op := p.start("/api/v1/networks/" + netw.ID + "/restart?cleanup=true")
	if op.Kind != "network.restart" || op.WorkflowID != workflows.NetworkRestartWorkflowID(netw.ID) {
		t.Errorf("started %s as workflow %s", op.Kind, op.WorkflowID)
	}
	done := p.wait(op, 3*time.Minute)
	t.Logf("restartNetwork cleanup=true of 2 routers on vcsim: %s", time.Since(begin).Round(time.Millisecond))
	if done.Status != models.OpCompleted {
		t.Fatalf("restart ended %s: %s", done.Status, done.Error)
	}
	// The pair's shared gateway is held by the PRIMARY only (a BACKUP keeps it down), and
	// each member's replacement takes its addresses over after its old VM stopped.
	if c := p.routers.Fleet.Conflicts()[conflicts:]; len(c) > 0 {
		t.Errorf("two VMs held one service address during the restart: %v", c)
	}
	if got, primary := p.routers.Fleet.Holders(netw.Gateway), p.vm(before[1].ID); len(got) != 1 || got[0] != primary.HypervisorName() {
		t.Errorf("gateway %s of %s is held by %v after the restart, want the PRIMARY's replacement %s", netw.Gateway, netw.Name, got, primary.HypervisorName())
	}
	if !strings.Contains(string(done.Result), `"action":"recreate"`) {
		t.Errorf("result %s", done.Result)
	}

	stepTimes := map[string]map[string]time.Time{}
	for _, r := range before {
		childOp := workflows.NetworkRestartRouterOperationID(op.ID, r.ID)
		steps, err := activitiesSteps(p.stack, childOp)
		if err != nil {
			t.Fatal(err)
		}
		if want := "recreate.prepare,recreate.seed,recreate.create-replacement,recreate.start-replacement,recreate.verify-replacement,recreate.stop-old,recreate.take-over,recreate.destroy-old,recreate.commit"; steps != want {
			t.Errorf("%s journaled %q, want %q", r.Name, steps, want)
		}
		var rows []models.OperationStep
		if err := p.store.DB.Where("operation_id = ?", childOp).Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		stepTimes[r.Name] = map[string]time.Time{}
		for _, row := range rows {
			stepTimes[r.Name][row.Step] = row.CompletedAt
		}
		var ev models.Event
		if err := p.store.DB.Where("operation_id = ? AND type = ?", childOp, "ROUTER.RECREATE").First(&ev).Error; err != nil {
			t.Errorf("%s: no ROUTER.RECREATE event of its recreation: %v", r.Name, err)
		} else if !strings.Contains(ev.Description, "restartNetwork cleanup=true") {
			t.Errorf("%s recreate event %q does not give the reason", r.Name, ev.Description)
		}
		after := p.vm(r.ID)
		if after.State != models.StateRunning || after.TemplateID != tpl.ID || after.Version != devcloud.CurrentVersion {
			t.Errorf("%s after restart: state %s template %s version %s, want Running on %s (%s)", r.Name, after.State,
				after.TemplateID, after.Version, tpl.ID, devcloud.CurrentVersion)
		}
		// Rebuilt make-before-break: one VM on vcsim, the replacement, on a fresh private IP.
		if got := p.instancesOf(after); len(got) != 1 || got[0].Name != after.InstanceName || after.InstanceName == r.HypervisorName() ||
			got[0].State != hypervisors.PowerRunning {
			t.Errorf("vcsim VMs of %s after restart: %+v, want only a new instance (row: %q)", r.Name, got, after.InstanceName)
		}
		info, err := p.hv(after)
		if err != nil {
			t.Fatalf("vcsim %s after: %v", r.Name, err)
		}
		if got := info.BootArgs["privateip"]; got != after.PrivateIP || got == r.PrivateIP {
			t.Errorf("vcsim %s boots with privateip %q, want the fresh %q (was %q)", after.InstanceName, got, after.PrivateIP, r.PrivateIP)
		}
	}
	backup, primary := stepTimes[before[0].Name], stepTimes[before[1].Name]
	if !backup["recreate.commit"].Before(primary["recreate.prepare"]) {
		t.Errorf("the PRIMARY's recreate began (%s) before the BACKUP's replacement took over (%s)",
			primary["recreate.prepare"].Format(time.RFC3339Nano), backup["recreate.commit"].Format(time.RFC3339Nano))
	}

	// The only router of an isolated network cannot be destroyed; the refusal names this endpoint.
	only := p.pickRouter("is_redundant = ? AND network_id <> '' AND (vpc_id = '' OR vpc_id IS NULL)", false)
	refused := p.wait(p.start("/api/v1/routers/"+only.ID+"/destroy"), time.Minute)
	pointer := "POST /api/v1/networks/" + only.NetworkID + "/restart?cleanup=true"
	if refused.Status != models.OpFailed || !strings.Contains(refused.Error, pointer) {
		t.Errorf("destroy of the only router = %s %q, want failed naming %s", refused.Status, refused.Error, pointer)
	}
	if st := p.vm(only.ID).State; st != models.StateRunning {
		t.Errorf("refused destroy left %s %s", only.Name, st)
	}
	rebooted := p.wait(p.start("/api/v1/networks/"+only.NetworkID+"/restart"), time.Minute)
	if rebooted.Status != models.OpCompleted || !strings.Contains(string(rebooted.Result), `"action":"reboot"`) {
		t.Errorf("restart without cleanup = %s %q %s", rebooted.Status, rebooted.Error, rebooted.Result)
	}
	if steps, _ := activitiesSteps(p.stack, workflows.NetworkRestartRouterOperationID(rebooted.ID, only.ID)); steps != "hypervisor.reboot" {
		t.Errorf("restart without cleanup journaled %q, want hypervisor.reboot", steps)
	}
	var e struct{ Error struct{ Code, Field string } }
	if code := p.do(http.MethodPost, "/api/v1/networks/"+netw.ID+"/restart?cleanup=yes-please", nil, &e); code != http.StatusBadRequest || e.Error.Field != "cleanup" {
		t.Errorf("bad cleanup = %d %+v, want 400 naming cleanup", code, e)
	}
}
