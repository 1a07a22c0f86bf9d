// Package conformance is the one scenario list every hypervisor driver must pass. Each driver's
// package has a TestConformance that builds a Fixture against its most real peer (libvirtd,
// vcsim, the XAPI simulator) and calls Run; `go test ./hypervisors/... -run Conformance` runs
// them all.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sysvm/sysvm/hypervisors"
)

// Fixture is what a driver's test provides.
type Fixture struct {
	// Name is the driver's subtest name ("kvm", "vmware", "xen"), so
	// `go test ./hypervisors/... -run Conformance/kvm` runs one driver.
	Name string
	// Driver is connected to the peer.
	Driver hypervisors.Driver
	// Hosts are at least two host names of one cluster (for migration).
	Hosts []string
	// Pool is a storage pool present on those hosts.
	Pool string
	// Template seeds a system VM template into Pool (Name and Pool set).
	Template hypervisors.TemplateSpec
}

func spec(f Fixture, name string) hypervisors.VMSpec {
	return hypervisors.VMSpec{
		Name: name, Host: f.Hosts[0], Pool: f.Pool, Template: f.Template.Name,
		CPUs: 1, CPUMHz: 500, MemoryMB: 256,
		NICs: []hypervisors.NIC{
			{Kind: hypervisors.NICControl, MAC: "0e:00:a9:fe:01:02", IP: "169.254.1.2", Netmask: "255.255.0.0"},
			{Kind: hypervisors.NICPublic, MAC: "1e:00:0a:00:00:05", IP: "192.0.2.5", Netmask: "255.255.255.0", Gateway: "192.0.2.1"},
		},
		BootArgs: map[string]string{"type": "domainrouter", "name": name},
	}
}

// Run runs the whole scenario list against f, as the subtest f.Name.
func Run(t *testing.T, f Fixture) {
	t.Helper()
	if f.Name == "" {
		t.Fatal("fixture needs the driver's name")
	}
	t.Run(f.Name, func(t *testing.T) { run(t, f) })
}

func run(t *testing.T, f Fixture) {
	t.Helper()
	if len(f.Hosts) < 2 {
		t.Fatalf("fixture needs at least two hosts, has %d", len(f.Hosts))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d := f.Driver

	t.Run("facts", func(t *testing.T) {
		hosts, err := d.Hosts(ctx)
		if err != nil {
			t.Fatalf("Hosts: %v", err)
		}
		found := map[string]bool{}
		for _, h := range hosts {
			found[h.Name] = true
		}
		for _, h := range f.Hosts {
			if !found[h] {
				t.Errorf("host %q missing from Hosts() = %+v", h, hosts)
			}
		}
		hi, err := d.HostInfo(ctx, f.Hosts[0])
		if err != nil {
			t.Fatalf("HostInfo: %v", err)
		}
		if hi.CPUs <= 0 || hi.MemoryMB <= 0 {
			t.Errorf("HostInfo(%s) has no capacity: %+v", f.Hosts[0], hi)
		}
		if _, err := d.HostInfo(ctx, "no-such-host"); !errors.Is(err, hypervisors.ErrNotFound) {
			t.Errorf("HostInfo(unknown) = %v, want ErrNotFound", err)
		}
		pools, err := d.StoragePools(ctx)
		if err != nil {
			t.Fatalf("StoragePools: %v", err)
		}
		var pool *hypervisors.StoragePool
		for i := range pools {
			if pools[i].Name == f.Pool {
				pool = &pools[i]
			}
		}
		if pool == nil {
			t.Fatalf("pool %q missing from %+v", f.Pool, pools)
		}
		if pool.CapacityBytes <= 0 || pool.FreeBytes < 0 || pool.FreeBytes > pool.CapacityBytes {
			t.Errorf("pool %q capacity/free implausible: %+v", f.Pool, *pool)
		}
	})

	t.Run("seed template", func(t *testing.T) {
		var last int64
		tpl, err := d.SeedTemplate(ctx, f.Template, func(done, total int64) { last = done })
		if err != nil {
			t.Fatalf("SeedTemplate: %v", err)
		}
		if tpl.Name != f.Template.Name {
			t.Errorf("seeded template name %q, want %q", tpl.Name, f.Template.Name)
		}
		_ = last
		again, err := d.SeedTemplate(ctx, f.Template, nil)
		if err != nil {
			t.Fatalf("SeedTemplate again (must be idempotent): %v", err)
		}
		if again.Ref != tpl.Ref {
			t.Errorf("second seed gave another template: %q vs %q", again.Ref, tpl.Ref)
		}
		bad := f.Template
		bad.Name += "-bad"
		bad.Checksum = "sha256:" + fmt.Sprintf("%064d", 0)
		if _, err := d.SeedTemplate(ctx, bad, nil); !errors.Is(err, hypervisors.ErrInvalid) {
			t.Errorf("SeedTemplate with wrong checksum = %v, want ErrInvalid", err)
		}
	})

	name := "r-conf-1-VM"
	t.Run("lifecycle", func(t *testing.T) {
		info, err := d.CreateVM(ctx, spec(f, name))
		if err != nil {
			t.Fatalf("CreateVM: %v", err)
		}
		if info.Name != name || info.State != hypervisors.PowerStopped {
			t.Errorf("created VM %+v, want %s Stopped", info, name)
		}
		if _, err := d.CreateVM(ctx, spec(f, name)); !errors.Is(err, hypervisors.ErrAlreadyExists) {
			t.Errorf("CreateVM twice = %v, want ErrAlreadyExists", err)
		}
		if err := d.RebootVM(ctx, name); !errors.Is(err, hypervisors.ErrBadState) {
			t.Errorf("RebootVM(stopped) = %v, want ErrBadState", err)
		}
		mustState := func(want hypervisors.PowerState) hypervisors.VMInfo {
			t.Helper()
			vi, err := d.GetVM(ctx, name)
			if err != nil {
				t.Fatalf("GetVM: %v", err)
			}
			if vi.State != want {
				t.Fatalf("VM state %s, want %s", vi.State, want)
			}
			return vi
		}
		if err := d.StartVM(ctx, name); err != nil {
			t.Fatalf("StartVM: %v", err)
		}
		vi := mustState(hypervisors.PowerRunning)
		if vi.CPUs != 1 || vi.MemoryMB != 256 {
			t.Errorf("VM shape cpus=%d mem=%d, want 1/256", vi.CPUs, vi.MemoryMB)
		}
		if vi.Host != f.Hosts[0] {
			t.Errorf("VM on host %q, want %q", vi.Host, f.Hosts[0])
		}
		if err := d.StartVM(ctx, name); err != nil {
			t.Errorf("StartVM(running) must be idempotent, got %v", err)
		}
		if _, err := d.VMStats(ctx, name); err != nil {
			t.Errorf("VMStats: %v", err)
		}
		if err := d.RebootVM(ctx, name); err != nil {
			t.Fatalf("RebootVM: %v", err)
		}
		mustState(hypervisors.PowerRunning)

		caps := d.Capabilities()
		if caps.LinkLocalControl != d.Type().LinkLocalControl() {
			t.Errorf("Capabilities().LinkLocalControl = %v, but %s.LinkLocalControl() (the static form access paths use) = %v",
				caps.LinkLocalControl, d.Type(), d.Type().LinkLocalControl())
		}
		if !caps.LiveMigration {
			if err := d.StopVM(ctx, name, false); err != nil {
				t.Fatalf("StopVM before cold migration: %v", err)
			}
		}
		if err := d.MigrateVM(ctx, name, f.Hosts[1]); err != nil {
			t.Fatalf("MigrateVM: %v", err)
		}
		vi, err = d.GetVM(ctx, name)
		if err != nil {
			t.Fatalf("GetVM after migrate: %v", err)
		}
		if vi.Host != f.Hosts[1] {
			t.Errorf("after migrate VM on %q, want %q", vi.Host, f.Hosts[1])
		}
		if err := d.MigrateVM(ctx, name, "no-such-host"); !errors.Is(err, hypervisors.ErrNotFound) {
			t.Errorf("MigrateVM(unknown host) = %v, want ErrNotFound", err)
		}
		if caps.LiveMigration {
			if err := d.StopVM(ctx, name, false); err != nil {
				t.Fatalf("StopVM: %v", err)
			}
		}
		mustState(hypervisors.PowerStopped)
		if err := d.StopVM(ctx, name, true); err != nil {
			t.Errorf("StopVM(stopped) must be idempotent, got %v", err)
		}
		if err := d.ScaleVM(ctx, name, 2, 512); err != nil {
			t.Fatalf("ScaleVM: %v", err)
		}
		vi = mustState(hypervisors.PowerStopped)
		if vi.CPUs != 2 || vi.MemoryMB != 512 {
			t.Errorf("after scale cpus=%d mem=%d, want 2/512", vi.CPUs, vi.MemoryMB)
		}
		if err := d.StartVM(ctx, name); err != nil {
			t.Fatalf("StartVM after scale: %v", err)
		}
		if err := d.StopVM(ctx, name, true); err != nil {
			t.Fatalf("StopVM(force): %v", err)
		}
		if err := d.StartVM(ctx, name); err != nil {
			t.Fatalf("StartVM again: %v", err)
		}
		if err := d.DestroyVM(ctx, name); err != nil {
			t.Fatalf("DestroyVM(running): %v", err)
		}
		if _, err := d.GetVM(ctx, name); !errors.Is(err, hypervisors.ErrNotFound) {
			t.Errorf("GetVM after destroy = %v, want ErrNotFound", err)
		}
		if err := d.DestroyVM(ctx, name); !errors.Is(err, hypervisors.ErrNotFound) {
			t.Errorf("DestroyVM twice = %v, want ErrNotFound", err)
		}
	})

	t.Run("unknown VM", func(t *testing.T) {
		const ghost = "r-ghost-VM"
		for op, err := range map[string]error{
			"GetVM":     second(d.GetVM(ctx, ghost)),
			"StartVM":   d.StartVM(ctx, ghost),
			"StopVM":    d.StopVM(ctx, ghost, false),
			"RebootVM":  d.RebootVM(ctx, ghost),
			"MigrateVM": d.MigrateVM(ctx, ghost, f.Hosts[1]),
			"ScaleVM":   d.ScaleVM(ctx, ghost, 1, 256),
		} {
			if !errors.Is(err, hypervisors.ErrNotFound) {
				t.Errorf("%s(unknown) = %v, want ErrNotFound", op, err)
			}
		}
		bad := spec(f, "r-badtpl-VM")
		bad.Template = "no-such-template"
		if _, err := d.CreateVM(ctx, bad); !errors.Is(err, hypervisors.ErrNotFound) {
			t.Errorf("CreateVM(unknown template) = %v, want ErrNotFound", err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		const n = 4
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				vm := fmt.Sprintf("r-conc-%d-VM", i)
				if _, err := d.CreateVM(ctx, spec(f, vm)); err != nil {
					errs <- fmt.Errorf("create %s: %w", vm, err)
					return
				}
				if err := d.StartVM(ctx, vm); err != nil {
					errs <- fmt.Errorf("start %s: %w", vm, err)
					return
				}
				if err := d.DestroyVM(ctx, vm); err != nil {
					errs <- fmt.Errorf("destroy %s: %w", vm, err)
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		vms, err := d.ListVMs(ctx)
		if err != nil {
			t.Fatalf("ListVMs: %v", err)
		}
		for _, vm := range vms {
			if len(vm.Name) > 7 && vm.Name[:7] == "r-conc-" {
				t.Errorf("VM %s still listed after destroy", vm.Name)
			}
		}
	})
}

func second[T any](_ T, err error) error { return err }
