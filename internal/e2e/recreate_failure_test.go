package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/xen/xapisim"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// answers runs `sysvm-agent version` on a system VM along the access path its row names.
func (p *platform) answers(vm models.SystemVM) error {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	target, err := activities.StoreTargets{Store: p.store}.TargetFor(ctx, vm)
	if err != nil {
		return err
	}
	res, err := p.health.Exec.Run(ctx, target, []string{"sysvm-agent", "version"}, nil)
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return &exitErr{code: res.ExitCode, stderr: string(res.Stderr)}
	}
	return nil
}

type exitErr struct {
	code   int
	stderr string
}

func (e *exitErr) Error() string { return "exit " + e.stderr }

// onlyInstance asserts the hypervisor has exactly one VM for the system VM, named as its row
// says and running, and that the row says Running.
func (p *platform) onlyInstance(id string) models.SystemVM {
	p.t.Helper()
	row := p.vm(id)
	got := p.instancesOf(row)
	if len(got) != 1 || got[0].Name != row.HypervisorName() || got[0].State != hypervisors.PowerRunning {
		p.t.Errorf("hypervisor VMs of %s: %+v, want exactly %s running", row.Name, got, row.HypervisorName())
	}
	if row.State != models.StateRunning {
		p.t.Errorf("row of %s is %s (%s), want Running", row.Name, row.State, row.LastError)
	}
	return row
}

// TestRecreateFailureLeavesTheOldVMServing injects a failure at two steps of a recreate on the
// real stack (Temporal dev server, MariaDB and SQLite, vcsim and the XAPI simulator, the
// simulated system VMs over SSH): the XenServer pool refuses to create the replacement (XAPI
// fault injection), and on VMware the replacement never answers SSH. Each time the hypervisor
// has exactly one VM for the router afterwards, the old one, running and answering over SSH,
// and the row agrees (state, instance name, addresses). A recreate after the fault is gone
// succeeds and the row then names the replacement, which answers on its new control address.
func TestRecreateFailureLeavesTheOldVMServing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim, the XAPI simulator and the fleet")
	}
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		p := newPlatform(t, store, platformOptions{vmware: true, xen: true, fleet: true})

		t.Run("xen create refused", func(t *testing.T) {
			r := p.pickRouter("hypervisor_type = ? AND version = ? AND is_redundant = ?", string(hypervisors.XenServer), devcloud.CurrentVersion, false)
			if err := p.answers(r); err != nil {
				t.Fatalf("%s does not answer before the test: %v", r.Name, err)
			}
			p.xen[0].InjectFault(xapisim.Fault{Method: "VM.clone", Code: "HOST_DISABLED", Params: []string{"host disabled by the test"}})
			op := p.wait(p.start("/api/v1/routers/"+r.ID+"/recreate"), 2*time.Minute)
			if op.Status != models.OpFailed || !strings.Contains(op.Error, "create-replacement") || !strings.Contains(op.Error, "HOST_DISABLED") {
				t.Fatalf("recreate with the pool refusing clones = %s %q, want failed at create-replacement with HOST_DISABLED", op.Status, op.Error)
			}
			row := p.onlyInstance(r.ID)
			if row.InstanceName != r.InstanceName || row.LinkLocalIP != r.LinkLocalIP || row.PublicIP != r.PublicIP {
				t.Errorf("row changed by a failed recreate: instance %q->%q link-local %s->%s", r.InstanceName, row.InstanceName, r.LinkLocalIP, row.LinkLocalIP)
			}
			if !strings.Contains(row.LastError, "create-replacement") {
				t.Errorf("LastError %q does not say what failed", row.LastError)
			}
			if err := p.answers(row); err != nil {
				t.Errorf("old %s does not answer after the failed recreate: %v", r.Name, err)
			}
			var res workflows.LifecycleResult
			_ = json.Unmarshal(op.Result, &res)
			if strings.Join(res.Compensations, ",") != string(activities.StepDestroyReplacement) {
				t.Errorf("compensations %v, want destroy-replacement", res.Compensations)
			}

			p.xen[0].ClearFaults()
			op = p.wait(p.start("/api/v1/routers/"+r.ID+"/recreate"), 2*time.Minute)
			if op.Status != models.OpCompleted {
				t.Fatalf("recreate after the fault cleared = %s %q", op.Status, op.Error)
			}
			row = p.onlyInstance(r.ID)
			if row.InstanceName == "" || row.LinkLocalIP == r.LinkLocalIP || row.LastError != "" {
				t.Errorf("row after recreate: instance %q link-local %s (was %s) last error %q", row.InstanceName, row.LinkLocalIP, r.LinkLocalIP, row.LastError)
			}
			if err := p.answers(row); err != nil {
				t.Errorf("replacement %s does not answer on %s: %v", row.InstanceName, row.LinkLocalIP, err)
			}
		})

		t.Run("vmware replacement never answers", func(t *testing.T) {
			r := p.pickRouter("hypervisor_type = ? AND is_redundant = ?", string(hypervisors.VMware), false)
			p.routers.BreakReplacements(r.ID, true)
			op := p.wait(p.start("/api/v1/routers/"+r.ID+"/recreate"), 3*time.Minute)
			p.routers.BreakReplacements(r.ID, false)
			if op.Status != models.OpFailed || !strings.Contains(op.Error, "verify-replacement") || !strings.Contains(op.Error, "does not answer over SSH") {
				t.Fatalf("recreate with a mute replacement = %s %q, want failed at verify-replacement", op.Status, op.Error)
			}
			row := p.onlyInstance(r.ID)
			if row.InstanceName != r.InstanceName || row.PrivateIP != r.PrivateIP {
				t.Errorf("row changed by a failed recreate: instance %q->%q private %s->%s", r.InstanceName, row.InstanceName, r.PrivateIP, row.PrivateIP)
			}
			if err := p.answers(row); err != nil {
				t.Errorf("old %s does not answer after the failed recreate: %v", r.Name, err)
			}
		})
	})
}

// TestRecreateRepairsAVMMissingOnItsHypervisor deletes a router behind the platform's back:
// a start finds it missing and leaves it Error "missing on hypervisor" (not Destroyed), and a
// recreate builds it again; the SSVM is recreated the same way and answers over SSH.
func TestRecreateRepairsAVMMissingOnItsHypervisor(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim and the fleet")
	}
	p := newPlatform(t, modelstest.SQLite(t), platformOptions{vmware: true, fleet: true})
	ctx := context.Background()
	r := p.pickRouter("hypervisor_type = ? AND is_redundant = ?", string(hypervisors.VMware), false)
	d, err := p.acts.Drivers.For(ctx, r.ClusterID)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.DestroyVM(ctx, r.HypervisorName()); err != nil {
		t.Fatal(err)
	}
	op := p.wait(p.start("/api/v1/routers/"+r.ID+"/start"), time.Minute)
	row := p.vm(r.ID)
	if op.Status != models.OpFailed || row.State != models.StateError || !strings.Contains(row.LastError, activities.MissingOnHypervisor) {
		t.Fatalf("start of a vanished router = %s %q, row %s %q; want failed, Error %q", op.Status, op.Error, row.State, row.LastError, activities.MissingOnHypervisor)
	}
	op = p.wait(p.start("/api/v1/routers/"+r.ID+"/recreate"), 2*time.Minute)
	if op.Status != models.OpCompleted {
		t.Fatalf("recreate of a vanished router = %s %q", op.Status, op.Error)
	}
	p.onlyInstance(r.ID)

	var ssvm models.SystemVM
	if err := p.store.DB.Where("type = ?", models.TypeSSVM).First(&ssvm).Error; err != nil {
		t.Fatal(err)
	}
	if err := p.answers(ssvm); err != nil {
		t.Fatalf("SSVM %s does not answer over SSH: %v", ssvm.Name, err)
	}
	op = p.wait(p.start("/api/v1/system-vms/"+ssvm.ID+"/recreate"), 2*time.Minute)
	if op.Status != models.OpCompleted {
		t.Fatalf("recreate of the SSVM = %s %q", op.Status, op.Error)
	}
	after := p.onlyInstance(ssvm.ID)
	if err := p.answers(after); err != nil {
		t.Errorf("recreated SSVM %s does not answer over SSH: %v", after.InstanceName, err)
	}
}

// TestConcurrentDestroyOfARedundantPair destroys both routers of a redundant network at once:
// exactly one destroy passes the only-router check, the other is refused, and the hypervisor
// and the database agree one router is left running.
func TestConcurrentDestroyOfARedundantPair(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal and vcsim")
	}
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		s := newStack(t, store, true)
		var netw models.Network
		if err := store.DB.Where("redundant = ? AND (vpc_id = '' OR vpc_id IS NULL)", true).Order("name").First(&netw).Error; err != nil {
			t.Fatalf("no redundant network: %v", err)
		}
		pair, err := activities.RoutersOfNetwork(context.Background(), store.DB, netw)
		if err != nil || len(pair) != 2 {
			t.Fatalf("routers of %s: %d %v", netw.Name, len(pair), err)
		}
		ops := make([]operation, 2)
		var wg sync.WaitGroup
		for i, r := range pair {
			ops[i] = s.start("/api/v1/routers/" + r.ID + "/destroy")
		}
		for i := range ops {
			wg.Go(func() { ops[i] = s.wait(ops[i], 2*time.Minute) })
		}
		wg.Wait()
		completed, refused := 0, 0
		for _, op := range ops {
			switch {
			case op.Status == models.OpCompleted:
				completed++
			case op.Status == models.OpFailed && strings.Contains(op.Error, "only router"):
				refused++
			default:
				t.Errorf("destroy ended %s %q", op.Status, op.Error)
			}
		}
		if completed != 1 || refused != 1 {
			t.Fatalf("%d destroys completed and %d refused, want 1 and 1", completed, refused)
		}
		left := 0
		for _, r := range pair {
			row := s.vm(r.ID)
			got := s.instancesOf(row)
			switch row.State {
			case models.StateDestroyed:
				if len(got) != 0 {
					t.Errorf("destroyed %s still on vcsim: %+v", r.Name, got)
				}
			case models.StateRunning:
				left++
				if len(got) != 1 || got[0].State != hypervisors.PowerRunning {
					t.Errorf("surviving %s on vcsim: %+v", r.Name, got)
				}
				if row.DestroyOperationID != "" {
					t.Errorf("surviving %s still marked as being destroyed by %s", r.Name, row.DestroyOperationID)
				}
			default:
				t.Errorf("%s is %s after the destroys", r.Name, row.State)
			}
		}
		if left != 1 {
			t.Errorf("%d routers of %s left running, want 1", left, netw.Name)
		}
	})
}

// TestRebootRetriedAfterAnUnrecordedSuccess reboots a XenServer router through the reboot
// step, forgets that the step was journaled (as when the worker dies right after the
// hypervisor answered) and runs the step again: the hypervisor gets one reboot, not two. A
// retry whose first attempt never reached the hypervisor (the intent is journaled, the boot
// time unchanged) does reboot.
func TestRebootRetriedAfterAnUnrecordedSuccess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal and the XAPI simulator")
	}
	p := newPlatform(t, modelstest.SQLite(t), platformOptions{xen: true})
	ctx := context.Background()
	r := p.pickRouter("hypervisor_type = ?", string(hypervisors.XenServer))
	bootTime := func() time.Time {
		info, err := p.hv(p.vm(r.ID))
		if err != nil {
			t.Fatal(err)
		}
		return info.BootTime
	}
	// XAPI records start_time to the second: let the boot this test reboots be a second old.
	time.Sleep(1100 * time.Millisecond)
	first := bootTime()
	if first.IsZero() {
		t.Fatal("the XAPI driver reports no boot time")
	}
	opID := "0b0b0b0b-0000-4000-8000-000000000001"
	in := activities.HypervisorStepInput{OperationID: opID, VMID: r.ID, Step: activities.StepReboot}
	if _, err := p.acts.HypervisorStep(ctx, in); err != nil {
		t.Fatal(err)
	}
	second := bootTime()
	if !second.After(first) {
		t.Fatalf("boot time %s -> %s: the reboot did not happen", first, second)
	}
	// The success is lost: only the intent stays journaled.
	if err := p.store.DB.Where("operation_id = ? AND step = ?", opID, "hypervisor.reboot").Delete(&models.OperationStep{}).Error; err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := p.acts.HypervisorStep(ctx, in); err != nil {
		t.Fatal(err)
	}
	if got := bootTime(); !got.Equal(second) {
		t.Errorf("a retried reboot rebooted again: boot time %s -> %s", second, got)
	}
	var row models.OperationStep
	if err := p.store.DB.Where("operation_id = ? AND step = ?", opID, "hypervisor.reboot").First(&row).Error; err != nil || !strings.Contains(row.Detail, "earlier attempt") {
		t.Errorf("journal of the retried reboot %+v (%v), want it to say an earlier attempt rebooted", row, err)
	}

	// An intent whose reboot never reached the hypervisor: the retry reboots.
	opID2 := "0b0b0b0b-0000-4000-8000-000000000002"
	if err := p.store.DB.Create(&models.OperationStep{OperationID: opID2, Step: "hypervisor.reboot.intent",
		CompletedAt: time.Now().UTC(), Detail: second.Format(time.RFC3339Nano)}).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := p.acts.HypervisorStep(ctx, activities.HypervisorStepInput{OperationID: opID2, VMID: r.ID, Step: activities.StepReboot}); err != nil {
		t.Fatal(err)
	}
	if got := bootTime(); !got.After(second) {
		t.Errorf("a reboot whose first attempt never reached the hypervisor was not done: boot time %s -> %s", second, got)
	}
}
