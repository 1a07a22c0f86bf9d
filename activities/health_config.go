package activities

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/models"
)

// Names of the health check settings (SPEC §3 and sysvm's own).
const (
	SettingHealthEnabled          = "router.health.checks.enabled"
	SettingHealthBasicInterval    = "router.health.checks.basic.interval"
	SettingHealthAdvancedInterval = "router.health.checks.advanced.interval"
	SettingHealthConfigInterval   = "router.health.checks.config.refresh.interval"
	SettingHealthFetchInterval    = "router.health.checks.results.fetch.interval"
	SettingHealthRecreateChecks   = "router.health.checks.failures.to.recreate.vr"
	SettingHealthExclude          = "router.health.checks.to.exclude"
	SettingHealthFreeDisk         = "router.health.checks.free.disk.space.threshold"
	SettingHealthMaxCPU           = "router.health.checks.max.cpu.usage.threshold"
	SettingHealthMaxMemory        = "router.health.checks.max.memory.usage.threshold"
	SettingServiceMonitoring      = "network.router.enableservicemonitoring"
	SettingHealthFailuresBefore   = "router.health.checks.failures.before.recreate"
	SettingHealthMaxRecreations   = "router.health.checks.max.concurrent.recreations"
	SettingHealthBreakerPercent   = "router.health.checks.circuit.breaker.percent"
	SettingHealthRecreateLimit    = "router.health.checks.recreate.limit"
	SettingHealthRecreateWindow   = "router.health.checks.recreate.window"
	SettingHealthSweepConcurrency = "router.health.checks.sweep.concurrency"
)

// SweepSettings are the recreation and sweep settings of one zone, read once per sweep so a
// sweep applies one consistent set (a change applies from the next sweep).
type SweepSettings struct {
	Enabled bool `json:"enabled"`
	// Concurrency is router.health.checks.sweep.concurrency: routers checked at once.
	Concurrency int `json:"concurrency"`
	// FailuresBeforeRecreate is N: consecutive failed runs before a recreation.
	FailuresBeforeRecreate int `json:"failuresBeforeRecreate"`
	// RecreateChecks are the check names (exact) whose failure recreates the router.
	RecreateChecks []string `json:"recreateChecks,omitempty"`
	// MaxConcurrentRecreations is M, per zone.
	MaxConcurrentRecreations int `json:"maxConcurrentRecreations"`
	// CircuitBreakerPercent: more than this share of the zone's routers failing a recreate
	// check at once stops recreation in the zone.
	CircuitBreakerPercent int `json:"circuitBreakerPercent"`
	// RecreateLimit (K) recreations of a router for one check within RecreateWindowMinutes.
	RecreateLimit         int `json:"recreateLimit"`
	RecreateWindowMinutes int `json:"recreateWindowMinutes"`
}

// readSweepSettings reads a zone's sweep settings.
func readSweepSettings(ctx context.Context, st *models.Settings, zoneID string) (SweepSettings, error) {
	var s SweepSettings
	r := st.Batch(ctx, models.Scope{ZoneID: zoneID})
	r.Bool(SettingHealthEnabled, &s.Enabled)
	r.Int(SettingHealthSweepConcurrency, &s.Concurrency)
	r.Int(SettingHealthFailuresBefore, &s.FailuresBeforeRecreate)
	r.Int(SettingHealthMaxRecreations, &s.MaxConcurrentRecreations)
	r.Int(SettingHealthBreakerPercent, &s.CircuitBreakerPercent)
	r.Int(SettingHealthRecreateLimit, &s.RecreateLimit)
	r.Int(SettingHealthRecreateWindow, &s.RecreateWindowMinutes)
	r.List(SettingHealthRecreateChecks, &s.RecreateChecks)
	if err := r.Err(); err != nil {
		return SweepSettings{}, fmt.Errorf("read health check settings of zone %s: %w", zoneID, err)
	}
	s.Concurrency = max(s.Concurrency, 1)
	s.FailuresBeforeRecreate = max(s.FailuresBeforeRecreate, 1)
	s.MaxConcurrentRecreations = max(s.MaxConcurrentRecreations, 1)
	s.RecreateLimit = max(s.RecreateLimit, 1)
	s.RecreateWindowMinutes = max(s.RecreateWindowMinutes, 1)
	return s, nil
}

// checkSettings are the settings that go into the configuration pushed to a router.
type checkSettings struct {
	enabled           bool
	basic, advanced   int
	exclude           []string
	freeDiskMB        int
	maxCPU, maxMemory int
	serviceMonitoring bool
}

func readCheckSettings(ctx context.Context, st *models.Settings, zoneID string) (checkSettings, error) {
	var c checkSettings
	r := st.Batch(ctx, models.Scope{ZoneID: zoneID})
	r.Bool(SettingHealthEnabled, &c.enabled)
	r.Int(SettingHealthBasicInterval, &c.basic)
	r.Int(SettingHealthAdvancedInterval, &c.advanced)
	r.Int(SettingHealthFreeDisk, &c.freeDiskMB)
	r.Int(SettingHealthMaxCPU, &c.maxCPU)
	r.Int(SettingHealthMaxMemory, &c.maxMemory)
	r.Bool(SettingServiceMonitoring, &c.serviceMonitoring)
	r.List(SettingHealthExclude, &c.exclude)
	if err := r.Err(); err != nil {
		return checkSettings{}, fmt.Errorf("read health check settings of zone %s: %w", zoneID, err)
	}
	return c, nil
}

// RouterServices reads Network.Services ("Dhcp,Dns,Lb,UserData,...", any case) into what the
// agent needs to know.
func RouterServices(list string) agent.Services {
	var s agent.Services
	for _, item := range models.SplitList(list) {
		switch strings.ToLower(item) {
		case "dhcp":
			s.DHCP = true
		case "dns":
			s.DNS = true
		case "lb", "loadbalancing", "loadbalancer":
			s.LB = true
		case "userdata":
			s.UserData = true
		}
	}
	return s
}

// agentRedundantState maps the inventory's redundant state to keepalived's names the agent
// uses: PRIMARY is MASTER; a redundant router in an unknown state is sent as not redundant, so
// its gateways are checked.
func agentRedundantState(vm models.SystemVM) string {
	if !vm.IsRedundant {
		return ""
	}
	switch strings.ToUpper(vm.RedundantState) {
	case models.RedundantPrimary, agent.RedundantMaster:
		return agent.RedundantMaster
	case models.RedundantBackup:
		return agent.RedundantBackup
	}
	return ""
}

// routerNetworks returns the guest networks a router serves: its network, or every tier of its
// VPC.
func (h *Health) routerNetworks(ctx context.Context, vm models.SystemVM) ([]models.Network, error) {
	var nets []models.Network
	q := h.Store.DB.WithContext(ctx)
	switch {
	case vm.VPCID != "":
		q = q.Where("vpc_id = ?", vm.VPCID)
	case vm.NetworkID != "":
		q = q.Where("id = ?", vm.NetworkID)
	default:
		return nil, nil
	}
	if err := q.Order("id").Find(&nets).Error; err != nil {
		return nil, fmt.Errorf("networks of router %s: %w", vm.Name, err)
	}
	return nets, nil
}

// configFor builds the configuration pushed to a router from the inventory and the zone's
// settings:
//   - enabled, intervals, exclusions, thresholds and service monitoring from the settings;
//   - redundant state from the router row (PRIMARY is sent as MASTER);
//   - services: those its network gets from it, or the union over its VPC's tiers (a VPC
//     without tiers gets none, so its DHCP, DNS, LB and user data checks are skipped);
//   - gateways: the gateway of each of those networks; a router without a guest network has
//     none and its gateways check is skipped;
//   - expected VMs and rules: the running guest VMs, port forwarding rules and LB rules of
//     those networks in the inventory (ExpectedFromStore), or Health.Expected's when it is set;
//     haproxy's global maxconn is not checked (no inventory source yet);
//   - template version: the version the inventory records for the router (its template's when
//     unset), so router_version_check.py finds a router that is not running what the
//     inventory says. A router older than minreq.sysvmtemplate.version is reported by
//     requiresupgrade and upgraded by the upgrade workflow, not failed by a health check.
//     The scripts signature has no inventory source and is not checked.
func (h *Health) configFor(ctx context.Context, vm models.SystemVM, cs checkSettings) (agent.Config, error) {
	nets, err := h.routerNetworks(ctx, vm)
	if err != nil {
		return agent.Config{}, err
	}
	cfg := agent.Config{
		Enabled:          cs.enabled,
		BasicInterval:    cs.basic,
		AdvancedInterval: cs.advanced,
		ExcludedChecks:   slices.Clone(cs.exclude),
		Thresholds: agent.Thresholds{FreeDiskMB: cs.freeDiskMB, MaxCPUPercent: float64(cs.maxCPU),
			MaxMemoryPercent: float64(cs.maxMemory)},
		ServiceMonitoring: cs.serviceMonitoring,
		RouterName:        vm.Name,
		RedundantState:    agentRedundantState(vm),
		HasGuestNetwork:   len(nets) > 0,
	}
	seen := map[string]bool{}
	for _, n := range nets {
		s := RouterServices(n.Services)
		cfg.Services.DHCP = cfg.Services.DHCP || s.DHCP
		cfg.Services.DNS = cfg.Services.DNS || s.DNS
		cfg.Services.LB = cfg.Services.LB || s.LB
		cfg.Services.UserData = cfg.Services.UserData || s.UserData
		if a, err := netip.ParseAddr(strings.TrimSpace(n.Gateway)); err == nil && !seen[a.String()] {
			seen[a.String()] = true
			cfg.Gateways = append(cfg.Gateways, a.String())
		}
	}
	var exp ExpectedState
	if h.Expected != nil {
		exp, err = h.Expected(ctx, vm)
	} else {
		exp, err = h.expectedOf(ctx, nets)
	}
	if err != nil {
		return agent.Config{}, fmt.Errorf("expected state of router %s: %w", vm.Name, err)
	}
	cfg.ExpectedVMs, cfg.PortForwardingRules, cfg.LBRules = exp.VMs, exp.PortForwarding, exp.LoadBalancing
	cfg.MaxConnections = exp.MaxConnections
	cfg.TemplateVersion = vm.Version
	// A live-patched router must report the scripts version its patch recorded (the bundle's
	// checksum): router_version_check.py compares it with cloud-scripts-signature.
	cfg.ScriptsVersion = vm.ScriptsVersion
	if cfg.TemplateVersion == "" && vm.TemplateID != "" {
		var tpl models.Template
		if err := h.Store.Get(ctx, &tpl, vm.TemplateID); err == nil {
			cfg.TemplateVersion = tpl.Version
		} else if !errors.Is(err, models.ErrNotFound) {
			return agent.Config{}, fmt.Errorf("template of router %s: %w", vm.Name, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return agent.Config{}, fmt.Errorf("health check configuration of router %s: %w", vm.Name, err)
	}
	return cfg, nil
}

// RouterConfig is the configuration the platform pushes to a router now (its zone's settings
// and the inventory). The dev cloud renders its simulated routers from it, so the two agree.
func (h *Health) RouterConfig(ctx context.Context, vm models.SystemVM) (agent.Config, error) {
	cs, err := readCheckSettings(ctx, h.Store.Settings, vm.ZoneID)
	if err != nil {
		return agent.Config{}, err
	}
	return h.configFor(ctx, vm, cs)
}
