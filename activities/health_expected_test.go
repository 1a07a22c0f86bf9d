package activities

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// render makes a simulated router's files what the platform now expects of it (the router was
// updated after the inventory changed), as the dev cloud does.
func (e *hcEnv) render(vm models.SystemVM) agent.Config {
	e.t.Helper()
	cfg, err := e.h.RouterConfig(e.ctx, vm)
	require.NoError(e.t, err)
	spec, err := e.fleet.Spec(vm.ID)
	require.NoError(e.t, err)
	spec.ExpectedVMs, spec.PortForwardingRules, spec.LBRules = cfg.ExpectedVMs, cfg.PortForwardingRules, cfg.LBRules
	require.NoError(e.t, e.fleet.Update(spec))
	return cfg
}

// advanced pushes the configuration (the config refresh) and runs the advanced checks.
func (e *hcEnv) advanced(vm models.SystemVM) map[string]models.HealthCheckResult {
	e.t.Helper()
	e.batch(HealthConfig, vm)
	e.batch(HealthAdvanced, vm)
	return e.results(vm)
}

// TestExpectedStateComesFromTheInventory: with no Expected hook the platform expects the
// inventory's rows. A guest VM row the router's files lack fails dhcp_check.py and
// dns_check.py naming that VM, a port forwarding rule row missing from iptables fails
// iptables_check.py, an LB rule row missing from haproxy.cfg fails haproxy_check.py; each
// passes once the router is updated. Stopped VMs and other networks' rows are not expected; a
// VPC router expects the rows of every tier.
func TestExpectedStateComesFromTheInventory(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		e := newHCEnv(t, store)
		e.h.Expected = nil
		net := e.network("Dhcp,Dns,Lb,PortForwarding,SourceNat")
		elsewhere := e.network("Dhcp,Dns")
		r := e.router(routerOpts{net: &net})
		e.create(&models.GuestVM{ZoneID: e.zone.ID, NetworkID: net.ID, Name: "web-1", MAC: "02:00:0a:01:01:0b",
			IP: "10.1.1.11", State: models.StateRunning})
		e.create(&models.GuestVM{ZoneID: e.zone.ID, NetworkID: net.ID, Name: "off-1", MAC: "02:00:0a:01:01:0c",
			IP: "10.1.1.12", State: models.StateStopped})
		e.create(&models.GuestVM{ZoneID: e.zone.ID, NetworkID: elsewhere.ID, Name: "other-1", MAC: "02:00:0a:01:02:0b",
			IP: "10.1.2.11", State: models.StateRunning})

		cfg := e.render(r)
		assert.Equal(t, []agent.ExpectedVM{{MAC: "02:00:0a:01:01:0b", IP: "10.1.1.11", Name: "web-1"}}, cfg.ExpectedVMs,
			"only the running VMs of the router's own network")
		res := e.advanced(r)
		for _, name := range agent.BuiltinChecks(agent.Advanced) {
			assert.True(t, res[name].Success, "%s: %s", name, res[name].Details)
		}

		// A VM is added to the network; the router has not been told.
		e.create(&models.GuestVM{ZoneID: e.zone.ID, NetworkID: net.ID, Name: "web-2", MAC: "02:00:0A:01:01:0D",
			IP: "10.1.1.13", State: models.StateRunning})
		res = e.advanced(r)
		for _, name := range []string{agent.CheckDHCP, agent.CheckDNS} {
			assert.False(t, res[name].Success, "%s must fail: %s", name, res[name].Details)
			assert.Contains(t, res[name].Details, "10.1.1.13 web-2", name)
			assert.NotContains(t, res[name].Details, "web-1", "%s names only what is missing", name)
		}
		assert.True(t, res[agent.CheckIptables].Success, res[agent.CheckIptables].Details)
		assert.True(t, e.reload(r).HealthChecksFailed)
		e.render(r)
		res = e.advanced(r)
		assert.True(t, res[agent.CheckDHCP].Success, res[agent.CheckDHCP].Details)
		assert.True(t, res[agent.CheckDNS].Success, res[agent.CheckDNS].Details)

		// A port forwarding rule and an LB rule are added; the router's files lack them.
		e.create(&models.PortForwardingRule{NetworkID: net.ID, PublicIP: "203.0.113.7", PublicPort: 2222,
			PrivateIP: "10.1.1.13", PrivatePort: 22, Protocol: "tcp"})
		e.create(&models.LoadBalancerRule{NetworkID: net.ID, PublicIP: "203.0.113.7", PublicPort: 80, Algorithm: "roundrobin",
			MaxConn: 500, Backends: []models.LoadBalancerBackend{{IP: "10.1.1.13", Port: 8080}, {IP: "10.1.1.11", Port: 8080}}})
		res = e.advanced(r)
		ipt := res[agent.CheckIptables]
		assert.False(t, ipt.Success, ipt.Details)
		assert.Contains(t, ipt.Details, "tcp 203.0.113.7:2222 -> 10.1.1.13:22")
		ha := res[agent.CheckHaproxy]
		assert.False(t, ha.Success, ha.Details)
		assert.Contains(t, ha.Details, "203.0.113.7:80")
		assert.True(t, res[agent.CheckDHCP].Success, res[agent.CheckDHCP].Details)
		cfg = e.render(r)
		require.Len(t, cfg.LBRules, 1)
		assert.Equal(t, []agent.LBBackend{{IP: "10.1.1.11", Port: 8080}, {IP: "10.1.1.13", Port: 8080}}, cfg.LBRules[0].Backends,
			"backends in a deterministic order")
		assert.Equal(t, 500, cfg.LBRules[0].MaxConn)
		res = e.advanced(r)
		for _, name := range agent.BuiltinChecks(agent.Advanced) {
			assert.True(t, res[name].Success, "%s: %s", name, res[name].Details)
		}
		assert.False(t, e.reload(r).HealthChecksFailed)

		// A VPC router expects the rows of every tier, in network order.
		vpcID := models.NewID()
		t1, t2 := e.network("Dhcp,Dns"), e.network("Dhcp,Dns")
		for _, n := range []models.Network{t1, t2} {
			require.NoError(t, store.DB.Model(&models.Network{}).Where("id = ?", n.ID).Update("vpc_id", vpcID).Error)
		}
		for i, n := range []models.Network{t2, t1} {
			e.create(&models.GuestVM{ZoneID: e.zone.ID, NetworkID: n.ID, Name: "tier-vm", MAC: "02:00:0a:02:00:0" + string(rune('1'+i)),
				IP: "10.2." + string(rune('1'+i)) + ".10", State: models.StateRunning})
			e.create(&models.PortForwardingRule{NetworkID: n.ID, PublicIP: "203.0.113.9", PublicPort: 2200 + i,
				PrivateIP: "10.2." + string(rune('1'+i)) + ".10", PrivatePort: 22, Protocol: "udp"})
		}
		vpcRouter := e.router(routerOpts{vpcID: vpcID})
		exp, err := e.h.ExpectedFromStore(e.ctx, vpcRouter)
		require.NoError(t, err)
		first, second := "10.2.1.10", "10.2.2.10" // t2 got .1, t1 got .2
		if t1.ID < t2.ID {
			first, second = second, first
		}
		require.Len(t, exp.VMs, 2)
		assert.Equal(t, []string{first, second}, []string{exp.VMs[0].IP, exp.VMs[1].IP})
		require.Len(t, exp.PortForwarding, 2)
		assert.Equal(t, []string{first, second}, []string{exp.PortForwarding[0].PrivateIP, exp.PortForwarding[1].PrivateIP})
		assert.Empty(t, exp.LoadBalancing)
	})
}
