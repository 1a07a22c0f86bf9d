package xen

import (
	"context"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/sysvm/sysvm/hypervisors"
)

// Names XAPI pools and CloudStack give things the driver looks up.
const (
	// LinkLocalNetwork is the network of control NICs whose NIC.Network is empty
	// (CloudStack's private.linkLocal.device default).
	LinkLocalNetwork = "cloud_link_local_network"
	// DefaultNetwork is the network of other NICs whose NIC.Network is empty.
	DefaultNetwork = "Pool-wide network associated with eth0"
	// BaseTemplate is the stock XAPI template SeedTemplate clones to make a system VM template.
	BaseTemplate = "Other install media"
	// XenstoreBootArgsKey is where CloudStack puts an HVM system VM's boot arguments.
	XenstoreBootArgsKey = "vm-data/cloudstack/init"

	otherConfigTemplate = "sysvm-template"
	otherConfigNICKind  = "sysvm-nic-kind"
)

type driver struct {
	c   *client
	log *slog.Logger
	// locks serialises work on one VM or template name within this process, so two
	// concurrent CreateVM of one name cannot both clone: XAPI itself allows duplicate names.
	locks hypervisors.KeyedMutex
	once  sync.Once
}

// Connect logs in to the XAPI pool master at conn.Endpoint ("https://xen1.example.com").
// Refused credentials are ErrAuth, an endpoint that does not answer ErrUnreachable.
func Connect(ctx context.Context, conn hypervisors.Connection) (hypervisors.Driver, error) {
	endpoint := redactURL(conn.Endpoint) // no user info or query in errors and logs
	if conn.Type != "" && conn.Type != hypervisors.XenServer {
		return nil, hypervisors.Errorf(hypervisors.ErrInvalid, "connect", endpoint,
			"connection is for %s, not XenServer", conn.Type)
	}
	log := slog.Default().With("hypervisor", "xen", "endpoint", endpoint)
	c, err := newClient(conn.Endpoint, conn.Username, conn.Password, conn.Insecure, log)
	if err != nil {
		return nil, hypervisors.Wrap(hypervisors.ErrInvalid, "connect", endpoint, err)
	}
	if err := c.login(ctx); err != nil {
		return nil, wrap("connect", endpoint, err)
	}
	log.Info("connected to XAPI", "user", conn.Username)
	return &driver{c: c, log: log}, nil
}

func (d *driver) Type() hypervisors.Type { return hypervisors.XenServer }

// Capabilities: XAPI migrates running VMs within a pool (VM.pool_migrate); VCPUs_max and
// the static memory limits only change on a halted VM, so ScaleVM wants it stopped.
func (d *driver) Capabilities() hypervisors.Capabilities {
	return hypervisors.Capabilities{
		LiveMigration: true, HotScale: false, LinkLocalControl: true,
		TemplateFormats: []string{"VHD"},
	}
}

func (d *driver) Close() error {
	var err error
	d.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if lerr := d.c.logout(ctx); lerr != nil {
			err = wrap("close", "", lerr)
		}
	})
	return err
}

func hostInfo(h hostRecord, m hostMetricsRecord) hypervisors.HostInfo {
	cpus, _ := strconv.Atoi(h.CPUInfo["cpu_count"])
	mhz, _ := strconv.ParseFloat(h.CPUInfo["speed"], 64)
	return hypervisors.HostInfo{
		Name: h.NameLabel, UUID: h.UUID, CPUs: cpus, CPUMHz: int(mhz),
		MemoryMB: int64(m.MemoryTotal) >> 20, Version: h.SoftwareVersion["product_version"],
		Connected: m.Live && h.Enabled,
	}
}

func (d *driver) Hosts(ctx context.Context) ([]hypervisors.HostInfo, error) {
	var hosts map[string]hostRecord
	if err := d.c.call(ctx, "host.get_all_records", &hosts); err != nil {
		return nil, wrap("list hosts", "", err)
	}
	var metrics map[string]hostMetricsRecord
	if err := d.c.call(ctx, "host_metrics.get_all_records", &metrics); err != nil {
		return nil, wrap("list hosts", "", err)
	}
	out := make([]hypervisors.HostInfo, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, hostInfo(h, metrics[h.Metrics]))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (d *driver) HostInfo(ctx context.Context, name string) (hypervisors.HostInfo, error) {
	ref, h, err := d.findHost(ctx, name)
	if err != nil {
		return hypervisors.HostInfo{}, wrap("host info", name, err)
	}
	_ = ref
	var m hostMetricsRecord
	if err := d.c.call(ctx, "host_metrics.get_record", &m, h.Metrics); err != nil {
		return hypervisors.HostInfo{}, wrap("host info", name, err)
	}
	return hostInfo(h, m), nil
}

// findHost resolves a host by name_label.
func (d *driver) findHost(ctx context.Context, name string) (string, hostRecord, error) {
	var refs []string
	if err := d.c.call(ctx, "host.get_by_name_label", &refs, name); err != nil {
		return "", hostRecord{}, err
	}
	if len(refs) == 0 {
		return "", hostRecord{}, hypervisors.Errorf(hypervisors.ErrNotFound, "find host", name, "no host named %q in the pool", name)
	}
	var h hostRecord
	if err := d.c.call(ctx, "host.get_record", &h, refs[0]); err != nil {
		return "", hostRecord{}, err
	}
	return refs[0], h, nil
}

func (d *driver) StoragePools(ctx context.Context) ([]hypervisors.StoragePool, error) {
	var srs map[string]srRecord
	if err := d.c.call(ctx, "SR.get_all_records", &srs); err != nil {
		return nil, wrap("list storage pools", "", err)
	}
	out := make([]hypervisors.StoragePool, 0, len(srs))
	for _, sr := range srs {
		if sr.ContentType == "iso" || sr.Type == "iso" || sr.Type == "udev" || sr.PhysicalSize <= 0 {
			continue // ISO libraries and removable media are not primary storage
		}
		out = append(out, hypervisors.StoragePool{
			Name: sr.NameLabel, UUID: sr.UUID, Type: sr.Type, CapacityBytes: int64(sr.PhysicalSize),
			FreeBytes: max(int64(sr.PhysicalSize-sr.PhysicalUtilisation), 0),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// findSR resolves an SR by name_label (an empty name is the pool's default SR) and returns
// its ref and name.
func (d *driver) findSR(ctx context.Context, name string) (string, srRecord, error) {
	var ref string
	if name == "" {
		var pools map[string]poolRecord
		if err := d.c.call(ctx, "pool.get_all_records", &pools); err != nil {
			return "", srRecord{}, err
		}
		for _, p := range pools {
			ref = p.DefaultSR
		}
		if ref == "" || ref == nullRef {
			return "", srRecord{}, hypervisors.Errorf(hypervisors.ErrNotFound, "find SR", "", "no pool given and the pool has no default SR")
		}
	} else {
		var refs []string
		if err := d.c.call(ctx, "SR.get_by_name_label", &refs, name); err != nil {
			return "", srRecord{}, err
		}
		if len(refs) == 0 {
			return "", srRecord{}, hypervisors.Errorf(hypervisors.ErrNotFound, "find SR", name, "no SR named %q in the pool", name)
		}
		ref = refs[0]
	}
	// Its name alone (what callers use): the SR's record lists every VDI on it.
	var sr srRecord
	if err := d.c.call(ctx, "SR.get_name_label", &sr.NameLabel, ref); err != nil {
		return "", srRecord{}, err
	}
	return ref, sr, nil
}

const nullRef = "OpaqueRef:NULL"
