package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
)

// Serving a network's rules (SPEC §4.4): `sysvm-agent apply-rules` reads the configuration the
// platform builds (the same JSON as push-config: guest VMs, port forwarding and load balancing
// rules), stores it as push-config does, and makes the router serve it: /etc/hosts (DNS) and
// /etc/dhcphosts.txt (DHCP) get one entry per guest VM, haproxy.cfg one listener per LB rule
// with its backends, the iptables rules (IptablesSaveFile, iptables-persistent's rules.v4) one
// DNAT per port forwarding rule; then the daemons of the services the router gives reload.

// DefaultMaxConnections is haproxy's global maxconn when the configuration sets none.
const DefaultMaxConnections = 4096

// ApplyResult is what apply-rules prints.
type ApplyResult struct {
	VMs            int      `json:"vms"`
	PortForwarding int      `json:"portForwarding"`
	LoadBalancing  int      `json:"loadBalancing"`
	Files          []string `json:"files"`
	Reloaded       []string `json:"reloaded,omitempty"`
	// Warnings name daemons that could not be reloaded (the files are written).
	Warnings []string `json:"warnings,omitempty"`
}

// ApplyRules stores cfg and writes the files that make the router serve it, then reloads the
// daemons of its services (dnsmasq for DHCP or DNS, haproxy for LB) and, on a real router,
// loads the iptables rules with iptables-restore. Lines of /etc/hosts that are not guest entries (localhost,
// the router's own name) are kept.
func (a *Agent) ApplyRules(ctx context.Context, cfg Config) (ApplyResult, error) {
	if err := a.SaveConfig(cfg); err != nil {
		return ApplyResult{}, err
	}
	out := ApplyResult{VMs: len(cfg.ExpectedVMs), PortForwarding: len(cfg.PortForwardingRules), LoadBalancing: len(cfg.LBRules)}
	files := map[string]string{
		HostsFile:         a.renderHosts(cfg),
		DHCPHostsFile:     renderDHCP(cfg),
		HaproxyConfigFile: renderHaproxy(cfg),
		IptablesSaveFile:  renderIptables(cfg),
	}
	for _, rel := range []string{HostsFile, DHCPHostsFile, HaproxyConfigFile, IptablesSaveFile} {
		if err := a.Sys.WriteFile(a.Path(rel), []byte(files[rel]), 0o644); err != nil {
			return out, fmt.Errorf("write /%s: %w", rel, err)
		}
		out.Files = append(out.Files, "/"+rel)
	}
	var reload []string
	if cfg.Services.DHCP || cfg.Services.DNS {
		reload = append(reload, ServiceDnsmasq)
	}
	if cfg.Services.LB {
		reload = append(reload, ServiceHaproxy)
	}
	if _, sandbox := a.Sys.(*SandboxSystem); !sandbox {
		// A real router loads the new rules into the kernel (a sandbox's iptables-save is the
		// file itself).
		res, err := a.Sys.Exec(ctx, Command{Path: "iptables-restore", Args: []string{a.Path(IptablesSaveFile)}})
		switch {
		case err != nil:
			out.Warnings = append(out.Warnings, fmt.Sprintf("iptables-restore: %v", err))
		case res.ExitCode != 0:
			out.Warnings = append(out.Warnings, fmt.Sprintf("iptables-restore: exit %d: %s", res.ExitCode, strings.TrimSpace(string(res.Stderr))))
		default:
			out.Reloaded = append(out.Reloaded, "iptables")
		}
	}
	for _, svc := range reload {
		if err := a.Sys.RestartService(ctx, svc); err != nil {
			out.Warnings = append(out.Warnings, fmt.Sprintf("reload %s: %v", svc, err))
			continue
		}
		out.Reloaded = append(out.Reloaded, svc)
	}
	return out, nil
}

// renderHosts keeps the non-guest lines of the current /etc/hosts and adds one line per guest VM.
func (a *Agent) renderHosts(cfg Config) string {
	var b strings.Builder
	guests := map[string]bool{}
	for _, vm := range cfg.ExpectedVMs {
		guests[vm.Name] = true
		guests[vm.IP] = true
	}
	kept := false
	if f, err := os.Open(a.Path(HostsFile)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			fields := strings.Fields(line)
			if len(fields) >= 2 && !strings.HasPrefix(fields[0], "#") {
				if guests[fields[0]] || guests[fields[1]] || !ownLine(fields, cfg.RouterName) {
					continue // a guest entry, rewritten below
				}
			}
			if strings.TrimSpace(line) == "" {
				continue
			}
			b.WriteString(line + "\n")
			kept = true
		}
		_ = f.Close()
	}
	if !kept {
		b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	}
	for _, vm := range cfg.ExpectedVMs {
		fmt.Fprintf(&b, "%s %s\n", vm.IP, vm.Name)
	}
	return b.String()
}

// ownLine reports whether a hosts line is the router's own: localhost or its name.
func ownLine(fields []string, routerName string) bool {
	for _, n := range fields[1:] {
		if n == "localhost" || strings.HasPrefix(n, "ip6-") || (routerName != "" && n == routerName) {
			return true
		}
	}
	return false
}

func renderDHCP(cfg Config) string {
	var b strings.Builder
	for _, vm := range cfg.ExpectedVMs {
		fmt.Fprintf(&b, "%s,%s,%s,infinite\n", strings.ToLower(vm.MAC), vm.IP, vm.Name)
	}
	return b.String()
}

func renderHostPort(ip string, port int) string {
	if a, err := netip.ParseAddr(ip); err == nil && a.Is6() && !a.Is4In6() {
		return fmt.Sprintf("[%s]:%d", ip, port)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}

func renderPortRange(start, end int, sep string) string {
	if end == 0 || end == start {
		return fmt.Sprint(start)
	}
	return fmt.Sprintf("%d%s%d", start, sep, end)
}

func renderHaproxy(cfg Config) string {
	maxconn := cfg.MaxConnections
	if maxconn <= 0 {
		maxconn = DefaultMaxConnections
	}
	var b strings.Builder
	fmt.Fprintf(&b, `global
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
`, maxconn, maxconn/4)
	for _, rule := range cfg.LBRules {
		name := fmt.Sprintf("%s-%d", strings.NewReplacer(".", "_", ":", "_").Replace(rule.PublicIP), rule.PublicPort)
		fmt.Fprintf(&b, "\nlisten %s %s\n\tbalance roundrobin\n", name, renderHostPort(rule.PublicIP, rule.PublicPort))
		if rule.MaxConn > 0 {
			fmt.Fprintf(&b, "\tmaxconn %d\n", rule.MaxConn)
		}
		for j, be := range rule.Backends {
			fmt.Fprintf(&b, "\tserver %s_%d %s check\n", name, j, renderHostPort(be.IP, be.Port))
		}
	}
	return b.String()
}

func renderIptables(cfg Config) string {
	var b strings.Builder
	b.WriteString("# Generated by sysvm-agent apply-rules (router " + cfg.RouterName + ")\n")
	b.WriteString("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	b.WriteString("-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n")
	b.WriteString("-A INPUT -i eth1 -p tcp -m tcp --dport 3922 -m state --state NEW,ESTABLISHED -j ACCEPT\n")
	for _, pf := range cfg.PortForwardingRules {
		proto := strings.ToLower(pf.Protocol)
		fmt.Fprintf(&b, "-A FORWARD -d %s/32 -p %s -m %s --dport %s -m state --state NEW -j ACCEPT\n",
			pf.PrivateIP, proto, proto, renderPortRange(pf.PrivatePort, pf.PrivateEndPort, ":"))
	}
	b.WriteString("COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	for _, pf := range cfg.PortForwardingRules {
		proto := strings.ToLower(pf.Protocol)
		fmt.Fprintf(&b, "-A PREROUTING -d %s/32 -i eth2 -p %s -m %s --dport %s -j DNAT --to-destination %s:%s\n",
			pf.PublicIP, proto, proto, renderPortRange(pf.PublicPort, pf.PublicEndPort, ":"),
			pf.PrivateIP, renderPortRange(pf.PrivatePort, pf.PrivateEndPort, "-"))
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// applyRulesCommand is `sysvm-agent apply-rules`.
func (a *Agent) applyRulesCommand(ctx context.Context, args []string, stdin io.Reader, stderr io.Writer, printJSON func(any) int) int {
	if len(args) != 1 {
		fmt.Fprint(stderr, "sysvm-agent: apply-rules takes no arguments (the configuration comes on stdin)\n")
		return ExitUsage
	}
	cfg, err := DecodeConfig(io.LimitReader(stdin, 64<<20))
	if err != nil {
		fmt.Fprintf(stderr, "sysvm-agent: %v\n", err)
		return ExitError
	}
	res, err := a.ApplyRules(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "sysvm-agent: %v\n", err)
		return ExitError
	}
	return printJSON(res)
}
