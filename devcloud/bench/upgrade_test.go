package bench

import (
	"context"
	"log/slog"
	"runtime/pprof"
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

// TestCPUByLabel profiles two goroutines spinning under two roles, one twice as long as the
// other, and reads the profile back: each role's CPU is sampled, in about that proportion.
func TestCPUByLabel(t *testing.T) {
	p, err := startCPUProfile()
	require.NoError(t, err)
	spin := func(d time.Duration) {
		end := time.Now().Add(d)
		x := 0
		for time.Now().Before(end) {
			x++
		}
		_ = x
	}
	done := make(chan struct{}, 2)
	ctx := context.Background()
	withRole(ctx, RoleWorker, func(context.Context) {
		go func() { spin(400 * time.Millisecond); done <- struct{}{} }()
	})
	withRole(ctx, RoleSimulators, func(context.Context) {
		go func() { spin(200 * time.Millisecond); done <- struct{}{} }()
	})
	<-done
	<-done
	roles, err := p.stop("")
	require.NoError(t, err)
	w, s := roles[RoleWorker], roles[RoleSimulators]
	t.Logf("worker %s, simulators %s, other %s", w, s, roles[roleOther])
	require.Positive(t, w)
	require.Positive(t, s)
	// The CPU each spun for is on a shared machine not exactly its wall time: loose bounds.
	assert.Greater(t, float64(w)/float64(s), 1.0, "the worker spun twice as long")

	_, err = cpuByLabel([]byte("not gzip"), ProfileRoleKey)
	assert.Error(t, err)
	// A goroutine's labels are those of the context pprof.Do ran it with.
	pprof.Do(ctx, pprof.Labels(ProfileRoleKey, RoleWorker), func(ctx context.Context) {
		v, ok := pprof.Label(ctx, ProfileRoleKey)
		assert.True(t, ok)
		assert.Equal(t, RoleWorker, v)
	})
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
