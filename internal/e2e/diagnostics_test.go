package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/api"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/diagnostics"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/operations"
)

// diagNet is a network the test makes for the simulated system VMs: namespace vm (where every
// simulated system VM runs its diagnostics tools) joined by a veth pair to namespace peer.
// No packet of the test leaves these namespaces.
type diagNet struct {
	vm, peer         string
	vmIface          string
	vmAddr, peerAddr string
	// silent is an address on the vm side's subnet that nothing answers.
	silent string
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newDiagNet makes the namespaces and the veth pair; they are removed when the test ends.
func newDiagNet(t *testing.T) diagNet {
	t.Helper()
	id := os.Getpid() % 100000
	n := diagNet{vm: fmt.Sprintf("sysvmdiag-vm-%d", id), peer: fmt.Sprintf("sysvmdiag-peer-%d", id),
		vmIface: fmt.Sprintf("sdv%da", id), vmAddr: "10.254.77.1", peerAddr: "10.254.77.2", silent: "10.254.77.3"}
	peerIface := fmt.Sprintf("sdv%db", id)
	_ = ipCmd("netns", "del", n.vm)
	_ = ipCmd("netns", "del", n.peer)
	steps := [][]string{
		{"netns", "add", n.vm}, {"netns", "add", n.peer},
		{"-n", n.vm, "link", "set", "lo", "up"}, {"-n", n.peer, "link", "set", "lo", "up"},
		{"link", "add", n.vmIface, "type", "veth", "peer", "name", peerIface},
		{"link", "set", n.vmIface, "netns", n.vm}, {"link", "set", peerIface, "netns", n.peer},
		{"-n", n.vm, "addr", "add", n.vmAddr + "/29", "dev", n.vmIface},
		{"-n", n.peer, "addr", "add", n.peerAddr + "/29", "dev", peerIface},
		{"-n", n.vm, "link", "set", n.vmIface, "up"}, {"-n", n.peer, "link", "set", peerIface, "up"},
	}
	t.Cleanup(func() {
		_ = ipCmd("netns", "del", n.vm)
		_ = ipCmd("netns", "del", n.peer)
	})
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			testenv.Require(t, "network namespaces and veth pairs (ip netns, root)", err)
		}
	}
	return n
}

// diagResult is a diagnostics operation's result.
type diagResult struct {
	diagnostics.Result
}

// diagnose runs one diagnostics request through the API and waits for its operation.
func (p *platform) diagnose(vm models.SystemVM, body map[string]any) (operation, diagResult) {
	p.t.Helper()
	path := "/api/v1/system-vms/" + vm.ID + "/diagnostics"
	if vm.IsRouter() {
		path = "/api/v1/routers/" + vm.ID + "/diagnostics"
	}
	var out struct {
		Operation operation `json:"operation"`
		Error     any       `json:"error"`
	}
	if code := p.do(http.MethodPost, path, body, &out); code != http.StatusAccepted {
		p.t.Fatalf("POST %s %v = %d (%v), want 202", path, body, code, out.Error)
	}
	op := p.wait(out.Operation, 2*time.Minute)
	var res diagResult
	if op.Status == models.OpCompleted {
		if err := json.Unmarshal(op.Result, &res); err != nil {
			p.t.Fatalf("result of %s: %v (%s)", op.ID, err, op.Result)
		}
	}
	return op, res
}

// TestDiagnosticsOnSystemVMs runs the real ping, traceroute and arping inside simulated
// routers, SSVMs and CPVMs of KVM, VMware and XenServer, over SSH on 3922, through the API, on
// SQLite and MariaDB: real output and exit codes, results stored per VM, bad input named
// before anything is started.
func TestDiagnosticsOnSystemVMs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal and the simulators")
	}
	for _, prog := range []string{"ping", "traceroute", "arping", "ip"} {
		_, err := exec.LookPath(prog)
		testenv.Require(t, prog+" (apt-get install iputils-ping traceroute arping iproute2)", err)
	}
	net := newDiagNet(t)
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		files := &devcloud.SandboxFiles{}
		p := newPlatform(t, store, platformOptions{kvm: true, vmware: true, xen: true, fleet: true,
			commands: devcloud.DiagnosticsCommands(net.vm, files), files: files})

		// A Running router of each hypervisor the platform runs, and every Running SSVM and CPVM
		// (the seed puts a zone's SSVM and CPVM on different hypervisors).
		var vms []models.SystemVM
		for _, hv := range []string{"KVM", "VMware", "XenServer"} {
			var vm models.SystemVM
			err := store.DB.Where("hypervisor_type = ? AND type = ? AND state = ?", hv, models.TypeRouter, models.StateRunning).
				Order("name").First(&vm).Error
			if err != nil {
				if hv == "KVM" && p.kvmReason != "" {
					continue
				}
				t.Fatalf("no Running router on %s: %v", hv, err)
			}
			vms = append(vms, vm)
		}
		var router models.SystemVM = vms[0]
		var ssvm, cpvm models.SystemVM
		for _, typ := range []string{models.TypeSSVM, models.TypeCPVM} {
			var found []models.SystemVM
			if err := store.DB.Where("type = ? AND state = ?", typ, models.StateRunning).Order("name").Find(&found).Error; err != nil || len(found) == 0 {
				t.Fatalf("no Running %s: %v", typ, err)
			}
			vms = append(vms, found...)
			if typ == models.TypeSSVM {
				ssvm = found[0]
			} else {
				cpvm = found[0]
			}
		}
		for _, vm := range vms {
			t.Logf("diagnosing %s (%s on %s)", vm.Name, vm.Type, vm.HypervisorType)
		}

		// ping of loopback in every VM (IPv4, and IPv6 in one).
		for _, vm := range vms {
			op, res := p.diagnose(vm, map[string]any{"type": "ping", "ipaddress": "127.0.0.1", "params": "-c 2 -i 0.2"})
			if op.Status != models.OpCompleted {
				t.Fatalf("ping in %s (%s %s): %s %s", vm.Name, vm.HypervisorType, vm.Type, op.Status, op.Error)
			}
			if res.ExitCode != 0 || !strings.Contains(res.Stdout, "2 packets transmitted, 2 received") {
				t.Errorf("ping 127.0.0.1 in %s (%s %s): exit %d\n%s\n%s", vm.Name, vm.HypervisorType, vm.Type, res.ExitCode, res.Stdout, res.Stderr)
			}
			if res.Command != "timeout 30 ping -c 2 -i 0.2 127.0.0.1" {
				t.Errorf("ping in %s ran %q", vm.Name, res.Command)
			}
		}
		if _, res := p.diagnose(cpvm, map[string]any{"type": "ping", "ipaddress": "::1", "params": "-c 1"}); res.ExitCode != 0 ||
			!strings.Contains(res.Stdout, "1 received") || !strings.HasPrefix(res.Command, "timeout 30 ping -6 -c 1 ::1") {
			t.Errorf("ping ::1 in %s: exit %d %q\n%s%s", cpvm.Name, res.ExitCode, res.Command, res.Stdout, res.Stderr)
		}

		// Defaults as a VR runs them, towards the peer namespace.
		_, res := p.diagnose(router, map[string]any{"type": "ping", "ipaddress": net.peerAddr})
		if res.ExitCode != 0 || !strings.Contains(res.Stdout, "4 packets transmitted, 4 received") ||
			res.Command != "timeout 30 ping -c 4 "+net.peerAddr {
			t.Errorf("default ping in %s: exit %d %q\n%s%s", router.Name, res.ExitCode, res.Command, res.Stdout, res.Stderr)
		}
		_, res = p.diagnose(router, map[string]any{"type": "traceroute", "ipaddress": net.peerAddr})
		if res.ExitCode != 0 || !strings.Contains(res.Stdout, "20 hops max") || !strings.Contains(res.Stdout, net.peerAddr) ||
			res.Command != "timeout 30 traceroute -m 20 "+net.peerAddr {
			t.Errorf("traceroute in %s: exit %d %q\n%s%s", router.Name, res.ExitCode, res.Command, res.Stdout, res.Stderr)
		}
		_, res = p.diagnose(ssvm, map[string]any{"type": "arping", "ipaddress": net.peerAddr})
		if res.ExitCode != 0 || res.Command != "timeout 30 arping -c 4 -I "+net.vmIface+" "+net.peerAddr ||
			!strings.Contains(res.Stdout, "4 packets received") {
			t.Errorf("arping in %s: exit %d %q\n%s%s", ssvm.Name, res.ExitCode, res.Command, res.Stdout, res.Stderr)
		}
		// Real failures: nobody answers (exit 1), and the time limit (exit 124, partial output).
		_, res = p.diagnose(router, map[string]any{"type": "ping", "ipaddress": net.silent, "params": "-c 1 -W 1"})
		if res.ExitCode != 1 || !strings.Contains(res.Stdout, "0 received") {
			t.Errorf("ping of a silent address in %s: exit %d\n%s%s", router.Name, res.ExitCode, res.Stdout, res.Stderr)
		}
		_, res = p.diagnose(router, map[string]any{"type": "ping", "ipaddress": net.peerAddr, "params": "-c 100 -i 0.5", "timeout": 2})
		if res.ExitCode != diagnostics.TimedOutExitCode || !res.TimedOut || !strings.Contains(res.Stdout, "bytes from "+net.peerAddr) {
			t.Errorf("ping past its time limit in %s: exit %d timedOut %v\n%s%s", router.Name, res.ExitCode, res.TimedOut, res.Stdout, res.Stderr)
		}

		// Bad input is refused at once, naming the field (and the character and its position).
		var before int64
		store.DB.Model(&models.Operation{}).Count(&before)
		for _, bad := range []struct {
			body        map[string]any
			field, text string
		}{
			{map[string]any{"type": "ping", "ipaddress": "127.0.0.1", "params": "-c 4; reboot"}, "params", `character ';' at position 5`},
			{map[string]any{"type": "ping", "ipaddress": "127.0.0.1", "params": "-c $(id)"}, "params", `character '$' at position 4`},
			{map[string]any{"type": "ping", "ipaddress": "127.0.0.1 -f"}, "ipaddress", "not an IPv4 or IPv6 address"},
			{map[string]any{"type": "ping", "ipaddress": "localhost"}, "ipaddress", "not an IPv4 or IPv6 address"},
			{map[string]any{"type": "nslookup", "ipaddress": "127.0.0.1"}, "type", "unknown diagnostics type"},
			{map[string]any{"type": "ping", "ipaddress": "127.0.0.1", "timeout": 3600}, "timeout", "out of range"},
		} {
			var out struct {
				Error struct {
					Field   string `json:"field"`
					Message string `json:"message"`
				} `json:"error"`
			}
			code := p.do(http.MethodPost, "/api/v1/routers/"+router.ID+"/diagnostics", bad.body, &out)
			if code != http.StatusBadRequest || out.Error.Field != bad.field || !strings.Contains(out.Error.Message, bad.text) {
				t.Errorf("POST %v = %d %+v, want 400 on %s saying %q", bad.body, code, out.Error, bad.field, bad.text)
			}
		}
		var after int64
		store.DB.Model(&models.Operation{}).Count(&after)
		if after != before {
			t.Errorf("refused requests journaled %d operations", after-before)
		}
		// A router under /system-vms is not found there.
		if code := p.do(http.MethodPost, "/api/v1/system-vms/"+router.ID+"/diagnostics",
			map[string]any{"type": "ping", "ipaddress": "127.0.0.1"}, nil); code != http.StatusNotFound {
			t.Errorf("router diagnostics under /system-vms = %d, want 404", code)
		}

		// Stored per VM, newest first; the operation journaled with its kind.
		var list struct {
			Diagnostics []models.DiagnosticsResult `json:"diagnostics"`
		}
		if code := p.do(http.MethodGet, "/api/v1/routers/"+router.ID+"/diagnostics", nil, &list); code != http.StatusOK {
			t.Fatalf("list diagnostics = %d", code)
		}
		var n int64
		store.DB.Model(&models.DiagnosticsResult{}).Where("system_vm_id = ?", router.ID).Count(&n)
		if n != 5 || len(list.Diagnostics) != 5 || list.Diagnostics[0].ExitCode != diagnostics.TimedOutExitCode {
			t.Errorf("router %s has %d stored results, %d listed (first %+v), want 5 with the timed-out ping first", router.Name, n,
				len(list.Diagnostics), list.Diagnostics)
		}
		var kinds int64
		store.DB.Model(&models.Operation{}).Where("kind = ? AND target_type = ?", "systemvm.diagnostics", operations.TargetRouter).Count(&kinds)
		if kinds < 5 {
			t.Errorf("%d diagnostics operations journaled on routers, want at least 5", kinds)
		}

		p.diagnosticsData(router, net)
	})
}

// diagnosticsData collects a router's diagnostics archive through the API, downloads it
// through its signed link and checks what it holds against the router's sandbox, then
// expires it.
func (p *platform) diagnosticsData(router models.SystemVM, net diagNet) {
	t := p.t
	t.Helper()
	// Bad extra files are refused at once.
	for _, bad := range []string{"etc/passwd", "/etc/../shadow", "/etc/x;reboot"} {
		var out struct {
			Error struct{ Field, Message string } `json:"error"`
		}
		if code := p.do(http.MethodPost, "/api/v1/routers/"+router.ID+"/diagnostics/data", map[string]any{"files": []string{bad}}, &out); code != http.StatusBadRequest || out.Error.Field != "files" {
			t.Errorf("diagnostics data with file %q = %d %+v, want 400 on files", bad, code, out.Error)
		}
	}
	p.setting(activities.SettingDiagnosticsMaxAge, "120")
	var started struct {
		Operation operation `json:"operation"`
		Error     any       `json:"error"`
	}
	if code := p.do(http.MethodPost, "/api/v1/routers/"+router.ID+"/diagnostics/data",
		map[string]any{"files": []string{"/etc/cloudstack-release", "/etc/no-such-file"}}, &started); code != http.StatusAccepted {
		t.Fatalf("POST diagnostics/data = %d (%v)", code, started.Error)
	}
	begin := time.Now()
	op := p.wait(started.Operation, 2*time.Minute)
	if op.Status != models.OpCompleted {
		t.Fatalf("diagnostics data of %s: %s %s", router.Name, op.Status, op.Error)
	}
	var info activities.DiagnosticsArchiveInfo
	if err := json.Unmarshal(op.Result, &info); err != nil || info.ArchiveID == "" {
		t.Fatalf("diagnostics data result %s: %v", op.Result, err)
	}
	if d := time.Until(info.ExpiresAt); d < 100*time.Second || d > 130*time.Second {
		t.Errorf("archive expires in %s, want about diagnostics.data.max.file.age=120 s", d)
	}
	var arch struct {
		api.DiagnosticsArchive
		Error any `json:"error"`
	}
	if code := p.do(http.MethodGet, "/api/v1/diagnostics-archives/"+info.ArchiveID, nil, &arch); code != http.StatusOK || arch.URL == "" {
		t.Fatalf("GET archive = %d (%v)", code, arch.Error)
	}
	download := func(link string) (int, []byte) {
		resp, err := http.Get(p.api.URL + link) // no API key: the signed link is the credential
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, body := download(arch.URL)
	if code != http.StatusOK {
		t.Fatalf("download %s = %d %s", arch.URL, code, body)
	}
	if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != info.SHA256 || int64(len(body)) != info.SizeBytes {
		t.Errorf("downloaded %d bytes with another checksum than the %d recorded", len(body), info.SizeBytes)
	}
	got := untar(t, body)
	root, err := p.routers.Fleet.Root(mustInstance(t, p, router))
	if err != nil {
		t.Fatal(err)
	}
	for name, file := range map[string]string{
		"iptables-save.txt":             agent.IptablesSaveFile,
		"files/etc/haproxy/haproxy.cfg": agent.HaproxyConfigFile,
		"files/etc/dhcphosts.txt":       agent.DHCPHostsFile,
		"files/etc/cloudstack-release":  agent.ReleaseFile,
		"files/etc/hosts":               agent.HostsFile,
	} {
		want, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Errorf("sandbox file %s: %v", file, err)
			continue
		}
		if got[name] != string(want) {
			t.Errorf("archive entry %s = %q, want the router's %s %q", name, got[name], file, want)
		}
	}
	if !strings.Contains(got["ip-addr.txt"], net.vmIface) || !strings.Contains(got["ip-route.txt"], "10.254.77.0/29") {
		t.Errorf("ip addr / route of the VM's network missing:\n%s\n%s", got["ip-addr.txt"], got["ip-route.txt"])
	}
	if !strings.Contains(got["MANIFEST.txt"], "MISSING files/etc/no-such-file") || !strings.Contains(got["MANIFEST.txt"], "OK iptables-save.txt") {
		t.Errorf("manifest:\n%s", got["MANIFEST.txt"])
	}
	// A tampered link is refused.
	if code, _ := download(strings.Replace(arch.URL, "signature=", "signature=00", 1)); code != http.StatusForbidden {
		t.Errorf("tampered link = %d, want 403", code)
	}
	// Expiry: once the archive's time passed (moved back here rather than waited for), a read
	// removes it and the link answers 410.
	if err := p.store.DB.Model(&models.DiagnosticsArchive{}).Where("id = ?", info.ArchiveID).
		Update("expires_at", begin.Add(-time.Second).UTC()).Error; err != nil {
		t.Fatal(err)
	}
	if code, body := download(arch.URL); code != http.StatusGone {
		t.Errorf("download of an expired archive = %d %s, want 410", code, body)
	}
	var n int64
	p.store.DB.Model(&models.DiagnosticsArchive{}).Where("id = ?", info.ArchiveID).Count(&n)
	if n != 0 {
		t.Errorf("expired archive still stored")
	}
	if code := p.do(http.MethodGet, "/api/v1/diagnostics-archives/"+info.ArchiveID, nil, nil); code != http.StatusNotFound {
		t.Errorf("GET expired archive = %d, want 404", code)
	}
}

// mustInstance is the fleet ID of a system VM.
func mustInstance(t *testing.T, p *platform, vm models.SystemVM) string {
	t.Helper()
	id, err := p.routers.InstanceOf(context.Background(), vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// untar reads a tar.gz into name -> content.
func untar(t *testing.T, b []byte) map[string]string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("archive is not gzip: %v", err)
	}
	tr := tar.NewReader(gz)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("archive: %v", err)
		}
		c, _ := io.ReadAll(tr)
		out[h.Name] = string(c)
	}
}
