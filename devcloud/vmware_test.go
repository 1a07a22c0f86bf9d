package devcloud

import (
	"context"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/vmware"
)

// TestStartVMware starts the simulated vCenter with two clusters, connects the real driver
// and creates and starts a VM in each cluster, checking each cluster's datastore is shared
// by its own hosts only; stop removes the datastores' directories and the endpoint goes away.
func TestStartVMware(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // the simulator's and the datastores' directories go here
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sims, stop, err := StartVMware(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	if len(sims) != 2 {
		t.Fatalf("%d clusters, want 2", len(sims))
	}
	for i, want := range []SimCluster{
		{Name: "DC0_C0", Hosts: []string{"DC0_C0_H0", "DC0_C0_H1"}, Pools: []string{"DC0_C0_DS0"}},
		{Name: "DC0_C1", Hosts: []string{"DC0_C1_H0", "DC0_C1_H1"}, Pools: []string{"DC0_C1_DS0"}},
	} {
		got := sims[i]
		if got.Name != want.Name || !reflect.DeepEqual(got.Hosts, want.Hosts) || !reflect.DeepEqual(got.Pools, want.Pools) {
			t.Errorf("cluster %d = %+v, want %+v", i, got, want)
		}
		if got.Conn.Type != hypervisors.VMware || !got.Conn.Insecure || got.Conn.Password == "" {
			t.Errorf("cluster %d connection %s insecure=%v", i, got.Conn, got.Conn.Insecure)
		}
	}

	d, err := vmware.Connect(ctx, sims[0].Conn)
	if err != nil {
		t.Fatalf("connect the VMware driver: %v", err)
	}
	defer d.Close()
	pools, err := d.StoragePools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) != 2 || pools[0].Name != "DC0_C0_DS0" || pools[1].Name != "DC0_C1_DS0" || pools[0].CapacityBytes <= 0 {
		t.Fatalf("pools = %+v", pools)
	}

	for _, sim := range sims {
		tpl := hypervisors.TemplateSpec{Name: "systemvm-vmware", Format: "OVA", SizeBytes: 16 << 20, Pool: sim.Pools[0]}
		if _, err := d.SeedTemplate(ctx, tpl, nil); err != nil {
			t.Fatalf("seed into %s: %v", sim.Pools[0], err)
		}
		name := "r-" + sim.Name + "-VM"
		spec := hypervisors.VMSpec{Name: name, Host: sim.Hosts[1], Pool: sim.Pools[0], Template: tpl.Name, CPUs: 1, MemoryMB: 256,
			NICs:     []hypervisors.NIC{{Kind: hypervisors.NICControl, MAC: "02:00:00:00:00:0" + sim.Name[len(sim.Name)-1:], IP: "10.0.0.9"}},
			BootArgs: map[string]string{"type": "domainrouter", "name": name}}
		if _, err := d.CreateVM(ctx, spec); err != nil {
			t.Fatalf("CreateVM in %s: %v", sim.Name, err)
		}
		if err := d.StartVM(ctx, name); err != nil {
			t.Fatalf("StartVM: %v", err)
		}
		vi, err := d.GetVM(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if vi.State != hypervisors.PowerRunning || vi.Host != sim.Hosts[1] || vi.Pool != sim.Pools[0] || vi.BootArgs["name"] != name {
			t.Errorf("VM %+v, want running on %s in %s", vi, sim.Hosts[1], sim.Pools[0])
		}
		if err := d.MigrateVM(ctx, name, sim.Hosts[0]); err != nil {
			t.Errorf("migrate within %s: %v", sim.Name, err)
		}
	}
	// A cluster's datastore is not mounted on the other cluster's hosts.
	cross := hypervisors.VMSpec{Name: "r-cross-VM", Host: sims[0].Hosts[0], Pool: sims[1].Pools[0], Template: "systemvm-vmware", CPUs: 1, MemoryMB: 128}
	if _, err := d.CreateVM(ctx, cross); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("VM on another cluster's datastore = %v, want ErrNotFound", err)
	}

	if left, _ := os.ReadDir(tmp); len(left) == 0 {
		t.Errorf("no simulator directories under TMPDIR while running")
	}
	stop()
	stopped = true
	if _, err := vmware.Connect(ctx, sims[0].Conn); !errors.Is(err, hypervisors.ErrUnreachable) {
		t.Errorf("connect after stop = %v, want ErrUnreachable", err)
	}
	if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
		t.Errorf("stop left %d entries in TMPDIR (%v)", len(left), err)
	}
}
