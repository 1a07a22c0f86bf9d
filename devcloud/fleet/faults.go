package fleet

import (
	"fmt"
	"slices"

	"github.com/sysvm/sysvm/agent"
)

// Fault names. The first seven are those of the sysvm issue; the others complete the set so
// every built-in check has a fault that makes it fail.
const (
	// FaultServiceDown stops a service (Fault.Service: dnsmasq, haproxy, apache2, sshd); a
	// restart by service monitoring brings it back, as after a daemon crash. With sshd down
	// the simulated router still answers SSH (so ssh.service can be seen failing); use
	// FaultUnreachable for a dead control channel.
	FaultServiceDown = "service-down"
	// FaultDiskFull leaves 4 MB free on the root file system.
	FaultDiskFull = "disk-full"
	// FaultDNSEntryMissing drops the first expected VM from /etc/hosts.
	FaultDNSEntryMissing = "dns-entry-missing"
	// FaultDHCPEntryMissing drops the first expected VM from /etc/dhcphosts.txt.
	FaultDHCPEntryMissing = "dhcp-entry-missing"
	// FaultPortForwardMissing drops the DNAT rule of the first port forwarding rule.
	FaultPortForwardMissing = "portforward-missing"
	// FaultUnreachable makes the router refuse SSH: the tunnel through its host is refused
	// ("No route to host"), a direct dial fails, and open connections are closed.
	FaultUnreachable = "unreachable"
	// FaultReadOnlyFS makes every write under the router's root fail with EROFS.
	FaultReadOnlyFS = "readonly-fs"

	// FaultServiceBroken stops a service and makes restarting it fail.
	FaultServiceBroken = "service-broken"
	// FaultGatewayUnreachable makes the first gateway stop answering ping.
	FaultGatewayUnreachable = "gateway-unreachable"
	// FaultLBRuleMissing drops the listener of the first LB rule from haproxy.cfg.
	FaultLBRuleMissing = "lb-rule-missing"
	// FaultVersionMismatch writes an older template version into /etc/cloudstack-release.
	FaultVersionMismatch = "version-mismatch"
	// FaultHighCPU drives CPU usage to 100%.
	FaultHighCPU = "high-cpu"
	// FaultHighMemory drives memory usage to 99%.
	FaultHighMemory = "high-memory"
)

// FaultNames lists every fault Inject accepts.
func FaultNames() []string {
	return []string{FaultServiceDown, FaultDiskFull, FaultDNSEntryMissing, FaultDHCPEntryMissing,
		FaultPortForwardMissing, FaultUnreachable, FaultReadOnlyFS, FaultServiceBroken,
		FaultGatewayUnreachable, FaultLBRuleMissing, FaultVersionMismatch, FaultHighCPU, FaultHighMemory}
}

// Fault is something wrong with a simulated router.
type Fault struct {
	Name string `json:"name"`
	// Service is the daemon of service-down and service-broken: dnsmasq, haproxy, apache2 or
	// sshd (ssh).
	Service string `json:"service,omitempty"`
}

// String is "service-down:haproxy" or the bare name.
func (f Fault) String() string {
	if f.Service != "" {
		return f.Name + ":" + f.Service
	}
	return f.Name
}

// faultSet is the faults active on one router.
type faultSet []Fault

func (s faultSet) has(name string) bool {
	return slices.ContainsFunc(s, func(f Fault) bool { return f.Name == name })
}

// validate checks that a fault is known and can be expressed on this router.
func (f Fault) validate(spec RouterSpec) error {
	needs := func(ok bool, what string) error {
		if !ok {
			return fmt.Errorf("fault %s: router %s has no %s", f.Name, spec.ID, what)
		}
		return nil
	}
	switch f.Name {
	case FaultServiceDown, FaultServiceBroken:
		svc := agent.CanonicalService(f.Service)
		if !slices.Contains(agent.RouterServices(), svc) {
			return fmt.Errorf("fault %s: service %q: want dnsmasq, haproxy, apache2 or sshd", f.Name, f.Service)
		}
		return nil
	case FaultDiskFull, FaultUnreachable, FaultReadOnlyFS, FaultHighCPU, FaultHighMemory:
		return nil
	case FaultDNSEntryMissing, FaultDHCPEntryMissing:
		return needs(len(spec.ExpectedVMs) > 0, "expected VMs")
	case FaultPortForwardMissing:
		return needs(len(spec.PortForwardingRules) > 0, "port forwarding rules")
	case FaultLBRuleMissing:
		return needs(len(spec.LBRules) > 0, "LB rules")
	case FaultGatewayUnreachable:
		return needs(len(spec.Gateways) > 0, "gateways")
	case FaultVersionMismatch:
		return needs(spec.TemplateVersion != "", "template version")
	}
	return fmt.Errorf("unknown fault %q (known: %v)", f.Name, FaultNames())
}

// Figures of the faults on the sandbox System.
const (
	diskFullFreeBytes = 4 << 20
	highCPUPercent    = 100
)
