package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors"
)

// testFleet starts a fleet accepting key and closes it at the end of the test.
func testFleet(t testing.TB, key ssh.Signer, opts Options) *Fleet {
	t.Helper()
	opts.AuthorizedKeys = append(opts.AuthorizedKeys, key.PublicKey())
	f, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	})
	return f
}

// kvmSpec is router i of a KVM host: three VMs, two gateways, two port forwarding rules and one
// LB rule, on a network that gets every service from the router.
func kvmSpec(i int, hostName string) RouterSpec {
	s := RouterSpec{
		ID: fmt.Sprintf("router-%d", i), Name: fmt.Sprintf("r-%d-VM", i),
		HostName: hostName, LinkLocalIP: fmt.Sprintf("169.254.%d.%d", i/250, i%250+2),
		PrivateIP:       fmt.Sprintf("10.0.%d.%d", i/250, i%250+2),
		TemplateVersion: "4.15.0", ScriptsVersion: "9f1c8fd0bd0e4ff6bde0a2bbce5e2f07",
		Services: agent.Services{DHCP: true, DNS: true, LB: true, UserData: true},
		Gateways: []string{"10.1.1.1", "203.0.113.1"},
		PortForwardingRules: []agent.PortForwarding{
			{PublicIP: "203.0.113.10", PublicPort: 2222, PrivateIP: "10.1.1.11", PrivatePort: 22, Protocol: "tcp"},
			{PublicIP: "203.0.113.10", PublicPort: 5000, PublicEndPort: 5010, PrivateIP: "10.1.1.12", PrivatePort: 6000, PrivateEndPort: 6010, Protocol: "udp"},
		},
		LBRules: []agent.LBRule{{PublicIP: "203.0.113.10", PublicPort: 80, MaxConn: 500,
			Backends: []agent.LBBackend{{IP: "10.1.1.11", Port: 80}, {IP: "10.1.1.12", Port: 80}}}},
	}
	for v := 1; v <= 3; v++ {
		s.ExpectedVMs = append(s.ExpectedVMs, agent.ExpectedVM{
			MAC: fmt.Sprintf("02:00:%02x:%02x:00:%02x", i/256, i%256, v), IP: fmt.Sprintf("10.1.1.%d", 10+v), Name: fmt.Sprintf("vm-%d", v)})
	}
	return s
}

// vmwareSpec is a VMware router reached on its private IP.
func vmwareSpec(i int) RouterSpec {
	s := kvmSpec(i, "")
	s.Hypervisor, s.HostName, s.LinkLocalIP = hypervisors.VMware, "", ""
	s.PrivateIP = fmt.Sprintf("10.2.%d.%d", i/250, i%250+2)
	return s
}

func clientConfig(f *Fleet, key ssh.Signer, user string) *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(f.HostKey()),
		Timeout:         10 * time.Second,
	}
}

// routerClient connects to a router along its access path with x/crypto/ssh directly: for a
// KVM router, SSH to its host then a direct-tcpip channel to <link-local>:3922 and a second
// SSH handshake inside it; for a VMware router, the fleet's dialer to <private IP>:3922. The
// host client (nil for VMware) is returned too.
func routerClient(t testing.TB, f *Fleet, id string, key ssh.Signer) (*ssh.Client, *ssh.Client, error) {
	t.Helper()
	spec, err := f.Spec(id)
	if err != nil {
		return nil, nil, err
	}
	cfg := clientConfig(f, key, "root")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !spec.linkLocal() {
		addr := net.JoinHostPort(spec.PrivateIP, "3922")
		conn, err := f.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, nil, err
		}
		c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
		if err != nil {
			return nil, nil, err
		}
		return ssh.NewClient(c, chans, reqs), nil, nil
	}
	hostClient, err := ssh.Dial("tcp", f.HostAddr(spec.HostName), cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("ssh to host: %w", err)
	}
	addr := net.JoinHostPort(spec.LinkLocalIP, "3922")
	conn, err := hostClient.DialContext(ctx, "tcp", addr)
	if err != nil {
		hostClient.Close()
		return nil, nil, fmt.Errorf("jump to %s: %w", addr, err)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		hostClient.Close()
		return nil, nil, fmt.Errorf("ssh to router: %w", err)
	}
	return ssh.NewClient(c, chans, reqs), hostClient, nil
}

// mustRouterClient is routerClient that fails the test and closes the clients at cleanup.
func mustRouterClient(t testing.TB, f *Fleet, id string, key ssh.Signer) *ssh.Client {
	t.Helper()
	c, host, err := routerClient(t, f, id, key)
	if err != nil {
		t.Fatalf("connect to %s: %v", id, err)
	}
	t.Cleanup(func() {
		c.Close()
		if host != nil {
			host.Close()
		}
	})
	return c
}

// quote quotes argv as the platform's SSH client does: each word in single quotes.
func quote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// remote runs argv in a session and returns the exit status, stdout and stderr.
func remote(c *ssh.Client, stdin []byte, argv ...string) (int, string, string, error) {
	sess, err := c.NewSession()
	if err != nil {
		return -1, "", "", err
	}
	defer sess.Close()
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	if stdin != nil {
		sess.Stdin = bytes.NewReader(stdin)
	}
	err = sess.Run(quote(argv))
	var exit *ssh.ExitError
	if errors.As(err, &exit) {
		return exit.ExitStatus(), stdout.String(), stderr.String(), nil
	}
	if err != nil {
		return -1, stdout.String(), stderr.String(), err
	}
	return 0, stdout.String(), stderr.String(), nil
}

func pushConfig(t testing.TB, c *ssh.Client, cfg agent.Config) {
	t.Helper()
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr, err := remote(c, data, "sysvm-agent", "push-config")
	if err != nil || code != 0 {
		t.Fatalf("push-config: exit %d, %v: %s", code, err, stderr)
	}
}

func runChecks(t testing.TB, c *ssh.Client, typ agent.CheckType) agent.Run {
	t.Helper()
	code, stdout, stderr, err := remote(c, nil, "sysvm-agent", "run", string(typ))
	if err != nil || code != 0 {
		t.Fatalf("run %s: exit %d, %v: %s", typ, code, err, stderr)
	}
	var run agent.Run
	if err := json.Unmarshal([]byte(stdout), &run); err != nil {
		t.Fatalf("run %s printed %q: %v", typ, stdout, err)
	}
	return run
}

func failedNames(run agent.Run) []string {
	var out []string
	for _, r := range run.Failed() {
		out = append(out, r.CheckName)
	}
	return out
}
