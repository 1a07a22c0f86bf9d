package bench

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
)

// DefaultRoutersPerHost is how many routers SeedZone places on one KVM host.
const DefaultRoutersPerHost = 100

// MaxRouters bounds a seeded zone: link-local addresses are 169.254.1.1 to 169.254.254.250.
const MaxRouters = 254 * 250

// TemplateVersion is the template version of every seeded router (the version check passes).
const TemplateVersion = "4.15.0"

// seedBatch is how many rows one INSERT writes.
const seedBatch = 500

// Inventory is what SeedZone wrote.
type Inventory struct {
	ZoneID  string
	Hosts   int
	Routers int
}

// routerServices are the services each seeded network gets from its router.
const routerServices = "Dhcp,Dns,Lb,UserData,SourceNat,StaticNat,PortForwarding,Firewall"

// SeedZone writes the inventory of one zone with n running virtual routers on KVM hosts,
// perHost routers a host (0 = DefaultRoutersPerHost): each router serves its own isolated
// network (a gateway, DHCP, DNS, LB, user data) and has a link-local IP unique in the zone
// (169.254.x.y). Host addresses are placeholders until devcloud.StartRouters points them at
// the fleet. No hypervisor is needed: a health sweep only uses the database and SSH. Rows are
// written in batches, in one transaction, so 10,000 routers take seconds.
func SeedZone(ctx context.Context, s *models.Store, n, perHost int) (Inventory, error) {
	return seedZone(ctx, s, n, perHost, nil)
}

// XenPool is the simulated XenServer pool SeedXenZone places a zone's routers on.
type XenPool struct {
	// Conn reaches the pool's master (its password is stored encrypted, as a cluster's is).
	Conn hypervisors.Connection
	// Hosts are the pool's host names, SR its shared storage repository's name.
	Hosts []string
	SR    string
}

// SeedXenZone is SeedZone on one XenServer pool: the routers run OldTemplateVersion (their
// template is in the inventory), router.template.xenserver names the TemplateVersion template
// and minreq.sysvmtemplate.version is TemplateVersion, so every router requires an upgrade.
// The pool must have ceil(n/perHost) hosts. The VMs are not created on the pool (see
// MaterializeRouters).
func SeedXenZone(ctx context.Context, s *models.Store, n, perHost int, pool XenPool) (Inventory, error) {
	return seedZone(ctx, s, n, perHost, &pool)
}

// OldTemplateVersion is the version SeedXenZone's routers run before an upgrade.
const OldTemplateVersion = "4.14.0"

func seedZone(ctx context.Context, s *models.Store, n, perHost int, xen *XenPool) (Inventory, error) {
	if n < 1 || n > MaxRouters {
		return Inventory{}, fmt.Errorf("seed zone: %d routers: want 1 to %d", n, MaxRouters)
	}
	if perHost <= 0 {
		perHost = DefaultRoutersPerHost
	}
	hostCount := (n + perHost - 1) / perHost
	inv := Inventory{Hosts: hostCount, Routers: n}
	hv, format, version := hypervisors.KVM, "QCOW2", TemplateVersion
	if xen != nil {
		if len(xen.Hosts) < hostCount {
			return Inventory{}, fmt.Errorf("seed zone: %d routers at %d a host need %d hosts, the pool has %d", n, perHost, hostCount, len(xen.Hosts))
		}
		hv, format, version = hypervisors.XenServer, "VHD", OldTemplateVersion
	}
	// The pool's password is stored (encrypted) before the transaction, which holds SQLite's
	// write lock.
	clusterID, ref := models.NewID(), ""
	if xen != nil {
		ref = "cluster/" + clusterID + "/password"
		if err := s.Secrets.Put(ctx, ref, "hypervisor-password", []byte(xen.Conn.Password)); err != nil {
			return Inventory{}, fmt.Errorf("seed zone: cluster password: %w", err)
		}
	}
	err := s.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		root := models.Domain{Name: "ROOT", Path: "/"}
		if err := tx.Create(&root).Error; err != nil {
			return fmt.Errorf("domain: %w", err)
		}
		acct := models.Account{DomainID: root.ID, Name: "bench", Type: "User"}
		if err := tx.Create(&acct).Error; err != nil {
			return fmt.Errorf("account: %w", err)
		}
		off := models.ServiceOffering{Name: "System Offering For Software Router", CPUs: 1, CPUMHz: 500, MemoryMB: 512,
			SystemVMType: models.TypeRouter}
		if err := tx.Create(&off).Error; err != nil {
			return fmt.Errorf("service offering: %w", err)
		}
		tpl := models.Template{Name: "systemvmtemplate-" + version + "-" + hv.SettingSuffix(), Hypervisor: string(hv),
			Format: format, Type: "SYSTEM", Version: version, SizeBytes: 16 << 20, State: models.TemplateReady}
		if err := tx.Create(&tpl).Error; err != nil {
			return fmt.Errorf("template: %w", err)
		}
		if xen != nil {
			// The template the upgrade rebuilds the routers from, and the version it requires.
			cur := models.Template{Name: "systemvmtemplate-" + TemplateVersion + "-" + hv.SettingSuffix(), Hypervisor: string(hv),
				Format: format, Type: "SYSTEM", Version: TemplateVersion, SizeBytes: 16 << 20, State: models.TemplateReady}
			if err := tx.Create(&cur).Error; err != nil {
				return fmt.Errorf("template: %w", err)
			}
			for name, v := range map[string]string{"router.template." + hv.SettingSuffix(): cur.Name,
				"minreq.sysvmtemplate.version": TemplateVersion} {
				if err := tx.Create(&models.Setting{Name: name, Scope: models.ScopeGlobal, Value: v}).Error; err != nil {
					return fmt.Errorf("setting %s: %w", name, err)
				}
			}
		}
		zone := models.Zone{Name: "bench-zone", NetworkType: "Advanced", DNS1: "192.0.2.53", InternalDNS1: "10.0.0.53",
			AllocationState: "Enabled"}
		if err := tx.Create(&zone).Error; err != nil {
			return fmt.Errorf("zone: %w", err)
		}
		inv.ZoneID = zone.ID
		pod := models.Pod{ZoneID: zone.ID, Name: "bench-pod", Gateway: "10.1.0.1", Netmask: "255.255.0.0",
			StartIP: "10.1.0.10", EndIP: "10.1.255.250"}
		if err := tx.Create(&pod).Error; err != nil {
			return fmt.Errorf("pod: %w", err)
		}
		cl := models.Cluster{Base: models.Base{ID: clusterID}, ZoneID: zone.ID, PodID: pod.ID, Name: "bench-" + hv.SettingSuffix(),
			HypervisorType: string(hv), AllocationState: "Enabled"}
		poolName, poolType := "bench-pool", "NetworkFilesystem"
		if xen != nil {
			cl.Endpoint, cl.Username, cl.CredentialRef, cl.Insecure = xen.Conn.Endpoint, xen.Conn.Username, ref, xen.Conn.Insecure
			poolName, poolType = xen.SR, "NFS"
		}
		if err := tx.Create(&cl).Error; err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		pool := models.StoragePool{ZoneID: zone.ID, PodID: pod.ID, ClusterID: cl.ID, Name: poolName, Scope: "CLUSTER",
			Type: poolType, Path: "/" + poolName, CapacityBytes: 2 << 40, State: "Up"}
		if err := tx.Create(&pool).Error; err != nil {
			return fmt.Errorf("storage pool: %w", err)
		}
		hosts := make([]models.Host, hostCount)
		for i := range hosts {
			name := fmt.Sprintf("bench-kvm-%04d", i+1)
			if xen != nil {
				name = xen.Hosts[i]
			}
			hosts[i] = models.Host{Base: models.Base{ID: models.NewID()}, ZoneID: zone.ID, PodID: pod.ID, ClusterID: cl.ID,
				Name: name, HypervisorType: string(hv),
				Address: "127.0.0.1", State: models.HostUp, CPUs: 32, CPUMHz: 2400, MemoryMB: 262144, Version: "9.0.0"}
		}
		if err := tx.CreateInBatches(hosts, seedBatch).Error; err != nil {
			return fmt.Errorf("hosts: %w", err)
		}
		nets := make([]models.Network, n)
		vms := make([]models.SystemVM, n)
		for i := range n {
			a, b := i/250, i%250
			nets[i] = models.Network{Base: models.Base{ID: models.NewID()}, ZoneID: zone.ID, DomainID: root.ID,
				AccountID: acct.ID, Name: fmt.Sprintf("bench-net-%05d", i+1), Type: models.NetworkIsolated,
				Gateway: fmt.Sprintf("10.%d.%d.1", 100+a, b), CIDR: fmt.Sprintf("10.%d.%d.0/24", 100+a, b),
				Services: routerServices, State: "Implemented"}
			vms[i] = models.SystemVM{Base: models.Base{ID: models.NewID()}, Name: fmt.Sprintf("r-%d-VM", i+1),
				Type: models.TypeRouter, State: models.StateRunning, ZoneID: zone.ID, PodID: pod.ID, ClusterID: cl.ID,
				HostID: hosts[i/perHost].ID, StoragePoolID: pool.ID, HypervisorType: string(hv),
				TemplateID: tpl.ID, Version: version, ServiceOfferingID: off.ID, CPUs: off.CPUs, MemoryMB: off.MemoryMB,
				LinkLocalIP: fmt.Sprintf("169.254.%d.%d", 1+a, 1+b), LinkLocalMAC: fmt.Sprintf("0e:00:a9:fe:%02x:%02x", 1+a, 1+b),
				PrivateIP: fmt.Sprintf("10.1.%d.%d", 1+a, 1+b), PrivateMAC: fmt.Sprintf("1e:00:0a:01:%02x:%02x", 1+a, 1+b),
				PublicIP: fmt.Sprintf("198.18.%d.%d", a, 1+b), PublicMAC: fmt.Sprintf("06:00:c6:12:%02x:%02x", a, 1+b),
				NetworkID: nets[i].ID, DomainID: root.ID, AccountID: acct.ID}
		}
		if err := tx.CreateInBatches(nets, seedBatch).Error; err != nil {
			return fmt.Errorf("networks: %w", err)
		}
		if err := tx.CreateInBatches(vms, seedBatch).Error; err != nil {
			return fmt.Errorf("routers: %w", err)
		}
		return nil
	})
	if err != nil {
		return Inventory{}, fmt.Errorf("seed zone of %d routers: %w", n, err)
	}
	return inv, nil
}

// PauseHealthSchedules sets the intervals of the four health tasks to 0 (globally), so the
// schedules a worker creates for the zone are paused and only the sweeps the benchmark starts
// run; the worker's periodic schedule sync keeps them paused.
func PauseHealthSchedules(ctx context.Context, s *models.Store) error {
	for _, k := range activities.HealthKinds() {
		if _, err := s.Settings.Set(ctx, k.IntervalSetting(), models.ScopeGlobal, "", "0"); err != nil {
			return fmt.Errorf("pause %s health schedule: %w", k, err)
		}
	}
	return nil
}
