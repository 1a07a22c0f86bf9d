package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// Default thresholds, the defaults of CloudStack's router.health.checks.* settings. A zero
// threshold in a pushed Config means "use the default".
const (
	DefaultFreeDiskMB       = 100
	DefaultMaxCPUPercent    = 100
	DefaultMaxMemoryPercent = 100
	// DefaultCustomCheckTimeoutSec bounds one custom check script when the Config sets none.
	DefaultCustomCheckTimeoutSec = 30
)

// Redundant states of a router, as keepalived and CloudStack name them. The empty state is a
// router that is not part of a redundant pair.
const (
	RedundantMaster = "MASTER"
	RedundantBackup = "BACKUP"
)

// Config is the health check configuration the platform pushes to a router (CloudStack's
// "config refresh"); the agent stores it as /root/health_checks_data.json. It carries both the
// knobs (enabled, intervals, exclusions, thresholds) and the expected state the advanced checks
// compare the router's files against.
type Config struct {
	// Enabled is router.health.checks.enabled; a disabled agent runs no checks.
	Enabled bool `json:"enabled"`
	// BasicInterval and AdvancedInterval are in minutes, as the CloudStack settings
	// router.health.checks.basic.interval / .advanced.interval; 0 = not scheduled. The agent
	// itself does not schedule: the platform does. They are kept so the router's copy of the
	// configuration is complete.
	BasicInterval    int `json:"basicInterval"`
	AdvancedInterval int `json:"advancedInterval"`
	// ExcludedChecks are check names (router.health.checks.to.exclude) that are not run and do
	// not appear in results. Built-in, service and custom check names are all accepted.
	ExcludedChecks []string   `json:"excludedChecks,omitempty"`
	Thresholds     Thresholds `json:"thresholds"`
	// ServiceMonitoring is network.router.enableservicemonitoring: a service found down is
	// restarted, and its check passes only when the restart worked.
	ServiceMonitoring bool   `json:"serviceMonitoring"`
	RouterName        string `json:"routerName,omitempty"`
	// RedundantState is MASTER, BACKUP or "" (not redundant).
	RedundantState string `json:"redundantState,omitempty"`
	// HasGuestNetwork is false for routers with no guest interface (gateway checks are skipped).
	HasGuestNetwork bool `json:"hasGuestNetwork"`
	// Services says which services the network gets from this router. Checks of services it
	// does not get are reported as skipped, never failed.
	Services            Services         `json:"services"`
	ExpectedVMs         []ExpectedVM     `json:"expectedVms,omitempty"`
	Gateways            []string         `json:"gateways,omitempty"`
	PortForwardingRules []PortForwarding `json:"portForwardingRules,omitempty"`
	LBRules             []LBRule         `json:"lbRules,omitempty"`
	// MaxConnections is the haproxy global maxconn expected in haproxy.cfg; 0 = not checked.
	MaxConnections int `json:"maxConnections,omitempty"`
	// TemplateVersion is the expected version in /etc/cloudstack-release (either its whole first
	// line or the dotted version number in it, e.g. "4.15.0"); "" = not checked.
	TemplateVersion string `json:"templateVersion,omitempty"`
	// ScriptsVersion is the expected first line of /var/cache/cloud/cloud-scripts-signature;
	// "" = not checked.
	ScriptsVersion string `json:"scriptsVersion,omitempty"`
	// CustomCheckTimeoutSec bounds each custom check script; 0 = DefaultCustomCheckTimeoutSec.
	CustomCheckTimeoutSec int `json:"customCheckTimeoutSec,omitempty"`
}

// Thresholds are the limits of the basic resource checks.
type Thresholds struct {
	// FreeDiskMB: disk_space_check.py fails when free space is below it (default 100).
	FreeDiskMB int `json:"freeDiskMB"`
	// MaxCPUPercent: cpu_usage_check.py fails when CPU usage is above it (default 100).
	MaxCPUPercent float64 `json:"maxCpuPercent"`
	// MaxMemoryPercent: memory_usage_check.py fails when memory usage is above it (default 100).
	MaxMemoryPercent float64 `json:"maxMemoryPercent"`
}

// Services lists what the network gets from this router.
type Services struct {
	DHCP     bool `json:"dhcp"`
	DNS      bool `json:"dns"`
	LB       bool `json:"lb"`
	UserData bool `json:"userdata"`
}

// ExpectedVM is a guest VM the management server knows on the router's network: it must have a
// DHCP entry (/etc/dhcphosts.txt) and a DNS entry (/etc/hosts).
type ExpectedVM struct {
	MAC  string `json:"mac"`
	IP   string `json:"ip"`
	Name string `json:"name"`
}

// PortForwarding is one port forwarding rule; iptables-save must hold its DNAT rule. A port
// range is PublicPort..PublicEndPort (and PrivatePort..PrivateEndPort); End ports are 0 for a
// single port.
type PortForwarding struct {
	PublicIP       string `json:"publicIp"`
	PublicPort     int    `json:"publicPort"`
	PublicEndPort  int    `json:"publicEndPort,omitempty"`
	PrivateIP      string `json:"privateIp"`
	PrivatePort    int    `json:"privatePort"`
	PrivateEndPort int    `json:"privateEndPort,omitempty"`
	// Protocol is tcp or udp.
	Protocol string `json:"protocol"`
}

// LBRule is one load balancing rule; haproxy.cfg must have a listener on PublicIP:PublicPort
// with every backend and, when MaxConn is set, that maxconn.
type LBRule struct {
	PublicIP   string      `json:"publicIp"`
	PublicPort int         `json:"publicPort"`
	Backends   []LBBackend `json:"backends"`
	MaxConn    int         `json:"maxconn,omitempty"`
}

// LBBackend is one server behind a load balancing rule.
type LBBackend struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
}

// DecodeConfig reads one JSON Config and validates it. Unknown fields are ignored so that an
// older agent accepts a newer platform's configuration.
func DecodeConfig(r io.Reader) (Config, error) {
	var c Config
	dec := json.NewDecoder(r)
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("decode health check config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	switch c.RedundantState {
	case "", RedundantMaster, RedundantBackup:
	default:
		errs = append(errs, fmt.Errorf("redundantState %q: want MASTER, BACKUP or empty", c.RedundantState))
	}
	if c.BasicInterval < 0 || c.AdvancedInterval < 0 {
		errs = append(errs, errors.New("intervals must not be negative"))
	}
	if c.Thresholds.FreeDiskMB < 0 || c.Thresholds.MaxCPUPercent < 0 || c.Thresholds.MaxMemoryPercent < 0 {
		errs = append(errs, errors.New("thresholds must not be negative"))
	}
	if c.CustomCheckTimeoutSec < 0 {
		errs = append(errs, errors.New("customCheckTimeoutSec must not be negative"))
	}
	for i, vm := range c.ExpectedVMs {
		if _, err := netip.ParseAddr(vm.IP); err != nil {
			errs = append(errs, fmt.Errorf("expectedVms[%d] (%s): ip: %w", i, vm.Name, err))
		}
		if normalizeMAC(vm.MAC) == "" {
			errs = append(errs, fmt.Errorf("expectedVms[%d] (%s): mac %q is not a MAC address", i, vm.Name, vm.MAC))
		}
	}
	for i, g := range c.Gateways {
		if _, err := netip.ParseAddr(g); err != nil {
			errs = append(errs, fmt.Errorf("gateways[%d]: %w", i, err))
		}
	}
	for i, r := range c.PortForwardingRules {
		if _, err := netip.ParseAddr(r.PublicIP); err != nil {
			errs = append(errs, fmt.Errorf("portForwardingRules[%d]: publicIp: %w", i, err))
		}
		if _, err := netip.ParseAddr(r.PrivateIP); err != nil {
			errs = append(errs, fmt.Errorf("portForwardingRules[%d]: privateIp: %w", i, err))
		}
		if !validPort(r.PublicPort) || !validPort(r.PrivatePort) {
			errs = append(errs, fmt.Errorf("portForwardingRules[%d]: ports must be 1-65535", i))
		}
		if (r.PublicEndPort != 0 && r.PublicEndPort < r.PublicPort) || (r.PrivateEndPort != 0 && r.PrivateEndPort < r.PrivatePort) {
			errs = append(errs, fmt.Errorf("portForwardingRules[%d]: end port below start port", i))
		}
		switch strings.ToLower(r.Protocol) {
		case "tcp", "udp":
		default:
			errs = append(errs, fmt.Errorf("portForwardingRules[%d]: protocol %q: want tcp or udp", i, r.Protocol))
		}
	}
	for i, r := range c.LBRules {
		if _, err := netip.ParseAddr(r.PublicIP); err != nil {
			errs = append(errs, fmt.Errorf("lbRules[%d]: publicIp: %w", i, err))
		}
		if !validPort(r.PublicPort) {
			errs = append(errs, fmt.Errorf("lbRules[%d]: publicPort must be 1-65535", i))
		}
		for j, b := range r.Backends {
			if _, err := netip.ParseAddr(b.IP); err != nil {
				errs = append(errs, fmt.Errorf("lbRules[%d].backends[%d]: ip: %w", i, j, err))
			}
			if !validPort(b.Port) {
				errs = append(errs, fmt.Errorf("lbRules[%d].backends[%d]: port must be 1-65535", i, j))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid health check config: %w", errors.Join(errs...))
	}
	return nil
}

func validPort(p int) bool { return p >= 1 && p <= 65535 }

// effectiveThresholds fills zero thresholds with the defaults.
func (c Config) effectiveThresholds() Thresholds {
	t := c.Thresholds
	if t.FreeDiskMB == 0 {
		t.FreeDiskMB = DefaultFreeDiskMB
	}
	if t.MaxCPUPercent == 0 {
		t.MaxCPUPercent = DefaultMaxCPUPercent
	}
	if t.MaxMemoryPercent == 0 {
		t.MaxMemoryPercent = DefaultMaxMemoryPercent
	}
	return t
}

// excluded reports whether a check name is in ExcludedChecks (exact match, surrounding spaces
// ignored: the setting is a comma list typed by operators).
func (c Config) excluded(name string) bool {
	for _, e := range c.ExcludedChecks {
		if strings.TrimSpace(e) == name {
			return true
		}
	}
	return false
}

// normalizeMAC returns a MAC address in lower-case colon form, or "" if s is not one.
func normalizeMAC(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.ReplaceAll(s, "-", ":")
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return ""
	}
	for _, p := range parts {
		if len(p) != 2 || !isHex(p[0]) || !isHex(p[1]) {
			return ""
		}
	}
	return s
}

func isHex(b byte) bool {
	return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f')
}
