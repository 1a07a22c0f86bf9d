package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/internal/testenv"
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

// TestRecreateTakesOverAddressesAtTheSwitch recreates a router on VMware, XenServer and KVM
// (when libvirtd runs) on the real stack (Temporal dev server, MariaDB and SQLite, vcsim, the
// XAPI simulator, libvirt's test driver, the simulated VMs over real SSH) and checks the address takeover on the simulated network:
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
		p := newPlatform(t, store, platformOptions{kvm: true, vmware: true, xen: true, fleet: true})
		f := p.routers.Fleet
		if c := f.Conflicts(); len(c) > 0 {
			t.Errorf("the seeded cloud's simulated network has a duplicate service address before any recreate: %v", c)
		}
		hvs := []hypervisors.Type{hypervisors.VMware, hypervisors.XenServer}
		if p.kvmReason == "" {
			hvs = append(hvs, hypervisors.KVM)
		} else if testenv.InCI() {
			t.Errorf("KVM is missing under CI=true: %s", p.kvmReason)
		} else {
			t.Logf("KVM left out: %s", p.kvmReason)
		}
		for _, hv := range hvs {
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

// recreateUpToCommit runs a recreate's activities on the real platform up to destroy-old and
// stops before commit, as a run whose commit failed for good leaves things: the old VM
// destroyed, the replacement serving, the row still naming the old instance.
func (p *platform) recreateUpToCommit(opID string, r models.SystemVM) activities.RecreatePlan {
	p.t.Helper()
	ctx := context.Background()
	plan, err := p.acts.PrepareRecreate(ctx, activities.RecreateInput{OperationID: opID, VMID: r.ID, Step: activities.StepPrepare})
	if err != nil {
		p.t.Fatalf("prepare: %v", err)
	}
	for _, step := range activities.RecreateTakeoverSteps() {
		if step == activities.StepCommit {
			break
		}
		if _, err := p.acts.RecreateStep(ctx, activities.RecreateInput{OperationID: opID, VMID: r.ID, Step: step, Plan: plan}); err != nil {
			p.t.Fatalf("%s: %v", step, err)
		}
	}
	return plan
}

// TestRecreateWhoseCommitFailedIsRepaired: a recreate that destroyed the old VM but never
// committed leaves the row naming a VM the hypervisor no longer has. The settle step finds the
// replacement through the plan journaled under the operation and commits it (the row names
// it, Running) instead of calling the VM missing; and when no settle ran, the next recreate
// replaces that replacement (stops it, takes its addresses over, destroys it) instead of
// orphaning it: one VM for the router afterwards, and the row agrees.
func TestRecreateWhoseCommitFailedIsRepaired(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim and the fleet")
	}
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) { commitFailedIsRepaired(t, store) })
}

func commitFailedIsRepaired(t *testing.T, store *models.Store) {
	p := newPlatform(t, store, platformOptions{vmware: true, fleet: true})
	ctx := context.Background()
	f := p.routers.Fleet

	r := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND network_id <> ? AND state = ?", string(hypervisors.VMware), false, "", models.StateRunning)
	plan := p.recreateUpToCommit("0c0c0c0c-0000-4000-8000-000000000001", r)
	if row := p.vm(r.ID); row.HypervisorName() != r.HypervisorName() {
		t.Fatalf("row names %s before the settle, want the old %s", row.HypervisorName(), r.HypervisorName())
	}
	state, err := p.acts.SettleVM(ctx, activities.SettleInput{OperationID: "0c0c0c0c-0000-4000-8000-000000000001", VMID: r.ID, Error: "commit: injected"})
	if err != nil {
		t.Fatal(err)
	}
	row := p.onlyInstance(r.ID)
	if state != models.StateRunning || row.InstanceName != plan.InstanceName || row.PrivateIP != plan.ControlIP {
		t.Errorf("settle after a failed commit = %s, row names %s at %s; want Running, %s at %s", state, row.InstanceName, row.PrivateIP, plan.InstanceName, plan.ControlIP)
	}
	if strings.Contains(row.LastError, activities.MissingOnHypervisor) {
		t.Errorf("settle called the VM missing: %s", row.LastError)
	}

	// No settle this time: the next recreate replaces the uncommitted replacement.
	r2 := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND network_id <> ? AND state = ? AND id <> ?", string(hypervisors.VMware), false, "", models.StateRunning, r.ID)
	orphan := p.recreateUpToCommit("0c0c0c0c-0000-4000-8000-000000000002", r2)
	before := len(f.Conflicts())
	op := p.wait(p.start("/api/v1/routers/"+r2.ID+"/recreate"), 3*time.Minute)
	if op.Status != models.OpCompleted {
		t.Fatalf("recreate after an uncommitted one = %s %q", op.Status, op.Error)
	}
	row = p.onlyInstance(r2.ID)
	if row.InstanceName == orphan.InstanceName || row.InstanceName == r2.HypervisorName() {
		t.Errorf("row names %s, want a new replacement (not %s or %s)", row.InstanceName, orphan.InstanceName, r2.HypervisorName())
	}
	if row.PrivateIP == orphan.ControlIP {
		t.Errorf("the new replacement took the uncommitted one's control address %s", row.PrivateIP)
	}
	if c := f.Conflicts()[before:]; len(c) > 0 {
		t.Errorf("two VMs held one service address: %v", c)
	}
	for _, a := range p.serviceAddressesOf(r2) {
		if got := f.Holders(a); !slices.Equal(got, []string{row.InstanceName}) {
			t.Errorf("%s is held by %v, want %s", a, got, row.InstanceName)
		}
	}

	// An open plan (a replacement being built by another recreate) reserves its control
	// address: a recreate that would pick the same one first picks another.
	r3 := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND state = ? AND id NOT IN ?", string(hypervisors.VMware), false, models.StateRunning, []string{r.ID, r2.ID})
	opB := "0c0c0c0c-0000-4000-8000-00000000000b"
	first, err := p.acts.PrepareRecreate(ctx, activities.RecreateInput{OperationID: opB, VMID: r3.ID, Step: activities.StepPrepare})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.store.DB.Where("operation_id = ?", opB).Delete(&models.OperationStep{}).Error; err != nil {
		t.Fatal(err)
	}
	other, _ := json.Marshal(activities.RecreatePlan{InstanceName: "r-999-VM-0c0c0c0c", OldInstanceName: "r-999-VM", ControlIP: first.ControlIP})
	if err := p.store.DB.Create(&models.OperationStep{OperationID: "0c0c0c0c-0000-4000-8000-00000000000c", Step: "recreate.prepare",
		CompletedAt: time.Now().UTC(), Detail: string(other)}).Error; err != nil {
		t.Fatal(err)
	}
	again, err := p.acts.PrepareRecreate(ctx, activities.RecreateInput{OperationID: opB, VMID: r3.ID, Step: activities.StepPrepare})
	if err != nil {
		t.Fatal(err)
	}
	if again.ControlIP == first.ControlIP {
		t.Errorf("control address %s picked again while another recreate's plan holds it", again.ControlIP)
	}
}
