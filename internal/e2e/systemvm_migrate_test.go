package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/xen/xapisim"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// post starts an operation with a body and waits for its end.
func (p *platform) postWait(path string, body any) operation {
	p.t.Helper()
	var out struct {
		Operation operation `json:"operation"`
		Error     any       `json:"error"`
	}
	if code := p.do(http.MethodPost, path, body, &out); code != http.StatusAccepted {
		p.t.Fatalf("POST %s %v = %d (%v), want 202", path, body, code, out.Error)
	}
	return p.wait(out.Operation, 3*time.Minute)
}

// agree checks that the database row and the hypervisor say the same of a VM: state, host,
// CPUs and memory. It returns both.
func (p *platform) agree(id string) (models.SystemVM, hypervisors.VMInfo) {
	p.t.Helper()
	row := p.vm(id)
	info, err := p.hv(row)
	if err != nil {
		p.t.Fatalf("inspect %s: %v", row.Name, err)
	}
	var host models.Host
	if err := p.store.DB.Where("id = ?", row.HostID).Take(&host).Error; err != nil {
		p.t.Fatalf("host %q of %s: %v", row.HostID, row.Name, err)
	}
	if info.Host != "" && info.Host != host.Name {
		p.t.Errorf("%s: database host %s, hypervisor host %s", row.Name, host.Name, info.Host)
	}
	if want := map[hypervisors.PowerState]string{hypervisors.PowerRunning: models.StateRunning,
		hypervisors.PowerStopped: models.StateStopped}[info.State]; want != row.State {
		p.t.Errorf("%s: database state %s, hypervisor %s", row.Name, row.State, info.State)
	}
	if info.CPUs != row.CPUs || info.MemoryMB != row.MemoryMB {
		p.t.Errorf("%s: database %d CPUs %d MB, hypervisor %d CPUs %d MB", row.Name, row.CPUs, row.MemoryMB, info.CPUs, info.MemoryMB)
	}
	return row, info
}

func hostName(p *platform, id string) string {
	var h models.Host
	_ = p.store.DB.Where("id = ?", id).Take(&h).Error
	return h.Name
}

// TestMigrateAndScaleSystemVMs migrates and scales routers on KVM (cold: stop, move, start),
// VMware (live migration, cold scale) and XenServer (live migration), through the API on SQLite
// and MariaDB, and checks the hypervisor and the database agree after each; failures injected
// into XAPI mid-migrate and mid-scale leave the VM running where it was, settled, with the
// failure recorded.
func TestMigrateAndScaleSystemVMs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal and the simulators")
	}
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		p := newPlatform(t, store, platformOptions{kvm: true, vmware: true, xen: true, fleet: true})
		bigger := models.ServiceOffering{Base: models.Base{ID: models.NewID()}, Name: "Bigger router", CPUs: 2, CPUMHz: 500,
			MemoryMB: 1024, SystemVMType: models.TypeRouter}
		if err := store.DB.Create(&bigger).Error; err != nil {
			t.Fatal(err)
		}
		hvs := []hypervisors.Type{hypervisors.VMware, hypervisors.XenServer}
		if p.kvmReason == "" {
			hvs = append(hvs, hypervisors.KVM)
		}
		for _, hv := range hvs {
			r := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND state = ?", string(hv), false, models.StateRunning)
			before, _ := p.agree(r.ID)
			from := hostName(p, before.HostID)

			// Migrate, letting sysvm choose the host.
			op := p.postWait("/api/v1/routers/"+r.ID+"/migrate", nil)
			if op.Status != models.OpCompleted {
				t.Fatalf("migrate %s (%s): %s %s", r.Name, hv, op.Status, op.Error)
			}
			var res workflows.MoveResult
			_ = json.Unmarshal(op.Result, &res)
			after, info := p.agree(r.ID)
			to := hostName(p, after.HostID)
			if to == from || info.Host != to || after.State != models.StateRunning || info.State != hypervisors.PowerRunning {
				t.Errorf("%s on %s: migrated from %s to %s (hypervisor %s, %s), want another host and Running", r.Name, hv, from, to, info.Host, info.State)
			}
			wantLive := hv != hypervisors.KVM
			if res.Online != wantLive || res.Stopped == wantLive || res.FromHost != from || res.Host != to {
				t.Errorf("%s on %s: migrate result %+v, want online=%v from %s to %s", r.Name, hv, res, wantLive, from, to)
			}
			// And back, naming the host.
			op = p.postWait("/api/v1/routers/"+r.ID+"/migrate", map[string]any{"hostid": before.HostID})
			if back, _ := p.agree(r.ID); op.Status != models.OpCompleted || back.HostID != before.HostID {
				t.Errorf("migrate %s back to %s: %s %s, now on %s", r.Name, from, op.Status, op.Error, hostName(p, back.HostID))
			}

			if hv == hypervisors.XenServer {
				continue // scaled below, with a failure first
			}
			op = p.postWait("/api/v1/routers/"+r.ID+"/scale", map[string]any{"serviceofferingid": bigger.ID})
			if op.Status != models.OpCompleted {
				t.Fatalf("scale %s (%s): %s %s", r.Name, hv, op.Status, op.Error)
			}
			scaled, info := p.agree(r.ID)
			if info.CPUs != 2 || info.MemoryMB != 1024 || scaled.ServiceOfferingID != bigger.ID || scaled.State != models.StateRunning {
				t.Errorf("%s on %s after scale: hypervisor %d CPUs %d MB %s, row offering %s state %s", r.Name, hv, info.CPUs, info.MemoryMB,
					info.State, scaled.ServiceOfferingID, scaled.State)
			}
		}

		// Refusals named before anything runs.
		r := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND state = ?", string(hypervisors.VMware), false, models.StateRunning)
		for _, bad := range []struct {
			path  string
			body  map[string]any
			field string
		}{
			{"/migrate", map[string]any{"hostid": "no-such-host"}, "hostid"},
			{"/migrate", map[string]any{"hostid": r.HostID}, "hostid"},
			{"/scale", map[string]any{}, "serviceofferingid"},
			{"/scale", map[string]any{"serviceofferingid": "nope"}, "serviceofferingid"},
		} {
			var out struct {
				Error struct{ Field, Message string } `json:"error"`
			}
			if code := p.do(http.MethodPost, "/api/v1/routers/"+r.ID+bad.path, bad.body, &out); code != http.StatusBadRequest || out.Error.Field != bad.field {
				t.Errorf("POST %s %v = %d %+v, want 400 on %s", bad.path, bad.body, code, out.Error, bad.field)
			}
		}

		// A redundant router on KVM (cold: it must be stopped) while its peer is stopped: refused,
		// the router keeps running.
		if p.kvmReason == "" {
			pair := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND state = ? AND network_id <> ?", string(hypervisors.KVM), true, models.StateRunning, "")
			peer := p.pickRouter("network_id = ? AND id <> ?", pair.NetworkID, pair.ID)
			if op := p.wait(p.start("/api/v1/routers/"+peer.ID+"/stop"), 2*time.Minute); op.Status != models.OpCompleted {
				t.Fatalf("stop peer %s: %s %s", peer.Name, op.Status, op.Error)
			}
			op := p.postWait("/api/v1/routers/"+pair.ID+"/scale", map[string]any{"serviceofferingid": bigger.ID})
			if row, info := p.agree(pair.ID); op.Status != models.OpFailed || !strings.Contains(op.Error, "peer is not Running") ||
				row.State != models.StateRunning || info.State != hypervisors.PowerRunning || info.CPUs == 2 {
				t.Errorf("scale of %s with its peer stopped: %s %q; now %s (hypervisor %s, %d CPUs)", pair.Name, op.Status, op.Error, row.State, info.State, info.CPUs)
			}
			if op := p.wait(p.start("/api/v1/routers/"+peer.ID+"/start"), 2*time.Minute); op.Status != models.OpCompleted {
				t.Fatalf("start peer %s: %s %s", peer.Name, op.Status, op.Error)
			}
			if op := p.postWait("/api/v1/routers/"+pair.ID+"/scale", map[string]any{"serviceofferingid": bigger.ID}); op.Status != models.OpCompleted {
				t.Errorf("scale of %s with its peer Running: %s %q", pair.Name, op.Status, op.Error)
			}
		}

		// Failures injected into XenServer: a live migration refused by XAPI, and a scale whose
		// change fails after the VM was stopped (it is started again).
		x := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND state = ?", string(hypervisors.XenServer), false, models.StateRunning)
		before, _ := p.agree(x.ID)
		p.xen[0].InjectFault(xapisim.Fault{Method: "VM.pool_migrate", Code: "HOST_DISABLED", Params: []string{"host disabled by the test"}})
		op := p.postWait("/api/v1/routers/"+x.ID+"/migrate", nil)
		p.xen[0].ClearFaults()
		after, info := p.agree(x.ID)
		if op.Status != models.OpFailed || after.HostID != before.HostID || after.State != models.StateRunning ||
			info.State != hypervisors.PowerRunning || after.LastError == "" {
			t.Errorf("failed migrate of %s: %s %q; now %s on %s (hypervisor %s on %s), last error %q", x.Name, op.Status, op.Error,
				after.State, hostName(p, after.HostID), info.State, info.Host, after.LastError)
		}
		p.xen[0].InjectFault(xapisim.Fault{Method: "VM.set_memory_limits", Code: "HOST_DISABLED", Params: []string{"host disabled by the test"}})
		op = p.postWait("/api/v1/routers/"+x.ID+"/scale", map[string]any{"serviceofferingid": bigger.ID})
		p.xen[0].ClearFaults()
		var res workflows.MoveResult
		_ = json.Unmarshal(op.Result, &res)
		after, info = p.agree(x.ID)
		if op.Status != models.OpFailed || !slices.Contains(res.Compensations, "start") || after.State != models.StateRunning ||
			info.State != hypervisors.PowerRunning || info.CPUs != before.CPUs || after.ServiceOfferingID == bigger.ID {
			t.Errorf("failed scale of %s: %s %q compensations %v; now %s (hypervisor %s, %d CPUs), offering %s", x.Name, op.Status, op.Error,
				res.Compensations, after.State, info.State, info.CPUs, after.ServiceOfferingID)
		}
		// Without the fault the same scale goes through.
		op = p.postWait("/api/v1/routers/"+x.ID+"/scale", map[string]any{"serviceofferingid": bigger.ID})
		if scaled, info := p.agree(x.ID); op.Status != models.OpCompleted || info.CPUs != 2 || info.MemoryMB != 1024 || scaled.State != models.StateRunning {
			t.Errorf("scale of %s: %s %q; hypervisor %d CPUs %d MB %s", x.Name, op.Status, op.Error, info.CPUs, info.MemoryMB, info.State)
		}
		var events int64
		store.DB.Model(&models.Event{}).Where("type IN ?", []string{"ROUTER.MIGRATE", "ROUTER.SCALE", "ROUTER.MIGRATE.FAILED", "ROUTER.SCALE.FAILED"}).Count(&events)
		if events < 6 {
			t.Errorf("%d migrate/scale events recorded", events)
		}
	})
}
