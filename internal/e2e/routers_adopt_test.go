package e2e

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// TestRestartedFleetAdoptsARunningReplacement: a recreate's replacement built by a process
// that then died (here: created through this platform's drivers, so the platform's fleet
// simulates it) is not a row's instance, so a fleet started afresh from the rows (a restarted
// worker's) does not simulate it until AdoptInstances reads the hypervisor: then it answers
// SSH at its own control address, as the VM on vcsim runs; the template VM on vcsim, which
// belongs to no system VM, is not adopted.
func TestRestartedFleetAdoptsARunningReplacement(t *testing.T) {
	if testing.Short() {
		t.Skip("starts vcsim and the simulated fleet")
	}
	ctx := context.Background()
	store := modelstest.SQLite(t)
	p := newPlatform(t, store, platformOptions{vmware: true, fleet: true})
	var router models.SystemVM
	if err := store.DB.Where("type = ? AND state = ? AND hypervisor_type = ?", models.TypeRouter, models.StateRunning, string(hypervisors.VMware)).
		Order("name").First(&router).Error; err != nil {
		t.Fatal(err)
	}
	d, err := p.acts.Drivers.For(ctx, router.ClusterID)
	if err != nil {
		t.Fatal(err)
	}
	old, err := d.GetVM(ctx, router.HypervisorName())
	if err != nil {
		t.Fatal(err)
	}
	// The replacement: the old VM's spec under a new instance name and control address.
	replacement := router.HypervisorName() + "-adopt123"
	const controlIP = "10.1.1.250"
	spec := hypervisors.VMSpec{Name: replacement, Host: old.Host, Pool: old.Pool, Template: old.Template, CPUs: old.CPUs,
		MemoryMB: old.MemoryMB, BootArgs: old.BootArgs}
	for _, n := range old.NICs {
		if n.Kind == hypervisors.NICPrivate {
			n.IP, n.MAC = controlIP, "02:00:0a:01:01:fa"
		}
		spec.NICs = append(spec.NICs, n)
	}
	if _, err := d.CreateVM(ctx, spec); err != nil {
		t.Fatalf("create the replacement: %v", err)
	}
	if err := d.StartVM(ctx, replacement); err != nil {
		t.Fatalf("start the replacement: %v", err)
	}

	restarted, err := devcloud.StartRouters(ctx, store, platformPublicKey(t, store), (&activities.Health{Store: store}).RouterConfig, logger(), fleet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restarted.Close() })
	if _, err := restarted.Fleet.Spec(replacement); err == nil {
		t.Fatalf("a fleet started from the rows simulates %s already", replacement)
	}
	if err := restarted.AdoptInstances(ctx, p.acts.Drivers); err != nil {
		t.Fatalf("AdoptInstances: %v", err)
	}
	got, err := restarted.Fleet.Spec(replacement)
	if err != nil {
		t.Fatalf("after AdoptInstances: %v", err)
	}
	if got.PoweredOff || got.Name != router.Name || got.PrivateIP != controlIP {
		t.Errorf("adopted %s: name %s, private IP %s, powered off %v; want %s at %s, running", replacement, got.Name, got.PrivateIP,
			got.PoweredOff, router.Name, controlIP)
	}
	// It answers SSH at its control address (VMware: the platform dials the private IP).
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := restarted.Fleet.DialContext(dctx, "tcp", net.JoinHostPort(controlIP, "3922"))
	if err != nil {
		t.Fatalf("dial the adopted replacement: %v", err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	banner, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(banner, "SSH-2.0-") {
		t.Fatalf("the adopted replacement's banner %q (%v), want SSH-2.0", banner, err)
	}
	for _, id := range restarted.Fleet.Routers() {
		if strings.Contains(id, "systemvmtemplate") {
			t.Errorf("the template VM %s was adopted", id)
		}
	}
}
