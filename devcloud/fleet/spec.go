package fleet

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors"
)

// RouterSpec describes one simulated virtual router as the inventory knows it. The router's
// files (/etc/hosts, /etc/dhcphosts.txt, haproxy.cfg, the iptables rules, the release and
// scripts signature files) are rendered from it, so a healthy simulated router matches what
// the platform expects; faults then make them differ.
type RouterSpec struct {
	// ID identifies the router in the fleet (the inventory's id or uuid).
	ID string
	// Name is the system VM's CloudStack name (e.g. "r-12-VM"); ID may be its hypervisor
	// instance name, which a recreate's replacement changes.
	Name string
	// Type is the system VM type (domainrouter, secondarystoragevm, consoleproxy); "" is a
	// router. SSVMs and CPVMs are simulated the same way (SSH along the access path, the
	// agent's version command), so their replacements can be verified too.
	Type string
	// Hypervisor chooses the access path: KVM and XenServer routers are reached through their
	// host (HostName) on LinkLocalIP:3922; VMware routers directly on PrivateIP:3922 through
	// Fleet.DialContext. Empty means KVM when HostName is set, VMware otherwise.
	Hypervisor hypervisors.Type
	// HostName is the hypervisor host the router runs on (KVM, XenServer).
	HostName    string
	LinkLocalIP string
	PrivateIP   string
	// RedundantState is MASTER, BACKUP or "". A BACKUP's guest interfaces are down: its
	// gateways do not answer ping.
	RedundantState string
	// TemplateVersion goes into /etc/cloudstack-release ("Cloudstack Release <version> ...").
	TemplateVersion string
	// ScriptsVersion is the content of /var/cache/cloud/cloud-scripts-signature.
	ScriptsVersion string
	// Services are what the network gets from this router.
	Services            agent.Services
	ExpectedVMs         []agent.ExpectedVM
	Gateways            []string
	PortForwardingRules []agent.PortForwarding
	LBRules             []agent.LBRule
	// MaxConnections is haproxy's global maxconn (default 4096).
	MaxConnections int
	// BootAddresses are the service addresses (public IP, guest gateways) the VM brings up
	// at boot, from its boot arguments; more come over `sysvm-agent ip-assoc`. It holds them
	// while it runs, unless it is a BACKUP.
	BootAddresses []string
	// PoweredOff: the VM is defined but not running (it holds no address). Add and Update
	// apply it; SetRunning changes it.
	PoweredOff bool
}

// DefaultMaxConnections is haproxy's global maxconn when a spec sets none (CloudStack's
// network.loadbalancer.haproxy.max.conn default).
const DefaultMaxConnections = 4096

func (s RouterSpec) hypervisor() hypervisors.Type {
	switch {
	case s.Hypervisor != "":
		return s.Hypervisor
	case s.HostName != "":
		return hypervisors.KVM
	}
	return hypervisors.VMware
}

// linkLocal reports whether the router is reached through its host.
func (s RouterSpec) linkLocal() bool { return s.hypervisor() != hypervisors.VMware }

func (s RouterSpec) maxConnections() int {
	if s.MaxConnections > 0 {
		return s.MaxConnections
	}
	return DefaultMaxConnections
}

// validate checks the spec has what its access path needs and that the expected data is
// well formed (the agent's Config rules).
func (s RouterSpec) validate() error {
	var errs []error
	if s.ID == "" {
		errs = append(errs, errors.New("no ID"))
	}
	if s.Name == "" {
		errs = append(errs, errors.New("no Name"))
	}
	if s.linkLocal() {
		if s.HostName == "" {
			errs = append(errs, fmt.Errorf("a %s router needs a HostName", s.hypervisor()))
		}
		if _, err := netip.ParseAddr(s.LinkLocalIP); err != nil {
			errs = append(errs, fmt.Errorf("LinkLocalIP: %w", err))
		}
	} else if _, err := netip.ParseAddr(s.PrivateIP); err != nil {
		errs = append(errs, fmt.Errorf("PrivateIP of a VMware router: %w", err))
	}
	for i, a := range s.BootAddresses {
		if _, err := netip.ParseAddr(a); err != nil {
			errs = append(errs, fmt.Errorf("BootAddresses[%d]: %w", i, err))
		}
	}
	if err := s.Config().Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("router spec %q: %w", s.ID, errors.Join(errs...))
	}
	return nil
}

// Config is the health check configuration a correct platform pushes to this router:
// enabled, CloudStack's default intervals and thresholds, service monitoring off, and the
// expected data of the spec.
func (s RouterSpec) Config() agent.Config {
	return agent.Config{
		Enabled:             true,
		BasicInterval:       3,
		AdvancedInterval:    10,
		RouterName:          s.Name,
		RedundantState:      s.RedundantState,
		HasGuestNetwork:     len(s.Gateways) > 0,
		Services:            s.Services,
		ExpectedVMs:         s.ExpectedVMs,
		Gateways:            s.Gateways,
		PortForwardingRules: s.PortForwardingRules,
		LBRules:             s.LBRules,
		MaxConnections:      s.maxConnections(),
		TemplateVersion:     s.TemplateVersion,
		ScriptsVersion:      s.ScriptsVersion,
	}
}

// files renders the router's files from its spec, leaving out what the active faults remove.
// Paths are relative to the sandbox root.
func (s RouterSpec) files(faults faultSet) map[string]string {
	out := map[string]string{}

	var hosts strings.Builder
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	if s.PrivateIP != "" {
		fmt.Fprintf(&hosts, "%s\t%s\n", s.PrivateIP, s.Name)
	}
	var dhcp strings.Builder
	for i, vm := range s.ExpectedVMs {
		if !(i == 0 && faults.has(FaultDNSEntryMissing)) {
			fmt.Fprintf(&hosts, "%s %s\n", vm.IP, vm.Name)
		}
		if !(i == 0 && faults.has(FaultDHCPEntryMissing)) {
			fmt.Fprintf(&dhcp, "%s,%s,%s,infinite\n", strings.ToLower(vm.MAC), vm.IP, vm.Name)
		}
	}
	out[agent.HostsFile] = hosts.String()
	out[agent.DHCPHostsFile] = dhcp.String()

	var ha strings.Builder
	fmt.Fprintf(&ha, `global
	log 127.0.0.1:3914   local0 warning
	maxconn %d
	maxpipes %d
	chroot /var/lib/haproxy
	user haproxy
	group haproxy
	daemon

defaults
	log     global
	mode    tcp
	option  dontlognull
	retries 3
	option redispatch
	option forwardfor
	timeout connect    5000
	timeout client     50000
	timeout server     50000
`, s.maxConnections(), s.maxConnections()/4)
	for i, rule := range s.LBRules {
		if i == 0 && faults.has(FaultLBRuleMissing) {
			continue
		}
		name := fmt.Sprintf("%s-%d", strings.NewReplacer(".", "_", ":", "_").Replace(rule.PublicIP), rule.PublicPort)
		fmt.Fprintf(&ha, "\nlisten %s %s\n\tbalance roundrobin\n", name, hostPort(rule.PublicIP, rule.PublicPort))
		if rule.MaxConn > 0 {
			fmt.Fprintf(&ha, "\tmaxconn %d\n", rule.MaxConn)
		}
		for j, b := range rule.Backends {
			fmt.Fprintf(&ha, "\tserver %s_%d %s check\n", name, j, hostPort(b.IP, b.Port))
		}
	}
	out[agent.HaproxyConfigFile] = ha.String()

	var ipt strings.Builder
	ipt.WriteString("# Generated by iptables-save v1.8.7 (simulated router " + s.Name + ")\n")
	ipt.WriteString("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	ipt.WriteString("-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n")
	ipt.WriteString("-A INPUT -i eth1 -p tcp -m tcp --dport 3922 -m state --state NEW,ESTABLISHED -j ACCEPT\n")
	for _, pf := range s.PortForwardingRules {
		proto := strings.ToLower(pf.Protocol)
		fmt.Fprintf(&ipt, "-A FORWARD -d %s/32 -p %s -m %s --dport %s -m state --state NEW -j ACCEPT\n",
			pf.PrivateIP, proto, proto, portRange(pf.PrivatePort, pf.PrivateEndPort, ":"))
	}
	ipt.WriteString("COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	for i, pf := range s.PortForwardingRules {
		if i == 0 && faults.has(FaultPortForwardMissing) {
			continue
		}
		proto := strings.ToLower(pf.Protocol)
		fmt.Fprintf(&ipt, "-A PREROUTING -d %s/32 -i eth2 -p %s -m %s --dport %s -j DNAT --to-destination %s:%s\n",
			pf.PublicIP, proto, proto, portRange(pf.PublicPort, pf.PublicEndPort, ":"),
			pf.PrivateIP, portRange(pf.PrivatePort, pf.PrivateEndPort, "-"))
	}
	ipt.WriteString("COMMIT\n")
	out[agent.IptablesSaveFile] = ipt.String()

	version := s.TemplateVersion
	if faults.has(FaultVersionMismatch) {
		version = olderVersion(version)
	}
	out[agent.ReleaseFile] = fmt.Sprintf("Cloudstack Release %s Mon Jan 15 10:00:00 UTC 2024\n", version)
	out[agent.ScriptsSignatureFile] = s.ScriptsVersion + "\n"
	return out
}

// olderVersion returns a version that differs from v ("4.15.0" -> "4.14.0").
func olderVersion(v string) string {
	parts := strings.Split(v, ".")
	if len(parts) >= 2 {
		var minor int
		if _, err := fmt.Sscan(parts[1], &minor); err == nil && minor > 0 {
			parts[1] = fmt.Sprint(minor - 1)
			return strings.Join(parts, ".")
		}
	}
	return v + "-old"
}

func hostPort(ip string, port int) string {
	if a, err := netip.ParseAddr(ip); err == nil && a.Is6() && !a.Is4In6() {
		return fmt.Sprintf("[%s]:%d", ip, port)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}

func portRange(start, end int, sep string) string {
	if end == 0 || end == start {
		return fmt.Sprint(start)
	}
	return fmt.Sprintf("%d%s%d", start, sep, end)
}

// sampleCheck is the custom check every simulated router carries in /root/health_checks/: a
// basic check that /etc/hosts is present and not empty, and nothing for advanced runs (no
// output = not a check).
const sampleCheck = `#!/bin/sh
# Sample sysvm custom health check: argument basic|advanced; stdout is the message;
# exit 0 pass, 1 fail; no output = not a check for that type.
[ "$1" = basic ] || exit 0
hosts="${SYSVM_ROOT:-/}/etc/hosts"
if [ -s "$hosts" ]; then
	echo "/etc/hosts present"
	exit 0
fi
echo "/etc/hosts missing or empty"
exit 1
`

// SampleCheckName is the file name of the sample custom check.
const SampleCheckName = "hosts_file_check.sh"
