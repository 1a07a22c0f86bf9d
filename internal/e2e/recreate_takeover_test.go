package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// serviceAddressesOf are the addresses a router serves: its public IP and its network's
// gateway.
func (p *platform) serviceAddressesOf(r models.SystemVM) []string {
	p.t.Helper()
	var n models.Network
	if err := p.store.DB.First(&n, "id = ?", r.NetworkID).Error; err != nil {
		p.t.Fatalf("network of %s: %v", r.Name, err)
	}
	return []string{r.PublicIP, n.Gateway}
}

// TestRecreateTakesOverAddressesAtTheSwitch recreates a router on VMware and on XenServer on
// the real stack (Temporal dev server, MariaDB and SQLite, vcsim, the XAPI simulator, the
// simulated VMs over real SSH) and checks the address takeover on the simulated network:
// before the switch the old VM holds the public IP and the gateway and the replacement none;
// at no moment of the recreate did two VMs hold one of them (the fleet records every such
// moment and every refused ip-assoc); afterwards the replacement alone holds them, it was
// built without them (its boot arguments have no public IP), the gap old stopped -> new
// serving is in the result and under CloudStack's 10 s, the hypervisor has exactly one VM
// for the router and the row agrees. Then the take-over is made to fail (the replacement's
// root file system is read-only: ip-assoc brings the addresses up but cannot record them):
// the rollback releases them (the replacement is stopped when it cannot), the old VM started
// again holds them, still with no conflict, and the row is unchanged.
func TestRecreateTakesOverAddressesAtTheSwitch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim, the XAPI simulator and the fleet")
	}
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		p := newPlatform(t, store, platformOptions{vmware: true, xen: true, fleet: true})
		f := p.routers.Fleet
		for _, hv := range []hypervisors.Type{hypervisors.VMware, hypervisors.XenServer} {
			t.Run(string(hv), func(t *testing.T) {
				r := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND network_id <> ? AND public_ip <> ? AND state = ?",
					string(hv), false, "", "", models.StateRunning)
				addrs := p.serviceAddressesOf(r)
				for _, a := range addrs {
					if got := f.Holders(a); !slices.Equal(got, []string{r.HypervisorName()}) {
						t.Fatalf("before the recreate %s is held by %v, want %s", a, got, r.HypervisorName())
					}
				}
				before := len(f.Conflicts())

				op := p.wait(p.start("/api/v1/routers/"+r.ID+"/recreate"), 3*time.Minute)
				if op.Status != models.OpCompleted {
					t.Fatalf("recreate of %s = %s %q", r.Name, op.Status, op.Error)
				}
				if c := f.Conflicts()[before:]; len(c) > 0 {
					t.Errorf("two VMs held one service address during the recreate: %v", c)
				}
				row := p.onlyInstance(r.ID)
				if row.InstanceName == r.HypervisorName() {
					t.Fatalf("row still names %s", row.InstanceName)
				}
				if row.PublicIP != r.PublicIP {
					t.Errorf("public IP %s -> %s", r.PublicIP, row.PublicIP)
				}
				for _, a := range addrs {
					if got := f.Holders(a); !slices.Equal(got, []string{row.InstanceName}) {
						t.Errorf("after the recreate %s is held by %v, want the replacement %s", a, got, row.InstanceName)
					}
				}
				info, err := p.hv(row)
				if err != nil {
					t.Fatal(err)
				}
				if ip := info.BootArgs["publicip"]; ip != "" {
					t.Errorf("the replacement was built with publicip=%s in its boot arguments", ip)
				}
				var res workflows.LifecycleResult
				if err := json.Unmarshal(op.Result, &res); err != nil {
					t.Fatal(err)
				}
				if res.OldStoppedAt == nil || res.ServingAt == nil || !res.ServingAt.After(*res.OldStoppedAt) {
					t.Fatalf("switch times stopped %v serving %v", res.OldStoppedAt, res.ServingAt)
				}
				gap := res.ServingAt.Sub(*res.OldStoppedAt)
				if res.SwitchGapMillis != gap.Milliseconds() || gap <= 0 || gap >= 10*time.Second {
					t.Errorf("switch gap %d ms (%s from old stopped to new serving), want it recorded and under 10 s", res.SwitchGapMillis, gap)
				}
				for _, a := range addrs {
					if !slices.Contains(res.Addresses, a) {
						t.Errorf("result addresses %v lack %s", res.Addresses, a)
					}
				}
				t.Logf("%s: switch gap %d ms, addresses %v", hv, res.SwitchGapMillis, res.Addresses)
				if err := p.answers(row); err != nil {
					t.Errorf("replacement %s does not answer: %v", row.InstanceName, err)
				}

				// A take-over that fails rolls back without two VMs on one address.
				p.routers.FaultReplacements(r.ID, fleet.Fault{Name: fleet.FaultReadOnlyFS})
				defer p.routers.FaultReplacements(r.ID)
				before = len(f.Conflicts())
				op = p.wait(p.start("/api/v1/routers/"+r.ID+"/recreate"), 3*time.Minute)
				if op.Status != models.OpFailed || !strings.Contains(op.Error, string(activities.StepTakeOver)) {
					t.Fatalf("recreate with a failing take-over = %s %q, want failed at %s", op.Status, op.Error, activities.StepTakeOver)
				}
				if c := f.Conflicts()[before:]; len(c) > 0 {
					t.Errorf("two VMs held one service address during the rollback: %v", c)
				}
				if err := json.Unmarshal(op.Result, &res); err != nil {
					t.Fatal(err)
				}
				want := []string{string(activities.StepReleaseAddresses), string(activities.StepStartOld), string(activities.StepDestroyReplacement)}
				if !slices.Equal(res.Compensations, want) {
					t.Errorf("compensations %v, want %v", res.Compensations, want)
				}
				after := p.onlyInstance(r.ID)
				if after.InstanceName != row.InstanceName {
					t.Errorf("row changed by a rolled-back recreate: %s -> %s", row.InstanceName, after.InstanceName)
				}
				for _, a := range addrs {
					if got := f.Holders(a); !slices.Equal(got, []string{row.InstanceName}) {
						t.Errorf("after the rollback %s is held by %v, want %s again", a, got, row.InstanceName)
					}
				}
			})
		}
	})
}
