package devcloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"libvirt.org/go/libvirtxml"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/kvm"
)

// KVMInstallHint is the one command that makes the simulated KVM clusters available.
const KVMInstallHint = "apt-get install --no-install-recommends libvirt-daemon"

// kvmHostsPerCluster is how many hosts each simulated KVM cluster has (migration needs two).
const kvmHostsPerCluster = 2

// StartKVM starts simulated KVM clusters on libvirt's test driver and returns them.
//
// Every simulated host is its own private libvirtd (started from Debian's libvirt-daemon
// package as a child process, with a socket in a temporary directory and no hypervisor driver
// module loaded, so only the in-memory test driver is there), reached at
// unix://<dir>/libvirt-sock?uri=test:///default. One daemon per host is what makes the
// simulation behave like a real cluster: libvirt's test driver shares state between
// connections only through test:///default, which is one host per daemon, and forgets it when
// the last connection closes. So hosts of one cluster keep separate domains (cold migration
// really moves a definition), clusters never see each other's VMs, and every Driver opened on
// a cluster, now or later, sees the same VMs: StartKVM holds one connection to each daemon
// until stop. The first host of each cluster is also its storage connection, with one pool
// "<cluster>-primary" (the test driver's default-pool and "test" domain are removed so hosts
// start empty).
//
// When libvirtd is not installed (or its daemons cannot start), StartKVM returns the clusters
// anyway, with endpoints nothing answers on and reason set to a message naming the apt command
// to run, so dev can mark the hosts Disconnected. err is for failures of the machine itself
// (no temporary directory) or a cancelled ctx. stop ends the daemons and removes their files.
func StartKVM(ctx context.Context, clusters int) (sims []SimCluster, reason string, stop func(), err error) {
	return startKVM(ctx, clusters, findLibvirtd(), slog.Default())
}

// findLibvirtd locates the daemon binary ("" when not installed); /usr/sbin is often not on a
// non-root PATH.
func findLibvirtd() string {
	if p, err := exec.LookPath("libvirtd"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/libvirtd", "/usr/local/sbin/libvirtd"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// kvmSim is the running simulation: daemons and the connections that keep their state.
type kvmSim struct {
	log     *slog.Logger
	base    string
	mu      sync.Mutex
	daemons []*daemon
	holders []*libvirt.Libvirt
}

// daemon is one libvirtd child process; exited is closed once it has been reaped.
type daemon struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // Wait's result, valid after exited is closed
}

func startKVM(ctx context.Context, clusters int, libvirtd string, log *slog.Logger) ([]SimCluster, string, func(), error) {
	if clusters <= 0 {
		clusters = 1
	}
	base, err := os.MkdirTemp("", "sysvm-kvm-")
	if err != nil {
		return nil, "", func() {}, fmt.Errorf("KVM simulation directory: %w", err)
	}
	sim := &kvmSim{log: log.With("sim", "kvm"), base: base}
	stop := sim.stop

	sims := make([]SimCluster, clusters)
	for c := range clusters {
		name := fmt.Sprintf("kvm-cluster-%d", c+1)
		sc := SimCluster{Name: name, Pools: []string{name + "-primary"}}
		sc.Conn = hypervisors.Connection{Type: hypervisors.KVM, Hosts: map[string]string{}}
		for h := range kvmHostsPerCluster {
			host := fmt.Sprintf("kvm-c%d-host-%d", c+1, h+1)
			ep := kvm.UnixEndpoint(filepath.Join(base, host, "libvirt-sock"), "test:///default")
			sc.Hosts = append(sc.Hosts, host)
			sc.Conn.Hosts[host] = ep
			if h == 0 {
				sc.Conn.Endpoint = ep
			}
		}
		sims[c] = sc
	}

	if libvirtd == "" {
		return sims, "libvirtd is not installed; run: " + KVMInstallHint, stop, nil
	}
	for _, sc := range sims {
		for i, host := range sc.Hosts {
			l, err := sim.startHost(ctx, libvirtd, filepath.Join(base, host))
			if err == nil && i == 0 {
				err = preparePool(l, sc.Pools[0])
			}
			if err != nil {
				if ctx.Err() != nil {
					stop()
					return nil, "", func() {}, fmt.Errorf("start simulated KVM host %s: %w", host, ctx.Err())
				}
				sim.log.Warn("simulated KVM hosts unavailable", "host", host, "err", err)
				stop()
				// Leave the directory gone and the endpoints dead: hosts show Disconnected.
				return sims, fmt.Sprintf("libvirtd could not start a simulated host (%v); is it installed? run: %s", err, KVMInstallHint),
					func() {}, nil
			}
		}
	}
	sim.log.Info("simulated KVM clusters up", "clusters", clusters, "hostsPerCluster", kvmHostsPerCluster, "dir", base)
	return sims, "", stop, nil
}

// startHost starts one private libvirtd in dir and returns the connection that holds its
// test:///default state.
func (s *kvmSim) startHost(ctx context.Context, libvirtd, dir string) (*libvirt.Libvirt, error) {
	empty := filepath.Join(dir, "no-drivers")
	if err := os.MkdirAll(empty, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "libvirtd.conf")
	cfg := fmt.Sprintf("unix_sock_dir = %q\nunix_sock_rw_perms = \"0700\"\nlog_outputs = %q\n",
		dir, "3:file:"+filepath.Join(dir, "libvirtd.log"))
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(libvirtd, "-f", conf, "-p", filepath.Join(dir, "libvirtd.pid"))
	// No hypervisor or storage modules: the daemon serves libvirt's built-in test driver only,
	// and needs none of the system daemon's users, groups or directories.
	cmd.Env = append(os.Environ(), "LIBVIRT_DRIVER_DIR="+empty,
		"XDG_CONFIG_HOME="+dir, "XDG_CACHE_HOME="+dir, "XDG_RUNTIME_DIR="+dir, "XDG_STATE_HOME="+dir)
	cmd.Dir = dir
	// The daemon dies with this process even when it is killed without running stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", libvirtd, err)
	}
	dm := &daemon{cmd: cmd, exited: make(chan struct{})}
	go func() {
		dm.err = cmd.Wait()
		close(dm.exited)
	}()
	s.mu.Lock()
	s.daemons = append(s.daemons, dm)
	s.mu.Unlock()

	sock := filepath.Join(dir, "libvirt-sock")
	deadline := time.Now().Add(15 * time.Second)
	for {
		l, err := holdDefault(ctx, sock)
		if err == nil {
			s.mu.Lock()
			s.holders = append(s.holders, l)
			s.mu.Unlock()
			return l, emptyHost(l)
		}
		select {
		case <-dm.exited:
			return nil, fmt.Errorf("libvirtd exited (%v); log: %s", dm.err, tail(filepath.Join(dir, "libvirtd.log")))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("libvirtd socket %s did not answer within 15s: %w", sock, err)
		}
	}
}

// holdDefault opens test:///default on the daemon behind sock.
func holdDefault(ctx context.Context, sock string) (*libvirt.Libvirt, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "unix", sock)
	if err != nil {
		return nil, err
	}
	l := libvirt.NewWithDialer(dialers.NewAlreadyConnected(c))
	if err := l.ConnectToURI("test:///default"); err != nil {
		_ = c.Close()
		return nil, err
	}
	return l, nil
}

// emptyHost removes the test driver's sample domain and pool so a simulated host starts empty.
func emptyHost(l *libvirt.Libvirt) error {
	doms, _, err := l.ConnectListAllDomains(1, 0)
	if err != nil {
		return fmt.Errorf("list sample domains: %w", err)
	}
	for _, d := range doms {
		if st, _, err := l.DomainGetState(d, 0); err == nil && libvirt.DomainState(st) != libvirt.DomainShutoff {
			if err := l.DomainDestroy(d); err != nil {
				return fmt.Errorf("stop sample domain %s: %w", d.Name, err)
			}
		}
		if err := l.DomainUndefine(d); err != nil {
			return fmt.Errorf("remove sample domain %s: %w", d.Name, err)
		}
	}
	pools, _, err := l.ConnectListAllStoragePools(1, 0)
	if err != nil {
		return fmt.Errorf("list sample pools: %w", err)
	}
	for _, p := range pools {
		if active, err := l.StoragePoolIsActive(p); err == nil && active == 1 {
			if err := l.StoragePoolDestroy(p); err != nil {
				return fmt.Errorf("stop sample pool %s: %w", p.Name, err)
			}
		}
		if err := l.StoragePoolUndefine(p); err != nil {
			return fmt.Errorf("remove sample pool %s: %w", p.Name, err)
		}
	}
	return nil
}

// preparePool defines and starts the cluster's primary pool on its storage host.
func preparePool(l *libvirt.Libvirt, name string) error {
	doc, err := (&libvirtxml.StoragePool{Type: "dir", Name: name,
		Target: &libvirtxml.StoragePoolTarget{Path: "/" + name}}).Marshal()
	if err != nil {
		return fmt.Errorf("marshal pool %s: %w", name, err)
	}
	p, err := l.StoragePoolDefineXML(doc, 0)
	if err != nil {
		return fmt.Errorf("define pool %s: %w", name, err)
	}
	if err := l.StoragePoolCreate(p, 0); err != nil {
		return fmt.Errorf("start pool %s: %w", name, err)
	}
	return nil
}

// stop closes the holding connections, ends the daemons it started (by their own process) and
// removes the directory. It may be called more than once.
func (s *kvmSim) stop() {
	s.mu.Lock()
	holders, daemons := s.holders, s.daemons
	s.holders, s.daemons = nil, nil
	s.mu.Unlock()
	for _, l := range holders {
		_ = l.Disconnect()
	}
	for _, dm := range daemons {
		if err := dm.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			s.log.Warn("signal libvirtd", "pid", dm.cmd.Process.Pid, "err", err)
		}
	}
	for _, dm := range daemons {
		select {
		case <-dm.exited:
		case <-time.After(5 * time.Second):
			s.log.Warn("libvirtd did not stop on SIGTERM; killing it", "pid", dm.cmd.Process.Pid)
			_ = dm.cmd.Process.Kill()
			<-dm.exited
		}
	}
	if s.base != "" {
		if err := os.RemoveAll(s.base); err != nil {
			s.log.Warn("remove KVM simulation directory", "dir", s.base, "err", err)
		}
	}
}

// tail returns the last lines of a log file for an error message.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}
