package kvm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/sysvm/sysvm/hypervisors"
)

// DefaultShutdownTimeout is how long StopVM waits for a guest to power off after an ACPI
// shutdown request before it powers the VM off, as CloudStack's KVM agent does.
const DefaultShutdownTimeout = 60 * time.Second

// redialAfter is how long a host that did not answer is reported unreachable without a new dial.
const redialAfter = 5 * time.Second

// Options tune a Driver; the zero value is the default.
type Options struct {
	// Logger receives the driver's log lines (default slog.Default()).
	Logger *slog.Logger
	// ShutdownTimeout bounds a graceful StopVM (default DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
}

// Driver is the KVM hypervisors.Driver: one libvirt connection per host plus the storage
// connection. It is safe for concurrent use.
type Driver struct {
	log             *slog.Logger
	shutdownTimeout time.Duration
	hosts           map[string]*hostConn
	names           []string // host names, sorted
	storage         *hostConn
	locks           hypervisors.KeyedMutex
}

var _ hypervisors.Driver = (*Driver)(nil)

// Connect opens the KVM driver for conn with default options; it is the hypervisors.Connector
// to register for hypervisors.KVM.
func Connect(ctx context.Context, conn hypervisors.Connection) (hypervisors.Driver, error) {
	d, err := ConnectWithOptions(ctx, conn, Options{})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// ConnectWithOptions opens the KVM driver for conn. It dials every endpoint at once; it fails
// when the connection is malformed (ErrInvalid), when a daemon refuses it (ErrAuth), or when no
// endpoint answers (ErrUnreachable). Hosts that do not answer are reported with
// Connected=false and dialled again on their next use.
func ConnectWithOptions(ctx context.Context, conn hypervisors.Connection, opts Options) (*Driver, error) {
	if conn.Type != "" && conn.Type != hypervisors.KVM {
		return nil, hypervisors.Errorf(hypervisors.ErrInvalid, "connect", conn.Endpoint, "connection is for %s, not KVM", conn.Type)
	}
	d := &Driver{log: opts.Logger, shutdownTimeout: opts.ShutdownTimeout, hosts: map[string]*hostConn{}}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.log = d.log.With("hypervisor", "KVM")
	if d.shutdownTimeout <= 0 {
		d.shutdownTimeout = DefaultShutdownTimeout
	}

	byEndpoint := map[string]*hostConn{}
	for name, raw := range conn.Hosts {
		if name == "" {
			return nil, hypervisors.Errorf(hypervisors.ErrInvalid, "connect", raw, "a host has no name")
		}
		ep, err := ParseEndpoint(raw)
		if err != nil {
			return nil, err
		}
		if other, dup := byEndpoint[ep.String()]; dup {
			return nil, hypervisors.Errorf(hypervisors.ErrInvalid, "connect", raw,
				"hosts %q and %q share one endpoint; each host needs its own libvirtd connection", other.name, name)
		}
		h := &hostConn{name: name, ep: ep}
		byEndpoint[ep.String()] = h
		d.hosts[name] = h
		d.names = append(d.names, name)
	}
	sort.Strings(d.names)

	switch {
	case conn.Endpoint != "":
		ep, err := ParseEndpoint(conn.Endpoint)
		if err != nil {
			return nil, err
		}
		if h, ok := byEndpoint[ep.String()]; ok {
			d.storage = h
		} else {
			d.storage = &hostConn{ep: ep}
		}
	case len(d.names) > 0:
		d.storage = d.hosts[d.names[0]]
	default:
		return nil, hypervisors.Errorf(hypervisors.ErrInvalid, "connect", "", "connection has neither an endpoint nor hosts")
	}

	conns := d.conns()
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, h := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = h.get(ctx)
		}()
	}
	wg.Wait()
	answered := 0
	for _, err := range errs {
		switch {
		case err == nil:
			answered++
		case !errors.Is(err, hypervisors.ErrUnreachable):
			_ = d.Close()
			return nil, err
		}
	}
	if answered == 0 {
		_ = d.Close()
		return nil, errs[0]
	}
	for i, err := range errs {
		if err != nil {
			d.log.Warn("libvirt host not answering; it is dialled again on use", "host", conns[i].name, "endpoint", conns[i].ep.String(), "err", err)
		}
	}

	if len(d.names) == 0 {
		// A lone endpoint is its own host, named as libvirtd names it.
		l, err := d.storage.get(ctx)
		if err != nil {
			_ = d.Close()
			return nil, err
		}
		hn, err := l.ConnectGetHostname()
		if err != nil {
			_ = d.Close()
			return nil, classify("connect", conn.Endpoint, fmt.Errorf("get hostname: %w", err))
		}
		d.storage.name = hn
		d.hosts[hn] = d.storage
		d.names = []string{hn}
	}
	d.log.Debug("libvirt connected", "hosts", d.names, "storage", d.storage.ep.String())
	return d, nil
}

// conns lists every distinct connection: the hosts in name order, then the storage connection
// when it is no host's.
func (d *Driver) conns() []*hostConn {
	out := make([]*hostConn, 0, len(d.names)+1)
	storageIsHost := false
	for _, n := range d.names {
		out = append(out, d.hosts[n])
		if d.hosts[n] == d.storage {
			storageIsHost = true
		}
	}
	if !storageIsHost && d.storage != nil {
		out = append(out, d.storage)
	}
	return out
}

// Type is hypervisors.KVM.
func (d *Driver) Type() hypervisors.Type { return hypervisors.KVM }

// Capabilities: cold migration and cold scaling, link-local control, QCOW2 and RAW templates.
func (d *Driver) Capabilities() hypervisors.Capabilities {
	return hypervisors.Capabilities{
		LiveMigration:    false,
		HotScale:         false,
		LinkLocalControl: true,
		TemplateFormats:  []string{"QCOW2", "RAW"},
	}
}

// Close disconnects from every libvirtd.
func (d *Driver) Close() error {
	var errs []error
	for _, h := range d.conns() {
		if err := h.close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", h.ep.String(), err))
		}
	}
	return errors.Join(errs...)
}

// HostNames lists the cluster's host names in order.
func (d *Driver) HostNames() []string { return append([]string(nil), d.names...) }

// Hosts describes every host; a host whose libvirtd does not answer has Connected=false.
func (d *Driver) Hosts(ctx context.Context) ([]hypervisors.HostInfo, error) {
	out := make([]hypervisors.HostInfo, len(d.names))
	var wg sync.WaitGroup
	errs := make([]error, len(d.names))
	for i, n := range d.names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = d.hostInfo(ctx, d.hosts[n])
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// HostInfo describes one host; ErrNotFound when the cluster has no such host.
func (d *Driver) HostInfo(ctx context.Context, host string) (hypervisors.HostInfo, error) {
	h, ok := d.hosts[host]
	if !ok {
		return hypervisors.HostInfo{}, hypervisors.Errorf(hypervisors.ErrNotFound, "host info", host, "no such host in this cluster (hosts: %s)", strings.Join(d.names, ", "))
	}
	return d.hostInfo(ctx, h)
}

func (d *Driver) hostInfo(ctx context.Context, h *hostConn) (hypervisors.HostInfo, error) {
	hi := hypervisors.HostInfo{Name: h.name}
	l, err := h.get(ctx)
	if errors.Is(err, hypervisors.ErrUnreachable) {
		return hi, nil
	}
	if err != nil {
		return hi, err
	}
	_, mem, cpus, mhz, _, _, _, _, err := l.NodeGetInfo()
	if err != nil {
		if h.lost(err) {
			return hi, nil
		}
		return hi, classify("host info", h.name, err)
	}
	lib, err := l.ConnectGetLibVersion()
	if err != nil {
		return hi, classify("host info", h.name, err)
	}
	hvType, err := l.ConnectGetType()
	if err != nil {
		return hi, classify("host info", h.name, err)
	}
	hv, err := l.ConnectGetVersion()
	if err != nil {
		return hi, classify("host info", h.name, err)
	}
	hi.CPUs, hi.CPUMHz, hi.MemoryMB = int(cpus), int(mhz), int64(mem/1024)
	hi.Version = fmt.Sprintf("libvirt %s, %s %s", versionString(lib), hvType, versionString(hv))
	hi.UUID = h.hostUUID()
	hi.Connected = true
	return hi, nil
}

// versionString renders libvirt's major*1e6+minor*1e3+release encoding.
func versionString(v uint64) string {
	return fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000)
}

// StoragePools lists the active pools of the storage connection with their capacity.
func (d *Driver) StoragePools(ctx context.Context) ([]hypervisors.StoragePool, error) {
	l, err := d.storage.get(ctx)
	if err != nil {
		return nil, err
	}
	pools, _, err := l.ConnectListAllStoragePools(1, libvirt.ConnectListStoragePoolsActive)
	if err != nil {
		return nil, classify("list pools", d.storage.ep.String(), err)
	}
	out := make([]hypervisors.StoragePool, 0, len(pools))
	for _, p := range pools {
		sp, err := poolInfo(l, p)
		if err != nil {
			if isCode(err, libvirt.ErrNoStoragePool) {
				continue // removed while we listed
			}
			return nil, classify("pool info", p.Name, err)
		}
		out = append(out, sp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func poolInfo(l *libvirt.Libvirt, p libvirt.StoragePool) (hypervisors.StoragePool, error) {
	_, capacity, _, available, err := l.StoragePoolGetInfo(p)
	if err != nil {
		return hypervisors.StoragePool{}, err
	}
	raw, err := l.StoragePoolGetXMLDesc(p, 0)
	if err != nil {
		return hypervisors.StoragePool{}, err
	}
	var px libvirtxml.StoragePool
	if err := px.Unmarshal(raw); err != nil {
		return hypervisors.StoragePool{}, fmt.Errorf("parse pool %s XML: %w", p.Name, err)
	}
	return hypervisors.StoragePool{
		Name: p.Name, UUID: uuidString(p.UUID), Type: px.Type,
		CapacityBytes: int64(capacity), FreeBytes: int64(available),
	}, nil
}

// uuidString renders a libvirt UUID in its usual 8-4-4-4-12 form.
func uuidString(u libvirt.UUID) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// hostConn is one libvirt connection, dialled lazily and again after it is lost.
type hostConn struct {
	name string
	ep   Endpoint

	mu       sync.Mutex
	l        *libvirt.Libvirt
	failedAt time.Time // last failed dial: no new dial before redialAfter has passed
	failErr  error
	domType  string // "test", "kvm" or "qemu"
	arch     string // guest arch for kvm/qemu domains
	uuid     string // host UUID from the capabilities
	isTest   bool   // libvirt's test driver
}

// get returns a live connection, dialling when there is none or it was lost.
func (h *hostConn) get(ctx context.Context) (*libvirt.Libvirt, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.l != nil && h.l.IsConnected() {
		return h.l, nil
	}
	h.l = nil
	if err := ctx.Err(); err != nil {
		return nil, hypervisors.Wrap(hypervisors.ErrUnreachable, "connect", h.ep.String(), err)
	}
	// A host that just failed to answer is not dialled again at once, so a dead host in a
	// cluster costs one dial timeout every redialAfter rather than one per call.
	if h.failErr != nil && time.Since(h.failedAt) < redialAfter {
		return nil, h.failErr
	}
	l, err := dial(ctx, h.ep)
	if err != nil {
		if errors.Is(err, hypervisors.ErrUnreachable) {
			h.failedAt, h.failErr = time.Now(), err
		}
		return nil, err
	}
	h.failErr = nil
	if err := h.probe(l); err != nil {
		_ = l.Disconnect()
		return nil, err
	}
	h.l = l
	return l, nil
}

// probe learns the domain type this host takes and its UUID.
func (h *hostConn) probe(l *libvirt.Libvirt) error {
	t, err := l.ConnectGetType()
	if err != nil {
		return classify("connect", h.ep.String(), fmt.Errorf("get driver type: %w", err))
	}
	capsXML, err := l.ConnectGetCapabilities()
	if err != nil {
		return classify("connect", h.ep.String(), fmt.Errorf("get capabilities: %w", err))
	}
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(capsXML); err != nil {
		return hypervisors.Wrap(hypervisors.ErrInvalid, "connect", h.ep.String(), fmt.Errorf("parse capabilities: %w", err))
	}
	h.uuid = caps.Host.UUID
	h.isTest = strings.EqualFold(t, "test")
	if h.isTest {
		h.domType, h.arch = "test", ""
		return nil
	}
	// Prefer kvm (hardware virtualisation), fall back to qemu (TCG), on the host's own arch.
	hostArch := ""
	if caps.Host.CPU != nil {
		hostArch = caps.Host.CPU.Arch
	}
	best, bestArch := "", ""
	for _, g := range caps.Guests {
		if g.OSType != "hvm" || (hostArch != "" && g.Arch.Name != hostArch) {
			continue
		}
		for _, dt := range g.Arch.Domains {
			if dt.Type == "kvm" || (dt.Type == "qemu" && best == "") {
				best, bestArch = dt.Type, g.Arch.Name
			}
		}
	}
	h.domType, h.arch = best, bestArch
	return nil
}

// domainType is the type for new domains on this host, or ErrUnsupported when it runs none.
func (h *hostConn) domainType() (string, string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.domType == "" {
		return "", "", hypervisors.Errorf(hypervisors.ErrUnsupported, "create", h.name, "host %s offers no hvm guest (is QEMU installed?)", h.name)
	}
	return h.domType, h.arch, nil
}

func (h *hostConn) testDriver() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.isTest
}

func (h *hostConn) hostUUID() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.uuid
}

// lost reports whether err means the connection is gone (it is dialled again next time).
func (h *hostConn) lost(err error) bool {
	if !transportError(err) && !errors.Is(err, libvirt.ErrInterrupted) {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.l != nil && !h.l.IsConnected() {
		h.l = nil
	}
	return true
}

func (h *hostConn) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.l == nil {
		return nil
	}
	l := h.l
	h.l = nil
	if !l.IsConnected() {
		return nil
	}
	return l.Disconnect()
}
