// Package xen is the XenServer / XCP-ng driver. It speaks XAPI's JSON-RPC (POST /jsonrpc)
// to the pool master through a small typed client of its own, and XAPI's HTTP import handler
// (PUT /import_raw_vdi) for template disks. It is tested against xapisim, a XAPI simulator
// speaking the same wire protocol.
//
// Mapping onto XAPI: hosts are the pool's hosts, storage pools its SRs, a system VM template
// is a VM template (is_a_template) whose disk VDI lives in an SR, and a system VM is a clone
// of it with VCPUs, memory limits, an affinity host, one VIF per NIC (IPv4 recorded with
// VIF.configure_ipv4) and CloudStack's boot arguments in PV_args ("%"-separated, as
// CloudStack writes them) and in xenstore_data["vm-data/cloudstack/init"].
package xen

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
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
	if conn.Type != "" && conn.Type != hypervisors.XenServer {
		return nil, hypervisors.Errorf(hypervisors.ErrInvalid, "connect", conn.Endpoint,
			"connection is for %s, not XenServer", conn.Type)
	}
	log := slog.Default().With("hypervisor", "xen", "endpoint", conn.Endpoint)
	c, err := newClient(conn.Endpoint, conn.Username, conn.Password, conn.Insecure, log)
	if err != nil {
		return nil, hypervisors.Wrap(hypervisors.ErrInvalid, "connect", conn.Endpoint, err)
	}
	if err := c.login(ctx); err != nil {
		return nil, wrap("connect", conn.Endpoint, err)
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

// findSR resolves an SR by name_label; an empty name is the pool's default SR.
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
	var sr srRecord
	if err := d.c.call(ctx, "SR.get_record", &sr, ref); err != nil {
		return "", srRecord{}, err
	}
	return ref, sr, nil
}

const nullRef = "OpaqueRef:NULL"

// isVM: a real VM, not a template, snapshot or control domain.
func isVM(r vmRecord) bool { return !r.IsATemplate && !r.IsASnapshot && !r.IsControlDomain }

// findVM resolves a system VM by name. XAPI allows duplicate names; this driver never
// creates them, and refuses to guess when someone else did.
func (d *driver) findVM(ctx context.Context, name string) (string, vmRecord, error) {
	var refs []string
	if err := d.c.call(ctx, "VM.get_by_name_label", &refs, name); err != nil {
		return "", vmRecord{}, err
	}
	var found []string
	var rec vmRecord
	for _, ref := range refs {
		var r vmRecord
		if err := d.c.call(ctx, "VM.get_record", &r, ref); err != nil {
			if isCode(err, "HANDLE_INVALID") {
				continue // destroyed meanwhile
			}
			return "", vmRecord{}, err
		}
		if isVM(r) {
			found = append(found, ref)
			rec = r
		}
	}
	switch len(found) {
	case 0:
		return "", vmRecord{}, hypervisors.Errorf(hypervisors.ErrNotFound, "find VM", name, "no VM named %q", name)
	case 1:
		return found[0], rec, nil
	}
	return "", vmRecord{}, hypervisors.Errorf(hypervisors.ErrInvalid, "find VM", name,
		"%d VMs are named %q; refusing to pick one", len(found), name)
}

// lookups holds the records vmInfo needs, fetched one by one (GetVM) or all at once
// (ListVMs).
type lookups struct {
	hosts    map[string]hostRecord
	vifs     map[string]vifRecord
	networks map[string]networkRecord
	vbds     map[string]vbdRecord
	vdis     map[string]vdiRecord
	srs      map[string]srRecord
}

// fetchFor loads the records one VM refers to.
func (d *driver) fetchFor(ctx context.Context, r vmRecord) (*lookups, error) {
	l := &lookups{hosts: map[string]hostRecord{}, vifs: map[string]vifRecord{}, networks: map[string]networkRecord{},
		vbds: map[string]vbdRecord{}, vdis: map[string]vdiRecord{}, srs: map[string]srRecord{}}
	get := func(method, ref string, out any) error {
		err := d.c.call(ctx, method, out, ref)
		if isCode(err, "HANDLE_INVALID") {
			return nil // a device went away meanwhile: leave it out
		}
		return err
	}
	for _, ref := range []string{r.ResidentOn, r.Affinity} {
		if ref != "" && ref != nullRef {
			var h hostRecord
			if err := get("host.get_record", ref, &h); err != nil {
				return nil, err
			}
			l.hosts[ref] = h
		}
	}
	for _, ref := range r.VIFs {
		var v vifRecord
		if err := get("VIF.get_record", ref, &v); err != nil {
			return nil, err
		}
		l.vifs[ref] = v
		if _, ok := l.networks[v.Network]; !ok && v.Network != "" {
			var n networkRecord
			if err := get("network.get_record", v.Network, &n); err != nil {
				return nil, err
			}
			l.networks[v.Network] = n
		}
	}
	for _, ref := range r.VBDs {
		var b vbdRecord
		if err := get("VBD.get_record", ref, &b); err != nil {
			return nil, err
		}
		l.vbds[ref] = b
		if b.Type != "Disk" || b.VDI == nullRef {
			continue
		}
		var v vdiRecord
		if err := get("VDI.get_record", b.VDI, &v); err != nil {
			return nil, err
		}
		l.vdis[b.VDI] = v
		if _, ok := l.srs[v.SR]; !ok && v.SR != "" {
			var sr srRecord
			if err := get("SR.get_record", v.SR, &sr); err != nil {
				return nil, err
			}
			l.srs[v.SR] = sr
		}
	}
	return l, nil
}

// vmInfo renders a VM record as the contract's VMInfo.
func vmInfo(r vmRecord, l *lookups) hypervisors.VMInfo {
	info := hypervisors.VMInfo{
		Name: r.NameLabel, UUID: r.UUID, State: powerState(r.PowerState),
		CPUs: int(r.VCPUsAtStartup), MemoryMB: int(int64(r.MemoryStaticMax) >> 20),
		Template: r.OtherConfig[otherConfigTemplate], NICs: []hypervisors.NIC{},
	}
	host := r.ResidentOn
	if host == "" || host == nullRef {
		host = r.Affinity
	}
	if h, ok := l.hosts[host]; ok {
		info.Host = h.NameLabel
	}
	type devNIC struct {
		dev int
		nic hypervisors.NIC
	}
	var nics []devNIC
	for _, ref := range r.VIFs {
		v, ok := l.vifs[ref]
		if !ok {
			continue
		}
		nic := hypervisors.NIC{Kind: hypervisors.NICKind(v.OtherConfig[otherConfigNICKind]),
			Network: l.networks[v.Network].NameLabel, MAC: v.MAC, Gateway: v.IPv4Gateway}
		if len(v.IPv4Addresses) > 0 {
			nic.IP, nic.Netmask = splitCIDR(v.IPv4Addresses[0])
		}
		dev, _ := strconv.Atoi(v.Device)
		nics = append(nics, devNIC{dev, nic})
	}
	sort.Slice(nics, func(i, j int) bool { return nics[i].dev < nics[j].dev })
	for _, n := range nics {
		info.NICs = append(info.NICs, n.nic)
	}
	for _, ref := range r.VBDs {
		if b, ok := l.vbds[ref]; ok && b.Type == "Disk" {
			if vdi, ok := l.vdis[b.VDI]; ok {
				info.Pool = l.srs[vdi.SR].NameLabel
				break
			}
		}
	}
	info.BootArgs = parseBootArgs(r)
	return info
}

func powerState(s string) hypervisors.PowerState {
	switch s {
	case "Running":
		return hypervisors.PowerRunning
	case "Halted":
		return hypervisors.PowerStopped
	case "Paused":
		return hypervisors.PowerPaused
	}
	return hypervisors.PowerUnknown // Suspended and anything newer
}

// parseBootArgs reads the boot arguments back: xenstore_data first (spaces), else PV_args
// ("%"-separated, CloudStack's way).
func parseBootArgs(r vmRecord) map[string]string {
	line, sep := r.XenstoreData[XenstoreBootArgsKey], " "
	if line == "" {
		line, sep = r.PVArgs, "%"
	}
	if strings.TrimSpace(line) == "" {
		return nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(line, sep) {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k != "" {
			out[k] = v
		}
	}
	return out
}

func (d *driver) GetVM(ctx context.Context, name string) (hypervisors.VMInfo, error) {
	_, r, err := d.findVM(ctx, name)
	if err != nil {
		return hypervisors.VMInfo{}, wrap("get VM", name, err)
	}
	l, err := d.fetchFor(ctx, r)
	if err != nil {
		return hypervisors.VMInfo{}, wrap("get VM", name, err)
	}
	info := vmInfo(r, l)
	if r.PowerState == "Running" && r.Metrics != "" && r.Metrics != nullRef {
		var m vmMetricsRecord
		if err := d.c.call(ctx, "VM_metrics.get_record", &m, r.Metrics); err != nil {
			return hypervisors.VMInfo{}, wrap("get VM", name, err)
		}
		info.BootTime = bootTime(m)
	}
	return info, nil
}

// bootTime is VM_metrics.start_time: when the domain last started (a reboot starts a new one).
func bootTime(m vmMetricsRecord) time.Time {
	if start, err := time.Parse("20060102T15:04:05Z", m.StartTime); err == nil {
		return start.UTC()
	}
	return time.Time{}
}

func (d *driver) ListVMs(ctx context.Context) ([]hypervisors.VMInfo, error) {
	var vms map[string]vmRecord
	l := &lookups{}
	for _, q := range []struct {
		method string
		out    any
	}{
		{"VM.get_all_records", &vms}, {"host.get_all_records", &l.hosts}, {"VIF.get_all_records", &l.vifs},
		{"network.get_all_records", &l.networks}, {"VBD.get_all_records", &l.vbds},
		{"VDI.get_all_records", &l.vdis}, {"SR.get_all_records", &l.srs},
	} {
		if err := d.c.call(ctx, q.method, q.out); err != nil {
			return nil, wrap("list VMs", "", err)
		}
	}
	var metrics map[string]vmMetricsRecord
	if err := d.c.call(ctx, "VM_metrics.get_all_records", &metrics); err != nil {
		return nil, wrap("list VMs", "", err)
	}
	out := make([]hypervisors.VMInfo, 0, len(vms))
	for _, r := range vms {
		if isVM(r) {
			info := vmInfo(r, l)
			if m, ok := metrics[r.Metrics]; ok && r.PowerState == "Running" {
				info.BootTime = bootTime(m)
			}
			out = append(out, info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func splitCIDR(cidr string) (ip, netmask string) {
	addr, bits, ok := strings.Cut(cidr, "/")
	if !ok {
		return cidr, ""
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n < 0 || n > 32 {
		return addr, ""
	}
	mask := uint32(0)
	if n > 0 {
		mask = ^uint32(0) << (32 - n)
	}
	return addr, fmt.Sprintf("%d.%d.%d.%d", mask>>24, mask>>16&0xff, mask>>8&0xff, mask&0xff)
}
