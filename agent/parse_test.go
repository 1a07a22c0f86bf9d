package agent

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseDHCPHosts(t *testing.T) {
	got := parseDHCPHosts([]byte(`# comment
02:00:0A:00:00:01,10.1.1.11,vm-1,infinite
02:00:0a:00:00:02,set:tagged,10.1.1.12,vm-2,3600
02:00:0a:00:00:03,[fd00::3],vm-3,1h
garbage line
`))
	assert.Equal(t, []dhcpHost{
		{"02:00:0a:00:00:01", "10.1.1.11", "vm-1"},
		{"02:00:0a:00:00:02", "10.1.1.12", "vm-2"},
		{"02:00:0a:00:00:03", "fd00::3", "vm-3"},
	}, got)
}

func TestParseHaproxyFrontendBackend(t *testing.T) {
	cfg := parseHaproxy([]byte(`global
  maxconn 2000 # comment
frontend web
  bind 198.51.100.7:443,198.51.100.8:443
  maxconn 100
  default_backend pool
backend pool
  server a 10.0.0.1:8443 check
  server b [fd00::2]:8443 check
`))
	require.Len(t, cfg, 3)
	l, ok := findListener(cfg, "198.51.100.8:443")
	require.True(t, ok)
	assert.Equal(t, "web", l.args[0])
	_, ok = findListener(cfg, "198.51.100.9:443")
	assert.False(t, ok)

	s := newSandbox(t)
	writeTestFile(t, s.root, HaproxyConfigFile, string(mustRead(t, s.root, HaproxyConfigFile))+`
frontend web
  bind 198.51.100.7:443
  maxconn 100
  default_backend pool
backend pool
  server a 10.0.0.1:8443 check
  server b [fd00::2]:8443 check
`, 0o644)
	s.cfg.LBRules = append(s.cfg.LBRules, LBRule{PublicIP: "198.51.100.7", PublicPort: 443, MaxConn: 100,
		Backends: []LBBackend{{IP: "10.0.0.1", Port: 8443}, {IP: "fd00:0::2", Port: 8443}}})
	r := mustResult(t, s.a.Check(context.Background(), s.cfg, Advanced), CheckHaproxy)
	assert.True(t, r.Success, r.Details)
}

func mustRead(t *testing.T, root, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(root + "/" + rel)
	require.NoError(t, err)
	return data
}

func TestIptablesMatching(t *testing.T) {
	rules := parseIptablesSave(fixtureIptables)
	pf := PortForwarding{PublicIP: "203.0.113.10", PublicPort: 2222, PrivateIP: "10.1.1.11", PrivatePort: 22, Protocol: "tcp"}
	count := 0
	for _, r := range rules {
		if r.matchesPortForwarding(pf) {
			count++
		}
	}
	assert.Equal(t, 1, count)
	// The FORWARD rule of the filter table is not a DNAT rule; udp is not tcp.
	pf.Protocol = "udp"
	for _, r := range rules {
		assert.False(t, r.matchesPortForwarding(pf), "%+v", r)
	}
	// A negated destination does not count.
	neg := parseIptablesSave("*nat\n-A PREROUTING ! -d 203.0.113.10/32 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.1.1.11:22\nCOMMIT\n")
	pf.Protocol = "tcp"
	assert.False(t, neg[0].matchesPortForwarding(pf))
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, fixtureConfig().Validate())
	bad := fixtureConfig()
	bad.ExpectedVMs[0].MAC = "02:00"
	bad.PortForwardingRules[0].PublicPort = 70000
	bad.PortForwardingRules[1].Protocol = "icmp"
	bad.LBRules[0].Backends[0].IP = "nope"
	bad.Thresholds.FreeDiskMB = -1
	err := bad.Validate()
	require.Error(t, err)
	for _, want := range []string{"expectedVms[0] (vm-1): mac", "portForwardingRules[0]: ports", `protocol "icmp"`,
		"lbRules[0].backends[0]: ip", "thresholds must not be negative"} {
		assert.Contains(t, err.Error(), want)
	}
}

// The real Linux System, on the machine the tests run on.
func TestLinuxSystemOnThisMachine(t *testing.T) {
	sys := NewLinuxSystem()
	sys.CPUSampleInterval = 100 * time.Millisecond
	ctx := context.Background()

	usage, err := sys.CPUUsage(ctx)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, usage, 0.0)
	assert.LessOrEqual(t, usage, 100.0)

	m, err := sys.Memory()
	require.NoError(t, err)
	assert.Greater(t, m.TotalBytes, uint64(64<<20))
	assert.LessOrEqual(t, m.AvailableBytes, m.TotalBytes)

	d, err := sys.Statfs(t.TempDir())
	require.NoError(t, err)
	assert.Positive(t, d.TotalBytes)
	assert.LessOrEqual(t, d.FreeBytes, d.TotalBytes)
	assert.False(t, d.ReadOnly)
	ro, err := sys.Statfs("/proc/sys")
	require.NoError(t, err)
	t.Logf("/proc/sys read-only flag: %v", ro.ReadOnly)

	res, err := sys.Exec(ctx, Command{Path: "/bin/sh", Args: []string{"-c", "echo out; echo err >&2; exit 7"}})
	require.NoError(t, err)
	assert.Equal(t, ExecResult{Stdout: []byte("out\n"), Stderr: []byte("err\n"), ExitCode: 7}, res)
	_, err = sys.Exec(ctx, Command{Path: "/nonexistent/check"})
	assert.Error(t, err)

	// A real atomic write and remove.
	dir := t.TempDir()
	require.NoError(t, sys.WriteFile(dir+"/a/b.json", []byte("{}"), 0o644))
	data, err := os.ReadFile(dir + "/a/b.json")
	require.NoError(t, err)
	assert.Equal(t, "{}", string(data))
	require.NoError(t, sys.Remove(dir+"/a/b.json"))

	if _, err := exec.LookPath("ping"); err == nil {
		if err := sys.Ping(ctx, "127.0.0.1"); err != nil {
			t.Logf("ping 127.0.0.1 failed here (no raw socket privilege?): %v", err)
		}
	}
	assert.Error(t, sys.Ping(ctx, "127.0.0.1; rm -rf /"), "not an address, never run")
	_, err = sys.ServiceActive(ctx, "ssh; reboot")
	assert.Error(t, err)
}

func TestParseProcFiles(t *testing.T) {
	a, err := parseProcStat([]byte("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n"))
	require.NoError(t, err)
	b, err := parseProcStat([]byte("cpu  150 0 150 750 150 0 0 0 0 0\n"))
	require.NoError(t, err)
	usage, err := cpuUsageBetween(a, b)
	require.NoError(t, err)
	assert.InDelta(t, 50.0, usage, 0.001) // 100 busy of 200 jiffies
	_, err = parseProcStat([]byte("intr 1 2 3\n"))
	assert.Error(t, err)

	m, err := parseMeminfo([]byte("MemTotal:        1000000 kB\nMemFree:          100000 kB\nMemAvailable:     250000 kB\n"))
	require.NoError(t, err)
	assert.InDelta(t, 75.0, m.UsedPercent(), 0.001)
	m, err = parseMeminfo([]byte("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 50 kB\n"))
	require.NoError(t, err)
	assert.Equal(t, uint64(200*1024), m.AvailableBytes)
	_, err = parseMeminfo([]byte(strings.Repeat("x\n", 3)))
	assert.Error(t, err)
}
