package devcloud

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"gorm.io/gorm"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
)

// Clusters are the simulated clusters the demo cloud is built on, one list per hypervisor.
type Clusters struct {
	KVM, VMware, Xen []SimCluster
	// KVMReason is set when libvirtd is not available: KVM hosts are then Disconnected with it.
	KVMReason string
}

// SeedOptions shape the demo cloud.
type SeedOptions struct {
	Zones          int // default 2
	RoutersPerZone int // default 20 (at least 20 are seeded)
}

// Template versions of the demo: most system VMs run the current one, a few routers the old
// one, so "requires upgrade" has something to show.
const (
	CurrentVersion = "4.15.0"
	OldVersion     = "4.14.0"
)

// TemplateName is the demo's system VM template name for a hypervisor and version.
func TemplateName(t hypervisors.Type, version string) string {
	return fmt.Sprintf("systemvmtemplate-%s-%s", version, t.SettingSuffix())
}

var templateFormat = map[hypervisors.Type]string{hypervisors.KVM: "QCOW2", hypervisors.VMware: "OVA", hypervisors.XenServer: "VHD"}

// Seed builds the demo cloud in the database when it is not there yet, and points its
// clusters at the simulators of this run (their ports change from run to run). It returns
// whether it created the inventory.
func Seed(ctx context.Context, s *models.Store, cl Clusters, opt SeedOptions) (bool, error) {
	if opt.Zones <= 0 {
		opt.Zones = 2
	}
	if opt.RoutersPerZone < 20 {
		opt.RoutersPerZone = 20
	}
	var n int64
	if err := s.DB.WithContext(ctx).Model(&models.Zone{}).Count(&n).Error; err != nil {
		return false, err
	}
	created := false
	if n == 0 {
		if err := s.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			return seedInventory(ctx, tx, cl, opt)
		}); err != nil {
			return false, fmt.Errorf("seed demo cloud: %w", err)
		}
		created = true
	}
	// Guest VMs and rules are seeded apart from the rest, so a dev database from before they
	// were rows gets them too.
	if err := s.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return seedGuests(ctx, tx)
	}); err != nil {
		return created, fmt.Errorf("seed demo guest VMs and rules: %w", err)
	}
	// Public IP ranges too: new CPVMs and SSVMs take their public IP from them.
	if err := seedPublicRanges(ctx, s.DB); err != nil {
		return created, fmt.Errorf("seed demo public IP ranges: %w", err)
	}
	if err := rebind(ctx, s, cl); err != nil {
		return created, err
	}
	return created, nil
}

// seedPublicRanges gives every zone without a public IP range one: 198.18.<n>.10-250 for the
// n-th zone by name (RFC 2544's benchmarking block, apart from the seeded VMs' addresses).
func seedPublicRanges(ctx context.Context, db *gorm.DB) error {
	var zones []models.Zone
	if err := db.WithContext(ctx).Order("name").Find(&zones).Error; err != nil {
		return err
	}
	for zi, z := range zones {
		var n int64
		if err := db.WithContext(ctx).Model(&models.PublicIPRange{}).Where("zone_id = ?", z.ID).Count(&n).Error; err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		b := (zi % 250) + 1
		if err := db.WithContext(ctx).Create(&models.PublicIPRange{ZoneID: z.ID, Gateway: fmt.Sprintf("198.18.%d.1", b),
			Netmask: "255.255.255.0", StartIP: fmt.Sprintf("198.18.%d.10", b), EndIP: fmt.Sprintf("198.18.%d.250", b)}).Error; err != nil {
			return err
		}
	}
	return nil
}

type seeder struct {
	tx      *gorm.DB
	routerN int
	ip      int
}

func (sd *seeder) create(v any) error { return sd.tx.Create(v).Error }

func seedInventory(ctx context.Context, tx *gorm.DB, cl Clusters, opt SeedOptions) error {
	sd := &seeder{tx: tx.WithContext(ctx)}
	root := models.Domain{Name: "ROOT", Path: "/"}
	if err := sd.create(&root); err != nil {
		return err
	}
	admin := models.Account{DomainID: root.ID, Name: "admin", Type: "Admin"}
	demo := models.Account{DomainID: root.ID, Name: "demo", Type: "User"}
	if err := sd.create(&admin); err != nil {
		return err
	}
	if err := sd.create(&demo); err != nil {
		return err
	}
	offering := models.ServiceOffering{Name: "System Offering For Software Router", CPUs: 1, CPUMHz: 500, MemoryMB: 512, SystemVMType: models.TypeRouter}
	if err := sd.create(&offering); err != nil {
		return err
	}
	// A bigger router offering to scale a router to (scaleSystemVm; GET /api/v1/service-offerings).
	// Its name sorts after the default's, so new system VMs keep the default.
	bigger := models.ServiceOffering{Name: "System Offering For Software Router (2 vCPU, 1 GB)", CPUs: 2, CPUMHz: 500, MemoryMB: 1024,
		SystemVMType: models.TypeRouter}
	if err := sd.create(&bigger); err != nil {
		return err
	}
	// Templates, current and old, per hypervisor; new system VMs use the current one.
	tpls := map[hypervisors.Type]map[string]models.Template{}
	for _, t := range []hypervisors.Type{hypervisors.KVM, hypervisors.VMware, hypervisors.XenServer} {
		tpls[t] = map[string]models.Template{}
		for _, v := range []string{OldVersion, CurrentVersion} {
			tpl := models.Template{Name: TemplateName(t, v), Hypervisor: string(t), Format: templateFormat[t],
				Type: "SYSTEM", Version: v, SizeBytes: 16 << 20, State: models.TemplateReady}
			if err := sd.create(&tpl); err != nil {
				return err
			}
			tpls[t][v] = tpl
		}
		if err := sd.tx.Create(&models.Setting{Name: "router.template." + t.SettingSuffix(), Scope: models.ScopeGlobal,
			Value: TemplateName(t, CurrentVersion)}).Error; err != nil {
			return err
		}
	}
	if err := sd.tx.Create(&models.Setting{Name: "minreq.sysvmtemplate.version", Scope: models.ScopeGlobal, Value: CurrentVersion}).Error; err != nil {
		return err
	}

	for zi := 0; zi < opt.Zones; zi++ {
		zone := models.Zone{Name: fmt.Sprintf("zone-%d", zi+1), NetworkType: "Advanced", DNS1: "192.0.2.53",
			InternalDNS1: "10.0.0.53", AllocationState: "Enabled"}
		if err := sd.create(&zone); err != nil {
			return err
		}
		pod := models.Pod{ZoneID: zone.ID, Name: fmt.Sprintf("pod-%d", zi+1), Gateway: fmt.Sprintf("10.%d.0.1", zi+1),
			Netmask: "255.255.255.0", StartIP: fmt.Sprintf("10.%d.0.10", zi+1), EndIP: fmt.Sprintf("10.%d.0.250", zi+1)}
		if err := sd.create(&pod); err != nil {
			return err
		}
		if err := sd.create(&models.SecondaryStore{ZoneID: zone.ID, Name: fmt.Sprintf("nfs-secondary-%d", zi+1),
			URL: fmt.Sprintf("nfs://10.%d.0.5/export/secondary", zi+1), Protocol: "nfs"}); err != nil {
			return err
		}
		var zoneClusters []placed
		for _, group := range []struct {
			t    hypervisors.Type
			sims []SimCluster
		}{{hypervisors.KVM, cl.KVM}, {hypervisors.VMware, cl.VMware}, {hypervisors.XenServer, cl.Xen}} {
			if zi >= len(group.sims) {
				continue
			}
			p, err := sd.cluster(zone, pod, group.t, group.sims[zi], cl.KVMReason)
			if err != nil {
				return err
			}
			zoneClusters = append(zoneClusters, p)
		}
		if len(zoneClusters) == 0 {
			return fmt.Errorf("zone %s: no simulated cluster to place system VMs on", zone.Name)
		}
		if err := sd.systemVMs(zone, pod, zoneClusters, tpls, offering, root, demo, opt.RoutersPerZone); err != nil {
			return err
		}
	}
	return nil
}

// placed is a seeded cluster with its hosts and pool.
type placed struct {
	cluster models.Cluster
	hosts   []models.Host
	pool    models.StoragePool
	typ     hypervisors.Type
}

func (sd *seeder) cluster(zone models.Zone, pod models.Pod, t hypervisors.Type, sim SimCluster, kvmReason string) (placed, error) {
	c := models.Cluster{ZoneID: zone.ID, PodID: pod.ID, Name: fmt.Sprintf("%s-%s", zone.Name, sim.Name),
		HypervisorType: string(t), AllocationState: "Enabled"}
	if err := sd.create(&c); err != nil {
		return placed{}, err
	}
	p := placed{cluster: c, typ: t}
	for i, h := range sim.Hosts {
		state, reason := models.HostUp, ""
		if t == hypervisors.KVM && kvmReason != "" {
			state, reason = models.HostDisconnected, kvmReason
		}
		host := models.Host{ZoneID: zone.ID, PodID: pod.ID, ClusterID: c.ID, Name: h, HypervisorType: string(t),
			Address: fmt.Sprintf("127.0.0.%d", 10+i), State: state, StateReason: reason, CPUs: 16, CPUMHz: 2400, MemoryMB: 65536}
		if err := sd.create(&host); err != nil {
			return placed{}, err
		}
		p.hosts = append(p.hosts, host)
	}
	poolName := ""
	if len(sim.Pools) > 0 {
		poolName = sim.Pools[0]
	}
	p.pool = models.StoragePool{ZoneID: zone.ID, PodID: pod.ID, ClusterID: c.ID, Name: poolName, Scope: "CLUSTER",
		Type: map[hypervisors.Type]string{hypervisors.KVM: "NetworkFilesystem", hypervisors.VMware: "VMFS", hypervisors.XenServer: "NFS"}[t],
		Path: "/" + poolName, CapacityBytes: 2 << 40, State: "Up"}
	if err := sd.create(&p.pool); err != nil {
		return placed{}, err
	}
	return p, nil
}

func (sd *seeder) nextIP() int { sd.ip++; return sd.ip }

func mac(prefix byte, zone, n int) string {
	return fmt.Sprintf("%02x:00:%02x:00:%02x:%02x", prefix, zone, (n>>8)&0xff, n&0xff)
}

func (sd *seeder) vm(zone models.Zone, zi int, pod models.Pod, p placed, hostIdx int, typ, name string, tpl models.Template, off models.ServiceOffering) models.SystemVM {
	n := sd.nextIP()
	host := p.hosts[hostIdx%len(p.hosts)]
	return models.SystemVM{Name: name, Type: typ, State: models.StateRunning, ZoneID: zone.ID, PodID: pod.ID,
		ClusterID: p.cluster.ID, HostID: host.ID, StoragePoolID: p.pool.ID, HypervisorType: string(p.typ),
		TemplateID: tpl.ID, Version: tpl.Version, ServiceOfferingID: off.ID, CPUs: off.CPUs, MemoryMB: off.MemoryMB,
		LinkLocalIP: fmt.Sprintf("169.254.%d.%d", zi+1, n), LinkLocalMAC: mac(0x0e, zi+1, n),
		PrivateIP: fmt.Sprintf("10.%d.1.%d", zi+1, n), PrivateMAC: mac(0x1e, zi+1, n)}
}

func (sd *seeder) systemVMs(zone models.Zone, pod models.Pod, cls []placed, tpls map[hypervisors.Type]map[string]models.Template,
	off models.ServiceOffering, root models.Domain, acct models.Account, routers int) error {
	zi := 0
	fmt.Sscanf(zone.Name, "zone-%d", &zi)
	zi--
	// SSVM and CPVM on the first cluster (KVM when libvirtd runs, else the next one).
	for i, kind := range []struct{ typ, prefix string }{{models.TypeSSVM, "s"}, {models.TypeCPVM, "v"}} {
		p := cls[i%len(cls)]
		vm := sd.vm(zone, zi, pod, p, i, kind.typ, fmt.Sprintf("%s-%d%d-VM", kind.prefix, zi+1, i+1), tpls[p.typ][CurrentVersion], off)
		vm.PublicIP, vm.PublicMAC = fmt.Sprintf("198.51.100.%d", 10*(zi+1)+i), mac(0x06, zi+1, 200+i)
		if err := sd.create(&vm); err != nil {
			return err
		}
	}
	// Routers: isolated networks, VPCs, redundant pairs, spread over the clusters.
	made, netN, pairN := 0, 0, 0
	addRouter := func(netw *models.Network, vpc *models.VPC, redundant string, p placed, hostIdx int, old bool) error {
		sd.routerN++
		version := CurrentVersion
		if old {
			version = OldVersion
		}
		vm := sd.vm(zone, zi, pod, p, hostIdx, models.TypeRouter, fmt.Sprintf("r-%d-VM", 100*(zi+1)+sd.routerN), tpls[p.typ][version], off)
		vm.PublicIP, vm.PublicMAC = fmt.Sprintf("203.0.113.%d", (sd.routerN*3+zi)%250+1), mac(0x06, zi+1, sd.routerN)
		vm.DomainID, vm.AccountID = root.ID, acct.ID
		if netw != nil {
			vm.NetworkID = netw.ID
		}
		if vpc != nil {
			vm.VPCID = vpc.ID
		}
		if redundant != "" {
			vm.IsRedundant, vm.RedundantState = true, redundant
		}
		made++
		return sd.create(&vm)
	}
	newNet := func(typ string, vpc *models.VPC, redundant bool, services string) (*models.Network, error) {
		netN++
		n := &models.Network{ZoneID: zone.ID, DomainID: root.ID, AccountID: acct.ID, Name: fmt.Sprintf("%s-net-%d", zone.Name, netN),
			Type: typ, Redundant: redundant, Gateway: fmt.Sprintf("10.%d.%d.1", 100+zi, netN), CIDR: fmt.Sprintf("10.%d.%d.0/24", 100+zi, netN),
			Services: services, State: "Implemented"}
		if vpc != nil {
			n.VPCID = vpc.ID
		}
		return n, sd.create(n)
	}
	const isoServices = "Dhcp,Dns,Lb,UserData,SourceNat,StaticNat,PortForwarding,Firewall"
	ci := 0
	nextCluster := func() placed { p := cls[ci%len(cls)]; ci++; return p }
	for made < routers {
		switch kind := netN % 5; {
		case kind == 1 || kind == 3: // redundant isolated network: PRIMARY and BACKUP on two hosts
			n, err := newNet(models.NetworkIsolated, nil, true, isoServices)
			if err != nil {
				return err
			}
			p := nextCluster()
			// Every second pair is still on the old template, so the demo shows an outdated
			// redundant pair for the upgrade (BACKUP first) to handle.
			pairN++
			old := pairN%2 == 0
			if err := addRouter(n, nil, models.RedundantPrimary, p, 0, old); err != nil {
				return err
			}
			if err := addRouter(n, nil, models.RedundantBackup, p, 1, old); err != nil {
				return err
			}
		case kind == 2: // VPC with two tiers, one router
			vpc := &models.VPC{ZoneID: zone.ID, DomainID: root.ID, AccountID: acct.ID, Name: fmt.Sprintf("%s-vpc-%d", zone.Name, netN),
				CIDR: fmt.Sprintf("10.%d.0.0/16", 200+zi), State: "Enabled"}
			if err := sd.create(vpc); err != nil {
				return err
			}
			// The first tier has VMs (DHCP, DNS, LB); the second has no LB or user data.
			if _, err := newNet(models.NetworkVPCTier, vpc, false, "Dhcp,Dns,Lb,UserData,SourceNat,NetworkACL"); err != nil {
				return err
			}
			if _, err := newNet(models.NetworkVPCTier, vpc, false, "Dhcp,Dns,SourceNat,NetworkACL"); err != nil {
				return err
			}
			if err := addRouter(nil, vpc, "", nextCluster(), made, made%7 == 0); err != nil {
				return err
			}
		default: // isolated network, one router; every third one still on the old template
			n, err := newNet(models.NetworkIsolated, nil, false, isoServices)
			if err != nil {
				return err
			}
			if err := addRouter(n, nil, "", nextCluster(), made, netN%3 == 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// seedGuests gives every network that has no guest VM rows the demo's guest VMs and rules:
// two running VMs (x.y.z.10 and .11 of its CIDR, named vm-<network>-1 and -2), a port
// forwarding rule from its router's public IP (public port 2200+i, where i is the network's
// index among its VPC's tiers, 0 for an isolated network) to the first VM's port 22 and, where
// the network gets load balancing from its router, an LB rule on public port 8000+i over both
// VMs' port 80. Without a router with a public IP a network gets the VMs only. A redundant
// pair shares its PRIMARY's public IP. Networks with guest VMs are left alone, so it can run on
// every start.
func seedGuests(ctx context.Context, tx *gorm.DB) error {
	db := tx.WithContext(ctx)
	var nets []models.Network
	if err := db.Order("id").Find(&nets).Error; err != nil {
		return fmt.Errorf("networks: %w", err)
	}
	var withVMs []string
	if err := db.Model(&models.GuestVM{}).Distinct().Pluck("network_id", &withVMs).Error; err != nil {
		return fmt.Errorf("networks with guest VMs: %w", err)
	}
	var routers []models.SystemVM
	if err := db.Where("type = ? AND state <> ? AND public_ip <> ?", models.TypeRouter, models.StateDestroyed, "").
		Order("name").Find(&routers).Error; err != nil {
		return fmt.Errorf("routers: %w", err)
	}
	// A PRIMARY comes before its BACKUP; otherwise routers in name order.
	slices.SortStableFunc(routers, func(a, b models.SystemVM) int {
		return cmp.Compare(boolRank(a.RedundantState != models.RedundantPrimary), boolRank(b.RedundantState != models.RedundantPrimary))
	})
	tiers := map[string]int{} // VPC -> tiers seen so far (networks are in ID order)
	for _, n := range nets {
		ni := 0
		if n.VPCID != "" {
			ni = tiers[n.VPCID]
			tiers[n.VPCID]++
		}
		if slices.Contains(withVMs, n.ID) {
			continue
		}
		prefix, err := netip.ParsePrefix(n.CIDR)
		if err != nil || !prefix.Addr().Is4() {
			continue
		}
		base := prefix.Masked().Addr().As4()
		vms := make([]models.GuestVM, 2)
		for i := range vms {
			vms[i] = models.GuestVM{ZoneID: n.ZoneID, NetworkID: n.ID, AccountID: n.AccountID,
				Name:  fmt.Sprintf("vm-%s-%d", n.Name, i+1),
				MAC:   fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", base[1], base[2], ni, 10+i),
				IP:    netip.AddrFrom4([4]byte{base[0], base[1], base[2], byte(10 + i)}).String(),
				State: models.StateRunning}
			if err := db.Create(&vms[i]).Error; err != nil {
				return fmt.Errorf("guest VM %s: %w", vms[i].Name, err)
			}
		}
		i := slices.IndexFunc(routers, func(r models.SystemVM) bool {
			return (n.VPCID != "" && r.VPCID == n.VPCID) || (n.VPCID == "" && r.NetworkID == n.ID)
		})
		if i < 0 {
			continue
		}
		publicIP := routers[i].PublicIP
		if err := db.Create(&models.PortForwardingRule{NetworkID: n.ID, PublicIP: publicIP, PublicPort: 2200 + ni,
			PrivateIP: vms[0].IP, PrivatePort: 22, Protocol: "tcp"}).Error; err != nil {
			return fmt.Errorf("port forwarding rule of %s: %w", n.Name, err)
		}
		if activities.RouterServices(n.Services).LB {
			if err := db.Create(&models.LoadBalancerRule{NetworkID: n.ID, PublicIP: publicIP, PublicPort: 8000 + ni,
				Algorithm: "roundrobin", Backends: []models.LoadBalancerBackend{{IP: vms[0].IP, Port: 80},
					{IP: vms[1].IP, Port: 80}}}).Error; err != nil {
				return fmt.Errorf("LB rule of %s: %w", n.Name, err)
			}
		}
	}
	return nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// rebind points the demo clusters at this run's simulators: endpoints, credentials (stored
// encrypted) and, for KVM, per-host endpoints and connection state.
func rebind(ctx context.Context, s *models.Store, cl Clusters) error {
	var zones []models.Zone
	if err := s.DB.WithContext(ctx).Order("name").Find(&zones).Error; err != nil {
		return err
	}
	for zi, zone := range zones {
		for _, group := range []struct {
			t    hypervisors.Type
			sims []SimCluster
		}{{hypervisors.KVM, cl.KVM}, {hypervisors.VMware, cl.VMware}, {hypervisors.XenServer, cl.Xen}} {
			if zi >= len(group.sims) {
				continue
			}
			sim := group.sims[zi]
			var c models.Cluster
			err := s.DB.WithContext(ctx).Where("zone_id = ? AND hypervisor_type = ?", zone.ID, string(group.t)).First(&c).Error
			if errors.Is(err, gorm.ErrRecordNotFound) {
				continue
			} else if err != nil {
				return err
			}
			ref := "cluster/" + c.ID + "/password"
			if err := s.Secrets.Put(ctx, ref, "hypervisor-password", []byte(sim.Conn.Password)); err != nil {
				return err
			}
			if err := s.DB.WithContext(ctx).Model(&c).Updates(map[string]any{"endpoint": sim.Conn.Endpoint,
				"username": sim.Conn.Username, "credential_ref": ref, "insecure": sim.Conn.Insecure,
				"datacenter": sim.Conn.Datacenter}).Error; err != nil {
				return err
			}
			for _, h := range sim.Hosts {
				state, reason := models.HostUp, ""
				if group.t == hypervisors.KVM && cl.KVMReason != "" {
					state, reason = models.HostDisconnected, cl.KVMReason
				}
				if err := s.DB.WithContext(ctx).Model(&models.Host{}).Where("cluster_id = ? AND name = ?", c.ID, h).
					Updates(map[string]any{"endpoint": sim.Conn.Hosts[h], "state": state, "state_reason": reason}).Error; err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Materialize makes every system VM the database knows exist on its simulated hypervisor, in
// the power state the database says (the simulators start empty on every run). Clusters whose
// hosts are Disconnected are skipped.
func Materialize(ctx context.Context, s *models.Store, drivers *activities.DriverPool, log *slog.Logger) error {
	var vms []models.SystemVM
	if err := s.DB.WithContext(ctx).Where("state <> ?", models.StateDestroyed).Order("name").Find(&vms).Error; err != nil {
		return err
	}
	for i := range vms {
		vm := &vms[i]
		var host models.Host
		if err := s.DB.WithContext(ctx).First(&host, "id = ?", vm.HostID).Error; err != nil {
			return fmt.Errorf("host of %s: %w", vm.Name, err)
		}
		if host.State != models.HostUp {
			continue
		}
		d, err := drivers.For(ctx, vm.ClusterID)
		if err != nil {
			return fmt.Errorf("driver for %s: %w", vm.Name, err)
		}
		info, err := d.GetVM(ctx, vm.HypervisorName())
		if errors.Is(err, hypervisors.ErrNotFound) {
			var tpl models.Template
			var pool models.StoragePool
			if err := s.DB.WithContext(ctx).First(&tpl, "id = ?", vm.TemplateID).Error; err != nil {
				return fmt.Errorf("template of %s: %w", vm.Name, err)
			}
			if err := s.DB.WithContext(ctx).First(&pool, "id = ?", vm.StoragePoolID).Error; err != nil {
				return fmt.Errorf("pool of %s: %w", vm.Name, err)
			}
			if _, err := d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: tpl.Name, Format: tpl.Format, SizeBytes: tpl.SizeBytes, Pool: pool.Name}, nil); err != nil {
				return fmt.Errorf("seed %s: %w", tpl.Name, err)
			}
			if info, err = d.CreateVM(ctx, activities.SpecFor(vm, host.Name, pool.Name, tpl.Name)); err != nil {
				return fmt.Errorf("create %s: %w", vm.Name, err)
			}
		} else if err != nil {
			return fmt.Errorf("inspect %s: %w", vm.Name, err)
		}
		want := vm.State == models.StateRunning || vm.State == models.StateStarting
		if want && info.State != hypervisors.PowerRunning {
			if err := d.StartVM(ctx, vm.HypervisorName()); err != nil {
				return fmt.Errorf("start %s: %w", vm.Name, err)
			}
		}
		state := models.StateStopped
		if want {
			state = models.StateRunning
		}
		if vm.State != state {
			if err := s.DB.WithContext(ctx).Model(vm).Update("state", state).Error; err != nil {
				return err
			}
		}
	}
	log.Info("demo cloud materialized on the simulated hypervisors", "systemvms", len(vms))
	return nil
}
