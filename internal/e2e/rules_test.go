package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// TestGatedNetworkChanges: with router.version.check on, a change to a network whose router
// requires upgrade is refused (409 naming the router and the version) before any row is
// stored, and the router keeps serving; with the setting off it goes through; after the
// router's upgrade, guest VM, port forwarding and LB changes are accepted, reach the
// simulated router over SSH (its files change) and the advanced checks pass against them.
func TestGatedNetworkChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim and a fleet of SSH routers")
	}
	p := newPlatform(t, modelstest.SQLite(t), platformOptions{vmware: true, fleet: true})
	ctx := context.Background()
	r := p.pickRouter("version = ? AND is_redundant = ? AND network_id <> ? AND vpc_id = ? AND hypervisor_type = ?",
		devcloud.OldVersion, false, "", "", string(hypervisors.VMware))
	var n models.Network
	if err := p.store.Get(ctx, &n, r.NetworkID); err != nil {
		t.Fatal(err)
	}
	prefix := strings.TrimSuffix(n.CIDR, "0/24")
	file := func(rel string) string {
		// The router's current instance: an upgrade replaces it with a new one.
		vm := p.vm(r.ID)
		root, err := p.routers.Fleet.Root(vm.HypervisorName())
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatalf("%s of %s: %v", rel, r.Name, err)
		}
		return string(b)
	}
	change := func(path string, body any, want int) map[string]any {
		t.Helper()
		var out map[string]any
		if code := p.do(http.MethodPost, "/api/v1/networks/"+n.ID+path, body, &out); code != want {
			t.Fatalf("POST %s = %d (%v), want %d", path, code, out, want)
		}
		return out
	}
	waitOp := func(out map[string]any) {
		t.Helper()
		opm := out["operation"].(map[string]any)
		done := p.wait(operation{ID: opm["id"].(string), Kind: workflows.NetworkRulesOperationKind}, 2*time.Minute)
		if done.Status != models.OpCompleted {
			t.Fatalf("push ended %s: %s", done.Status, done.Error)
		}
	}
	fresh := func(checks ...string) {
		t.Helper()
		var out struct {
			Results []models.HealthCheckResult `json:"healthcheckresults"`
		}
		if code := p.do(http.MethodPost, "/api/v1/routers/"+r.ID+"/health-checks", nil, &out); code != http.StatusOK {
			t.Fatalf("fresh checks of %s = %d", r.Name, code)
		}
		for _, name := range checks {
			found := false
			for _, c := range out.Results {
				if c.CheckName == name {
					found = true
					if !c.Success || strings.HasPrefix(c.Details, "skipped") {
						t.Errorf("%s on %s: success %v: %s", name, r.Name, c.Success, c.Details)
					}
				}
			}
			if !found {
				t.Errorf("%s: no %s result", r.Name, name)
			}
		}
	}
	vm1 := map[string]any{"name": "vm-gated-1", "macaddress": "02:00:aa:00:00:01", "ipaddress": prefix + "51"}

	// 1. Refused before anything is stored, naming the router and the version needed.
	out := change("/guest-vms", vm1, http.StatusConflict)
	msg := out["error"].(map[string]any)["message"].(string)
	if !strings.Contains(msg, "router requires upgrade") || !strings.Contains(msg, r.Name) || !strings.Contains(msg, devcloud.CurrentVersion) {
		t.Errorf("409 message %q, want router requires upgrade naming %s and %s", msg, r.Name, devcloud.CurrentVersion)
	}
	if rs, _ := out["routers"].([]any); len(rs) != 1 || out["requiredVersion"] != devcloud.CurrentVersion {
		t.Errorf("409 names routers %v, version %v", out["routers"], out["requiredVersion"])
	}
	var stored int64
	p.store.DB.Model(&models.GuestVM{}).Where("name = ?", "vm-gated-1").Count(&stored)
	if stored != 0 || strings.Contains(file(agent.HostsFile), "vm-gated-1") {
		t.Fatalf("a refused change was stored (%d rows) or pushed", stored)
	}
	fresh(agent.CheckDNS, agent.CheckDHCP) // its existing services keep running

	// 2. router.version.check false: the change goes through to the outdated router.
	p.setting(models.SettingRouterVersionCheck, "false")
	waitOp(change("/guest-vms", vm1, http.StatusAccepted))
	if h := file(agent.HostsFile); !strings.Contains(h, prefix+"51 vm-gated-1") {
		t.Errorf("/etc/hosts of %s after the push:\n%s", r.Name, h)
	}
	if d := file(agent.DHCPHostsFile); !strings.Contains(d, "02:00:aa:00:00:01,"+prefix+"51,vm-gated-1") {
		t.Errorf("dhcphosts of %s after the push:\n%s", r.Name, d)
	}
	fresh(agent.CheckDNS, agent.CheckDHCP)
	p.setting(models.SettingRouterVersionCheck, "true")
	change("/port-forwarding-rules", map[string]any{"ipaddress": r.PublicIP, "publicport": 2299, "vmguestip": prefix + "51",
		"privateport": 22, "protocol": "tcp"}, http.StatusConflict)

	// 3. Upgrade the router; then changes are accepted with the check on.
	var up struct {
		Operation operation `json:"operation"`
	}
	if code := p.do(http.MethodPost, "/api/v1/router-upgrades", map[string]any{"id": r.ID}, &up); code != http.StatusAccepted {
		t.Fatalf("upgrade %s = %d", r.Name, code)
	}
	if done := p.wait(up.Operation, 3*time.Minute); done.Status != models.OpCompleted {
		t.Fatalf("upgrade of %s ended %s: %s", r.Name, done.Status, done.Error)
	}
	if v := p.vm(r.ID).Version; v != devcloud.CurrentVersion {
		t.Fatalf("%s at %s after its upgrade", r.Name, v)
	}
	waitOp(change("/port-forwarding-rules", map[string]any{"ipaddress": r.PublicIP, "publicport": 2299, "vmguestip": prefix + "51",
		"privateport": 22, "protocol": "tcp"}, http.StatusAccepted))
	waitOp(change("/load-balancer-rules", map[string]any{"publicip": r.PublicIP, "publicport": 8443, "maxconn": 300,
		"backends": []map[string]any{{"ipaddress": prefix + "51", "port": 443}}}, http.StatusAccepted))
	if ipt := file(agent.IptablesSaveFile); !strings.Contains(ipt, "--dport 2299 -j DNAT --to-destination "+prefix+"51:22") {
		t.Errorf("iptables of %s after the push:\n%s", r.Name, ipt)
	}
	if ha := file(agent.HaproxyConfigFile); !strings.Contains(ha, r.PublicIP+":8443") || !strings.Contains(ha, prefix+"51:443") {
		t.Errorf("haproxy.cfg of %s after the push:\n%s", r.Name, ha)
	}
	fresh(agent.CheckDNS, agent.CheckDHCP, agent.CheckIptables, agent.CheckHaproxy)
	// Bad input names the field; a duplicate is a conflict.
	change("/port-forwarding-rules", map[string]any{"ipaddress": r.PublicIP, "publicport": 2299, "vmguestip": prefix + "51",
		"privateport": 22, "protocol": "tcp"}, http.StatusConflict)
	if out := change("/guest-vms", map[string]any{"name": "bad name", "macaddress": "x", "ipaddress": "y"}, http.StatusBadRequest); out["error"].(map[string]any)["field"] != "name" {
		t.Errorf("bad guest VM: %v", out)
	}
}
