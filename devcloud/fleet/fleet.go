// Package fleet is a simulated fleet of virtual routers for `sysvm dev`, tests and
// benchmarks. Each simulated router has its own sandbox root (etc/hosts, etc/dhcphosts.txt,
// haproxy.cfg, an iptables-save file, release and scripts signature files, a sample custom
// check) rendered from its RouterSpec, its own in-memory service states and figures
// (agent.SandboxSystem), and is reachable over real SSH along the production access path,
// where it runs the real sysvm-agent code (agent.Main):
//
//   - KVM and XenServer: each simulated hypervisor host is an SSH server on 127.0.0.1 (a random
//     port, HostAddr); the platform connects to it and opens a direct-tcpip channel to the
//     router's link-local IP, port 3922; inside that channel the router's own SSH server runs
//     a second, real SSH handshake (in process: no listener per router, so 10,000 routers
//     need one listener per host);
//   - VMware: DialContext maps "<private IP>:3922" to an in-process connection to the router's
//     SSH server (the platform's SSH executor accepts such a dialer); other loopback addresses
//     are dialled for real.
//
// Faults (Inject) make routers fail specific checks; Clear restores them.
package fleet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
)

// RouterPort is the SSH port of system VMs.
const RouterPort = 3922

// CommandFunc handles an exec request for a program other than sysvm-agent (Options.Commands),
// e.g. a simulated ping for diagnostics. It returns the exit status.
type CommandFunc func(ctx context.Context, routerID string, argv []string, stdin io.Reader, stdout, stderr io.Writer) int

// Options configure a Fleet.
type Options struct {
	// AuthorizedKeys are the platform's public keys, accepted by simulated hosts and routers
	// (CloudStack installs the same management key in both). Required.
	AuthorizedKeys []ssh.PublicKey
	// User is the only user accepted (default "root").
	User string
	// HostKey is the host key of every simulated host and router; nil generates an ed25519 key.
	HostKey ssh.Signer
	// Dir holds the routers' sandbox roots; "" creates a temporary directory, removed by Close.
	Dir string
	// NoSampleCheck leaves /root/health_checks/ empty (no process per run, for large
	// benchmarks).
	NoSampleCheck bool
	// Commands handle exec requests for other programs, by argv[0]; an unknown program exits
	// 127.
	Commands map[string]CommandFunc
	// Logger receives the fleet's logs (default: discarded).
	Logger *slog.Logger
}

// Fleet is a set of simulated routers and hosts. Safe for concurrent use; Close it when done.
type Fleet struct {
	opts      Options
	dir       string
	ownDir    bool
	hostKey   ssh.Signer
	serverCfg *ssh.ServerConfig
	log       *slog.Logger
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	seq       int
	routers   map[string]*router
	hosts     map[string]*host
	byPrivate map[string]*router // VMware routers by private IP
	// holders are the running VMs holding each service address (addresses.go); conflicts
	// every moment two held one.
	holders   map[string][]string
	conflicts []Conflict
}

// router is one simulated router.
type router struct {
	root string
	sys  *agent.SandboxSystem

	mu     sync.Mutex
	spec   RouterSpec
	faults faultSet
	// conns are the router's SSH connections; it refuses them while unreachable.
	conns connSet
	// running: powered on (RouterSpec.PoweredOff, SetRunning); assoc: the service addresses
	// associated over ip-assoc; held: what the holders index has for it (guarded by Fleet.mu).
	running bool
	assoc   []string
	held    []string
}

// host is one simulated hypervisor host: an SSH listener forwarding to its routers.
type host struct {
	name        string
	ln          net.Listener
	byLinkLocal map[string]*router // guarded by Fleet.mu
	// conns are the host's SSH connections; it refuses them once the host is shut down.
	conns connSet
}

// New starts an empty fleet.
func New(opts Options) (*Fleet, error) {
	if len(opts.AuthorizedKeys) == 0 {
		return nil, errors.New("fleet: Options.AuthorizedKeys is required (the platform's public key)")
	}
	if opts.User == "" {
		opts.User = sshexec.DefaultUser
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hostKey := opts.HostKey
	if hostKey == nil {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("fleet: generate host key: %w", err)
		}
		if hostKey, err = ssh.NewSignerFromKey(priv); err != nil {
			return nil, fmt.Errorf("fleet: host key: %w", err)
		}
	}
	dir, ownDir := opts.Dir, false
	if dir == "" {
		d, err := os.MkdirTemp("", "sysvm-fleet-")
		if err != nil {
			return nil, fmt.Errorf("fleet: sandbox directory: %w", err)
		}
		dir, ownDir = d, true
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("fleet: sandbox directory: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{
		opts: opts, dir: dir, ownDir: ownDir, hostKey: hostKey, log: log.With("component", "fleet"),
		ctx: ctx, cancel: cancel,
		routers: map[string]*router{}, hosts: map[string]*host{}, byPrivate: map[string]*router{},
		holders: map[string][]string{},
	}
	f.serverCfg = &ssh.ServerConfig{
		PublicKeyCallback: f.checkKey,
		ServerVersion:     "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3 (sysvm fleet)",
	}
	f.serverCfg.AddHostKey(hostKey)
	return f, nil
}

// checkKey accepts the configured user with one of the platform's keys.
func (f *Fleet) checkKey(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	if meta.User() != f.opts.User {
		return nil, fmt.Errorf("user %q not allowed", meta.User())
	}
	wire := key.Marshal()
	for _, k := range f.opts.AuthorizedKeys {
		if string(k.Marshal()) == string(wire) {
			return &ssh.Permissions{}, nil
		}
	}
	return nil, fmt.Errorf("key %s not authorized", ssh.FingerprintSHA256(key))
}

// HostKey is the public host key of every simulated host and router.
func (f *Fleet) HostKey() ssh.PublicKey { return f.hostKey.PublicKey() }

// Dir is the directory holding the routers' sandbox roots.
func (f *Fleet) Dir() string { return f.dir }

// AddHost starts the SSH listener of a simulated hypervisor host, if not yet started, and
// returns its address ("127.0.0.1:port"). Add starts hosts on demand.
func (f *Fleet) AddHost(name string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, err := f.hostLocked(name)
	if err != nil {
		return "", err
	}
	return h.ln.Addr().String(), nil
}

func (f *Fleet) hostLocked(name string) (*host, error) {
	if f.closed {
		return nil, errors.New("fleet is closed")
	}
	if h, ok := f.hosts[name]; ok {
		return h, nil
	}
	if name == "" {
		return nil, errors.New("host name is empty")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start simulated host %s: %w", name, err)
	}
	h := &host{name: name, ln: ln, byLinkLocal: map[string]*router{}}
	f.hosts[name] = h
	f.wg.Go(func() { f.acceptHost(h) })
	f.log.Debug("simulated host started", "host", name, "addr", ln.Addr().String())
	return h, nil
}

// HostAddr is the SSH address ("127.0.0.1:port") of a simulated host, or "" if unknown.
func (f *Fleet) HostAddr(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h, ok := f.hosts[name]; ok {
		return h.ln.Addr().String()
	}
	return ""
}

// Hosts lists the simulated hosts' names.
func (f *Fleet) Hosts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.hosts))
	for n := range f.hosts {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Add creates a simulated router: its sandbox root rendered from spec, a healthy sandbox
// System, and its SSH endpoint on its host (KVM, XenServer) or through DialContext (VMware).
func (f *Fleet) Add(spec RouterSpec) error {
	if err := spec.validate(); err != nil {
		return err
	}
	f.mu.Lock()
	f.seq++
	seq := f.seq
	f.mu.Unlock()
	// The sequence number keeps directories apart when IDs differ only in unsafe characters.
	root := filepath.Join(f.dir, fmt.Sprintf("%06d-%s", seq, safeName(spec.ID)))
	r := &router{root: root, sys: agent.NewSandboxSystem(root), spec: spec, running: !spec.PoweredOff}
	r.sys.SetAddressHook(func(ctx context.Context, up []string) error { return f.associate(ctx, r, up) })

	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return errors.New("add router: fleet is closed")
	}
	if _, ok := f.routers[spec.ID]; ok {
		f.mu.Unlock()
		return fmt.Errorf("add router %s: already in the fleet", spec.ID)
	}
	if err := f.checkAddressesLocked(spec, nil); err != nil {
		f.mu.Unlock()
		return fmt.Errorf("add router %s: %w", spec.ID, err)
	}
	// Reserve the ID while the files are written outside the lock.
	f.routers[spec.ID] = nil
	f.mu.Unlock()

	err := r.render(f.opts.NoSampleCheck)
	if err == nil {
		r.resetSystem()
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil && f.closed {
		err = errors.New("fleet is closed")
	}
	if err == nil {
		err = f.checkAddressesLocked(spec, nil)
	}
	if err == nil {
		err = f.indexLocked(r, spec)
	}
	if err != nil {
		delete(f.routers, spec.ID)
		_ = os.RemoveAll(root)
		return fmt.Errorf("add router %s: %w", spec.ID, err)
	}
	f.routers[spec.ID] = r
	f.refreshLocked(r, spec.ID)
	return nil
}

// checkAddressesLocked refuses a spec whose access address is taken by another router.
func (f *Fleet) checkAddressesLocked(spec RouterSpec, self *router) error {
	if spec.linkLocal() {
		if h, ok := f.hosts[spec.HostName]; ok {
			if other, ok := h.byLinkLocal[canonical(spec.LinkLocalIP)]; ok && other != self {
				return fmt.Errorf("link-local IP %s is taken on host %s", spec.LinkLocalIP, spec.HostName)
			}
		}
		return nil
	}
	if other, ok := f.byPrivate[canonical(spec.PrivateIP)]; ok && other != self {
		return fmt.Errorf("private IP %s is taken", spec.PrivateIP)
	}
	return nil
}

// indexLocked makes the router reachable along its access path.
func (f *Fleet) indexLocked(r *router, spec RouterSpec) error {
	if spec.linkLocal() {
		h, err := f.hostLocked(spec.HostName)
		if err != nil {
			return err
		}
		h.byLinkLocal[canonical(spec.LinkLocalIP)] = r
		return nil
	}
	f.byPrivate[canonical(spec.PrivateIP)] = r
	return nil
}

func (f *Fleet) unindexLocked(r *router, spec RouterSpec) {
	if spec.linkLocal() {
		if h, ok := f.hosts[spec.HostName]; ok && h.byLinkLocal[canonical(spec.LinkLocalIP)] == r {
			delete(h.byLinkLocal, canonical(spec.LinkLocalIP))
		}
		return
	}
	if f.byPrivate[canonical(spec.PrivateIP)] == r {
		delete(f.byPrivate, canonical(spec.PrivateIP))
	}
}

// Update replaces a router's spec, keeping it in line with the inventory (VMs added, rules
// changed, the router migrated to another host): its files are rendered again (active file
// faults still apply) and its access path moves. Service states and other faults stay.
func (f *Fleet) Update(spec RouterSpec) error {
	if err := spec.validate(); err != nil {
		return err
	}
	r, err := f.router(spec.ID)
	if err != nil {
		return fmt.Errorf("update router: %w", err)
	}
	f.mu.Lock()
	if err := f.checkAddressesLocked(spec, r); err != nil {
		f.mu.Unlock()
		return fmt.Errorf("update router %s: %w", spec.ID, err)
	}
	r.mu.Lock()
	old := r.spec
	r.spec = spec
	r.running = !spec.PoweredOff
	r.mu.Unlock()
	f.unindexLocked(r, old)
	err = f.indexLocked(r, spec)
	f.refreshLocked(r, spec.ID)
	f.mu.Unlock()
	if err != nil {
		return fmt.Errorf("update router %s: %w", spec.ID, err)
	}
	if old.linkLocal() != spec.linkLocal() || old.HostName != spec.HostName ||
		old.LinkLocalIP != spec.LinkLocalIP || old.PrivateIP != spec.PrivateIP {
		r.conns.closeAll(false) // moved: sessions on the old path end
	}
	if err := r.render(f.opts.NoSampleCheck); err != nil {
		return fmt.Errorf("update router %s: %w", spec.ID, err)
	}
	r.applyNetwork()
	return nil
}

// Remove destroys a simulated router: its connections are closed and its sandbox deleted.
func (f *Fleet) Remove(id string) error {
	f.mu.Lock()
	r, ok := f.routers[id]
	if !ok || r == nil {
		f.mu.Unlock()
		return fmt.Errorf("remove router %s: not in the fleet", id)
	}
	delete(f.routers, id)
	r.mu.Lock()
	spec := r.spec
	r.mu.Unlock()
	f.unindexLocked(r, spec)
	f.dropLocked(r, id)
	f.mu.Unlock()
	r.conns.closeAll(false)
	if err := os.RemoveAll(r.root); err != nil {
		return fmt.Errorf("remove router %s: %w", id, err)
	}
	return nil
}

// Routers lists the routers' IDs.
func (f *Fleet) Routers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.routers))
	for id, r := range f.routers {
		if r != nil {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func (f *Fleet) router(id string) (*router, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.routers[id]
	if !ok || r == nil {
		return nil, fmt.Errorf("router %s is not in the fleet", id)
	}
	return r, nil
}

// Spec returns a router's current spec.
func (f *Fleet) Spec(id string) (RouterSpec, error) {
	r, err := f.router(id)
	if err != nil {
		return RouterSpec{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spec, nil
}

// Root is the sandbox directory standing for the router's "/".
func (f *Fleet) Root(id string) (string, error) {
	r, err := f.router(id)
	if err != nil {
		return "", err
	}
	return r.root, nil
}

// System is the router's sandbox System (service states, figures), for tests that need to
// look at or change more than faults do.
func (f *Fleet) System(id string) (*agent.SandboxSystem, error) {
	r, err := f.router(id)
	if err != nil {
		return nil, err
	}
	return r.sys, nil
}

// Target is what the platform's SSH executor needs to reach the router along its access
// path: through its host's listener to the link-local IP (KVM, XenServer), or to the private
// IP through DialContext (VMware). Host keys are Fleet.HostKey.
func (f *Fleet) Target(id string) (sshexec.Target, error) {
	r, err := f.router(id)
	if err != nil {
		return sshexec.Target{}, err
	}
	r.mu.Lock()
	spec := r.spec
	r.mu.Unlock()
	t := sshexec.Target{VMName: spec.Name, Hypervisor: spec.hypervisor(), LinkLocalControl: spec.linkLocal(),
		LinkLocalIP: spec.LinkLocalIP, PrivateIP: spec.PrivateIP, Port: RouterPort}
	if t.LinkLocalControl {
		addr := f.HostAddr(spec.HostName)
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return sshexec.Target{}, fmt.Errorf("router %s: host %s has no listener", id, spec.HostName)
		}
		t.HostAddress = host
		t.HostPort, _ = strconv.Atoi(port)
	}
	return t, nil
}

// Inject makes a router faulty. Faults add up until Clear.
func (f *Fleet) Inject(id string, fault Fault) error {
	r, err := f.router(id)
	if err != nil {
		return fmt.Errorf("inject %s: %w", fault, err)
	}
	r.mu.Lock()
	if err := fault.validate(r.spec); err != nil {
		r.mu.Unlock()
		return fmt.Errorf("inject into router %s: %w", id, err)
	}
	r.faults = append(r.faults, fault)
	r.mu.Unlock()
	if err := r.apply(fault, f.opts.NoSampleCheck); err != nil {
		return fmt.Errorf("inject %s into router %s: %w", fault, id, err)
	}
	f.log.Info("fault injected", "router", id, "fault", fault.String())
	return nil
}

// Clear removes every fault of a router: its files are rendered again from its spec and its
// System is healthy again.
func (f *Fleet) Clear(id string) error {
	r, err := f.router(id)
	if err != nil {
		return fmt.Errorf("clear faults: %w", err)
	}
	r.mu.Lock()
	r.faults = nil
	r.mu.Unlock()
	r.conns.accept()
	if err := r.render(f.opts.NoSampleCheck); err != nil {
		return fmt.Errorf("clear faults of router %s: %w", id, err)
	}
	r.resetSystem()
	f.log.Info("faults cleared", "router", id)
	return nil
}

// Faults lists the faults injected into a router since its last Clear.
func (f *Fleet) Faults(id string) ([]Fault, error) {
	r, err := f.router(id)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.faults), nil
}

// Close stops every listener, closes every connection, waits for the sessions to end and
// removes the sandbox directory if the fleet created it.
func (f *Fleet) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	hosts := make([]*host, 0, len(f.hosts))
	for _, h := range f.hosts {
		hosts = append(hosts, h)
	}
	routers := make([]*router, 0, len(f.routers))
	for _, r := range f.routers {
		if r != nil {
			routers = append(routers, r)
		}
	}
	f.mu.Unlock()
	f.cancel()
	for _, h := range hosts {
		_ = h.ln.Close()
		h.conns.closeAll(true)
	}
	for _, r := range routers {
		r.conns.closeAll(false)
	}
	f.wg.Wait()
	if f.ownDir {
		if err := os.RemoveAll(f.dir); err != nil {
			return fmt.Errorf("close fleet: remove %s: %w", f.dir, err)
		}
	}
	return nil
}

// render writes the router's files for its spec and faults (atomically, one file at a time),
// and the sample custom check.
func (r *router) render(noSample bool) error {
	r.mu.Lock()
	spec, faults := r.spec, slices.Clone(r.faults)
	r.mu.Unlock()
	for rel, content := range spec.files(faults) {
		if err := writeFile(filepath.Join(r.root, rel), []byte(content), 0o644); err != nil {
			return err
		}
	}
	checks := filepath.Join(r.root, agent.CustomChecksDir)
	if err := os.MkdirAll(checks, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", checks, err)
	}
	if !noSample {
		if err := writeFile(filepath.Join(checks, SampleCheckName), []byte(sampleCheck), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// resetSystem makes the sandbox System healthy: services running, default figures, writable,
// gateways reachable unless the router is a BACKUP.
func (r *router) resetSystem() {
	r.sys.Reset()
	r.applyNetwork()
}

// applyNetwork sets which gateways answer ping: all of them, except on a BACKUP (guest
// interfaces down) and those made unreachable by a fault.
func (r *router) applyNetwork() {
	r.mu.Lock()
	spec, faults := r.spec, slices.Clone(r.faults)
	r.mu.Unlock()
	var reachable []string
	if spec.RedundantState != agent.RedundantBackup {
		reachable = slices.Clone(spec.Gateways)
		if faults.has(FaultGatewayUnreachable) && len(reachable) > 0 {
			reachable = reachable[1:]
		}
	}
	r.sys.SetReachable(reachable...)
}

// apply puts one fault into effect.
func (r *router) apply(fault Fault, noSample bool) error {
	switch fault.Name {
	case FaultServiceDown:
		r.sys.SetService(fault.Service, false, false)
	case FaultServiceBroken:
		r.sys.SetService(fault.Service, false, true)
	case FaultDiskFull:
		d, err := r.sys.Statfs(r.root)
		if err != nil {
			return err
		}
		r.sys.SetDisk(d.TotalBytes, diskFullFreeBytes)
	case FaultReadOnlyFS:
		r.sys.SetReadOnly(true)
	case FaultHighCPU:
		r.sys.SetCPUUsage(highCPUPercent)
	case FaultHighMemory:
		r.sys.SetMemory(agent.MemoryStats{TotalBytes: 1 << 30, AvailableBytes: 10 << 20})
	case FaultGatewayUnreachable:
		r.applyNetwork()
	case FaultUnreachable:
		r.conns.closeAll(true)
	case FaultDNSEntryMissing, FaultDHCPEntryMissing, FaultPortForwardMissing, FaultLBRuleMissing, FaultVersionMismatch:
		return r.render(noSample)
	}
	return nil
}

func (r *router) isUnreachable() bool { return r.conns.refusing() }

// writeFile replaces a sandbox file atomically, so an agent reading it never sees half.
func writeFile(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".fleet*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), perm)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// safeName turns a router ID into a directory name.
func safeName(id string) string {
	b := []byte(id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	s := string(b)
	if s == "." || s == ".." {
		s = "_" + s
	}
	return s
}
