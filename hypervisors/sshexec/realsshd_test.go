package sshexec_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/internal/testenv"
)

// realSSHD starts OpenSSH's sshd on 127.0.0.1 and 127.0.0.2 (two free ports), accepting the
// system VM key for root, with TCP forwarding on so it can be the jump host too. It needs an
// sshd binary: $SSHEXEC_SSHD or /usr/sbin/sshd (package openssh-server), and root (sshd's
// privilege separation). Without them the test is skipped, and fails under CI=true.
func realSSHD(t *testing.T) (hostPort, vmPort int, hostKey ssh.PublicKey) {
	t.Helper()
	bin := os.Getenv("SSHEXEC_SSHD")
	if bin == "" {
		bin = "/usr/sbin/sshd"
	}
	_, err := os.Stat(bin)
	testenv.Require(t, "OpenSSH sshd (package openssh-server, or $SSHEXEC_SSHD)", err)
	if os.Geteuid() != 0 {
		testenv.Require(t, "root", errors.New("sshd's privilege separation needs root"))
	}
	// /run/sshd is created when missing and left in place (as the openssh-server service leaves
	// it): removing it when the test ends broke a concurrent run of this test on the same
	// machine, whose sshd then refused connections ("Missing privilege separation directory").
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		testenv.Require(t, "sshd's privilege separation directory /run/sshd", err)
	}
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	hostKeyFile := filepath.Join(dir, "ssh_host_ed25519_key")
	authFile := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(hostKeyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(authFile, []byte(testKey(t).AuthorizedKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	hostPort, vmPort = freePort(t, "127.0.0.1"), freePort(t, "127.0.0.2")
	cfg := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
ListenAddress 127.0.0.2:%d
HostKey %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
AllowTcpForwarding yes
LogLevel ERROR
`, hostPort, vmPort, hostKeyFile, authFile)
	cfgFile := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "-D", "-e", "-f", cfgFile)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sshd log:\n%s", logs.String())
		}
	})
	eventually(t, "sshd to listen", func() bool {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(vmPort)), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return hostPort, vmPort, signer.PublicKey()
}

func freePort(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestRealOpenSSH runs the executor against OpenSSH's sshd and root's real login shell, on
// both paths: direct (VMware) and through sshd as the jump host to 127.0.0.2 (KVM/Xen).
func TestRealOpenSSH(t *testing.T) {
	hostPort, vmPort, sshdKey := realSSHD(t)
	ctx := context.Background()
	store := &sshexec.MemoryHostKeyStore{}
	e := newExecutor(t, sshexec.Config{HostKeys: store, RunTimeout: 5 * time.Second})
	direct := sshexec.Target{VMName: "v-100-VM", Hypervisor: hypervisors.VMware, PrivateIP: "127.0.0.2", Port: vmPort}
	jump := sshexec.Target{VMName: "r-100-VM", Hypervisor: hypervisors.KVM, LinkLocalControl: true,
		HostAddress: "127.0.0.1", HostPort: hostPort, LinkLocalIP: "127.0.0.2", Port: vmPort}

	marker := filepath.Join(t.TempDir(), "executed")
	args := []string{
		"; touch " + marker, "$(touch " + marker + ")", "`touch " + marker + "`", "&& touch " + marker,
		"| touch " + marker, "\ntouch " + marker + "\n", "'; touch " + marker + "; '", `"; touch ` + marker + `; "`,
		"it's", `\`, "", "  spaced  ", "*", "~", "#x", "$HOME", "ünï ✓",
	}
	for _, tgt := range []sshexec.Target{direct, jump} {
		res, err := e.Run(ctx, tgt, append([]string{"printf", `%s\0`}, args...), nil)
		if err != nil {
			t.Fatalf("%s: %v", tgt, err)
		}
		got := strings.Split(strings.TrimSuffix(string(res.Stdout), "\x00"), "\x00")
		if res.ExitCode != 0 || len(got) != len(args) {
			t.Fatalf("%s: exit %d stderr %q, %d args back: %q", tgt, res.ExitCode, res.Stderr, len(got), got)
		}
		for i := range args {
			if got[i] != args[i] {
				t.Errorf("%s: arg %d came back %q, want %q", tgt, i, got[i], args[i])
			}
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("%s: part of an argument was executed by the remote shell", tgt)
		}

		res, err = e.Run(ctx, tgt, []string{"sh", "-c", "echo to-stderr >&2; cat; exit 7"}, []byte("from stdin"))
		if err != nil || res.ExitCode != 7 || string(res.Stdout) != "from stdin" || string(res.Stderr) != "to-stderr\n" {
			t.Fatalf("%s: err %v exit %d stdout %q stderr %q", tgt, err, res.ExitCode, res.Stdout, res.Stderr)
		}
	}
	// Host keys recorded for the VMs and the jump host, all the sshd's key.
	for _, addr := range []string{"vm:v-100-VM", "vm:r-100-VM", jump.HostKeyAddress()} {
		k, ok, _ := store.LookupHostKey(ctx, addr)
		if !ok || string(k) != string(sshdKey.Marshal()) {
			t.Errorf("host key for %s not recorded as the sshd's", addr)
		}
	}
	// Run timeouts on the real server. OpenSSH refuses signal requests for root sessions, so
	// without RemoteKill the command outlives the session; with it, timeout(1) kills it.
	pgrep, err := exec.LookPath("pgrep")
	testenv.Require(t, "pgrep (package procps), to see the remote commands", err)
	// The sleeps carry this process's ID in their fraction, so pgrep sees this test's remote
	// commands only, not those of another run of it on the same machine.
	long := fmt.Sprintf("12.%05d", os.Getpid()%100000)
	killed := fmt.Sprintf("9.%05d", os.Getpid()%100000)
	running := func(pattern string) bool {
		out, _ := exec.Command(pgrep, "-f", pattern).Output()
		return len(bytes.TrimSpace(out)) > 0
	}
	// 5 s, as for e: a new connection to sshd on a loaded 2-core machine took over 3 s.
	plain := newExecutor(t, sshexec.Config{HostKeys: store, RunTimeout: 5 * time.Second})
	if _, err := plain.Run(ctx, direct, []string{"true"}, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// sshd confirms the session close only when the command ends; Run must not wait for it.
	if _, err := plain.Run(ctx, direct, []string{"sleep", long}, nil); !errors.Is(err, sshexec.ErrRunTimeout) || time.Since(start) > 10*time.Second {
		t.Fatalf("timeout: %v after %v", err, time.Since(start))
	}
	t.Logf("without RemoteKill, remote command still running after the run timeout: %v", running("sleep "+long))
	// The client holding the unconfirmed session was drained; the next run connects afresh.
	if st := plain.Stats(); st.Open != 0 {
		t.Errorf("drained client still open: %+v", st)
	}
	if res, err := plain.Run(ctx, direct, []string{"true"}, nil); err != nil || res.Reused {
		t.Fatalf("run after a timeout: %v reused=%v", err, res.Reused)
	}

	killing := newExecutor(t, sshexec.Config{HostKeys: store, RunTimeout: 300 * time.Millisecond, RemoteKill: true})
	for _, tgt := range []sshexec.Target{direct, jump} {
		start = time.Now()
		if _, err := killing.Run(ctx, tgt, []string{"sleep", killed}, nil); !errors.Is(err, sshexec.ErrRunTimeout) {
			t.Fatalf("%s: %v", tgt, err)
		}
		if !running("sleep " + killed) {
			out, _ := exec.Command("ps", "-eo", "pid,ppid,etime,args").Output()
			t.Fatalf("%s: remote command not seen running right after the timeout\n%s", tgt, out)
		}
		// timeout(1) kills it 2 s after it started; allow for a loaded machine.
		for deadline := time.Now().Add(15 * time.Second); running("sleep " + killed); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				out, _ := exec.Command("ps", "-eo", "pid,ppid,etime,args").Output()
				t.Fatalf("%s: remote command still running 15 s after the timeout\n%s", tgt, out)
			}
		}
		t.Logf("%s: remote command killed %v after start", tgt, time.Since(start).Round(100*time.Millisecond))
	}
}
