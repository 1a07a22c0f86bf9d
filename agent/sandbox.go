package agent

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// IptablesSaveFile is where a SandboxSystem reads its iptables-save output, relative to its
// root. It is the file Debian's iptables-persistent restores at boot, in iptables-save format.
const IptablesSaveFile = "etc/iptables/rules.v4"

// The services a virtual router runs, by systemd unit name.
const (
	ServiceDnsmasq = "dnsmasq"
	ServiceHaproxy = "haproxy"
	ServiceApache2 = "apache2"
	ServiceSSH     = "ssh"
)

// RouterServices returns the daemons of a virtual router, the ones service monitoring
// restarts.
func RouterServices() []string {
	return []string{ServiceDnsmasq, ServiceHaproxy, ServiceApache2, ServiceSSH}
}

// CanonicalService maps the names operators use to the systemd unit name ("sshd" -> "ssh",
// "httpd" -> "apache2"); other names are returned unchanged.
func CanonicalService(name string) string {
	switch strings.TrimSuffix(name, ".service") {
	case "sshd", "ssh":
		return ServiceSSH
	case "httpd", "apache", "apache2":
		return ServiceApache2
	}
	return strings.TrimSuffix(name, ".service")
}

// SandboxSystem is the System of a simulated router: the file tree is a sandbox directory,
// service states and resource figures are held in memory, iptables-save output is the file
// IptablesSaveFile under the root, ping answers for the reachable set, and a read-only root
// file system is simulated in WriteFile and Remove (root ignores permission bits, so chmod
// cannot simulate it). Custom check scripts run for real with os/exec.
type SandboxSystem struct {
	root string

	mu        sync.Mutex
	now       func() time.Time
	disk      DiskStats
	cpu       float64
	mem       MemoryStats
	services  map[string]*sandboxService
	reachable map[string]bool
	readOnly  bool
	// addresses are the service addresses the VM holds (ip-assoc); onAddresses, when set,
	// is the simulated network deciding whether it may (SetAddressHook).
	addresses   []string
	onAddresses func(ctx context.Context, up []string) error
}

type sandboxService struct {
	active       bool
	restartFails bool
	restarts     int
}

// NewSandboxSystem returns a healthy sandbox System rooted at root: every router service
// running, 2 GiB disk with 1.5 GiB free, 7.5% CPU, 40% memory used, no gateway reachable.
func NewSandboxSystem(root string) *SandboxSystem {
	s := &SandboxSystem{root: root, now: time.Now}
	s.Reset()
	return s
}

// Reset makes the System healthy again (the state NewSandboxSystem returns); the clock is
// kept.
func (s *SandboxSystem) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.disk = DiskStats{TotalBytes: 2 << 30, FreeBytes: 1536 << 20}
	s.cpu = 7.5
	s.mem = MemoryStats{TotalBytes: 1 << 30, AvailableBytes: 1 << 30 * 6 / 10}
	s.services = map[string]*sandboxService{}
	for _, name := range RouterServices() {
		s.services[name] = &sandboxService{active: true}
	}
	s.reachable = map[string]bool{}
	s.readOnly = false
}

// SetAddressHook lets the simulated network decide on the service addresses this VM brings up
// (ip-assoc): hook is called with the whole set and may refuse it. Reset keeps the hook.
func (s *SandboxSystem) SetAddressHook(hook func(ctx context.Context, up []string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onAddresses = hook
}

// SetAddresses implements AddressSystem: the hook (if any) is asked first; a refusal changes
// nothing.
func (s *SandboxSystem) SetAddresses(ctx context.Context, up []string) error {
	s.mu.Lock()
	hook := s.onAddresses
	s.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, slices.Clone(up)); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addresses = slices.Clone(up)
	return nil
}

// Addresses are the service addresses the VM holds (what ip-assoc last set).
func (s *SandboxSystem) Addresses() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.addresses)
}

// Root is the sandbox directory.
func (s *SandboxSystem) Root() string { return s.root }

// SetClock replaces the clock (tests).
func (s *SandboxSystem) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// SetDisk sets the root file system's total and free bytes.
func (s *SandboxSystem) SetDisk(totalBytes, freeBytes uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.disk.TotalBytes, s.disk.FreeBytes = totalBytes, freeBytes
}

// SetCPUUsage sets the CPU usage in percent.
func (s *SandboxSystem) SetCPUUsage(percent float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cpu = percent
}

// SetMemory sets the memory figures.
func (s *SandboxSystem) SetMemory(m MemoryStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mem = m
}

// SetService sets whether a service runs and whether restarting it fails. Names go through
// CanonicalService.
func (s *SandboxSystem) SetService(name string, active, restartFails bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.service(name)
	svc.active, svc.restartFails = active, restartFails
}

// ServiceRestarts returns how many times a service was restarted.
func (s *SandboxSystem) ServiceRestarts(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.service(name).restarts
}

func (s *SandboxSystem) service(name string) *sandboxService {
	name = CanonicalService(name)
	svc, ok := s.services[name]
	if !ok {
		svc = &sandboxService{}
		s.services[name] = svc
	}
	return svc
}

// SetReachable replaces the set of addresses that answer ping.
func (s *SandboxSystem) SetReachable(ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reachable = map[string]bool{}
	for _, ip := range ips {
		s.reachable[ip] = true
	}
}

// SetUnreachable removes addresses from the set that answers ping.
func (s *SandboxSystem) SetUnreachable(ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ip := range ips {
		delete(s.reachable, ip)
	}
}

// SetReadOnly makes every write under the root fail with EROFS, as a root file system
// remounted read-only after I/O errors does.
func (s *SandboxSystem) SetReadOnly(ro bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readOnly = ro
}

// Now returns the sandbox clock.
func (s *SandboxSystem) Now() time.Time {
	s.mu.Lock()
	now := s.now
	s.mu.Unlock()
	return now()
}

// Statfs returns the simulated figures of the root file system.
func (s *SandboxSystem) Statfs(path string) (DiskStats, error) {
	if _, err := os.Stat(path); err != nil {
		return DiskStats{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.disk
	d.ReadOnly = s.readOnly
	return d, nil
}

// CPUUsage returns the simulated CPU usage.
func (s *SandboxSystem) CPUUsage(ctx context.Context) (float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("sample cpu: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cpu, nil
}

// Memory returns the simulated memory figures.
func (s *SandboxSystem) Memory() (MemoryStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem, nil
}

// Ping answers for addresses in the reachable set.
func (s *SandboxSystem) Ping(ctx context.Context, ip string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ping %s: %w", ip, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.reachable[ip] {
		return fmt.Errorf("ping %s: no reply", ip)
	}
	return nil
}

// ServiceActive reports the simulated service state; an unknown service is inactive, as
// systemctl says of a unit that does not exist.
func (s *SandboxSystem) ServiceActive(ctx context.Context, name string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc, ok := s.services[CanonicalService(name)]
	return ok && svc.active, nil
}

// RestartService starts the service unless it was set to fail restarting.
func (s *SandboxSystem) RestartService(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc, ok := s.services[CanonicalService(name)]
	if !ok {
		return fmt.Errorf("restart service %s: unit %s.service not found", name, name)
	}
	svc.restarts++
	if svc.restartFails {
		svc.active = false
		return fmt.Errorf("restart service %s: job for %s.service failed because the control process exited with error code", name, CanonicalService(name))
	}
	svc.active = true
	return nil
}

// IptablesSave returns the content of IptablesSaveFile under the root.
func (s *SandboxSystem) IptablesSave(ctx context.Context) (string, error) {
	data, err := os.ReadFile(filepath.Join(s.root, IptablesSaveFile))
	if err != nil {
		return "", fmt.Errorf("iptables-save: %w", err)
	}
	return string(data), nil
}

// Exec runs a real program with os/exec (custom checks are real scripts in the sandbox).
func (s *SandboxSystem) Exec(ctx context.Context, cmd Command) (ExecResult, error) {
	return runCommand(ctx, cmd)
}

// WriteFile writes a file under the root atomically, or fails with EROFS when the sandbox is
// read-only.
func (s *SandboxSystem) WriteFile(path string, data []byte, perm fs.FileMode) error {
	if err := s.writable("open", path); err != nil {
		return err
	}
	// No fsync: a sandbox has no power to lose, and thousands of routers share one disk.
	return writeFileAtomic(path, data, perm, false)
}

// Remove removes a file under the root, or fails with EROFS when the sandbox is read-only.
func (s *SandboxSystem) Remove(path string) error {
	if err := s.writable("remove", path); err != nil {
		return err
	}
	return os.Remove(path)
}

func (s *SandboxSystem) writable(op, path string) error {
	rel, err := filepath.Rel(s.root, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return &fs.PathError{Op: op, Path: path, Err: fmt.Errorf("outside the sandbox root %s", s.root)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readOnly {
		return &fs.PathError{Op: op, Path: path, Err: syscall.EROFS}
	}
	return nil
}
