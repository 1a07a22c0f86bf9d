package activities

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

func TestTargetForFollowsTheAccessPath(t *testing.T) {
	store := modelstest.SQLite(t)
	ctx := context.Background()
	hostWithPort := models.Host{Name: "kvm-a", Address: "10.0.0.5:2222"}
	hostBare := models.Host{Name: "xen-a", Address: "10.0.0.6"}
	require.NoError(t, store.DB.Create(&hostWithPort).Error)
	require.NoError(t, store.DB.Create(&hostBare).Error)
	tg := StoreTargets{Store: store}

	kvm, err := tg.TargetFor(ctx, models.SystemVM{Name: "r-1-VM", HypervisorType: "KVM", HostID: hostWithPort.ID,
		LinkLocalIP: "169.254.3.4", PrivateIP: "10.1.1.4"})
	require.NoError(t, err)
	assert.True(t, kvm.LinkLocalControl)
	assert.Equal(t, "10.0.0.5", kvm.HostAddress)
	assert.Equal(t, 2222, kvm.HostPort)
	assert.Equal(t, "169.254.3.4", kvm.LinkLocalIP)
	assert.Equal(t, 3922, kvm.Port)

	xen, err := tg.TargetFor(ctx, models.SystemVM{Name: "r-2-VM", HypervisorType: "XenServer", HostID: hostBare.ID,
		LinkLocalIP: "169.254.3.5"})
	require.NoError(t, err)
	assert.True(t, xen.LinkLocalControl)
	assert.Equal(t, "10.0.0.6", xen.HostAddress)
	assert.Equal(t, 0, xen.HostPort, "no port in the address: the executor's default (22)")

	vmw, err := tg.TargetFor(ctx, models.SystemVM{Name: "r-3-VM", HypervisorType: "VMware", PrivateIP: "10.1.1.6"})
	require.NoError(t, err)
	assert.False(t, vmw.LinkLocalControl)
	assert.Equal(t, "10.1.1.6", vmw.PrivateIP)
	assert.Empty(t, vmw.HostAddress)

	_, err = tg.TargetFor(ctx, models.SystemVM{Name: "r-4-VM", HypervisorType: "KVM", LinkLocalIP: "169.254.3.6"})
	assert.ErrorContains(t, err, "runs on no host")
	_, err = tg.TargetFor(ctx, models.SystemVM{Name: "r-5-VM", HypervisorType: "VMware"})
	assert.ErrorContains(t, err, "no private IP")
	_, err = tg.TargetFor(ctx, models.SystemVM{Name: "r-6-VM", HypervisorType: "Hyperv", PrivateIP: "10.1.1.7"})
	assert.ErrorContains(t, err, "unknown hypervisor")

	assert.True(t, hypervisors.KVM.LinkLocalControl())
	assert.True(t, hypervisors.XenServer.LinkLocalControl())
	assert.False(t, hypervisors.VMware.LinkLocalControl())
}

func TestConfigIsBuiltFromInventoryAndSettings(t *testing.T) {
	e := newHCEnv(t, modelstest.SQLite(t))
	ctx := e.ctx
	e.set(SettingHealthExclude, "cpu_usage_check.py, my_check.sh")
	e.set(SettingHealthFreeDisk, "250")
	e.set(SettingHealthMaxCPU, "90")
	e.set(SettingHealthMaxMemory, "95")
	e.set(SettingHealthBasicInterval, "5")
	e.set(SettingServiceMonitoring, "true")
	cs, err := readCheckSettings(ctx, e.store.Settings, e.zone.ID)
	require.NoError(t, err)

	net := e.network("Dhcp,Dns,SourceNat")
	primary := e.router(routerOpts{net: &net, redundant: models.RedundantPrimary, vms: 2})
	cfg, err := e.h.configFor(ctx, primary, cs)
	require.NoError(t, err)
	assert.True(t, cfg.Enabled)
	assert.Equal(t, 5, cfg.BasicInterval)
	assert.Equal(t, 10, cfg.AdvancedInterval)
	assert.Equal(t, []string{"cpu_usage_check.py", "my_check.sh"}, cfg.ExcludedChecks)
	assert.Equal(t, agent.Thresholds{FreeDiskMB: 250, MaxCPUPercent: 90, MaxMemoryPercent: 95}, cfg.Thresholds)
	assert.True(t, cfg.ServiceMonitoring)
	assert.Equal(t, agent.RedundantMaster, cfg.RedundantState, "PRIMARY is keepalived's MASTER")
	assert.Equal(t, agent.Services{DHCP: true, DNS: true}, cfg.Services)
	assert.Equal(t, []string{net.Gateway}, cfg.Gateways)
	assert.True(t, cfg.HasGuestNetwork)
	assert.Len(t, cfg.ExpectedVMs, 2)
	assert.Equal(t, "4.15.0", cfg.TemplateVersion)

	backup := e.router(routerOpts{net: &net, redundant: models.RedundantBackup})
	cfg, err = e.h.configFor(ctx, backup, cs)
	require.NoError(t, err)
	assert.Equal(t, agent.RedundantBackup, cfg.RedundantState)

	// A VPC router serves every tier: services are the union, gateways one per tier.
	vpcID := models.NewID()
	t1 := e.network("Dhcp,Dns")
	t2 := e.network("Lb,UserData")
	for _, n := range []models.Network{t1, t2} {
		require.NoError(t, e.store.DB.Model(&models.Network{}).Where("id = ?", n.ID).Update("vpc_id", vpcID).Error)
	}
	vpcRouter := e.router(routerOpts{vpcID: vpcID})
	cfg, err = e.h.configFor(ctx, vpcRouter, cs)
	require.NoError(t, err)
	assert.Equal(t, agent.Services{DHCP: true, DNS: true, LB: true, UserData: true}, cfg.Services)
	assert.ElementsMatch(t, []string{t1.Gateway, t2.Gateway}, cfg.Gateways)

	// A VPC without tiers and a router without a network get no services and no gateways.
	empty := e.router(routerOpts{vpcID: models.NewID()})
	cfg, err = e.h.configFor(ctx, empty, cs)
	require.NoError(t, err)
	assert.Equal(t, agent.Services{}, cfg.Services)
	assert.False(t, cfg.HasGuestNetwork)
	assert.Empty(t, cfg.Gateways)
	assert.Empty(t, cfg.RedundantState)
}

// TestBasicRunsOverSSH checks routers over real SSH along both access paths and what is kept:
// CloudStack's result fields, connectivity.test for an unreachable router, skipped (not
// failed) checks of services a network does not use and of gateways on a BACKUP or a router
// without a network, one alert and one event naming each failing check, healthchecksfailed,
// consecutive failures and recovery.
func TestBasicRunsOverSSH(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		e := newHCEnv(t, store)
		e.set(SettingHealthMaxCPU, "90") // the high-cpu fault drives usage to 100%
		full := e.network("Dhcp,Dns,Lb,UserData,SourceNat")
		dhcpOnly := e.network("Dhcp,Dns")
		healthy := e.router(routerOpts{net: &full, vms: 2})
		unreachable := e.router(routerOpts{net: &full})
		vmware := e.router(routerOpts{hypervisor: hypervisors.VMware, net: &full})
		backup := e.router(routerOpts{net: &full, redundant: models.RedundantBackup})
		noNet := e.router(routerOpts{})
		noLB := e.router(routerOpts{net: &dhcpOnly})
		all := []models.SystemVM{healthy, unreachable, vmware, backup, noNet, noLB}
		e.inject(unreachable, fleet.FaultUnreachable, "")
		e.inject(noLB, fleet.FaultServiceDown, "haproxy")

		sum := e.batch(HealthBasic, all...)
		assert.Equal(t, 6, sum.Routers)
		assert.Equal(t, 5, sum.Reachable)
		assert.Equal(t, 1, sum.Unreachable)
		assert.Equal(t, 1, sum.Failing, "only the unreachable router fails")
		assert.Equal(t, 0, sum.Errors, "%v", sum.ErrorSamples)

		for _, vm := range []models.SystemVM{healthy, vmware} {
			res := e.results(vm)
			for _, name := range append(agent.BuiltinChecks(agent.Basic), CheckConnectivity) {
				r, ok := res[name]
				require.True(t, ok, "%s has a result for %s", vm.Name, name)
				assert.True(t, r.Success, "%s %s: %s", vm.Name, name, r.Details)
				assert.Equal(t, "basic", r.CheckType)
				assert.WithinDuration(t, time.Now(), r.LastUpdated, time.Minute)
				assert.NotEmpty(t, r.Details)
			}
			assert.False(t, e.reload(vm).HealthChecksFailed)
		}
		res := e.results(healthy)
		assert.Contains(t, res[CheckConnectivity].Details, "169.254.", "KVM: reached on the link-local IP through the host")
		assert.Contains(t, e.results(vmware)[CheckConnectivity].Details, vmware.PrivateIP, "VMware: reached on the private IP")

		res = e.results(unreachable)
		require.Len(t, res, 1, "an unreachable router has only connectivity.test")
		conn := res[CheckConnectivity]
		assert.False(t, conn.Success)
		assert.Equal(t, "basic", conn.CheckType)
		assert.Contains(t, conn.Details, "does not answer")
		assert.Equal(t, 1, conn.ConsecutiveFailures)
		assert.True(t, e.reload(unreachable).HealthChecksFailed)

		gw := e.results(backup)[agent.CheckGateways]
		assert.True(t, gw.Success)
		assert.True(t, strings.HasPrefix(gw.Details, "skipped:"), gw.Details)
		assert.Contains(t, gw.Details, "BACKUP")
		res = e.results(noNet)
		for _, name := range []string{agent.CheckGateways, agent.CheckDHCPService, agent.CheckLoadBalancingService, agent.CheckWebServerService} {
			assert.True(t, res[name].Success, name)
			assert.True(t, strings.HasPrefix(res[name].Details, "skipped:"), "%s: %s", name, res[name].Details)
		}
		lb := e.results(noLB)[agent.CheckLoadBalancingService]
		assert.True(t, lb.Success, "haproxy is down but the network gets no LB from the router: %s", lb.Details)
		assert.True(t, strings.HasPrefix(lb.Details, "skipped:"))
		assert.False(t, e.reload(noLB).HealthChecksFailed)

		alerts := e.alerts(AlertHealthChecks, unreachable.ID)
		require.Len(t, alerts, 1)
		assert.Contains(t, alerts[0].Subject, CheckConnectivity)
		assert.Contains(t, alerts[0].Description, "does not answer")
		assert.Nil(t, alerts[0].ClearedAt)
		events := e.events(EventHealthChecks, unreachable.ID)
		require.Len(t, events, 1)
		assert.Equal(t, "WARN", events[0].Level)
		assert.Contains(t, events[0].Description, CheckConnectivity)
		for _, vm := range []models.SystemVM{healthy, vmware, backup, noNet, noLB} {
			assert.Empty(t, e.alerts(AlertHealthChecks, vm.ID), vm.Name)
		}

		// A second failing run counts, but the same failure raises no second alert.
		e.batch(HealthBasic, unreachable)
		assert.Equal(t, 2, e.results(unreachable)[CheckConnectivity].ConsecutiveFailures)
		assert.Len(t, e.alerts(AlertHealthChecks, unreachable.ID), 1)

		// A failure raises an alert naming the check with its details; another check failing
		// on the same router raises one more, naming both.
		e.inject(healthy, fleet.FaultDiskFull, "")
		e.batch(HealthBasic, healthy)
		alerts = e.alerts(AlertHealthChecks, healthy.ID)
		require.Len(t, alerts, 1)
		assert.Contains(t, alerts[0].Subject, agent.CheckDisk)
		assert.Contains(t, alerts[0].Description, "below the threshold")
		e.batch(HealthBasic, healthy)
		assert.Len(t, e.alerts(AlertHealthChecks, healthy.ID), 1, "still the same failure")
		e.inject(healthy, fleet.FaultHighCPU, "")
		e.batch(HealthBasic, healthy)
		alerts = e.alerts(AlertHealthChecks, healthy.ID)
		require.Len(t, alerts, 2)
		assert.Contains(t, alerts[1].Description, agent.CheckDisk+" (basic, failed 3 runs in a row)")
		assert.Contains(t, alerts[1].Description, agent.CheckCPU+" (basic)")
		assert.Contains(t, alerts[1].Description, "above the threshold")
		assert.Len(t, e.events(EventHealthChecks, healthy.ID), 2, "one event per alert")

		// Back to health: counts reset, the flag and the alert clear, an INFO event says so.
		e.clear(unreachable)
		e.batch(HealthBasic, unreachable)
		conn = e.results(unreachable)[CheckConnectivity]
		assert.True(t, conn.Success)
		assert.Equal(t, 0, conn.ConsecutiveFailures)
		assert.False(t, e.reload(unreachable).HealthChecksFailed)
		alerts = e.alerts(AlertHealthChecks, unreachable.ID)
		require.Len(t, alerts, 1)
		assert.NotNil(t, alerts[0].ClearedAt)
		events = e.events(EventHealthChecks, unreachable.ID)
		require.Len(t, events, 2)
		assert.Equal(t, "INFO", events[1].Level)
	})
}

func TestReadOnlyRootFailsFilesystemWritable(t *testing.T) {
	e := newHCEnv(t, modelstest.SQLite(t))
	net := e.network("Dhcp,Dns")
	configured := e.router(routerOpts{net: &net})
	fresh := e.router(routerOpts{hypervisor: hypervisors.VMware, net: &net})
	e.batch(HealthConfig, configured)
	e.inject(configured, fleet.FaultReadOnlyFS, "")
	e.inject(fresh, fleet.FaultReadOnlyFS, "")

	e.batch(HealthBasic, configured, fresh)
	for _, vm := range []models.SystemVM{configured, fresh} {
		w, ok := e.results(vm)[agent.CheckFilesystemWritable]
		require.True(t, ok, vm.Name)
		assert.False(t, w.Success, vm.Name)
		assert.Contains(t, strings.ToLower(w.Details), "read-only", vm.Name)
		assert.True(t, e.reload(vm).HealthChecksFailed)
		assert.True(t, e.results(vm)[CheckConnectivity].Success, "it answers; it just cannot write")
	}
	// The configured router ran its checks from its stored configuration.
	assert.Contains(t, e.results(configured), agent.CheckCPU)
}

func TestAdvancedChecksFindMissingEntries(t *testing.T) {
	e := newHCEnv(t, modelstest.SQLite(t))
	net := e.network("Dhcp,Dns")
	r := e.router(routerOpts{net: &net, vms: 3})
	sum := e.batch(HealthAdvanced, r)
	assert.Equal(t, 0, sum.Failing)
	res := e.results(r)
	for _, name := range agent.BuiltinChecks(agent.Advanced) {
		assert.True(t, res[name].Success, "%s: %s", name, res[name].Details)
	}
	assert.True(t, strings.HasPrefix(res[agent.CheckHaproxy].Details, "skipped:"), "no LB on this network")
	e.inject(r, fleet.FaultDNSEntryMissing, "")
	e.batch(HealthAdvanced, r)
	dns := e.results(r)[agent.CheckDNS]
	assert.False(t, dns.Success)
	assert.Contains(t, dns.Details, "vm-")
	assert.Equal(t, 1, dns.ConsecutiveFailures)
}

func TestFetchDoesNotCountARunTwice(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		e := newHCEnv(t, store)
		net := e.network("Dhcp,Dns")
		r := e.router(routerOpts{net: &net})
		e.inject(r, fleet.FaultDiskFull, "")
		e.batch(HealthBasic, r)
		assert.Equal(t, 1, e.results(r)[agent.CheckDisk].ConsecutiveFailures)
		e.batch(HealthFetch, r)
		e.batch(HealthFetch, r)
		assert.Equal(t, 1, e.results(r)[agent.CheckDisk].ConsecutiveFailures, "the fetched file holds the run already stored")
		e.batch(HealthBasic, r)
		e.batch(HealthFetch, r)
		assert.Equal(t, 2, e.results(r)[agent.CheckDisk].ConsecutiveFailures)
	})
}

func TestConfigSweepPushesTheConfiguration(t *testing.T) {
	e := newHCEnv(t, modelstest.SQLite(t))
	e.set(SettingHealthMaxCPU, "80")
	net := e.network("Lb")
	r := e.router(routerOpts{net: &net, redundant: models.RedundantPrimary, vms: 1})
	sum := e.batch(HealthConfig, r)
	assert.Equal(t, 1, sum.Reachable)
	root, err := e.fleet.Root(r.ID)
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(root, agent.ConfigFile))
	require.NoError(t, err)
	var cfg agent.Config
	require.NoError(t, json.Unmarshal(data, &cfg))
	assert.Equal(t, r.Name, cfg.RouterName)
	assert.Equal(t, float64(80), cfg.Thresholds.MaxCPUPercent)
	assert.Equal(t, agent.Services{LB: true}, cfg.Services)
	assert.Equal(t, agent.RedundantMaster, cfg.RedundantState)
	assert.Equal(t, []string{net.Gateway}, cfg.Gateways)
	require.Len(t, cfg.ExpectedVMs, 1)
	res := e.results(r)
	assert.Len(t, res, 1, "a config push stores only connectivity.test")
	assert.True(t, res[CheckConnectivity].Success)
}

// TestExcludedCheckNoLongerCounts: a failing check an operator then excludes stops appearing,
// so healthchecksfailed does not stick on it.
func TestExcludedCheckNoLongerCounts(t *testing.T) {
	e := newHCEnv(t, modelstest.SQLite(t))
	net := e.network("Dhcp,Dns")
	r := e.router(routerOpts{net: &net})
	e.set(SettingHealthMaxCPU, "90")
	e.inject(r, fleet.FaultHighCPU, "")
	e.batch(HealthBasic, r)
	require.False(t, e.results(r)[agent.CheckCPU].Success)
	require.True(t, e.reload(r).HealthChecksFailed)
	e.set(SettingHealthExclude, agent.CheckCPU)
	e.batch(HealthConfig, r)
	e.batch(HealthBasic, r)
	assert.NotContains(t, e.results(r), agent.CheckCPU)
	assert.False(t, e.reload(r).HealthChecksFailed)
	assert.NotNil(t, e.alerts(AlertHealthChecks, r.ID)[0].ClearedAt)
}

func TestCandidatesNeedNConsecutiveFailuresOfAnExactName(t *testing.T) {
	e := newHCEnv(t, modelstest.SQLite(t))
	net := e.network("Dhcp,Dns")
	r := e.router(routerOpts{net: &net})
	e.inject(r, fleet.FaultDiskFull, "")
	e.set(SettingHealthRecreateChecks, "disk_space_check,"+agent.CheckCPU) // a prefix of the failing check, not its name
	for range 3 {
		sum := e.batch(HealthBasic, r)
		assert.Empty(t, sum.Candidates, "disk_space_check is not disk_space_check.py")
		assert.Equal(t, 0, sum.RecreateFailing)
	}
	e.set(SettingHealthRecreateChecks, agent.CheckDisk)
	e.set(SettingHealthFailuresBefore, "5")
	sum := e.batch(HealthBasic, r)
	assert.Empty(t, sum.Candidates, "4 failures in a row, 5 needed")
	assert.Equal(t, 1, sum.RecreateFailing)
	sum = e.batch(HealthBasic, r)
	require.Len(t, sum.Candidates, 1)
	c := sum.Candidates[0]
	assert.Equal(t, r.ID, c.RouterID)
	assert.Equal(t, agent.CheckDisk, c.Check)
	assert.Equal(t, 5, c.Failures)
	assert.Contains(t, c.Details, "below the threshold")
}

func TestBatchRetrySkipsRoutersDone(t *testing.T) {
	// A batch whose context ends midway stops with an error; nothing it did is lost or doubled
	// when the same sweep's batch runs again (connectivity.test is stamped with the sweep time).
	e := newHCEnv(t, modelstest.SQLite(t))
	net := e.network("Dhcp,Dns")
	r := e.router(routerOpts{net: &net})
	e.inject(r, fleet.FaultUnreachable, "")
	at := time.Now().UTC()
	in := BatchInput{ZoneID: e.zone.ID, Kind: HealthBasic, RouterIDs: []string{r.ID}, At: at, Settings: e.settings()}
	for range 2 {
		_, err := e.h.HealthCheckBatch(e.ctx, in)
		require.NoError(t, err)
	}
	assert.Equal(t, 1, e.results(r)[CheckConnectivity].ConsecutiveFailures, "same sweep time: counted once")
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	_, err := e.h.HealthCheckBatch(ctx, BatchInput{ZoneID: e.zone.ID, Kind: HealthBasic, RouterIDs: []string{r.ID},
		At: time.Now().UTC(), Settings: e.settings()})
	assert.ErrorIs(t, err, context.Canceled)
}

func TestOnDemandCheckNeverCountsTowardsRecreation(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		e := newHCEnv(t, store)
		net := e.network("Dhcp,Dns,Lb,UserData")
		r := e.router(routerOpts{net: &net, vms: 1})
		e.inject(r, fleet.FaultDiskFull, "")
		e.batch(HealthBasic, r)
		require.Equal(t, 1, e.results(r)[agent.CheckDisk].ConsecutiveFailures)

		out, err := e.h.HealthCheckNow(e.ctx, r.ID)
		require.NoError(t, err)
		assert.Equal(t, r.ID, out.RouterID)
		assert.True(t, out.HealthChecksFailed)
		names := map[string]models.HealthCheckResult{}
		for _, res := range out.Results {
			names[res.CheckName] = res
		}
		for _, name := range append(append(agent.BuiltinChecks(agent.Basic), agent.BuiltinChecks(agent.Advanced)...), CheckConnectivity) {
			assert.Contains(t, names, name)
		}
		assert.False(t, names[agent.CheckDisk].Success)
		assert.Equal(t, 1, e.results(r)[agent.CheckDisk].ConsecutiveFailures, "an on-demand failure is not counted")
		e.clear(r)
		out, err = e.h.HealthCheckNow(e.ctx, r.ID)
		require.NoError(t, err)
		assert.False(t, out.HealthChecksFailed)
		assert.Equal(t, 0, e.results(r)[agent.CheckDisk].ConsecutiveFailures, "a pass resets the count")
		var ops int64
		require.NoError(t, store.DB.Model(&models.Operation{}).Count(&ops).Error)
		assert.Zero(t, ops)
	})
}

func TestOnDemandCheckRefusals(t *testing.T) {
	e := newHCEnv(t, modelstest.SQLite(t))
	net := e.network("Dhcp")
	stopped := e.router(routerOpts{net: &net, state: models.StateStopped})
	running := e.router(routerOpts{net: &net})
	appErrType := func(err error) string {
		var ae *temporal.ApplicationError
		require.True(t, errors.As(err, &ae), "%v", err)
		return ae.Type()
	}
	_, err := e.h.HealthCheckNow(e.ctx, stopped.ID)
	assert.Equal(t, ErrTypeNotRunning, appErrType(err))
	_, err = e.h.HealthCheckNow(e.ctx, models.NewID())
	assert.Equal(t, ErrTypeNotFound, appErrType(err))
	e.set(SettingHealthEnabled, "false")
	_, err = e.h.HealthCheckNow(e.ctx, running.ID)
	assert.Equal(t, ErrTypeHealthDisabled, appErrType(err))
	assert.ErrorContains(t, err, "router.health.checks.enabled is false")
	assert.Empty(t, e.results(running))
}

func TestListRoutersPagesRunningRoutersOfTheZone(t *testing.T) {
	e := newHCEnv(t, modelstest.SQLite(t))
	net := e.network("Dhcp")
	var want []string
	for range 7 {
		want = append(want, e.router(routerOpts{net: &net}).ID)
	}
	e.router(routerOpts{net: &net, state: models.StateStopped})
	other := models.SystemVM{Name: "r-other", Type: models.TypeRouter, State: models.StateRunning, ZoneID: models.NewID()}
	e.create(&other)
	ssvm := models.SystemVM{Name: "s-1-VM", Type: models.TypeSSVM, State: models.StateRunning, ZoneID: e.zone.ID}
	e.create(&ssvm)
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10)
		p, err := e.h.HealthListRouters(e.ctx, ListRoutersInput{ZoneID: e.zone.ID, After: after, Limit: 3})
		require.NoError(t, err)
		got = append(got, p.IDs...)
		if p.Done {
			break
		}
		after = p.IDs[len(p.IDs)-1]
	}
	assert.ElementsMatch(t, want, got)
	assert.IsIncreasing(t, got)
}

// TestExcludingConnectivityTest: the platform's own check obeys router.health.checks.to.exclude
// too; its stored failure goes, and with it healthchecksfailed.
func TestExcludingConnectivityTest(t *testing.T) {
	e := newHCEnv(t, modelstest.SQLite(t))
	net := e.network("Dhcp")
	r := e.router(routerOpts{net: &net})
	e.inject(r, fleet.FaultUnreachable, "")
	e.batch(HealthBasic, r)
	require.False(t, e.results(r)[CheckConnectivity].Success)
	e.set(SettingHealthExclude, CheckConnectivity)
	sum := e.batch(HealthBasic, r)
	assert.Equal(t, 1, sum.Unreachable, "still counted as not answering")
	assert.NotContains(t, e.results(r), CheckConnectivity)
	assert.False(t, e.reload(r).HealthChecksFailed)
}

// TestRetriedBatchCountsFailuresOncePerSweep: a batch of the same sweep run twice (a retry
// after the results were stored) raises each failing check's consecutive-failure count once,
// connectivity.test included even at another time stamp, so one failing sweep and its retry
// do not reach router.health.checks.failures.before.recreate = 2; the next sweep counts again.
func TestRetriedBatchCountsFailuresOncePerSweep(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		e := newHCEnv(t, store)
		e.set(SettingHealthRecreateChecks, agent.CheckDisk+","+CheckConnectivity)
		net := e.network("Dhcp,Dns")
		disk := e.router(routerOpts{net: &net})
		gone := e.router(routerOpts{net: &net})
		e.inject(disk, fleet.FaultDiskFull, "")
		e.inject(gone, fleet.FaultUnreachable, "")
		settings := e.settings()
		require.Equal(t, 2, settings.FailuresBeforeRecreate, "the default")
		run := func(key string, at time.Time) BatchSummary {
			t.Helper()
			sum, err := e.h.HealthCheckBatch(e.ctx, BatchInput{ZoneID: e.zone.ID, Kind: HealthBasic,
				RouterIDs: []string{disk.ID, gone.ID}, Parallel: 2, At: at, Settings: settings, SweepKey: key})
			require.NoError(t, err)
			return sum
		}
		first := SweepKey("health-basic:"+e.zone.ID+"-1", "run-1", HealthBasic)
		start := time.Now().UTC()
		sum := run(first, start)
		assert.Equal(t, 2, sum.Failing)
		assert.Empty(t, sum.Candidates)
		// The retry: same sweep, later (a retry's connectivity.test is stamped anew when the
		// sweep time is not carried, e.g. by batches scheduled before it was).
		sum = run(first, start.Add(time.Minute))
		assert.Empty(t, sum.Candidates, "a retried batch must not make recreation candidates")
		d := e.results(disk)[agent.CheckDisk]
		assert.False(t, d.Success)
		assert.Equal(t, 1, d.ConsecutiveFailures, "disk failure counted twice in one sweep")
		assert.Equal(t, first, d.FailureCountedBy)
		c := e.results(gone)[CheckConnectivity]
		assert.False(t, c.Success)
		assert.Equal(t, 1, c.ConsecutiveFailures, "connectivity.test counted twice in one sweep")
		assert.Len(t, e.alerts(AlertHealthChecks, disk.ID), 1)

		// The next sweep counts: both routers reach 2 and are candidates.
		second := SweepKey("health-basic:"+e.zone.ID+"-2", "run-2", HealthBasic)
		sum = run(second, start.Add(3*time.Minute))
		assert.Equal(t, 2, e.results(disk)[agent.CheckDisk].ConsecutiveFailures)
		assert.Equal(t, 2, e.results(gone)[CheckConnectivity].ConsecutiveFailures)
		assert.Len(t, sum.Candidates, 2)

		// A pass resets the count and the key; a later failure of the same sweep counts anew.
		e.clear(disk)
		run(second, start.Add(4*time.Minute))
		d = e.results(disk)[agent.CheckDisk]
		assert.True(t, d.Success)
		assert.Zero(t, d.ConsecutiveFailures)
		assert.Empty(t, d.FailureCountedBy)
	})
}
