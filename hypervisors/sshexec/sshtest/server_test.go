package sshtest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/internal/testenv"
)

func TestListenRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0"} {
		if s, err := Listen(Options{Addr: addr}); err == nil {
			s.Close()
			t.Errorf("Listen(%q) accepted", addr)
		}
	}
}

func dial(t *testing.T, s *Server, user string, key ssh.Signer) (*ssh.Client, error) {
	t.Helper()
	return ssh.Dial("tcp", s.Addr(), &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey()), Timeout: 5 * time.Second,
	})
}

func TestServerAuthExecAndForwardPolicy(t *testing.T) {
	key := NewSigner(t)
	target := NewServer(t, Options{Addr: "127.0.0.2:0", AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}})
	s := NewServer(t, Options{AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}, Users: []string{"root"}})

	if _, err := dial(t, s, "admin", key); err == nil {
		t.Fatal("user outside Users accepted")
	}
	if _, err := dial(t, s, "root", NewSigner(t)); err == nil {
		t.Fatal("unknown key accepted")
	}
	if s.Stats().AuthRejects < 2 {
		t.Errorf("auth rejects %d", s.Stats().AuthRejects)
	}
	c, err := dial(t, s, "root", key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	sess.Stdout, sess.Stderr = &out, &errOut
	err = sess.Run("echo 'a  b'; true")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 2 || !strings.Contains(errOut.String(), "unsupported shell syntax") {
		t.Fatalf("unsafe command line: err %v stderr %q", err, errOut.String())
	}
	if got := s.Execs(); len(got) != 1 || got[0].Argv != nil || got[0].User != "root" {
		t.Fatalf("exec records %+v", got)
	}

	// Forwarding to a loopback listener works; to anything else it is refused before dialling.
	fc, err := c.Dial("tcp", target.Addr())
	if err != nil {
		t.Fatalf("forward to loopback: %v", err)
	}
	tc, _, _, err := ssh.NewClientConn(fc, target.Addr(), &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)}, HostKeyCallback: ssh.FixedHostKey(target.HostKey()),
	})
	if err != nil {
		t.Fatalf("SSH through the forward: %v", err)
	}
	tc.Close()
	_, err = c.Dial("tcp", "192.0.2.1:22")
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited {
		t.Fatalf("forward to a non-loopback address: %v", err)
	}
	if s.Stats().Forwards != 1 {
		t.Errorf("forwards %d", s.Stats().Forwards)
	}
}

func TestCloseEndsRunningHandlers(t *testing.T) {
	key := NewSigner(t)
	s, err := Listen(Options{AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial(t, s, "root", key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start("sleep 30"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Execs == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("Close took %v", time.Since(start))
	}
	if s.Stats().Active != 0 {
		t.Fatalf("active after close: %d", s.Stats().Active)
	}
}

// TestOpenSSHClientInterop drives the server with the real OpenSSH client: an exec, and a jump
// through a second server with ProxyCommand "ssh -W" (a direct-tcpip channel, as -J uses).
func TestOpenSSHClientInterop(t *testing.T) {
	sshBin, err := exec.LookPath("ssh")
	testenv.Require(t, "the OpenSSH client ssh (package openssh-client)", err)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(pb), 0o600); err != nil {
		t.Fatal(err)
	}
	auth := []ssh.PublicKey{signer.PublicKey()}
	vm := NewServer(t, Options{Addr: "127.0.0.2:0", AuthorizedKeys: auth, Users: []string{"root"}})
	host := NewServer(t, Options{AuthorizedKeys: auth, Users: []string{"root"}})
	common := []string{"-F", "/dev/null", "-i", keyFile, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=5"}
	run := func(args ...string) (string, string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, sshBin, append(append([]string{}, common...), args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		cmd.Stdin = strings.NewReader("piped\n")
		err := cmd.Run()
		code := 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("ssh: %v", err)
		}
		return out.String(), errOut.String(), code
	}
	out, errOut, code := run("-p", strconv.Itoa(vm.Port()), "root@127.0.0.2", "argv", "'a b'", `"c"`)
	if code != 0 || out != "[\"a b\",\"c\"]\n" {
		t.Fatalf("direct: exit %d out %q err %q", code, out, errOut)
	}
	_, errOut, code = run("-p", strconv.Itoa(vm.Port()), "root@127.0.0.2", "exit", "7")
	if code != 7 {
		t.Fatalf("exit status: %d (%s)", code, errOut)
	}
	proxy := sshBin + " " + strings.Join(common, " ") + " -p " + strconv.Itoa(host.Port()) + " -W %h:%p root@127.0.0.1"
	out, errOut, code = run("-o", "ProxyCommand="+proxy, "-p", strconv.Itoa(vm.Port()), "root@127.0.0.2", "cat")
	if code != 0 || out != "piped\n" {
		t.Fatalf("jump: exit %d out %q err %q", code, out, errOut)
	}
	if host.Stats().Forwards != 1 || host.Stats().Execs != 0 || vm.Stats().Execs != 3 {
		t.Fatalf("host %+v vm %+v", host.Stats(), vm.Stats())
	}
}
