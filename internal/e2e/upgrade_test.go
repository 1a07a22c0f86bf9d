package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// TestRouterUpgradeMixedZone upgrades every outdated router of a demo zone on vcsim, the XAPI
// simulator and libvirtd (when it runs), each a simulated router reached over real SSH, with a
// gate failure injected into one router (dnsmasq down on its new VM): that router fails its
// gate, the budget of 1 is respected (the upgrade does not pause and raises no alert), every
// other outdated router ends done, at the current version in the database, once and running
// on its hypervisor from the current template; redundant pairs went BACKUP first.
func TestRouterUpgradeMixedZone(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, the simulators and a fleet of SSH routers")
	}
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		upgradeScenario(t, store)
	})
}

func upgradeScenario(t *testing.T, store *models.Store) {
	p := newPlatform(t, store, platformOptions{kvm: true, vmware: true, xen: true, fleet: true})
	ctx := context.Background()
	outdated := list[models.SystemVM](p, "/api/v1/routers", url.Values{"zoneid": {p.zoneID}, "requiresupgrade": {"true"},
		"state": {models.StateRunning}}).Items
	if len(outdated) < 4 {
		t.Fatalf("demo zone has %d outdated running routers, want several", len(outdated))
	}
	before := map[string]hypervisors.VMInfo{}
	hvTypes := map[string]bool{}
	for _, vm := range outdated {
		info, err := p.hv(vm)
		if err != nil || info.State != hypervisors.PowerRunning {
			t.Fatalf("%s on %s before: %+v %v", vm.Name, vm.HypervisorType, info, err)
		}
		before[vm.ID] = info
		hvTypes[vm.HypervisorType] = true
	}
	t.Logf("%d outdated routers on %v", len(outdated), hvTypes)
	// The router whose gate is made to fail: an isolated network's (it serves DHCP), alone.
	var victim models.SystemVM
	for _, vm := range outdated {
		if !vm.IsRedundant && vm.NetworkID != "" && vm.VPCID == "" {
			victim = vm
			break
		}
	}
	if victim.ID == "" {
		t.Fatal("no outdated single isolated router")
	}
	// Its new VM gets dnsmasq down as soon as it exists (the recreate gives it a fresh sandbox,
	// so the fault goes in once the database records its new version, before it starts).
	injected := make(chan struct{})
	go func() {
		defer close(injected)
		deadline := time.Now().Add(3 * time.Minute)
		for time.Now().Before(deadline) {
			var vm models.SystemVM
			if err := store.Get(ctx, &vm, victim.ID); err == nil && vm.Version == devcloud.CurrentVersion {
				if err := p.routers.InjectFault(ctx, victim.ID, fleet.FaultServiceDown, "dnsmasq"); err != nil {
					t.Errorf("inject into %s: %v", victim.Name, err)
				}
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	begin := time.Now()
	var out struct {
		Operation operation `json:"operation"`
		Error     any       `json:"error"`
	}
	code := p.do(http.MethodPost, "/api/v1/router-upgrades", map[string]any{"zoneid": p.zoneID, "parallelism": 3,
		"failureBudget": "1", "groupBy": "cluster", "healthGateTimeout": "15s"}, &out)
	if code != http.StatusAccepted {
		t.Fatalf("POST /router-upgrades = %d (%v)", code, out.Error)
	}
	op := out.Operation
	if op.WorkflowID != workflows.RouterUpgradeWorkflowID("zone", p.zoneID) {
		t.Errorf("workflow ID %s", op.WorkflowID)
	}
	done := p.wait(op, 5*time.Minute)
	<-injected
	t.Logf("upgrade of %d routers: %s", len(outdated), time.Since(begin).Round(time.Millisecond))
	if done.Status != models.OpCompleted {
		t.Fatalf("upgrade ended %s: %s", done.Status, done.Error)
	}
	res := upgradeResult(t, done)
	if res.Counts[workflows.UpgradeFailed] != 1 || res.Counts[workflows.UpgradeDone] != len(outdated)-1 {
		t.Fatalf("counts %v, want %d done and 1 failed", res.Counts, len(outdated)-1)
	}
	byID := upgradeRoutersByID(res)
	if v := byID[victim.ID]; v.State != workflows.UpgradeFailed || !strings.Contains(v.Reason, "dhcp.service") {
		t.Errorf("%s: %s (%s), want failed naming dhcp.service", victim.Name, v.State, v.Reason)
	}
	var alerts []models.Alert
	if err := store.DB.Where("type = ?", "ROUTER.UPGRADE.FAILURE.BUDGET").Find(&alerts).Error; err != nil {
		t.Fatal(err)
	}
	if len(alerts) != 0 {
		t.Errorf("budget of 1 with one failure raised %d alerts: %+v", len(alerts), alerts)
	}

	// Hypervisor side: each upgraded router exists once, runs, and is a new VM from the current
	// template; the database agrees on its version.
	for _, old := range outdated {
		vm := p.vm(old.ID)
		r := byID[old.ID]
		if r.ID == "" {
			t.Errorf("%s is not in the upgrade", old.Name)
			continue
		}
		if vm.Version != devcloud.CurrentVersion || vm.State != models.StateRunning {
			t.Errorf("%s after the upgrade: version %q, state %s", vm.Name, vm.Version, vm.State)
		}
		d, err := p.acts.Drivers.For(ctx, vm.ClusterID)
		if err != nil {
			t.Fatal(err)
		}
		all, err := d.ListVMs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		var info hypervisors.VMInfo
		for _, x := range all {
			if x.Name == vm.HypervisorName() { // the make-before-break replacement's instance
				n++
				info = x
			}
		}
		tpl := devcloud.TemplateName(mustType(t, vm.HypervisorType), devcloud.CurrentVersion)
		if n != 1 || info.State != hypervisors.PowerRunning {
			t.Errorf("%s on %s: %d VMs of that name, state %s; want one, running", vm.Name, vm.HypervisorType, n, info.State)
		}
		b := before[vm.ID]
		if info.Template != tpl || b.Template == tpl {
			t.Errorf("%s ran template %q before and %q after, want %s after", vm.Name, b.Template, info.Template, tpl)
		}
		// vcsim derives a VM's UUID from its name; the others give a rebuilt VM a new one.
		if vm.HypervisorType != string(hypervisors.VMware) && b.UUID == info.UUID {
			t.Errorf("%s: same VM (uuid %s) as before the upgrade: not recreated", vm.Name, info.UUID)
		}
		if r.State == workflows.UpgradeDone && (r.Started == 0 || r.GateStarted < r.Started || r.Ended < r.GateStarted) {
			t.Errorf("%s timings: started %d gate %d ended %d", vm.Name, r.Started, r.GateStarted, r.Ended)
		}
	}
	checkPairsOrdered(t, res, "upgrade")
	if left := list[models.SystemVM](p, "/api/v1/routers", url.Values{"zoneid": {p.zoneID}, "requiresupgrade": {"true"}}); left.Count != 0 {
		t.Errorf("%d routers still require upgrade", left.Count)
	}
}

func mustType(t *testing.T, s string) hypervisors.Type {
	t.Helper()
	ht, err := hypervisors.ParseType(s)
	if err != nil {
		t.Fatal(err)
	}
	return ht
}

// upgradeResult decodes the result of an ended upgrade operation (either kind).
func upgradeResult(t *testing.T, done operation) workflows.RouterUpgradeResult {
	t.Helper()
	var res workflows.RouterUpgradeResult
	if err := json.Unmarshal(done.Result, &res); err != nil {
		t.Fatalf("result %s: %v", done.Result, err)
	}
	return res
}

// upgradeRoutersByID indexes an upgrade result's VMs by ID.
func upgradeRoutersByID(res workflows.RouterUpgradeResult) map[string]workflows.UpgradeRouter {
	byID := map[string]workflows.UpgradeRouter{}
	for _, r := range res.Routers {
		byID[r.ID] = r
	}
	return byID
}

// checkPairsOrdered checks a router upgrade's redundant pairs: there is one (the demo seeds an
// outdated one), and each PRIMARY started only after its BACKUP ended (passed its gate); what
// names the upgrade in the message.
func checkPairsOrdered(t *testing.T, res workflows.RouterUpgradeResult, what string) {
	t.Helper()
	pairs := 0
	for _, r := range res.Routers {
		if r.After > 0 {
			peer := res.Routers[r.After-1]
			pairs++
			if r.Started < peer.Ended || peer.RedundantState != models.RedundantBackup {
				t.Errorf("%s (%s) started at %d, before its peer %s (%s) ended at %d", r.Name, r.RedundantState, r.Started,
					peer.Name, peer.RedundantState, peer.Ended)
			}
		}
	}
	if pairs == 0 {
		t.Errorf("no redundant pair in the %s: the demo seeds an outdated one", what)
	}
}
