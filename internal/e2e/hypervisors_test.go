package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// TestLifecycleOnEveryHypervisor builds one zone on all three simulated hypervisors (libvirtd's
// test driver for KVM, vcsim for VMware, the XAPI simulator for XenServer) and drives stop,
// start, reboot and recreate of a router on each through the API, checking after every step
// that the database and the hypervisor agree, and that a recreated router runs the current
// template on both sides. Migrate is not in the API yet, so it is not exercised here.
func TestLifecycleOnEveryHypervisor(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, libvirtd, vcsim and the XAPI simulator")
	}
	p := newPlatform(t, modelstest.SQLite(t), platformOptions{kvm: true, vmware: true, xen: true, fleet: true})
	for _, ht := range []hypervisors.Type{hypervisors.KVM, hypervisors.VMware, hypervisors.XenServer} {
		t.Run(string(ht), func(t *testing.T) {
			if ht == hypervisors.KVM && p.kvmReason != "" {
				testenv.Require(t, "KVM (libvirtd)", errors.New(p.kvmReason))
			}
			begin := time.Now()
			lifecycleOn(t, p, ht)
			t.Logf("%s: stop, start, reboot, recreate in %s", ht, time.Since(begin).Round(time.Millisecond))
		})
	}
}

// lifecycleOn drives one router of a hypervisor through stop, start, reboot and recreate.
func lifecycleOn(t *testing.T, p *platform, ht hypervisors.Type) {
	ctx := context.Background()
	// A router with a network of its own, the old template first (so recreate changes it).
	var r models.SystemVM
	if err := p.store.DB.Where("type = ? AND hypervisor_type = ? AND is_redundant = ? AND network_id <> ?",
		models.TypeRouter, string(ht), false, "").Order("version, name").First(&r).Error; err != nil {
		t.Fatalf("no single router on %s: %v", ht, err)
	}
	t.Logf("router %s (%s) on %s, version %s", r.Name, r.ID, ht, r.Version)
	check := func(step, state string, power hypervisors.PowerState) hypervisors.VMInfo {
		t.Helper()
		row := p.vm(r.ID)
		if row.State != state {
			t.Errorf("after %s: database state of %s = %s, want %s", step, r.Name, row.State, state)
		}
		if row.HypervisorType != string(ht) {
			t.Errorf("after %s: %s moved to hypervisor %s", step, r.Name, row.HypervisorType)
		}
		info, err := p.hv(row)
		if err != nil {
			t.Fatalf("after %s: %s GetVM(%s): %v", step, ht, r.Name, err)
		}
		if info.State != power {
			t.Errorf("after %s: %s power state of %s = %s, want %s", step, ht, r.Name, info.State, power)
		}
		return info
	}
	check("materialize", models.StateRunning, hypervisors.PowerRunning)

	for _, step := range []struct {
		action string
		state  string
		power  hypervisors.PowerState
	}{
		{"stop", models.StateStopped, hypervisors.PowerStopped},
		{"start", models.StateRunning, hypervisors.PowerRunning},
		{"reboot", models.StateRunning, hypervisors.PowerRunning},
	} {
		op := p.wait(p.start("/api/v1/routers/"+r.ID+"/"+step.action), time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("%s of %s on %s ended %s: %s", step.action, r.Name, ht, op.Status, op.Error)
		}
		check(step.action, step.state, step.power)
	}

	setting := "router.template." + ht.SettingSuffix()
	// recreate recreates the router and checks it runs the template router.template.<hypervisor>
	// names, in the database and on the hypervisor, with its name and addresses kept.
	recreate := func(wantVersion string) operation {
		t.Helper()
		op := p.wait(p.start("/api/v1/routers/"+r.ID+"/recreate"), 2*time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("recreate of %s on %s ended %s: %s", r.Name, ht, op.Status, op.Error)
		}
		info := check("recreate", models.StateRunning, hypervisors.PowerRunning)
		name, err := p.store.Settings.String(ctx, setting, models.Scope{ZoneID: r.ZoneID, ClusterID: r.ClusterID})
		if err != nil {
			t.Fatal(err)
		}
		var tpl models.Template
		if err := p.store.DB.Where("name = ? AND hypervisor = ?", name, string(ht)).First(&tpl).Error; err != nil {
			t.Fatalf("%s template %q: %v", ht, name, err)
		}
		after := p.vm(r.ID)
		if after.TemplateID != tpl.ID || after.Version != tpl.Version || tpl.Version != wantVersion {
			t.Errorf("after recreate %s has template %s version %s; want %s = %s (%s) version %s",
				r.Name, after.TemplateID, after.Version, setting, tpl.Name, tpl.ID, wantVersion)
		}
		if info.Template != tpl.Name {
			t.Errorf("after recreate %s runs template %q on %s, want %q", r.Name, info.Template, ht, tpl.Name)
		}
		// Make-before-break: a new instance on a fresh control address (link-local on KVM and
		// XenServer, the private IP on VMware); the name and public IP stay.
		control, arg := after.LinkLocalIP, "controlip"
		before := r.LinkLocalIP
		if ht == hypervisors.VMware {
			control, arg, before = after.PrivateIP, "privateip", r.PrivateIP
		}
		if after.Name != r.Name || after.PublicIP != r.PublicIP || control == before || after.InstanceName == "" {
			t.Errorf("recreate of %s: name %s public %s control %s (was %s) instance %q", r.Name, after.Name, after.PublicIP,
				control, before, after.InstanceName)
		}
		if info.BootArgs["name"] != r.Name || info.BootArgs[arg] != control {
			t.Errorf("recreated VM on %s has boot args %v, want its name and control IP %s", ht, info.BootArgs, control)
		}
		if got := p.instancesOf(after); len(got) != 1 || got[0].Name != after.InstanceName {
			t.Errorf("%s VMs of %s after recreate: %+v, want only %s", ht, r.Name, got, after.InstanceName)
		}
		r = after
		return op
	}
	if r.Version == devcloud.CurrentVersion {
		// No router of this hypervisor is on the old template in the demo cloud: put this one
		// on it first (a setting change applies at once), so the final recreate visibly moves
		// it to the current template.
		p.setting(setting, devcloud.TemplateName(ht, devcloud.OldVersion))
		recreate(devcloud.OldVersion)
		p.setting(setting, devcloud.TemplateName(ht, devcloud.CurrentVersion))
	}
	op := recreate(devcloud.CurrentVersion)
	steps, err := activitiesSteps(p.stack, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := "recreate.prepare,recreate.seed,recreate.create-replacement,recreate.start-replacement,recreate.verify-replacement,recreate.stop-old,recreate.take-over,recreate.destroy-old,recreate.commit"; steps != want {
		t.Errorf("recreate on %s journaled %q, want %q", ht, steps, want)
	}
}
