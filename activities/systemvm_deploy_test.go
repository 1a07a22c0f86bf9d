package activities

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// deployZone seeds one zone with a pod, a XenServer cluster of two Up hosts (one nearly full),
// a pool, a template named by router.template.xenserver, a public IP range of five addresses
// and one existing CPVM holding the range's first address.
func deployZone(t *testing.T, s *models.Store) (models.Zone, models.Host) {
	t.Helper()
	db := s.DB
	zone := models.Zone{Name: "zone-d"}
	modelstest.Must(t, db.Create(&zone).Error, "zone")
	pod := models.Pod{ZoneID: zone.ID, Name: "pod-d", StartIP: "10.9.0.10", EndIP: "10.9.0.20"}
	modelstest.Must(t, db.Create(&pod).Error, "pod")
	c := models.Cluster{ZoneID: zone.ID, PodID: pod.ID, Name: "c-d", HypervisorType: "XenServer"}
	modelstest.Must(t, db.Create(&c).Error, "cluster")
	roomy := models.Host{ZoneID: zone.ID, PodID: pod.ID, ClusterID: c.ID, Name: "h-roomy", State: models.HostUp, MemoryMB: 65536}
	full := models.Host{ZoneID: zone.ID, PodID: pod.ID, ClusterID: c.ID, Name: "h-full", State: models.HostUp, MemoryMB: 1024}
	down := models.Host{ZoneID: zone.ID, PodID: pod.ID, ClusterID: c.ID, Name: "h-down", State: models.HostDisconnected, MemoryMB: 1 << 20}
	for _, h := range []*models.Host{&roomy, &full, &down} {
		modelstest.Must(t, db.Create(h).Error, "host")
	}
	modelstest.Must(t, db.Create(&models.StoragePool{ZoneID: zone.ID, ClusterID: c.ID, Name: "pool-d", Scope: "CLUSTER"}).Error, "pool")
	tpl := models.Template{Name: "systemvm-xen-4.20", Hypervisor: "XenServer", Version: "4.20.0", Type: "SYSTEM"}
	modelstest.Must(t, db.Create(&tpl).Error, "template")
	_, err := s.Settings.Set(context.Background(), "router.template.xenserver", models.ScopeGlobal, "", tpl.Name)
	modelstest.Must(t, err, "setting")
	modelstest.Must(t, db.Create(&models.PublicIPRange{ZoneID: zone.ID, StartIP: "198.18.9.10", EndIP: "198.18.9.14",
		Gateway: "198.18.9.1", Netmask: "255.255.255.0"}).Error, "range")
	modelstest.Must(t, db.Create(&models.SystemVM{Name: "v-41-VM", Type: models.TypeCPVM, State: models.StateRunning, ZoneID: zone.ID,
		PodID: pod.ID, ClusterID: c.ID, HostID: full.ID, HypervisorType: "XenServer", MemoryMB: 512,
		PublicIP: "198.18.9.10", PrivateIP: "10.9.0.10", LinkLocalIP: "169.254.9.9"}).Error, "existing CPVM")
	return zone, roomy
}

// TestAllocateSystemVM: a deploy's allocation names the VM after every system VM so far,
// takes free addresses of the zone's ranges and the roomiest Up host, and is journaled: a
// retry of the same operation returns the same VM and inserts no second row.
func TestAllocateSystemVM(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		zone, roomy := deployZone(t, s)
		a := &Activities{Store: s}
		p, err := a.AllocateSystemVM(ctx, DeployRequest{OperationID: "op-a", ZoneID: zone.ID, Type: models.TypeSSVM})
		modelstest.Must(t, err, "allocate")
		if p.Name != "s-42-VM" || p.HostID != roomy.ID || p.PublicIP == "198.18.9.10" || p.PrivateIP == "10.9.0.10" || p.LinkLocalIP == "" ||
			p.VMID != DeployVMID("op-a") {
			t.Fatalf("plan %+v", p)
		}
		again, err := a.AllocateSystemVM(ctx, DeployRequest{OperationID: "op-a", ZoneID: zone.ID, Type: models.TypeSSVM})
		modelstest.Must(t, err, "allocate again")
		if again != p {
			t.Fatalf("a retry allocated %+v, want the journaled %+v", again, p)
		}
		var vm models.SystemVM
		modelstest.Must(t, s.Get(ctx, &vm, p.VMID), "row")
		if vm.State != models.StateStarting || vm.TemplateID == "" || vm.Version != "4.20.0" || vm.StoragePoolID == "" {
			t.Errorf("allocated row %+v", vm)
		}
		var n int64
		modelstest.Must(t, s.DB.Model(&models.SystemVM{}).Where("zone_id = ?", zone.ID).Count(&n).Error, "count")
		if n != 2 {
			t.Errorf("%d rows after two allocations of one operation, want 2 (the existing CPVM and one new)", n)
		}
		// Unknown zone and a router are refused.
		if _, err := a.AllocateSystemVM(ctx, DeployRequest{OperationID: "op-r", ZoneID: zone.ID, Type: models.TypeRouter}); err == nil {
			t.Error("a router deploy was allocated")
		}
		if _, err := a.AllocateSystemVM(ctx, DeployRequest{OperationID: "op-z", ZoneID: "nope", Type: models.TypeCPVM}); err == nil {
			t.Error("a deploy into no zone was allocated")
		}
	})
}

// TestAllocateSystemVMConcurrently: deploys allocating at once never share a name or an
// address, and the range's end is a clear refusal.
func TestAllocateSystemVMConcurrently(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		zone, _ := deployZone(t, s)
		a := &Activities{Store: s}
		var mu sync.Mutex
		var plans []DeployPlan
		var errs []error
		var wg sync.WaitGroup
		for i := 0; i < 5; i++ { // the range has 4 free addresses
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := a.AllocateSystemVM(ctx, DeployRequest{OperationID: fmt.Sprintf("op-%d", i), ZoneID: zone.ID, Type: models.TypeCPVM})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				plans = append(plans, p)
			}()
		}
		wg.Wait()
		if len(plans) != 4 || len(errs) != 1 {
			t.Fatalf("%d allocations, errors %v; want 4 and one refusal", len(plans), errs)
		}
		seen := map[string]bool{}
		for _, p := range plans {
			for _, v := range []string{p.Name, p.PublicIP, p.PrivateIP, p.LinkLocalIP} {
				if seen[v] {
					t.Errorf("%s allocated twice: %+v", v, plans)
				}
				seen[v] = true
			}
		}
	})
}
