package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHealthyRouterPassesEveryCheck(t *testing.T) {
	s := newSandbox(t)
	ctx := context.Background()

	basic := s.a.Check(ctx, s.cfg, Basic)
	assert.Equal(t, []string{CheckCPU, CheckDisk, CheckMemory, CheckGateways, CheckRouterVersion,
		CheckDHCPService, CheckLoadBalancingService, CheckWebServerService, CheckSSHService,
		CheckFilesystemWritable}, names(basic))
	advanced := s.a.Check(ctx, s.cfg, Advanced)
	assert.Equal(t, []string{CheckDHCP, CheckDNS, CheckHaproxy, CheckIptables, CheckFilesystemWritable}, names(advanced))

	for _, run := range []Run{basic, advanced} {
		for _, r := range run.Results {
			assert.True(t, r.Success, "%s: %s", r.CheckName, r.Details)
			assert.False(t, r.Skipped, r.CheckName)
			assert.NotEmpty(t, r.Details, r.CheckName)
			assert.Equal(t, run.Type, r.CheckType)
			assert.True(t, r.LastUpdated.After(r.StartTime), "%s ends after it starts", r.CheckName)
			assert.Equal(t, r.LastUpdated.Sub(r.StartTime).Milliseconds(), r.DurationMs)
			assert.False(t, r.StartTime.Before(run.StartTime))
			assert.False(t, r.LastUpdated.After(run.EndTime))
		}
	}
	assert.Contains(t, mustResult(t, basic, CheckGateways).Details, "all 2 gateways reachable")
	assert.Contains(t, mustResult(t, basic, CheckRouterVersion).Details, `template version "Cloudstack Release 4.15.0`)
	assert.Contains(t, mustResult(t, advanced, CheckDHCP).Details, "all 3 VMs have DHCP entries")
	assert.Contains(t, mustResult(t, advanced, CheckIptables).Details, "all 2 port forwarding rules")
	// The write probe is gone afterwards.
	_, err := os.Stat(filepath.Join(s.root, writableProbeFile))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// Each built-in check fails on its own fault, and its details name what is wrong.
func TestEachCheckFailsWithNamedDetails(t *testing.T) {
	edit := func(rel, old, new string) func(*sandbox) {
		return func(s *sandbox) {
			p := filepath.Join(s.root, rel)
			data, err := os.ReadFile(p)
			require.NoError(t, err)
			require.Contains(t, string(data), old)
			require.NoError(t, os.WriteFile(p, []byte(strings.Replace(string(data), old, new, 1)), 0o644))
		}
	}
	cases := []struct {
		name    string
		typ     CheckType
		check   string
		fault   func(*sandbox)
		details []string
	}{
		{"cpu above threshold", Basic, CheckCPU, func(s *sandbox) {
			s.cfg.Thresholds.MaxCPUPercent = 90
			s.sys.SetCPUUsage(97.25)
		}, []string{"CPU usage 97.2% is above the threshold of 90%"}},
		{"disk below threshold", Basic, CheckDisk, func(s *sandbox) {
			s.sys.SetDisk(2<<30, 50<<20)
		}, []string{"free disk space 50 MB on / is below the threshold of 100 MB"}},
		{"disk below custom threshold", Basic, CheckDisk, func(s *sandbox) {
			s.cfg.Thresholds.FreeDiskMB = 2000
		}, []string{"free disk space 1536 MB", "threshold of 2000 MB"}},
		{"memory above threshold", Basic, CheckMemory, func(s *sandbox) {
			s.cfg.Thresholds.MaxMemoryPercent = 80
			s.sys.SetMemory(MemoryStats{TotalBytes: 1000 << 20, AvailableBytes: 50 << 20})
		}, []string{"memory usage 95.0% (950 of 1000 MB) is above the threshold of 80%"}},
		{"gateway unreachable", Basic, CheckGateways, func(s *sandbox) {
			s.sys.SetUnreachable("203.0.113.1")
		}, []string{"unreachable gateways: 203.0.113.1"}},
		{"template version", Basic, CheckRouterVersion, edit(ReleaseFile, "4.15.0", "4.14.1"),
			[]string{`template version mismatch: expected "4.15.0", found "Cloudstack Release 4.14.1`}},
		{"scripts version", Basic, CheckRouterVersion, edit(ScriptsSignatureFile, "9f1c", "0000"),
			[]string{`scripts version mismatch: expected "9f1c8fd0bd0e4ff6bde0a2bbce5e2f07", found "00008fd0bd0e4ff6bde0a2bbce5e2f07"`}},
		{"release file missing", Basic, CheckRouterVersion, func(s *sandbox) {
			require.NoError(t, os.Remove(filepath.Join(s.root, ReleaseFile)))
		}, []string{"cannot read template version", "cloudstack-release"}},
		{"dnsmasq down", Basic, CheckDHCPService, func(s *sandbox) {
			s.sys.SetService("dnsmasq", false, false)
		}, []string{"dnsmasq is not running (service monitoring is off, not restarted)"}},
		{"haproxy down", Basic, CheckLoadBalancingService, func(s *sandbox) {
			s.sys.SetService("haproxy", false, false)
		}, []string{"haproxy is not running"}},
		{"apache2 down", Basic, CheckWebServerService, func(s *sandbox) {
			s.sys.SetService("apache2", false, false)
		}, []string{"apache2 is not running"}},
		{"sshd down", Basic, CheckSSHService, func(s *sandbox) {
			s.sys.SetService("sshd", false, false)
		}, []string{"ssh is not running"}},
		{"dhcp entry missing", Advanced, CheckDHCP, edit(DHCPHostsFile, "02:00:0a:00:00:02,10.1.1.12,vm-2,infinite\n", ""),
			[]string{"missing DHCP entries: 02:00:0a:00:00:02 10.1.1.12 vm-2"}},
		{"dhcp entry wrong ip", Advanced, CheckDHCP, edit(DHCPHostsFile, "10.1.1.12", "10.1.1.99"),
			[]string{"wrong DHCP entries: 02:00:0a:00:00:02 has 10.1.1.99 vm-2, expected 10.1.1.12 vm-2"}},
		{"dns entry missing", Advanced, CheckDNS, edit(HostsFile, "10.1.1.12 vm-2\n", ""),
			[]string{"missing DNS entries: 10.1.1.12 vm-2"}},
		{"dns entry at wrong address", Advanced, CheckDNS, edit(HostsFile, "10.1.1.12 vm-2", "10.1.1.77 vm-2"),
			[]string{"missing DNS entries: 10.1.1.12 vm-2 (vm-2 resolves to 10.1.1.77)"}},
		{"lb backend missing", Advanced, CheckHaproxy, edit(HaproxyConfigFile, "server 203_0_113_10-80_1 10.1.1.12:80 check\n", ""),
			[]string{"LB rule 203.0.113.10:80 lacks backends 10.1.1.12:80"}},
		{"lb listener missing", Advanced, CheckHaproxy, edit(HaproxyConfigFile, "203.0.113.10:80\n", "203.0.113.10:8080\n"),
			[]string{"no listener for LB rule 203.0.113.10:80"}},
		{"lb maxconn", Advanced, CheckHaproxy, edit(HaproxyConfigFile, "maxconn 500", "maxconn 50"),
			[]string{"LB rule 203.0.113.10:80 maxconn is 50, expected 500"}},
		{"global maxconn", Advanced, CheckHaproxy, edit(HaproxyConfigFile, "maxconn 4096", "maxconn 2000"),
			[]string{"global maxconn is 2000, expected 4096"}},
		{"port forwarding missing", Advanced, CheckIptables, edit(IptablesSaveFile, "--dport 2222 -j DNAT", "--dport 2223 -j DNAT"),
			[]string{"missing port forwarding rules in iptables-save: tcp 203.0.113.10:2222 -> 10.1.1.11:22"}},
		{"port forwarding range wrong", Advanced, CheckIptables, edit(IptablesSaveFile, "10.1.1.12:6000-6010", "10.1.1.12:6000-6009"),
			[]string{"udp 203.0.113.10:5000-5010 -> 10.1.1.12:6000-6010"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			tc.fault(s)
			run := s.a.Check(context.Background(), s.cfg, tc.typ)
			r := mustResult(t, run, tc.check)
			assert.False(t, r.Success, "%s should fail", tc.check)
			for _, d := range tc.details {
				assert.Contains(t, r.Details, d)
			}
			// Exactly one check fails: the fault is not blamed on anything else.
			require.Len(t, run.Failed(), 1, "failed: %+v", run.Failed())
		})
	}
}

func TestExcludedChecksAreNotRun(t *testing.T) {
	s := newSandbox(t)
	writeTestFile(t, s.root, CustomChecksDir+"/disk_smart.sh", "#!/bin/sh\necho smart ok\n", 0o755)
	s.sys.SetCPUUsage(100)
	s.cfg.Thresholds.MaxCPUPercent = 50
	s.cfg.ExcludedChecks = []string{CheckCPU, " disk_smart.sh", CheckDNS}
	basic := s.a.Check(context.Background(), s.cfg, Basic)
	assert.NotContains(t, names(basic), CheckCPU)
	assert.NotContains(t, names(basic), "disk_smart.sh")
	assert.Contains(t, names(basic), CheckDisk)
	assert.Empty(t, basic.Failed())
	advanced := s.a.Check(context.Background(), s.cfg, Advanced)
	assert.NotContains(t, names(advanced), CheckDNS)
	assert.Contains(t, names(advanced), CheckDHCP)
}

func TestGatewaysCheckSkippedOnBackupAndWithoutGuestNetwork(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		reason string
	}{
		{"backup", func(c *Config) { c.RedundantState = RedundantBackup }, "BACKUP of a redundant pair"},
		{"no guest network", func(c *Config) { c.HasGuestNetwork = false }, "no guest network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			s.sys.SetReachable() // nothing answers: a BACKUP's guest interfaces are down
			tc.mutate(&s.cfg)
			r := mustResult(t, s.a.Check(context.Background(), s.cfg, Basic), CheckGateways)
			assert.True(t, r.Success)
			assert.True(t, r.Skipped)
			assert.Contains(t, r.Details, "skipped: ")
			assert.Contains(t, r.Details, tc.reason)
		})
	}
	// The MASTER of the same pair is checked, and fails.
	s := newSandbox(t)
	s.sys.SetReachable()
	s.cfg.RedundantState = RedundantMaster
	r := mustResult(t, s.a.Check(context.Background(), s.cfg, Basic), CheckGateways)
	assert.False(t, r.Success)
	assert.Contains(t, r.Details, "unreachable gateways: 10.1.1.1")
}

// A VPC tier with ConfigDrive and no LB: the router's DHCP/DNS/LB/user data checks are skipped,
// not failed, even though dnsmasq, haproxy and apache2 are down and their files are empty.
func TestChecksOfServicesNotUsedAreSkipped(t *testing.T) {
	s := newSandbox(t)
	s.cfg.Services = Services{}
	for _, svc := range []string{"dnsmasq", "haproxy", "apache2"} {
		s.sys.SetService(svc, false, false)
	}
	for _, f := range []string{DHCPHostsFile, HostsFile, HaproxyConfigFile} {
		writeTestFile(t, s.root, f, "", 0o644)
	}
	ctx := context.Background()
	basic := s.a.Check(ctx, s.cfg, Basic)
	advanced := s.a.Check(ctx, s.cfg, Advanced)
	assert.Empty(t, basic.Failed())
	assert.Empty(t, advanced.Failed())
	for _, c := range []struct {
		run   Run
		check string
		what  string
	}{
		{basic, CheckDHCPService, "DHCP or DNS"},
		{basic, CheckLoadBalancingService, "load balancing"},
		{basic, CheckWebServerService, "user data"},
		{advanced, CheckDHCP, "DHCP"},
		{advanced, CheckDNS, "DNS"},
		{advanced, CheckHaproxy, "load balancing"},
	} {
		r := mustResult(t, c.run, c.check)
		assert.True(t, r.Skipped, c.check)
		assert.Equal(t, "skipped: network does not use "+c.what+" from this router", r.Details)
	}
	// ssh is needed by every router and is still checked.
	assert.False(t, mustResult(t, basic, CheckSSHService).Skipped)

	// DNS alone keeps dnsmasq checked.
	s.cfg.Services.DNS = true
	r := mustResult(t, s.a.Check(ctx, s.cfg, Basic), CheckDHCPService)
	assert.False(t, r.Success)
	assert.Contains(t, r.Details, "dnsmasq is not running")
}

func TestServiceMonitoringRestartsDownService(t *testing.T) {
	s := newSandbox(t)
	s.cfg.ServiceMonitoring = true
	s.sys.SetService("haproxy", false, false)
	r := mustResult(t, s.a.Check(context.Background(), s.cfg, Basic), CheckLoadBalancingService)
	assert.True(t, r.Success, r.Details)
	assert.Equal(t, "haproxy was not running; restarted by service monitoring and running again", r.Details)
	assert.Equal(t, 1, s.sys.ServiceRestarts("haproxy"))
	active, err := s.sys.ServiceActive(context.Background(), "haproxy")
	require.NoError(t, err)
	assert.True(t, active)
	assert.Zero(t, s.sys.ServiceRestarts("dnsmasq"), "running services are not restarted")

	// A restart that fails fails the check and says why.
	s.sys.SetService("apache2", false, true)
	r = mustResult(t, s.a.Check(context.Background(), s.cfg, Basic), CheckWebServerService)
	assert.False(t, r.Success)
	assert.Contains(t, r.Details, "apache2 was not running and restarting it failed: ")
	assert.Contains(t, r.Details, "apache2.service failed")
	assert.Equal(t, 1, s.sys.ServiceRestarts("apache2"))

	// Without service monitoring nothing is restarted.
	s.cfg.ServiceMonitoring = false
	s.sys.SetService("ssh", false, false)
	r = mustResult(t, s.a.Check(context.Background(), s.cfg, Basic), CheckSSHService)
	assert.False(t, r.Success)
	assert.Zero(t, s.sys.ServiceRestarts("ssh"))
}

func TestDisabledConfigRunsNothing(t *testing.T) {
	s := newSandbox(t)
	s.cfg.Enabled = false
	run := s.a.Check(context.Background(), s.cfg, Basic)
	assert.True(t, run.Disabled)
	assert.Empty(t, run.Results)
}

func TestNoExpectationsPass(t *testing.T) {
	s := newSandbox(t)
	cfg := Config{Enabled: true, HasGuestNetwork: true, Services: Services{DHCP: true, DNS: true, LB: true, UserData: true}}
	run := s.a.Check(context.Background(), cfg, Advanced)
	assert.Empty(t, run.Failed())
	assert.Equal(t, "no VMs expected on this network", mustResult(t, run, CheckDHCP).Details)
	assert.Equal(t, "no port forwarding rules expected", mustResult(t, run, CheckIptables).Details)
	assert.Equal(t, "no expected template or scripts version configured",
		mustResult(t, s.a.Check(context.Background(), cfg, Basic), CheckRouterVersion).Details)
}

func TestLongFailureListsAreBounded(t *testing.T) {
	s := newSandbox(t)
	for i := range 30 {
		s.cfg.ExpectedVMs = append(s.cfg.ExpectedVMs, ExpectedVM{
			MAC: fmt.Sprintf("02:00:0b:00:00:%02x", i), IP: fmt.Sprintf("10.1.2.%d", i+10), Name: fmt.Sprintf("extra-%d", i),
		})
	}
	r := mustResult(t, s.a.Check(context.Background(), s.cfg, Advanced), CheckDHCP)
	assert.False(t, r.Success)
	assert.Contains(t, r.Details, "02:00:0b:00:00:00 10.1.2.10 extra-0")
	assert.Contains(t, r.Details, "and 10 more")
	assert.NotContains(t, r.Details, "extra-29")
}
