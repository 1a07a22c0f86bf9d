package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Built-in check names, as CloudStack names them.
const (
	CheckCPU           = "cpu_usage_check.py"
	CheckDisk          = "disk_space_check.py"
	CheckMemory        = "memory_usage_check.py"
	CheckGateways      = "gateways_check.py"
	CheckRouterVersion = "router_version_check.py"
	CheckDHCP          = "dhcp_check.py"
	CheckDNS           = "dns_check.py"
	CheckHaproxy       = "haproxy_check.py"
	CheckIptables      = "iptables_check.py"
	// Service checks (basic): ServiceOfCheck gives the daemon behind each.
	CheckDHCPService          = "dhcp.service"
	CheckLoadBalancingService = "loadbalancing.service"
	CheckWebServerService     = "webserver.service"
	CheckSSHService           = "ssh.service"
	// CheckFilesystemWritable fails when the root file system is read-only (both run types).
	CheckFilesystemWritable = "filesystem.writable.test"
)

// ServiceOfCheck returns the systemd unit a service check watches ("" for other checks).
func ServiceOfCheck(check string) string {
	switch check {
	case CheckDHCPService:
		return ServiceDnsmasq
	case CheckLoadBalancingService:
		return ServiceHaproxy
	case CheckWebServerService:
		return ServiceApache2
	case CheckSSHService:
		return ServiceSSH
	}
	return ""
}

// builtinTimeout bounds each built-in check.
const builtinTimeout = 30 * time.Second

// outcome is what a check function decides.
type outcome struct {
	success bool
	skipped bool
	details string
}

func pass(format string, args ...any) outcome {
	return outcome{success: true, details: fmt.Sprintf(format, args...)}
}

func fail(format string, args ...any) outcome {
	return outcome{details: fmt.Sprintf(format, args...)}
}

func skip(reason string) outcome {
	return outcome{success: true, skipped: true, details: "skipped: " + reason}
}

type builtin struct {
	name string
	typ  CheckType
	run  func(ctx context.Context, a *Agent, cfg Config) outcome
}

// builtins in the order they appear in results.
var builtins = []builtin{
	{CheckCPU, Basic, checkCPU},
	{CheckDisk, Basic, checkDisk},
	{CheckMemory, Basic, checkMemory},
	{CheckGateways, Basic, checkGateways},
	{CheckRouterVersion, Basic, checkRouterVersion},
	{CheckDHCPService, Basic, serviceCheck(CheckDHCPService)},
	{CheckLoadBalancingService, Basic, serviceCheck(CheckLoadBalancingService)},
	{CheckWebServerService, Basic, serviceCheck(CheckWebServerService)},
	{CheckSSHService, Basic, serviceCheck(CheckSSHService)},
	{CheckFilesystemWritable, Basic, checkWritable},
	{CheckDHCP, Advanced, checkDHCP},
	{CheckDNS, Advanced, checkDNS},
	{CheckHaproxy, Advanced, checkHaproxy},
	{CheckIptables, Advanced, checkIptables},
	{CheckFilesystemWritable, Advanced, checkWritable},
}

// BuiltinChecks returns the names of the built-in checks of a type, in result order.
func BuiltinChecks(t CheckType) []string {
	var out []string
	for _, b := range builtins {
		if b.typ == t {
			out = append(out, b.name)
		}
	}
	return out
}

// Check runs the checks of type t under cfg and returns the run; it writes nothing. Built-in
// checks run concurrently, then the custom checks. Operator-excluded checks are left out;
// checks that do not apply to this router are reported as skipped (see Result).
func (a *Agent) Check(ctx context.Context, cfg Config, t CheckType) Run {
	run := Run{Type: t, RouterName: cfg.RouterName, StartTime: a.Sys.Now(), Results: []Result{}}
	if !cfg.Enabled {
		run.Disabled = true
		run.EndTime = a.Sys.Now()
		return run
	}
	var selected []builtin
	for _, b := range builtins {
		if b.typ == t && !cfg.excluded(b.name) {
			selected = append(selected, b)
		}
	}
	results := make([]Result, len(selected))
	var wg sync.WaitGroup
	for i, b := range selected {
		wg.Go(func() {
			results[i] = a.timed(ctx, b.name, t, func(ctx context.Context) outcome {
				cctx, cancel := context.WithTimeout(ctx, builtinTimeout)
				defer cancel()
				return b.run(cctx, a, cfg)
			})
		})
	}
	wg.Wait()
	run.Results = append(run.Results, results...)
	run.Results = append(run.Results, a.customChecks(ctx, cfg, t)...)
	run.EndTime = a.Sys.Now()
	run.DurationMs = run.EndTime.Sub(run.StartTime).Milliseconds()
	return run
}

// timed runs one check and stamps its start, end and duration.
func (a *Agent) timed(ctx context.Context, name string, t CheckType, f func(context.Context) outcome) Result {
	start := a.Sys.Now()
	o := f(ctx)
	end := a.Sys.Now()
	if !o.success {
		a.Logger.Warn("health check failed", "check", name, "type", t, "details", o.details)
	}
	return Result{
		CheckName: name, CheckType: t, Success: o.success, Skipped: o.skipped,
		Details: o.details, StartTime: start, LastUpdated: end, DurationMs: end.Sub(start).Milliseconds(),
	}
}

// maxListed bounds how many items a detail line names before summarising the rest.
const maxListed = 20

// list joins items, naming at most maxListed of them.
func list(items []string) string {
	if len(items) <= maxListed {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:maxListed], ", ") + fmt.Sprintf(" and %d more", len(items)-maxListed)
}

func checkCPU(ctx context.Context, a *Agent, cfg Config) outcome {
	limit := cfg.effectiveThresholds().MaxCPUPercent
	usage, err := a.Sys.CPUUsage(ctx)
	if err != nil {
		return fail("cannot measure CPU usage: %v", err)
	}
	if usage > limit {
		return fail("CPU usage %.1f%% is above the threshold of %g%%", usage, limit)
	}
	return pass("CPU usage %.1f%% (threshold %g%%)", usage, limit)
}

func checkMemory(ctx context.Context, a *Agent, cfg Config) outcome {
	limit := cfg.effectiveThresholds().MaxMemoryPercent
	m, err := a.Sys.Memory()
	if err != nil {
		return fail("cannot measure memory usage: %v", err)
	}
	used := m.UsedPercent()
	if used > limit {
		return fail("memory usage %.1f%% (%d of %d MB) is above the threshold of %g%%", used,
			(m.TotalBytes-min(m.AvailableBytes, m.TotalBytes))>>20, m.TotalBytes>>20, limit)
	}
	return pass("memory usage %.1f%% of %d MB (threshold %g%%)", used, m.TotalBytes>>20, limit)
}

func checkDisk(ctx context.Context, a *Agent, cfg Config) outcome {
	minFree := cfg.effectiveThresholds().FreeDiskMB
	d, err := a.Sys.Statfs(a.Root)
	if err != nil {
		return fail("cannot stat the root file system: %v", err)
	}
	free := d.FreeBytes >> 20
	if free < uint64(minFree) {
		return fail("free disk space %d MB on / is below the threshold of %d MB (total %d MB)", free, minFree, d.TotalBytes>>20)
	}
	return pass("free disk space %d MB of %d MB on / (threshold %d MB)", free, d.TotalBytes>>20, minFree)
}

// maxParallelPings bounds concurrent pings of one gateways check.
const maxParallelPings = 8

func checkGateways(ctx context.Context, a *Agent, cfg Config) outcome {
	switch {
	case cfg.RedundantState == RedundantBackup:
		return skip("router is the BACKUP of a redundant pair; its guest interfaces are down")
	case !cfg.HasGuestNetwork:
		return skip("router has no guest network")
	case len(cfg.Gateways) == 0:
		return pass("no gateways to check")
	}
	errs := make([]error, len(cfg.Gateways))
	sem := make(chan struct{}, maxParallelPings)
	var wg sync.WaitGroup
	for i, gw := range cfg.Gateways {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			errs[i] = a.Sys.Ping(pctx, gw)
		})
	}
	wg.Wait()
	var bad []string
	for i, err := range errs {
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s (%v)", cfg.Gateways[i], err))
		}
	}
	if len(bad) > 0 {
		return fail("unreachable gateways: %s", list(bad))
	}
	return pass("all %d gateways reachable: %s", len(cfg.Gateways), list(cfg.Gateways))
}

var versionNumber = regexp.MustCompile(`\d+(\.\d+)+`)

// sameVersion compares an expected version with the first line of a version file: equal
// lines, or the same dotted version number in both.
func sameVersion(expected, found string) bool {
	expected, found = strings.TrimSpace(expected), strings.TrimSpace(found)
	if expected == found {
		return true
	}
	e, f := versionNumber.FindString(expected), versionNumber.FindString(found)
	return e != "" && e == f
}

// firstLine reads the first non-empty line of a router file.
func (a *Agent) firstLine(rel string) (string, error) {
	data, err := os.ReadFile(a.Path(rel))
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			return l, nil
		}
	}
	return "", nil
}

func checkRouterVersion(ctx context.Context, a *Agent, cfg Config) outcome {
	var problems, ok []string
	if cfg.TemplateVersion != "" {
		found, err := a.firstLine(ReleaseFile)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("cannot read template version: %v", err))
		case !sameVersion(cfg.TemplateVersion, found):
			problems = append(problems, fmt.Sprintf("template version mismatch: expected %q, found %q in /%s", cfg.TemplateVersion, found, ReleaseFile))
		default:
			ok = append(ok, fmt.Sprintf("template version %q", found))
		}
	}
	if cfg.ScriptsVersion != "" {
		found, err := a.firstLine(ScriptsSignatureFile)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("cannot read scripts version: %v", err))
		case strings.TrimSpace(cfg.ScriptsVersion) != found:
			problems = append(problems, fmt.Sprintf("scripts version mismatch: expected %q, found %q in /%s", cfg.ScriptsVersion, found, ScriptsSignatureFile))
		default:
			ok = append(ok, fmt.Sprintf("scripts version %q", found))
		}
	}
	if len(problems) > 0 {
		return fail("%s", strings.Join(problems, "; "))
	}
	if len(ok) == 0 {
		return pass("no expected template or scripts version configured")
	}
	return pass("%s match", strings.Join(ok, " and "))
}

// serviceCheck returns the check of one router daemon.
func serviceCheck(name string) func(context.Context, *Agent, Config) outcome {
	return func(ctx context.Context, a *Agent, cfg Config) outcome {
		unit := ServiceOfCheck(name)
		switch {
		case name == CheckDHCPService && !cfg.Services.DHCP && !cfg.Services.DNS:
			return skip("network does not use DHCP or DNS from this router")
		case name == CheckLoadBalancingService && !cfg.Services.LB:
			return skip("network does not use load balancing from this router")
		case name == CheckWebServerService && !cfg.Services.UserData:
			return skip("network does not use user data from this router")
		}
		active, err := a.Sys.ServiceActive(ctx, unit)
		if err != nil {
			return fail("cannot query %s: %v", unit, err)
		}
		if active {
			return pass("%s is running", unit)
		}
		if !cfg.ServiceMonitoring {
			return fail("%s is not running (service monitoring is off, not restarted)", unit)
		}
		a.Logger.Warn("restarting service found down", "service", unit)
		if err := a.Sys.RestartService(ctx, unit); err != nil {
			return fail("%s was not running and restarting it failed: %v", unit, err)
		}
		active, err = a.Sys.ServiceActive(ctx, unit)
		if err != nil {
			return fail("%s was not running; restarted it but cannot query it: %v", unit, err)
		}
		if !active {
			return fail("%s was not running and is still not running after a restart", unit)
		}
		return pass("%s was not running; restarted by service monitoring and running again", unit)
	}
}

func checkWritable(ctx context.Context, a *Agent, cfg Config) outcome {
	probe := a.Path(writableProbeFile)
	err := a.Sys.WriteFile(probe, []byte("sysvm-agent write probe\n"), 0o600)
	if err == nil {
		if rerr := a.Sys.Remove(probe); rerr != nil {
			return fail("created /%s but cannot remove it: %v", writableProbeFile, rerr)
		}
		return pass("root file system is writable")
	}
	if errors.Is(err, syscall.EROFS) {
		return fail("root file system is read-only: %v", err)
	}
	return fail("cannot write to the root file system: %v", err)
}

func checkDHCP(ctx context.Context, a *Agent, cfg Config) outcome {
	if !cfg.Services.DHCP {
		return skip("network does not use DHCP from this router")
	}
	if len(cfg.ExpectedVMs) == 0 {
		return pass("no VMs expected on this network")
	}
	data, err := os.ReadFile(a.Path(DHCPHostsFile))
	if err != nil {
		return fail("cannot read /%s: %v", DHCPHostsFile, err)
	}
	byMAC := map[string][]dhcpHost{}
	for _, h := range parseDHCPHosts(data) {
		byMAC[h.mac] = append(byMAC[h.mac], h)
	}
	var missing, wrong []string
	for _, vm := range cfg.ExpectedVMs {
		mac, ip := normalizeMAC(vm.MAC), canonicalIP(vm.IP)
		entries := byMAC[mac]
		if len(entries) == 0 {
			missing = append(missing, fmt.Sprintf("%s %s %s", mac, vm.IP, vm.Name))
			continue
		}
		found := slices.ContainsFunc(entries, func(h dhcpHost) bool {
			return h.ip == ip && (vm.Name == "" || h.name == "" || strings.EqualFold(h.name, vm.Name))
		})
		if !found {
			wrong = append(wrong, fmt.Sprintf("%s has %s %s, expected %s %s", mac, entries[0].ip, entries[0].name, vm.IP, vm.Name))
		}
	}
	var problems []string
	if len(missing) > 0 {
		problems = append(problems, "missing DHCP entries: "+list(missing))
	}
	if len(wrong) > 0 {
		problems = append(problems, "wrong DHCP entries: "+list(wrong))
	}
	if len(problems) > 0 {
		return fail("%s (in /%s)", strings.Join(problems, "; "), DHCPHostsFile)
	}
	return pass("all %d VMs have DHCP entries", len(cfg.ExpectedVMs))
}

func checkDNS(ctx context.Context, a *Agent, cfg Config) outcome {
	if !cfg.Services.DNS {
		return skip("network does not use DNS from this router")
	}
	if len(cfg.ExpectedVMs) == 0 {
		return pass("no VMs expected on this network")
	}
	data, err := os.ReadFile(a.Path(HostsFile))
	if err != nil {
		return fail("cannot read /%s: %v", HostsFile, err)
	}
	hosts := parseEtcHosts(data)
	nameAt := map[string]string{} // lower-case name -> ip
	for ip, names := range hosts {
		for _, n := range names {
			nameAt[strings.ToLower(n)] = ip
		}
	}
	var missing []string
	for _, vm := range cfg.ExpectedVMs {
		ip := canonicalIP(vm.IP)
		if slices.ContainsFunc(hosts[ip], func(n string) bool { return strings.EqualFold(n, vm.Name) }) {
			continue
		}
		entry := fmt.Sprintf("%s %s", vm.IP, vm.Name)
		if other, ok := nameAt[strings.ToLower(vm.Name)]; ok {
			entry += fmt.Sprintf(" (%s resolves to %s)", vm.Name, other)
		}
		missing = append(missing, entry)
	}
	if len(missing) > 0 {
		return fail("missing DNS entries: %s (in /%s)", list(missing), HostsFile)
	}
	return pass("all %d VMs have DNS entries", len(cfg.ExpectedVMs))
}

func checkHaproxy(ctx context.Context, a *Agent, cfg Config) outcome {
	if !cfg.Services.LB {
		return skip("network does not use load balancing from this router")
	}
	if len(cfg.LBRules) == 0 && cfg.MaxConnections == 0 {
		return pass("no load balancing rules expected")
	}
	data, err := os.ReadFile(a.Path(HaproxyConfigFile))
	if err != nil {
		return fail("cannot read /%s: %v", HaproxyConfigFile, err)
	}
	sections := parseHaproxy(data)
	var problems []string
	if cfg.MaxConnections > 0 {
		got := ""
		for _, s := range sections {
			if s.kind == "global" {
				if args, ok := s.directive("maxconn"); ok && len(args) > 0 {
					got = args[0]
				}
			}
		}
		if got != fmt.Sprint(cfg.MaxConnections) {
			if got == "" {
				got = "none"
			}
			problems = append(problems, fmt.Sprintf("global maxconn is %s, expected %d", got, cfg.MaxConnections))
		}
	}
	backends := map[string]haproxySection{}
	for _, s := range sections {
		if s.kind == "backend" && len(s.args) > 0 {
			backends[s.args[0]] = s
		}
	}
	for _, rule := range cfg.LBRules {
		addr := hostPort(rule.PublicIP, fmt.Sprint(rule.PublicPort))
		listener, ok := findListener(sections, addr)
		if !ok {
			problems = append(problems, fmt.Sprintf("no listener for LB rule %s", addr))
			continue
		}
		servers := listener.servers()
		if args, ok := listener.directive("default_backend"); ok && len(args) > 0 {
			servers = append(servers, backends[args[0]].servers()...)
		}
		var lacking []string
		for _, b := range rule.Backends {
			hp := hostPort(b.IP, fmt.Sprint(b.Port))
			if !slices.Contains(servers, hp) {
				lacking = append(lacking, hp)
			}
		}
		if len(lacking) > 0 {
			problems = append(problems, fmt.Sprintf("LB rule %s lacks backends %s", addr, list(lacking)))
		}
		if rule.MaxConn > 0 {
			got := "none"
			if args, ok := listener.directive("maxconn"); ok && len(args) > 0 {
				got = args[0]
			}
			if got != fmt.Sprint(rule.MaxConn) {
				problems = append(problems, fmt.Sprintf("LB rule %s maxconn is %s, expected %d", addr, got, rule.MaxConn))
			}
		}
	}
	if len(problems) > 0 {
		return fail("%s (in /%s)", list(problems), HaproxyConfigFile)
	}
	return pass("haproxy.cfg has all %d LB rules", len(cfg.LBRules))
}

// findListener finds the listen or frontend section bound to addr.
func findListener(sections []haproxySection, addr string) (haproxySection, bool) {
	for _, s := range sections {
		if s.kind != "listen" && s.kind != "frontend" {
			continue
		}
		if slices.Contains(s.binds(), addr) {
			return s, true
		}
	}
	return haproxySection{}, false
}

func checkIptables(ctx context.Context, a *Agent, cfg Config) outcome {
	if len(cfg.PortForwardingRules) == 0 {
		return pass("no port forwarding rules expected")
	}
	out, err := a.Sys.IptablesSave(ctx)
	if err != nil {
		return fail("cannot read the firewall: %v", err)
	}
	rules := parseIptablesSave(out)
	var missing []string
	for _, pf := range cfg.PortForwardingRules {
		if !slices.ContainsFunc(rules, func(r iptablesRule) bool { return r.matchesPortForwarding(pf) }) {
			missing = append(missing, fmt.Sprintf("%s %s:%s -> %s:%s", strings.ToLower(pf.Protocol),
				pf.PublicIP, portRange(pf.PublicPort, pf.PublicEndPort, "-"),
				pf.PrivateIP, portRange(pf.PrivatePort, pf.PrivateEndPort, "-")))
		}
	}
	if len(missing) > 0 {
		return fail("missing port forwarding rules in iptables-save: %s", list(missing))
	}
	return pass("iptables has all %d port forwarding rules", len(cfg.PortForwardingRules))
}
