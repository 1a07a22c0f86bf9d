package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/xen/xapisim"
	"github.com/sysvm/sysvm/models"
)

// xenHostMemoryMB is each simulated XenServer host's memory: room for its routers and the
// replacements an upgrade builds beside them (512 MiB each).
const xenHostMemoryMB = 1 << 20

// StartXenPool starts one simulated XenServer pool (xapisim over HTTPS on loopback) of hosts
// hosts, bench-xen-0001 and up, with one shared NFS SR, for SeedXenZone. Close the server
// when done.
func StartXenPool(hosts int, log *slog.Logger) (*xapisim.Server, XenPool, error) {
	if hosts < 1 {
		return nil, XenPool{}, errors.New("xen pool: at least one host")
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, XenPool{}, err
	}
	pass := hex.EncodeToString(b)
	specs := make([]xapisim.HostSpec, hosts)
	for i := range specs {
		specs[i] = xapisim.HostSpec{Name: fmt.Sprintf("bench-xen-%04d", i+1), CPUs: 64, CPUMHz: 2400, MemoryMB: xenHostMemoryMB}
	}
	const sr = "bench-xen-primary"
	srv := xapisim.New(xapisim.Options{Username: xapisim.DefaultUsername, Password: pass, PoolName: "bench-xen",
		Hosts: specs, SRs: []xapisim.SRSpec{{Name: sr, Type: "nfs", Shared: true, SizeBytes: 64 << 40}}, TLS: true,
		Logger: log.With("sim", "xen")})
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		return nil, XenPool{}, fmt.Errorf("start simulated XenServer pool: %w", err)
	}
	return srv, XenPool{Conn: hypervisors.Connection{Type: hypervisors.XenServer, Endpoint: url,
		Username: xapisim.DefaultUsername, Password: pass, Insecure: true}, Hosts: srv.HostNames(), SR: sr}, nil
}

// MaterializeRouters creates every router of the inventory on its hypervisor, from its
// template, and starts it, parallel routers at a time (as devcloud.Materialize does one by
// one for the demo cloud).
func MaterializeRouters(ctx context.Context, s *models.Store, drivers *activities.DriverPool, parallel int) error {
	var vms []models.SystemVM
	if err := s.DB.WithContext(ctx).Where("type = ? AND state = ?", models.TypeRouter, models.StateRunning).
		Order("name").Find(&vms).Error; err != nil {
		return fmt.Errorf("materialize: %w", err)
	}
	if len(vms) == 0 {
		return nil
	}
	var hosts []models.Host
	var tpls []models.Template
	var pools []models.StoragePool
	if err := errors.Join(s.DB.WithContext(ctx).Find(&hosts).Error, s.DB.WithContext(ctx).Find(&tpls).Error,
		s.DB.WithContext(ctx).Find(&pools).Error); err != nil {
		return fmt.Errorf("materialize: %w", err)
	}
	hostName, tplByID, poolName := map[string]string{}, map[string]models.Template{}, map[string]string{}
	for _, h := range hosts {
		hostName[h.ID] = h.Name
	}
	for _, t := range tpls {
		tplByID[t.ID] = t
	}
	for _, p := range pools {
		poolName[p.ID] = p.Name
	}
	// Each template once, before the VMs are cloned from it.
	seeded := map[string]bool{}
	for _, vm := range vms {
		key := vm.ClusterID + "/" + vm.TemplateID
		if seeded[key] {
			continue
		}
		seeded[key] = true
		d, err := drivers.For(ctx, vm.ClusterID)
		if err != nil {
			return fmt.Errorf("materialize: driver: %w", err)
		}
		tpl := tplByID[vm.TemplateID]
		if _, err := d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: tpl.Name, Format: tpl.Format, SizeBytes: tpl.SizeBytes,
			Pool: poolName[vm.StoragePoolID]}, nil); err != nil {
			return fmt.Errorf("materialize: seed %s: %w", tpl.Name, err)
		}
	}
	work := make(chan *models.SystemVM)
	errs := make(chan error, parallel)
	var wg sync.WaitGroup
	for range max(1, parallel) {
		wg.Go(func() {
			for vm := range work {
				if err := materializeOne(ctx, drivers, vm, hostName[vm.HostID], poolName[vm.StoragePoolID], tplByID[vm.TemplateID].Name); err != nil {
					errs <- err
					for range work { // drain: the sender stops at the first error
					}
					return
				}
			}
		})
	}
	var first error
send:
	for i := range vms {
		select {
		case work <- &vms[i]:
		case first = <-errs:
			break send
		}
	}
	close(work)
	wg.Wait()
	if first == nil {
		select {
		case first = <-errs:
		default:
		}
	}
	return first
}

func materializeOne(ctx context.Context, drivers *activities.DriverPool, vm *models.SystemVM, host, pool, tpl string) error {
	d, err := drivers.For(ctx, vm.ClusterID)
	if err != nil {
		return fmt.Errorf("materialize %s: %w", vm.Name, err)
	}
	if _, err := d.CreateVM(ctx, activities.SpecFor(vm, host, pool, tpl)); err != nil {
		return fmt.Errorf("materialize: create %s: %w", vm.Name, err)
	}
	if err := d.StartVM(ctx, vm.HypervisorName()); err != nil {
		return fmt.Errorf("materialize: start %s: %w", vm.Name, err)
	}
	return nil
}
