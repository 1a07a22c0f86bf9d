package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// TestRouterUpgradePatchMode live-patches the outdated routers of a demo zone (vcsim and the
// XAPI simulator, each router a simulated VM reached over real SSH) with mode patch: every
// one ends done having passed its gate, on the same VM (instance name, hypervisor UUID and
// boot time unchanged, no lifecycle operation), with the bundle's files, scripts signature and
// record in its fleet sandbox and its services restarted; the rows record the scripts and
// software versions and keep their template version, and no longer require upgrade; the
// redundant pair went BACKUP first; a gated change refused before the patch is accepted and
// served after it. A second patch-mode upgrade finds nothing to do.
func TestRouterUpgradePatchMode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, the simulators and a fleet of SSH routers")
	}
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		patchScenario(t, store)
	})
}

func patchScenario(t *testing.T, store *models.Store) {
	p := newPlatform(t, store, platformOptions{vmware: true, xen: true, fleet: true})
	bundle, err := agent.DefaultBundle()
	if err != nil {
		t.Fatal(err)
	}
	outdated := list[models.SystemVM](p, "/api/v1/routers", url.Values{"zoneid": {p.zoneID}, "requiresupgrade": {"true"},
		"state": {models.StateRunning}}).Items
	if len(outdated) < 3 {
		t.Fatalf("demo zone has %d outdated running routers, want a few", len(outdated))
	}
	type seen struct {
		vm       models.SystemVM
		info     hypervisors.VMInfo
		restarts map[string]int
		sig      string
	}
	before := map[string]seen{}
	for _, vm := range outdated {
		info, err := p.hv(vm)
		if err != nil || info.State != hypervisors.PowerRunning {
			t.Fatalf("%s on %s before: %+v %v", vm.Name, vm.HypervisorType, info, err)
		}
		sys, err := p.routers.Fleet.System(vm.HypervisorName())
		if err != nil {
			t.Fatalf("fleet VM of %s: %v", vm.Name, err)
		}
		root, _ := p.routers.Fleet.Root(vm.HypervisorName())
		sig, _ := os.ReadFile(filepath.Join(root, agent.ScriptsSignatureFile))
		rs := map[string]int{}
		for _, svc := range agent.RouterServices() {
			rs[svc] = sys.ServiceRestarts(svc)
		}
		before[vm.ID] = seen{vm: vm, info: info, restarts: rs, sig: strings.TrimSpace(string(sig))}
		if vm.ScriptsVersion != "" || vm.SoftwareVersion != "" {
			t.Fatalf("%s was patched before the test: %q %q", vm.Name, vm.ScriptsVersion, vm.SoftwareVersion)
		}
	}

	booted := 0
	for _, b := range before {
		if !b.info.BootTime.IsZero() {
			booted++
		}
	}
	if booted == 0 {
		t.Fatal("no hypervisor reports a boot time: the no-reboot check would check nothing")
	}
	// A gated change (router.version.check on by default) to an outdated single router's network
	// is refused before the patch and accepted after it (a patched router no longer requires
	// upgrade).
	var gated models.SystemVM
	for _, vm := range outdated {
		if !vm.IsRedundant && vm.NetworkID != "" && vm.VPCID == "" {
			gated = vm
			break
		}
	}
	if gated.ID == "" {
		t.Fatal("no outdated single isolated router")
	}
	var gatedNet models.Network
	if err := store.Get(context.Background(), &gatedNet, gated.NetworkID); err != nil {
		t.Fatal(err)
	}
	guest := map[string]any{"name": "vm-patched-1", "macaddress": "02:00:aa:00:00:71",
		"ipaddress": strings.TrimSuffix(gatedNet.CIDR, "0/24") + "71"}
	var refused map[string]any
	if code := p.do(http.MethodPost, "/api/v1/networks/"+gatedNet.ID+"/guest-vms", guest, &refused); code != http.StatusConflict {
		t.Fatalf("guest VM on %s before the patch = %d (%v), want 409 router requires upgrade", gatedNet.Name, code, refused)
	}
	var opsBefore int64
	if err := store.DB.Model(&models.Operation{}).Where("kind LIKE ?", "systemvm.%").Count(&opsBefore).Error; err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	var out struct {
		Operation operation `json:"operation"`
		Error     any       `json:"error"`
	}
	code := p.do(http.MethodPost, "/api/v1/router-upgrades", map[string]any{"zoneid": p.zoneID, "mode": "patch",
		"parallelism": 3, "healthGateTimeout": "30s"}, &out)
	if code != http.StatusAccepted {
		t.Fatalf("POST /router-upgrades mode patch = %d (%v)", code, out.Error)
	}
	done := p.wait(out.Operation, 3*time.Minute)
	t.Logf("live patch of %d routers: %s", len(outdated), time.Since(begin).Round(time.Millisecond))
	if done.Status != models.OpCompleted {
		t.Fatalf("patch upgrade ended %s: %s", done.Status, done.Error)
	}
	res := upgradeResult(t, done)
	if res.Counts[workflows.UpgradeDone] != len(outdated) {
		t.Fatalf("counts %v, want %d done: %+v", res.Counts, len(outdated), res.Routers)
	}
	byID := upgradeRoutersByID(res)

	var recreates int64
	if err := store.DB.Model(&models.Operation{}).Where("kind LIKE ?", "systemvm.%").Count(&recreates).Error; err != nil {
		t.Fatal(err)
	}
	if recreates -= opsBefore; recreates != 0 {
		t.Errorf("%d lifecycle operations ran: a patch recreates nothing", recreates)
	}
	for id, b := range before {
		vm := p.vm(id)
		r := byID[id]
		if r.SoftwareVersion != bundle.Version || r.GateStarted < r.Started || r.Ended < r.GateStarted {
			t.Errorf("%s progress: %+v", vm.Name, r)
		}
		// Same VM: no reboot, no rebuild.
		if vm.HypervisorName() != b.vm.HypervisorName() || vm.TemplateID != b.vm.TemplateID {
			t.Errorf("%s: instance %s -> %s, template %s -> %s", vm.Name, b.vm.HypervisorName(), vm.HypervisorName(),
				b.vm.TemplateID, vm.TemplateID)
		}
		info, err := p.hv(vm)
		if err != nil || info.State != hypervisors.PowerRunning || info.UUID != b.info.UUID || !info.BootTime.Equal(b.info.BootTime) ||
			info.Template != b.info.Template {
			t.Errorf("%s on %s: before %+v, after %+v (%v): want the same running VM, not rebooted", vm.Name, vm.HypervisorType,
				b.info, info, err)
		}
		// The database agrees with the VM.
		if vm.Version != b.vm.Version || vm.ScriptsVersion != bundle.Checksum || vm.SoftwareVersion != bundle.Version ||
			vm.State != models.StateRunning {
			t.Errorf("%s row: version %q (was %q), scripts %q, software %q, state %s", vm.Name, vm.Version, b.vm.Version,
				vm.ScriptsVersion, vm.SoftwareVersion, vm.State)
		}
		// The fleet sandbox: files, signature, record; services restarted, ssh kept.
		root, err := p.routers.Fleet.Root(vm.HypervisorName())
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range bundle.Files {
			data, err := os.ReadFile(filepath.Join(root, f.Path))
			st, serr := os.Stat(filepath.Join(root, f.Path))
			if err != nil || serr != nil || string(data) != string(f.Content) || st.Mode().Perm() != f.Mode {
				t.Errorf("%s: /%s not installed as the bundle has it (%v %v)", vm.Name, f.Path, err, serr)
			}
		}
		sig, _ := os.ReadFile(filepath.Join(root, agent.ScriptsSignatureFile))
		if strings.TrimSpace(string(sig)) != bundle.Checksum || b.sig == bundle.Checksum {
			t.Errorf("%s: scripts signature %q before, %q after, want %s", vm.Name, b.sig, strings.TrimSpace(string(sig)), bundle.Checksum)
		}
		var rec agent.PatchRecord
		if data, err := os.ReadFile(filepath.Join(root, agent.PatchRecordFile)); err != nil || json.Unmarshal(data, &rec) != nil ||
			rec.Version != bundle.Version {
			t.Errorf("%s: patch record %+v (%v)", vm.Name, rec, err)
		}
		sys, _ := p.routers.Fleet.System(vm.HypervisorName())
		for _, svc := range agent.PatchServices() {
			if n := sys.ServiceRestarts(svc); n != b.restarts[svc]+1 {
				t.Errorf("%s: %s restarted %d times during the patch, want once", vm.Name, svc, n-b.restarts[svc])
			}
		}
		if n := sys.ServiceRestarts(agent.ServiceSSH); n != b.restarts[agent.ServiceSSH] {
			t.Errorf("%s: ssh restarted by the patch", vm.Name)
		}
		// The gate passed on fresh checks, the version check comparing the new signature.
		var hc models.HealthCheckResult
		if err := store.DB.Where("router_id = ? AND check_name = ?", id, "router_version_check.py").Take(&hc).Error; err != nil ||
			!hc.Success || !strings.Contains(hc.Details, bundle.Checksum) {
			t.Errorf("%s: router_version_check.py after the patch: %+v %v", vm.Name, hc, err)
		}
	}
	checkPairsOrdered(t, res, "patch")
	var events int64
	store.DB.Model(&models.Event{}).Where("type = ?", "LIVE.PATCH.SYSTEM.VM").Count(&events)
	if events != int64(len(outdated)) {
		t.Errorf("%d live patch events, want %d", events, len(outdated))
	}
	// As in CloudStack: version stays the template's, softwareversion is the bundle's, and a
	// router patched with the current bundle no longer requires upgrade.
	after := list[models.SystemVM](p, "/api/v1/routers", url.Values{"zoneid": {p.zoneID}, "requiresupgrade": {"true"}})
	if after.Count != 0 {
		t.Errorf("%d routers still require upgrade after the patch", after.Count)
	}
	var accepted struct {
		Operation operation `json:"operation"`
	}
	if code := p.do(http.MethodPost, "/api/v1/networks/"+gatedNet.ID+"/guest-vms", guest, &accepted); code != http.StatusAccepted {
		t.Fatalf("guest VM on %s after the patch = %d, want 202", gatedNet.Name, code)
	}
	if op := p.wait(operation{ID: accepted.Operation.ID, Kind: workflows.NetworkRulesOperationKind}, 2*time.Minute); op.Status != models.OpCompleted {
		t.Fatalf("push to the patched %s ended %s: %s", gated.Name, op.Status, op.Error)
	}
	groot, _ := p.routers.Fleet.Root(gated.HypervisorName())
	if h, _ := os.ReadFile(filepath.Join(groot, agent.HostsFile)); !strings.Contains(string(h), "vm-patched-1") {
		t.Errorf("/etc/hosts of the patched %s after the push:\n%s", gated.Name, h)
	}
	var again struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if code := p.do(http.MethodPost, "/api/v1/router-upgrades", map[string]any{"zoneid": p.zoneID, "mode": "patch"}, &again); code != http.StatusConflict {
		t.Errorf("a second patch of the zone = %d (%s), want 409 nothing to upgrade", code, again.Error.Message)
	}
}
