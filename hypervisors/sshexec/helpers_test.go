package sshexec_test

import (
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/hypervisors/sshexec/sshtest"
)

// systemVMKey is generated once per test binary: RSA-3072 generation takes about a second.
var systemVMKey = sync.OnceValues(sshexec.GenerateKeyPair)

func testKey(t testing.TB) sshexec.KeyPair {
	t.Helper()
	kp, err := systemVMKey()
	if err != nil {
		t.Fatalf("generate key pair: %v", err)
	}
	return kp
}

func pubKey(t testing.TB, kp sshexec.KeyPair) ssh.PublicKey {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// vmServer starts an SSH server standing for a system VM that accepts the system VM key as root.
func vmServer(t testing.TB, addr string, exec sshtest.ExecHandler) *sshtest.Server {
	t.Helper()
	return sshtest.NewServer(t, sshtest.Options{
		Addr:           addr,
		AuthorizedKeys: []ssh.PublicKey{pubKey(t, testKey(t))},
		Users:          []string{"root"},
		Exec:           exec,
		NoForward:      true,
	})
}

// directTarget points a VMware-style target at a server.
func directTarget(name string, s *sshtest.Server) sshexec.Target {
	return sshexec.Target{VMName: name, Hypervisor: hypervisors.VMware, PrivateIP: s.Host(), Port: s.Port()}
}

// jumpRig is a hypervisor host server and a VM server on 127.0.0.2 (the VM's "link-local"
// address, reachable only through the host's forwarding in the sense of the access path).
type jumpRig struct {
	host    *sshtest.Server
	vm      *sshtest.Server
	hostKey ssh.Signer
	target  sshexec.Target
}

func newJumpRig(t testing.TB, name string) *jumpRig {
	t.Helper()
	hk := sshtest.NewSigner(t)
	host := sshtest.NewServer(t, sshtest.Options{
		AuthorizedKeys: []ssh.PublicKey{hk.PublicKey()},
		Users:          []string{"root"},
	})
	vm := vmServer(t, "127.0.0.2:0", nil)
	return &jumpRig{host: host, vm: vm, hostKey: hk, target: sshexec.Target{
		VMName: name, Hypervisor: hypervisors.KVM, LinkLocalControl: true,
		HostAddress: host.Host(), HostPort: host.Port(), LinkLocalIP: vm.Host(), Port: vm.Port(),
	}}
}

func newExecutor(t testing.TB, cfg sshexec.Config) *sshexec.Executor {
	t.Helper()
	if cfg.Signer == nil && len(cfg.Key.PrivatePEM) == 0 {
		cfg.Key = testKey(t)
	}
	if cfg.HostKeys == nil {
		cfg.HostKeys = &sshexec.MemoryHostKeyStore{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e, err := sshexec.New(cfg)
	if err != nil {
		t.Fatalf("new executor: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// silentListener accepts TCP connections and never says anything, like a VM whose sshd hangs.
func silentListener(t testing.TB, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	return ln
}

// eventually polls cond for up to 5 seconds.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
