package devcloud

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/kvm"
	"github.com/sysvm/sysvm/internal/testenv"
)

// TestStartKVM starts two simulated clusters on real private libvirtd daemons and checks what
// dev relies on: two hosts and a pool per cluster, state that outlives a Driver, clusters that
// do not see each other's VMs, and a stop that leaves no daemon or file behind.
func TestStartKVM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts libvirtd daemons; skipped with -short")
	}
	if findLibvirtd() == "" {
		testenv.Require(t, "libvirtd (scripts/libvirtd-setup.sh installs it)", errors.New("not installed: "+KVMInstallHint))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	sims, reason, stop, err := StartKVM(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	if reason != "" {
		t.Fatalf("StartKVM with libvirtd installed gave reason %q", reason)
	}
	t.Logf("2 clusters x 2 hosts up in %v", time.Since(start))
	if len(sims) != 2 {
		t.Fatalf("%d clusters, want 2", len(sims))
	}
	open := func(sc SimCluster) hypervisors.Driver {
		t.Helper()
		d, err := kvm.Connect(ctx, sc.Conn)
		if err != nil {
			t.Fatalf("connect %s: %v", sc.Name, err)
		}
		return d
	}
	for _, sc := range sims {
		if len(sc.Hosts) < 2 || len(sc.Pools) != 1 || sc.Conn.Type != hypervisors.KVM {
			t.Fatalf("cluster %+v: want >= 2 hosts, one pool, type KVM", sc)
		}
		d := open(sc)
		hosts, err := d.Hosts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hosts {
			if !h.Connected || h.CPUs <= 0 {
				t.Errorf("%s host %+v not connected", sc.Name, h)
			}
		}
		pools, err := d.StoragePools(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(pools) != 1 || pools[0].Name != sc.Pools[0] || pools[0].CapacityBytes <= 0 {
			t.Errorf("%s pools %+v, want just %s", sc.Name, pools, sc.Pools[0])
		}
		vms, err := d.ListVMs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(vms) != 0 {
			t.Errorf("%s starts with VMs %+v, want none", sc.Name, vms)
		}
		_ = d.Close()
	}

	// A VM made through one Driver is there for the next one, on its host, in its cluster only.
	a := open(sims[0])
	if _, err := a.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "systemvmtemplate-kvm", Pool: sims[0].Pools[0], Format: "QCOW2", SizeBytes: 2 << 30}, nil); err != nil {
		t.Fatal(err)
	}
	spec := hypervisors.VMSpec{Name: "r-dev-1-VM", Host: sims[0].Hosts[1], Pool: sims[0].Pools[0], Template: "systemvmtemplate-kvm",
		CPUs: 1, MemoryMB: 256, NICs: []hypervisors.NIC{{Kind: hypervisors.NICControl, MAC: "0e:00:a9:fe:00:01", IP: "169.254.0.1"}},
		BootArgs: map[string]string{"type": "domainrouter"}}
	if _, err := a.CreateVM(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := a.StartVM(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()

	a2 := open(sims[0])
	vi, err := a2.GetVM(ctx, spec.Name)
	if err != nil {
		t.Fatalf("VM gone after the Driver that made it closed: %v", err)
	}
	if vi.Host != sims[0].Hosts[1] || vi.State != hypervisors.PowerRunning {
		t.Errorf("VM %+v, want Running on %s", vi, sims[0].Hosts[1])
	}
	_ = a2.Close()

	b := open(sims[1])
	if _, err := b.GetVM(ctx, spec.Name); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("cluster 2 sees cluster 1's VM: %v", err)
	}
	_ = b.Close()

	dir := strings.TrimSuffix(strings.TrimPrefix(sims[0].Conn.Endpoint, "unix://"), "/"+sims[0].Hosts[0]+"/libvirt-sock?uri=test:///default")
	stop()
	stopped = true
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("simulation directory %s still there after stop (%v)", dir, err)
	}
	if _, err := kvm.Connect(ctx, sims[0].Conn); !errors.Is(err, hypervisors.ErrUnreachable) {
		t.Errorf("connect after stop = %v, want ErrUnreachable", err)
	}
}

// TestStartKVMWithoutLibvirtd: the clusters come back anyway, with a reason naming the apt
// command and endpoints that do not answer.
func TestStartKVMWithoutLibvirtd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sims, reason, stop, err := startKVM(ctx, 2, "", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if !strings.Contains(reason, KVMInstallHint) {
		t.Errorf("reason %q does not name %q", reason, KVMInstallHint)
	}
	if len(sims) != 2 || len(sims[0].Hosts) != 2 || len(sims[1].Pools) != 1 {
		t.Fatalf("clusters %+v", sims)
	}
	if _, err := kvm.Connect(ctx, sims[0].Conn); !errors.Is(err, hypervisors.ErrUnreachable) {
		t.Errorf("connect = %v, want ErrUnreachable", err)
	}
	// A binary that is not libvirtd fails to start a host: same outcome, and nothing left running.
	sims, reason, stop2, err := startKVM(ctx, 1, "/bin/false", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	if reason == "" || len(sims) != 1 {
		t.Errorf("with a broken libvirtd: reason %q, clusters %d", reason, len(sims))
	}
}
