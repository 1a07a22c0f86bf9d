package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/hypervisors/sshexec/sshtest"
)

func TestKVMRouterThroughHostRunsRealAgent(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{})
	spec := kvmSpec(1, "kvm-host-1")
	require.NoError(t, f.Add(spec))
	assert.NotEmpty(t, f.HostAddr("kvm-host-1"))
	assert.Empty(t, f.HostAddr("no-such-host"))

	c := mustRouterClient(t, f, spec.ID, key)
	pushConfig(t, c, spec.Config())

	basic := runChecks(t, c, agent.Basic)
	assert.Empty(t, basic.Failed(), "a fresh router is healthy: %+v", basic.Failed())
	assert.Equal(t, spec.Name, basic.RouterName)
	assert.Equal(t, append(agent.BuiltinChecks(agent.Basic), SampleCheckName), names(basic))
	sample, _ := basic.Result(SampleCheckName)
	assert.Equal(t, "/etc/hosts present", sample.Details)

	advanced := runChecks(t, c, agent.Advanced)
	assert.Empty(t, advanced.Failed(), "%+v", advanced.Failed())
	assert.Equal(t, agent.BuiltinChecks(agent.Advanced), names(advanced), "the sample check is basic only")
	r, _ := advanced.Result(agent.CheckDHCP)
	assert.Equal(t, "all 3 VMs have DHCP entries", r.Details)

	// The results files are in the router's sandbox, and `results` prints them.
	root, err := f.Root(spec.ID)
	require.NoError(t, err)
	assert.FileExists(t, filepath.Join(root, agent.BasicResultsFile))
	assert.FileExists(t, filepath.Join(root, agent.AdvancedResultsFile))
	assert.FileExists(t, filepath.Join(root, agent.ConfigFile))
	code, out, _, err := remote(c, nil, "sysvm-agent", "results", "advanced")
	require.NoError(t, err)
	require.Equal(t, 0, code)
	var fetched agent.Run
	require.NoError(t, json.Unmarshal([]byte(out), &fetched))
	assert.Equal(t, advanced.StartTime.UnixNano(), fetched.StartTime.UnixNano())

	code, out, _, err = remote(c, nil, "/usr/local/bin/sysvm-agent", "version")
	require.NoError(t, err)
	require.Equal(t, 0, code)
	var v agent.VersionInfo
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	assert.Contains(t, v.TemplateVersion, "Cloudstack Release 4.15.0")
	assert.Equal(t, spec.ScriptsVersion, v.ScriptsVersion)
}

func TestVMwareRouterDirectOnPrivateIP(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{})
	spec := vmwareSpec(7)
	require.NoError(t, f.Add(spec))
	assert.Empty(t, f.Hosts(), "a VMware router needs no host listener")

	c := mustRouterClient(t, f, spec.ID, key)
	pushConfig(t, c, spec.Config())
	assert.Empty(t, runChecks(t, c, agent.Basic).Failed())

	// Only the private IP on 3922 of a VMware router is in process; nothing goes off the box.
	_, err := f.DialContext(context.Background(), "tcp", "10.2.0.200:3922")
	assert.ErrorIs(t, err, syscall.EHOSTUNREACH)
	_, err = f.DialContext(context.Background(), "tcp", spec.PrivateIP+":22")
	assert.ErrorIs(t, err, syscall.EHOSTUNREACH)
}

func TestAuthentication(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{})
	spec := kvmSpec(1, "h1")
	require.NoError(t, f.Add(spec))
	stranger := sshtest.NewSigner(t)

	_, err := ssh.Dial("tcp", f.HostAddr("h1"), clientConfig(f, stranger, "root"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unable to authenticate")
	_, err = ssh.Dial("tcp", f.HostAddr("h1"), clientConfig(f, key, "admin"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unable to authenticate")

	// The router checks the key too: through the host with the right key, then the wrong one.
	host, err := ssh.Dial("tcp", f.HostAddr("h1"), clientConfig(f, key, "root"))
	require.NoError(t, err)
	defer host.Close()
	conn, err := host.Dial("tcp", spec.LinkLocalIP+":3922")
	require.NoError(t, err)
	_, _, _, err = ssh.NewClientConn(conn, spec.LinkLocalIP+":3922", clientConfig(f, stranger, "root"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unable to authenticate")

	// A host does not give shells.
	sess, err := host.NewSession()
	if err == nil {
		sess.Close()
	}
	assert.Error(t, err)
}

func TestHostForwardsOnlyToItsRoutersOn3922(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{})
	a, b := kvmSpec(1, "h1"), kvmSpec(2, "h2")
	require.NoError(t, f.Add(a))
	require.NoError(t, f.Add(b))
	host, err := ssh.Dial("tcp", f.HostAddr("h1"), clientConfig(f, key, "root"))
	require.NoError(t, err)
	defer host.Close()

	var open *ssh.OpenChannelError
	_, err = host.Dial("tcp", b.LinkLocalIP+":3922")
	require.ErrorAs(t, err, &open, "a router of another host")
	assert.Equal(t, ssh.ConnectionFailed, open.Reason)
	assert.Contains(t, open.Message, "No route to host")
	_, err = host.Dial("tcp", a.LinkLocalIP+":22")
	require.ErrorAs(t, err, &open)
	assert.Contains(t, open.Message, "Connection refused")
	_, err = host.Dial("tcp", "127.0.0.1:22")
	require.ErrorAs(t, err, &open)
}

// Every fault makes exactly the right check fail, with details naming what is wrong, and
// Clear brings the router back to passing everything.
func TestFaultsFailTheRightCheckAndClearRestores(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{})
	spec := kvmSpec(3, "h1")
	require.NoError(t, f.Add(spec))
	c := mustRouterClient(t, f, spec.ID, key)
	cfg := spec.Config()
	cfg.Thresholds = agent.Thresholds{MaxCPUPercent: 95, MaxMemoryPercent: 95}
	pushConfig(t, c, cfg)
	vm := spec.ExpectedVMs[0]

	cases := []struct {
		fault   Fault
		typ     agent.CheckType
		check   string
		details string
	}{
		{Fault{Name: FaultServiceDown, Service: "dnsmasq"}, agent.Basic, agent.CheckDHCPService, "dnsmasq is not running"},
		{Fault{Name: FaultServiceDown, Service: "haproxy"}, agent.Basic, agent.CheckLoadBalancingService, "haproxy is not running"},
		{Fault{Name: FaultServiceDown, Service: "apache2"}, agent.Basic, agent.CheckWebServerService, "apache2 is not running"},
		{Fault{Name: FaultServiceDown, Service: "sshd"}, agent.Basic, agent.CheckSSHService, "ssh is not running"},
		{Fault{Name: FaultServiceBroken, Service: "haproxy"}, agent.Basic, agent.CheckLoadBalancingService, "haproxy is not running"},
		{Fault{Name: FaultDiskFull}, agent.Basic, agent.CheckDisk, "free disk space 4 MB on / is below the threshold of 100 MB"},
		{Fault{Name: FaultReadOnlyFS}, agent.Basic, agent.CheckFilesystemWritable, "root file system is read-only"},
		{Fault{Name: FaultGatewayUnreachable}, agent.Basic, agent.CheckGateways, "unreachable gateways: 10.1.1.1"},
		{Fault{Name: FaultVersionMismatch}, agent.Basic, agent.CheckRouterVersion, `expected "4.15.0", found "Cloudstack Release 4.14.0`},
		{Fault{Name: FaultHighCPU}, agent.Basic, agent.CheckCPU, "CPU usage 100.0% is above the threshold of 95%"},
		{Fault{Name: FaultHighMemory}, agent.Basic, agent.CheckMemory, "above the threshold of 95%"},
		{Fault{Name: FaultDNSEntryMissing}, agent.Advanced, agent.CheckDNS, "missing DNS entries: " + vm.IP + " " + vm.Name},
		{Fault{Name: FaultDHCPEntryMissing}, agent.Advanced, agent.CheckDHCP, "missing DHCP entries: " + vm.MAC + " " + vm.IP + " " + vm.Name},
		{Fault{Name: FaultPortForwardMissing}, agent.Advanced, agent.CheckIptables, "tcp 203.0.113.10:2222 -> 10.1.1.11:22"},
		{Fault{Name: FaultLBRuleMissing}, agent.Advanced, agent.CheckHaproxy, "no listener for LB rule 203.0.113.10:80"},
	}
	covered := map[string]bool{FaultUnreachable: true} // unreachable: TestUnreachableFault
	for _, tc := range cases {
		t.Run(tc.fault.String(), func(t *testing.T) {
			covered[tc.fault.Name] = true
			require.NoError(t, f.Inject(spec.ID, tc.fault))
			faults, err := f.Faults(spec.ID)
			require.NoError(t, err)
			assert.Equal(t, []Fault{tc.fault}, faults)

			run := runChecks(t, c, tc.typ)
			assert.Equal(t, []string{tc.check}, failedNames(run))
			r, ok := run.Result(tc.check)
			require.True(t, ok)
			assert.Contains(t, r.Details, tc.details)

			require.NoError(t, f.Clear(spec.ID))
			for _, typ := range []agent.CheckType{agent.Basic, agent.Advanced} {
				assert.Empty(t, failedNames(runChecks(t, c, typ)), "after Clear, %s", typ)
			}
		})
	}
	for _, name := range FaultNames() {
		assert.True(t, covered[name], "fault %s is tested", name)
	}
}

func TestServiceMonitoringOverSSH(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{})
	spec := kvmSpec(4, "h1")
	require.NoError(t, f.Add(spec))
	c := mustRouterClient(t, f, spec.ID, key)
	cfg := spec.Config()
	cfg.ServiceMonitoring = true
	pushConfig(t, c, cfg)
	sys, err := f.System(spec.ID)
	require.NoError(t, err)

	require.NoError(t, f.Inject(spec.ID, Fault{Name: FaultServiceDown, Service: "haproxy"}))
	require.NoError(t, f.Inject(spec.ID, Fault{Name: FaultServiceBroken, Service: "apache2"}))
	run := runChecks(t, c, agent.Basic)
	assert.Equal(t, []string{agent.CheckWebServerService}, failedNames(run))
	r, _ := run.Result(agent.CheckLoadBalancingService)
	assert.Contains(t, r.Details, "restarted by service monitoring")
	r, _ = run.Result(agent.CheckWebServerService)
	assert.Contains(t, r.Details, "apache2 was not running and restarting it failed")
	assert.Equal(t, 1, sys.ServiceRestarts("haproxy"))
	assert.Equal(t, 1, sys.ServiceRestarts("apache2"))

	// The crashed daemon stays up after its restart; the broken one keeps failing.
	run = runChecks(t, c, agent.Basic)
	assert.Equal(t, []string{agent.CheckWebServerService}, failedNames(run))
	assert.Equal(t, 1, sys.ServiceRestarts("haproxy"))
	assert.Equal(t, 2, sys.ServiceRestarts("apache2"))
}

func TestUnreachableFault(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{})
	kvm, vmw := kvmSpec(5, "h1"), vmwareSpec(6)
	require.NoError(t, f.Add(kvm))
	require.NoError(t, f.Add(vmw))
	c, host, err := routerClient(t, f, kvm.ID, key)
	require.NoError(t, err)
	defer host.Close()
	pushConfig(t, c, kvm.Config())

	require.NoError(t, f.Inject(kvm.ID, Fault{Name: FaultUnreachable}))
	require.NoError(t, f.Inject(vmw.ID, Fault{Name: FaultUnreachable}))
	// The open connection is dropped.
	waitErr := make(chan error, 1)
	go func() { waitErr <- c.Wait() }()
	select {
	case <-waitErr:
	case <-time.After(5 * time.Second):
		t.Fatal("the router's open connection was not closed")
	}
	// New connections are refused along both paths.
	var open *ssh.OpenChannelError
	_, err = host.Dial("tcp", kvm.LinkLocalIP+":3922")
	require.ErrorAs(t, err, &open)
	assert.Contains(t, open.Message, "No route to host")
	_, err = f.DialContext(context.Background(), "tcp", vmw.PrivateIP+":3922")
	assert.ErrorIs(t, err, syscall.EHOSTUNREACH)

	require.NoError(t, f.Clear(kvm.ID))
	require.NoError(t, f.Clear(vmw.ID))
	c2 := mustRouterClient(t, f, kvm.ID, key)
	assert.Empty(t, runChecks(t, c2, agent.Basic).Failed())
	mustRouterClient(t, f, vmw.ID, key)
}

func TestUpdateKeepsFilesInLineAndMovesRouter(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{})
	spec := kvmSpec(8, "h1")
	require.NoError(t, f.Add(spec))
	c := mustRouterClient(t, f, spec.ID, key)

	// The platform now expects a fourth VM the router's files do not have yet.
	updated := spec
	updated.ExpectedVMs = append(append([]agent.ExpectedVM{}, spec.ExpectedVMs...),
		agent.ExpectedVM{MAC: "02:00:00:08:00:04", IP: "10.1.1.14", Name: "vm-4"})
	pushConfig(t, c, updated.Config())
	run := runChecks(t, c, agent.Advanced)
	assert.ElementsMatch(t, []string{agent.CheckDHCP, agent.CheckDNS}, failedNames(run))
	r, _ := run.Result(agent.CheckDNS)
	assert.Contains(t, r.Details, "10.1.1.14 vm-4")

	// The inventory change reaches the router.
	require.NoError(t, f.Update(updated))
	assert.Empty(t, runChecks(t, c, agent.Advanced).Failed())

	// Migration to another host: reachable there, not on the old host.
	moved := updated
	moved.HostName = "h2"
	require.NoError(t, f.Update(moved))
	target, err := f.Target(spec.ID)
	require.NoError(t, err)
	assert.Equal(t, f.HostAddr("h2"), target.HostAddress+":"+strconv.Itoa(target.HostPort))
	old, err := ssh.Dial("tcp", f.HostAddr("h1"), clientConfig(f, key, "root"))
	require.NoError(t, err)
	defer old.Close()
	_, err = old.Dial("tcp", spec.LinkLocalIP+":3922")
	assert.Error(t, err)
	c2 := mustRouterClient(t, f, spec.ID, key)
	assert.Empty(t, runChecks(t, c2, agent.Advanced).Failed())
}

func TestAddValidatesAndRemoveCleansUp(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{})
	spec := kvmSpec(9, "h1")
	require.NoError(t, f.Add(spec))
	assert.Error(t, f.Add(spec), "duplicate ID")
	dup := kvmSpec(10, "h1")
	dup.LinkLocalIP = spec.LinkLocalIP
	assert.ErrorContains(t, f.Add(dup), "is taken on host h1")
	bad := kvmSpec(11, "h1")
	bad.LinkLocalIP = ""
	assert.ErrorContains(t, f.Add(bad), "LinkLocalIP")
	bad = vmwareSpec(12)
	bad.PrivateIP = "not-an-ip"
	assert.ErrorContains(t, f.Add(bad), "PrivateIP")
	bad = kvmSpec(13, "h1")
	bad.Gateways = []string{"10.1.1"}
	assert.ErrorContains(t, f.Add(bad), "gateways[0]")
	assert.ErrorContains(t, f.Inject(spec.ID, Fault{Name: "meteor-strike"}), "unknown fault")
	assert.ErrorContains(t, f.Inject(spec.ID, Fault{Name: FaultServiceDown, Service: "nginx"}), "want dnsmasq")
	empty := vmwareSpec(14)
	empty.ExpectedVMs, empty.PortForwardingRules = nil, nil
	require.NoError(t, f.Add(empty))
	assert.ErrorContains(t, f.Inject(empty.ID, Fault{Name: FaultDNSEntryMissing}), "no expected VMs")
	assert.ErrorContains(t, f.Inject(empty.ID, Fault{Name: FaultPortForwardMissing}), "no port forwarding rules")
	assert.Equal(t, []string{empty.ID, spec.ID}, f.Routers(), "sorted")

	root, err := f.Root(spec.ID)
	require.NoError(t, err)
	c := mustRouterClient(t, f, spec.ID, key)
	require.NoError(t, f.Remove(spec.ID))
	assert.NoDirExists(t, root)
	_, _, _, err = remote(c, nil, "sysvm-agent", "version")
	assert.Error(t, err, "the removed router's connection is closed")
	_, _, err = routerClient(t, f, spec.ID, key)
	assert.Error(t, err)
	assert.Error(t, f.Remove(spec.ID))
	// The link-local IP is free again.
	require.NoError(t, f.Add(dup))
}

func TestExecCommandLineHandling(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{Commands: map[string]CommandFunc{
		"ping": func(ctx context.Context, id string, argv []string, _ io.Reader, stdout, _ io.Writer) int {
			_, _ = io.WriteString(stdout, id+": "+strings.Join(argv, "|")+"\n")
			return 0
		},
	}})
	spec := vmwareSpec(1)
	require.NoError(t, f.Add(spec))
	c := mustRouterClient(t, f, spec.ID, key)

	code, out, _, err := remote(c, nil, "ping", "-c", "3", "it's 10.0.0.1")
	require.NoError(t, err)
	assert.Equal(t, 0, code)
	assert.Equal(t, spec.ID+": ping|-c|3|it's 10.0.0.1\n", out, "single-quoted argv arrives word for word")

	code, _, stderr, err := remote(c, nil, "rm", "-rf", "/")
	require.NoError(t, err)
	assert.Equal(t, 127, code)
	assert.Contains(t, stderr, "rm: not found")

	code, _, stderr, err = remote(c, nil, "sysvm-agent", "--root", "/etc", "version")
	require.NoError(t, err)
	assert.Equal(t, agent.ExitUsage, code)
	assert.Contains(t, stderr, "--root is not allowed")

	// An unquoted shell construct is refused, not run word by word.
	sess, err := c.NewSession()
	require.NoError(t, err)
	err = sess.Run("sysvm-agent version; reboot")
	var exit *ssh.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, 2, exit.ExitStatus())
}

// A signal from the client (sshexec sends KILL on its run timeout) stops the command.
func TestSignalStopsCommand(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{})
	spec := kvmSpec(2, "h1")
	require.NoError(t, f.Add(spec))
	root, err := f.Root(spec.ID)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, agent.CustomChecksDir, "hangs.sh"), []byte("#!/bin/sh\necho started\nexec sleep 60\n"), 0o755))
	c := mustRouterClient(t, f, spec.ID, key)
	pushConfig(t, c, spec.Config())

	sess, err := c.NewSession()
	require.NoError(t, err)
	defer sess.Close()
	var stdout strings.Builder
	sess.Stdout = &stdout
	require.NoError(t, sess.Start(quote([]string{"sysvm-agent", "run", "basic"})))
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	require.NoError(t, sess.Signal(ssh.SIGKILL))
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the command did not stop on a signal")
	}
	assert.Less(t, time.Since(start), 5*time.Second)
	var run agent.Run
	require.NoError(t, json.Unmarshal([]byte(stdout.String()), &run))
	r, ok := run.Result("hangs.sh")
	require.True(t, ok)
	assert.False(t, r.Success)
	assert.Contains(t, r.Details, "context canceled")
}

// The platform's own SSH executor (hypervisors/sshexec) reaches both kinds of routers with the
// fleet's Target and DialContext.
func TestPlatformExecutorReachesRouters(t *testing.T) {
	kp, err := sshexec.GenerateKeyPair()
	require.NoError(t, err)
	signer, err := kp.Signer()
	require.NoError(t, err)
	f := testFleet(t, signer, Options{})
	kvm, vmw := kvmSpec(20, "h1"), vmwareSpec(21)
	xen := kvmSpec(22, "xen-1")
	xen.Hypervisor = hypervisors.XenServer
	for _, s := range []RouterSpec{kvm, vmw, xen} {
		require.NoError(t, f.Add(s))
	}
	exec, err := sshexec.New(sshexec.Config{Key: kp, HostKeys: &sshexec.MemoryHostKeyStore{}, Dialer: f.DialContext,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer exec.Close()
	ctx := context.Background()
	for _, s := range []RouterSpec{kvm, vmw, xen} {
		target, err := f.Target(s.ID)
		require.NoError(t, err)
		assert.Equal(t, s.linkLocal(), target.LinkLocalControl)
		cfg, err := json.Marshal(s.Config())
		require.NoError(t, err)
		res, err := exec.Run(ctx, target, []string{"sysvm-agent", "push-config"}, cfg)
		require.NoError(t, err, s.ID)
		require.Equal(t, 0, res.ExitCode, string(res.Stderr))
		res, err = exec.Run(ctx, target, []string{"sysvm-agent", "run", "basic"}, nil)
		require.NoError(t, err, s.ID)
		require.Equal(t, 0, res.ExitCode, string(res.Stderr))
		var run agent.Run
		require.NoError(t, json.Unmarshal(res.Stdout, &run))
		assert.Empty(t, run.Failed(), s.ID)
		assert.Equal(t, s.Name, run.RouterName)
	}
	// The inventory's view of a host (its name, port 22) works too through the fleet's dialer.
	byName, err := f.Target(kvm.ID)
	require.NoError(t, err)
	byName.HostAddress, byName.HostPort = "h1", 0
	res, err := exec.Run(ctx, byName, []string{"sysvm-agent", "version"}, nil)
	require.NoError(t, err)
	assert.Equal(t, 0, res.ExitCode)

	// An unreachable router is an ErrUnreachable for the executor.
	require.NoError(t, f.Inject(vmw.ID, Fault{Name: FaultUnreachable}))
	target, _ := f.Target(vmw.ID)
	_, err = exec.Run(ctx, target, []string{"sysvm-agent", "version"}, nil)
	assert.True(t, errors.Is(err, hypervisors.ErrUnreachable), "%v", err)
}

func TestCloseRemovesSandboxesAndConnections(t *testing.T) {
	key := sshtest.NewSigner(t)
	f, err := New(Options{AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}})
	require.NoError(t, err)
	spec := kvmSpec(1, "h1")
	require.NoError(t, f.Add(spec))
	dir := f.Dir()
	assert.DirExists(t, dir)
	c, host, err := routerClient(t, f, spec.ID, key)
	require.NoError(t, err)
	defer host.Close()
	require.NoError(t, f.Close())
	assert.NoDirExists(t, dir)
	_, _, _, err = remote(c, nil, "sysvm-agent", "version")
	assert.Error(t, err)
	assert.ErrorContains(t, f.Add(kvmSpec(2, "h1")), "closed")
	require.NoError(t, f.Close(), "Close twice is fine")
}

func names(run agent.Run) []string {
	var out []string
	for _, r := range run.Results {
		out = append(out, r.CheckName)
	}
	return out
}

// The platform wraps commands in coreutils' timeout (sshexec RemoteKill), as a real system VM
// has it: the simulated router runs the command inside, and ends it when the time is up.
func TestTimeoutWrapper(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{Commands: map[string]CommandFunc{
		"sleep": func(ctx context.Context, _ string, _ []string, _ io.Reader, _, _ io.Writer) int {
			<-ctx.Done()
			return 130
		}}})
	spec := vmwareSpec(8)
	require.NoError(t, f.Add(spec))
	c := mustRouterClient(t, f, spec.ID, key)
	code, out, _, err := remote(c, nil, "timeout", "-s", "KILL", "30", "sysvm-agent", "version")
	require.NoError(t, err)
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "agentVersion")
	code, _, _, err = remote(c, nil, "timeout", "-s", "KILL", "0.2", "sleep", "60")
	require.NoError(t, err)
	assert.Equal(t, 137, code, "killed by timeout")
	code, _, _, err = remote(c, nil, "timeout", "0.2", "sleep", "60")
	require.NoError(t, err)
	assert.Equal(t, 124, code)
	code, _, _, err = remote(c, nil, "timeout", "-s", "KILL", "30")
	require.NoError(t, err)
	assert.Equal(t, 125, code, "no command")
}
