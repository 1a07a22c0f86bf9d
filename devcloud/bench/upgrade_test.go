package bench

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/worker"
)

// TestCPUByLabel profiles two goroutines spinning under two roles until the process used
// 400 ms of CPU, and reads the profile back: each role's CPU was sampled.
func TestCPUByLabel(t *testing.T) {
	p, err := startCPUProfile()
	require.NoError(t, err)
	var stop atomic.Bool
	spin := func() {
		x := 0
		for !stop.Load() {
			x++
		}
		_ = x
	}
	var wg sync.WaitGroup
	ctx := context.Background()
	withRole(ctx, RoleWorker, func(context.Context) { wg.Go(spin) })
	withRole(ctx, RoleSimulators, func(context.Context) { wg.Go(spin) })
	// On a busy machine wall time says little: spin until the CPU was used (at most 20 s).
	cpu0, err := SelfCPU()
	require.NoError(t, err)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, _ := SelfCPU(); c-cpu0 >= 400*time.Millisecond {
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	roles, err := p.stop("")
	require.NoError(t, err)
	t.Logf("worker %s, simulators %s, other %s", roles[RoleWorker], roles[RoleSimulators], roles[roleOther])
	assert.Positive(t, roles[RoleWorker])
	assert.Positive(t, roles[RoleSimulators])

	_, err = cpuByLabel([]byte("not gzip"), ProfileRoleKey)
	assert.Error(t, err)
}

// TestSeedXenZone seeds a zone of routers on a simulated XenServer pool and creates their VMs
// there: every router requires an upgrade (old template, the setting names the new one), and
// each runs once on the pool, from the old template, on its host.
func TestSeedXenZone(t *testing.T) {
	ctx := context.Background()
	s := modelstest.SQLite(t)
	srv, pool, err := StartXenPool(2, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	require.Len(t, pool.Hosts, 2)
	_, err = SeedXenZone(ctx, s, 7, 3, pool)
	require.ErrorContains(t, err, "need 3 hosts")
	inv, err := SeedXenZone(ctx, s, 5, 3, pool)
	require.NoError(t, err)
	assert.Equal(t, 2, inv.Hosts)

	drivers := activities.NewDriverPool(s, worker.Drivers())
	t.Cleanup(drivers.Close)
	require.NoError(t, MaterializeRouters(ctx, s, drivers, 3))
	var vms []models.SystemVM
	require.NoError(t, s.DB.Where("zone_id = ?", inv.ZoneID).Find(&vms).Error)
	require.Len(t, vms, 5)
	d, err := drivers.For(ctx, vms[0].ClusterID)
	require.NoError(t, err)
	all, err := d.ListVMs(ctx)
	require.NoError(t, err)
	assert.Len(t, all, 5)
	hostOf := map[string]string{}
	var hosts []models.Host
	require.NoError(t, s.DB.Find(&hosts).Error)
	for _, h := range hosts {
		hostOf[h.ID] = h.Name
	}
	for _, vm := range vms {
		assert.Equal(t, OldTemplateVersion, vm.Version)
		assert.Equal(t, string(hypervisors.XenServer), vm.HypervisorType)
		info, err := d.GetVM(ctx, vm.Name)
		require.NoError(t, err, vm.Name)
		assert.Equal(t, hypervisors.PowerRunning, info.State, vm.Name)
		assert.Equal(t, "systemvmtemplate-"+OldTemplateVersion+"-xenserver", info.Template, vm.Name)
		assert.Equal(t, hostOf[vm.HostID], info.Host, vm.Name)
	}
	tpl, err := s.Settings.String(ctx, "router.template.xenserver", models.Scope{ZoneID: inv.ZoneID})
	require.NoError(t, err)
	assert.Equal(t, "systemvmtemplate-"+TemplateVersion+"-xenserver", tpl)
	plan, err := activities.PlanRouterUpgrade(ctx, s, activities.UpgradeSelection{ZoneID: inv.ZoneID})
	require.NoError(t, err)
	assert.Equal(t, 5, plan.Count(), "every router requires an upgrade")
}
