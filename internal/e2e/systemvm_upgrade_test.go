package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// servingSample counts the zone's CPVMs and SSVMs that serve at one instant: the simulated VM
// answers (not powered off or gone: its endpoint follows its VM) and its console or HTTPS
// upload endpoint completes a real TLS handshake.
func (p *platform) servingSample() map[string]int {
	out := map[string]int{}
	for _, id := range p.consoles.IDs() {
		st, err := p.consoles.Status(id)
		if err != nil || st.Addr == "" {
			continue
		}
		spec, err := p.routers.Fleet.Spec(id)
		if err != nil || spec.PoweredOff {
			continue
		}
		faults, err := p.routers.Fleet.Faults(id)
		if err != nil || slices.ContainsFunc(faults, func(f fleet.Fault) bool { return f.Name == fleet.FaultUnreachable }) {
			continue
		}
		d := &net.Dialer{Timeout: time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", st.Addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the dev certificate
		if err != nil {
			continue
		}
		_ = conn.Close()
		out[spec.Type]++
	}
	return out
}

// TestSystemVMUpgradeKeepsZoneServing upgrades a zone's outdated CPVMs (two) and SSVM (its
// only one) through POST /api/v1/system-vms/upgrades on the real stack (MariaDB, Temporal,
// vcsim and the XAPI simulator, the SSH fleet with console endpoints that follow their VMs),
// while a goroutine checks every ~50 ms that the zone has a CPVM and an SSVM serving TLS. The
// CPVMs are recreated one at a time (make-before-break); the SSVM is replaced by a new one that
// passes its gate before the old one is destroyed. At the end each upgraded VM is one running
// VM on its hypervisor from the current template, the database agrees on versions, nothing
// requires upgrade and nothing is left down.
func TestSystemVMUpgradeKeepsZoneServing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim, the XAPI simulator and the SSH fleet")
	}
	ctx := context.Background()
	store := modelstest.MySQL(t)
	p := newPlatform(t, store, platformOptions{vmware: true, xen: true, fleet: true, consoles: true})
	// A second CPVM, so the zone has two of that kind and one SSVM.
	if op, res := p.deploy(models.TypeCPVM); op.Status != models.OpCompleted {
		t.Fatalf("deploy a second CPVM: %s %s (%+v)", op.Status, op.Error, res)
	}
	var vms []models.SystemVM
	modelstest.Must(t, store.DB.Where("zone_id = ? AND type IN ? AND state = ?", p.zoneID, []string{models.TypeCPVM, models.TypeSSVM},
		models.StateRunning).Order("name").Find(&vms).Error, "system VMs")
	kinds := map[string]int{}
	for _, vm := range vms {
		kinds[vm.Type]++
	}
	if kinds[models.TypeCPVM] != 2 || kinds[models.TypeSSVM] != 1 {
		t.Fatalf("zone has %v, want 2 CPVMs and 1 SSVM", kinds)
	}
	// Make them outdated for real: rebuilt on the hypervisor from the old template, the rows
	// saying so.
	for _, vm := range vms {
		ht := mustType(t, vm.HypervisorType)
		var old models.Template
		modelstest.Must(t, store.DB.Where("name = ? AND hypervisor = ?", devcloud.TemplateName(ht, devcloud.OldVersion), string(ht)).
			First(&old).Error, "old template")
		d, err := p.acts.Drivers.For(ctx, vm.ClusterID)
		modelstest.Must(t, err, "driver")
		modelstest.Must(t, d.StopVM(ctx, vm.HypervisorName(), true), "stop %s", vm.Name)
		modelstest.Must(t, d.DestroyVM(ctx, vm.HypervisorName()), "destroy %s", vm.Name)
		modelstest.Must(t, store.DB.Model(&models.SystemVM{}).Where("id = ?", vm.ID).
			Updates(map[string]any{"template_id": old.ID, "version": devcloud.OldVersion}).Error, "outdate %s", vm.Name)
	}
	modelstest.Must(t, devcloud.Materialize(ctx, store, p.acts.Drivers, logger()), "rebuild from the old template")
	before := map[string]hypervisors.VMInfo{}
	for _, vm := range vms {
		vm = p.vm(vm.ID)
		info, err := p.hv(vm)
		if err != nil || info.State != hypervisors.PowerRunning || info.Template != devcloud.TemplateName(mustType(t, vm.HypervisorType), devcloud.OldVersion) {
			t.Fatalf("%s before: %+v %v", vm.Name, info, err)
		}
		before[vm.ID] = info
		// The endpoint a booted CPVM or SSVM serves.
		if _, err := p.consoles.Start(vm.HypervisorName()); err != nil {
			t.Fatal(err)
		}
	}
	if got := list[models.SystemVM](p, "/api/v1/system-vms", url.Values{"zoneid": {p.zoneID}, "requiresupgrade": {"true"}}); got.Count != 3 {
		t.Fatalf("%d system VMs require upgrade, want 3", got.Count)
	}
	if s := p.servingSample(); s[models.TypeCPVM] != 2 || s[models.TypeSSVM] != 1 {
		t.Fatalf("before the upgrade the zone serves %v", s)
	}

	// The sampler: every ~50 ms, a CPVM and an SSVM serve.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	samples, minCPVM, minSSVM, maxCPVM, maxSSVM := 0, 99, 99, 0, 0
	var gaps []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			s := p.servingSample()
			mu.Lock()
			samples++
			minCPVM, minSSVM = min(minCPVM, s[models.TypeCPVM]), min(minSSVM, s[models.TypeSSVM])
			maxCPVM, maxSSVM = max(maxCPVM, s[models.TypeCPVM]), max(maxSSVM, s[models.TypeSSVM])
			if s[models.TypeCPVM] == 0 || s[models.TypeSSVM] == 0 {
				gaps = append(gaps, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), s))
			}
			mu.Unlock()
		}
	}()

	begin := time.Now()
	var out struct {
		Operation operation `json:"operation"`
		Error     any       `json:"error"`
	}
	if code := p.do(http.MethodPost, "/api/v1/system-vms/upgrades", map[string]any{"zoneid": p.zoneID, "parallelism": 5,
		"healthGateTimeout": "60s"}, &out); code != http.StatusAccepted {
		close(stop)
		wg.Wait()
		t.Fatalf("POST /system-vms/upgrades = %d (%v)", code, out.Error)
	}
	if out.Operation.WorkflowID != workflows.SystemVMUpgradeWorkflowID("zone", p.zoneID) {
		t.Errorf("workflow ID %s", out.Operation.WorkflowID)
	}
	done := p.wait(out.Operation, 5*time.Minute)
	took := time.Since(begin)
	time.Sleep(200 * time.Millisecond) // a few samples after the end
	close(stop)
	wg.Wait()
	t.Logf("upgrade of 2 CPVMs and 1 SSVM: %s; %d samples, at least %d CPVM and %d SSVM serving at each", took.Round(time.Millisecond),
		samples, minCPVM, minSSVM)
	if done.Status != models.OpCompleted {
		t.Fatalf("upgrade ended %s: %s", done.Status, done.Error)
	}
	if len(gaps) > 0 {
		t.Errorf("%d of %d samples found the zone without a serving CPVM or SSVM: %v", len(gaps), samples, gaps)
	}
	t.Logf("CPVMs serving: %d to %d; SSVMs serving: %d to %d", minCPVM, maxCPVM, minSSVM, maxSSVM)
	if maxSSVM < 2 {
		// The new SSVM serves beside the old one from its deploy until the old one is retired
		// (seconds): a sampler that never saw both did not sample across the replacement, so it
		// would not have seen a gap either.
		t.Errorf("the sampler never saw the new SSVM serving beside the old one (at most %d SSVMs)", maxSSVM)
	}
	if samples < int(took/(200*time.Millisecond)) {
		t.Errorf("only %d samples in %s", samples, took)
	}
	res := upgradeResult(t, done)
	if res.Counts[workflows.UpgradeDone] != 3 {
		t.Fatalf("counts %v, want 3 done: %+v", res.Counts, res.Routers)
	}
	var cpvmRuns []workflows.UpgradeRouter
	for _, r := range res.Routers {
		t.Logf("%s (%s): %s in %d ms: %s", r.Name, r.Type, r.State, r.Ended-r.Started, r.Reason)
		final := p.vm(r.ID)
		if r.Type == models.TypeSSVM {
			// The zone's only SSVM: replaced by a new one, then destroyed.
			if r.ReplacedBy == "" || final.State != models.StateDestroyed {
				t.Errorf("SSVM %s: replacedby %q, state %s; want a new one and the old destroyed", r.Name, r.ReplacedBy, final.State)
				continue
			}
			if n := len(p.instancesOf(final)); n != 0 {
				t.Errorf("retired SSVM %s still has %d VMs on its hypervisor", final.Name, n)
			}
			final = p.vm(r.ReplacedBy)
		} else {
			cpvmRuns = append(cpvmRuns, r)
			if r.ReplacedBy != "" {
				t.Errorf("CPVM %s was replaced (%s), want recreated while the other served", r.Name, r.ReplacedBy)
			}
		}
		if final.State != models.StateRunning || final.Version != devcloud.CurrentVersion {
			t.Errorf("%s after: state %s version %q", final.Name, final.State, final.Version)
		}
		d, err := p.acts.Drivers.For(ctx, final.ClusterID)
		modelstest.Must(t, err, "driver")
		all, err := d.ListVMs(ctx)
		modelstest.Must(t, err, "list VMs")
		n := 0
		var info hypervisors.VMInfo
		for _, x := range all {
			if x.Name == final.HypervisorName() {
				n++
				info = x
			}
			if x.Name == before[r.ID].Name {
				t.Errorf("%s: the old VM %s is still on its hypervisor (%s)", r.Name, x.Name, x.State)
			}
		}
		if n != 1 || info.State != hypervisors.PowerRunning || info.Template != devcloud.TemplateName(mustType(t, final.HypervisorType), devcloud.CurrentVersion) {
			t.Errorf("%s on its hypervisor: %d VMs named %s, %+v; want one running from the current template", final.Name, n, final.HypervisorName(), info)
		}
	}
	if len(cpvmRuns) == 2 {
		a, b := cpvmRuns[0], cpvmRuns[1]
		if b.Started < a.Ended && a.Started < b.Ended {
			t.Errorf("the two CPVMs were down at once: %s %d-%d, %s %d-%d", a.Name, a.Started, a.Ended, b.Name, b.Started, b.Ended)
		}
	}
	// The retired SSVM's row stays, Destroyed, at its old version (requiresupgrade is computed
	// from the version alone, as for routers): the live ones require nothing.
	if left := list[models.SystemVM](p, "/api/v1/system-vms", url.Values{"zoneid": {p.zoneID}, "requiresupgrade": {"true"},
		"state": {models.StateRunning}}); left.Count != 0 {
		t.Errorf("%d running system VMs still require upgrade", left.Count)
	}
	var notRunning int64
	modelstest.Must(t, store.DB.Model(&models.SystemVM{}).Where("zone_id = ? AND type IN ? AND state NOT IN ?", p.zoneID,
		[]string{models.TypeCPVM, models.TypeSSVM}, []string{models.StateRunning, models.StateDestroyed}).Count(&notRunning).Error, "count")
	if notRunning != 0 {
		t.Errorf("%d CPVMs/SSVMs left neither Running nor Destroyed", notRunning)
	}
	if hv, db := p.systemVMCounts(); hv != 3 || db != 3 {
		t.Errorf("after: %d CPVMs/SSVMs on the hypervisors, %d in the database, want 3 and 3", hv, db)
	}
}
