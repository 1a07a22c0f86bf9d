package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// instancesOf lists the hypervisor VMs of a system VM: its CloudStack name, or a replacement
// named after it (<name>-<suffix>).
func (s *stack) instancesOf(vm models.SystemVM) []hypervisors.VMInfo {
	s.t.Helper()
	d, err := s.acts.Drivers.For(context.Background(), vm.ClusterID)
	if err != nil {
		s.t.Fatal(err)
	}
	all, err := d.ListVMs(context.Background())
	if err != nil {
		s.t.Fatalf("list VMs of cluster %s: %v", vm.ClusterID, err)
	}
	var out []hypervisors.VMInfo
	for _, info := range all {
		if info.Name == vm.Name || strings.HasPrefix(info.Name, vm.Name+"-") {
			out = append(out, info)
		}
	}
	return out
}

// TestLifecycleThroughAPI drives stop, start, reboot and recreate of a router through the API,
// on MariaDB and on SQLite, and checks the database and vcsim agree after each.
func TestLifecycleThroughAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal and vcsim")
	}
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		s := newStack(t, store, true)
		// An old-template router with a network of its own.
		r := s.pickRouter("version = ? AND is_redundant = ?", devcloud.OldVersion, false)

		check := func(state string, power hypervisors.PowerState) {
			t.Helper()
			row := s.vm(r.ID)
			if got := row.State; got != state {
				t.Errorf("database state of %s = %s, want %s", r.Name, got, state)
			}
			info, err := s.hv(row)
			if err != nil {
				t.Fatalf("vcsim GetVM(%s): %v", r.Name, err)
			}
			if info.State != power {
				t.Errorf("vcsim power state of %s = %s, want %s", r.Name, info.State, power)
			}
		}
		check(models.StateRunning, hypervisors.PowerRunning)

		for _, step := range []struct {
			action string
			state  string
			power  hypervisors.PowerState
		}{
			{"stop", models.StateStopped, hypervisors.PowerStopped},
			{"start", models.StateRunning, hypervisors.PowerRunning},
			{"reboot", models.StateRunning, hypervisors.PowerRunning},
		} {
			op := s.start("/api/v1/routers/" + r.ID + "/" + step.action)
			if op.WorkflowID != "systemvm:"+r.ID || op.RunID == "" {
				t.Errorf("%s: workflow %q run %q", step.action, op.WorkflowID, op.RunID)
			}
			done := s.wait(op, time.Minute)
			if done.Status != models.OpCompleted {
				t.Fatalf("%s ended %s: %s", step.action, done.Status, done.Error)
			}
			if !strings.Contains(done.Links.TemporalUI, "/workflows/") || !strings.Contains(done.Links.TemporalUI, op.RunID) {
				t.Errorf("Temporal UI link %q does not point at the run", done.Links.TemporalUI)
			}
			check(step.state, step.power)
		}

		// Recreate puts the router on the current template, make-before-break: the row keeps
		// its ID, name and public IP; the hypervisor now has one VM for it, the replacement,
		// under a new instance name with a fresh control address (the private IP on VMware).
		op := s.wait(s.start("/api/v1/routers/"+r.ID+"/recreate"), 2*time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("recreate ended %s: %s", op.Status, op.Error)
		}
		s.recordHistory("lifecycle_recreate.json", op)
		after := s.vm(r.ID)
		if after.Version != devcloud.CurrentVersion || after.TemplateID == r.TemplateID {
			t.Errorf("after recreate version %s template %s, want %s on a new template", after.Version, after.TemplateID, devcloud.CurrentVersion)
		}
		if after.Name != r.Name || after.PublicIP != r.PublicIP {
			t.Errorf("recreate changed name or public IP: %s/%s -> %s/%s", r.Name, r.PublicIP, after.Name, after.PublicIP)
		}
		if after.InstanceName == "" || after.InstanceName == r.HypervisorName() || after.PrivateIP == r.PrivateIP {
			t.Errorf("replacement instance %q control %s, want a new instance name and a fresh private IP (was %s)",
				after.InstanceName, after.PrivateIP, r.PrivateIP)
		}
		check(models.StateRunning, hypervisors.PowerRunning)
		if got := s.instancesOf(after); len(got) != 1 || got[0].Name != after.InstanceName || got[0].State != hypervisors.PowerRunning {
			t.Errorf("vcsim VMs of %s after recreate: %+v, want only %s running", r.Name, got, after.InstanceName)
		}
		info, _ := s.hv(after)
		// The public IP is taken over at the switch, not booted with.
		if info.BootArgs["name"] != r.Name || info.BootArgs["privateip"] != after.PrivateIP || info.BootArgs["publicip"] != "" {
			t.Errorf("recreated VM boot args %v: want the name and the new control address, and no public IP", info.BootArgs)
		}
		var res workflows.LifecycleResult
		if err := json.Unmarshal(op.Result, &res); err != nil || res.SwitchGapMillis < 0 || res.ServingAt == nil || res.InstanceName != after.InstanceName {
			t.Errorf("recreate result %s (%v): want the replacement and the measured switch gap", op.Result, err)
		}
		t.Logf("recreate switch gap on vcsim: %d ms", res.SwitchGapMillis)
		steps, err := activitiesSteps(s, op.ID)
		if err != nil {
			t.Fatal(err)
		}
		if want := "recreate.prepare,recreate.seed,recreate.create-replacement,recreate.start-replacement,recreate.verify-replacement,recreate.stop-old,recreate.take-over,recreate.destroy-old,recreate.commit"; steps != want {
			t.Errorf("journaled steps %q, want %q", steps, want)
		}

		// Every run is found by the VM's search attribute, as `temporal workflow list --query` does.
		ctx := context.Background()
		var runs int
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
			resp, err := s.client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
				Query: fmt.Sprintf(`SystemVmId = "%s" AND OperationKind = "systemvm.recreate"`, r.ID)})
			if err != nil {
				t.Fatal(err)
			}
			if runs = len(resp.Executions); runs == 1 {
				break
			}
		}
		if runs != 1 {
			t.Errorf("visibility query found %d recreate runs of %s, want 1", runs, r.ID)
		}

		// Destroying the only router of a network is refused with a pointer to restartNetwork.
		op = s.wait(s.start("/api/v1/routers/"+r.ID+"/destroy"), time.Minute)
		if op.Status != models.OpFailed || !strings.Contains(op.Error, "restartNetwork cleanup=true") {
			t.Errorf("destroy of the only router = %s %q, want failed naming restartNetwork cleanup=true", op.Status, op.Error)
		}
		check(models.StateRunning, hypervisors.PowerRunning)

		// Destroying one router of a redundant pair works, and the VM is gone from vcsim too.
		backup := s.pickRouter("redundant_state = ?", models.RedundantBackup)
		op = s.wait(s.start("/api/v1/routers/"+backup.ID+"/destroy"), time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("destroy of BACKUP ended %s: %s", op.Status, op.Error)
		}
		if st := s.vm(backup.ID).State; st != models.StateDestroyed {
			t.Errorf("destroyed router state %s", st)
		}
		if _, err := s.hv(backup); !errors.Is(err, hypervisors.ErrNotFound) {
			t.Errorf("destroyed router still on vcsim: %v", err)
		}
		var e struct {
			Error struct{ Code, Message string }
		}
		if code := s.do(http.MethodPost, "/api/v1/routers/"+backup.ID+"/start", nil, &e); code != http.StatusConflict {
			t.Errorf("start of a destroyed router = %d %+v, want 409", code, e)
		}
	})
}

func activitiesSteps(s *stack, opID string) (string, error) {
	rows, err := activities.OperationSteps(context.Background(), s.store, opID)
	if err != nil {
		return "", err
	}
	var names []string
	for _, r := range rows {
		if (strings.HasPrefix(r.Step, "hypervisor.") || strings.HasPrefix(r.Step, "recreate.")) && r.Step != "hypervisor.reboot.intent" {
			names = append(names, r.Step)
		}
	}
	return strings.Join(names, ","), nil
}
