package xen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sysvm/sysvm/hypervisors"
)

const mib = int64(1) << 20

// maxWeight is the credit scheduler weight CloudStack gives a VCPU running at the host's
// full speed (CitrixResourceBase's _maxWeight).
const maxWeight = 256

// nicPlan is one validated NIC of a VMSpec.
type nicPlan struct {
	nic  hypervisors.NIC
	cidr string
}

func planNICs(spec hypervisors.VMSpec) ([]nicPlan, error) {
	out := make([]nicPlan, len(spec.NICs))
	for i, n := range spec.NICs {
		out[i].nic = n
		if n.MAC != "" {
			if hw, err := net.ParseMAC(n.MAC); err != nil || len(hw) != 6 {
				return nil, fmt.Errorf("NIC %d: bad MAC %q", i, n.MAC)
			}
		}
		if n.IP == "" {
			continue
		}
		ip := net.ParseIP(n.IP).To4()
		if ip == nil {
			return nil, fmt.Errorf("NIC %d: %q is not an IPv4 address", i, n.IP)
		}
		bits := 32
		if n.Netmask != "" {
			m := net.ParseIP(n.Netmask).To4()
			if m == nil {
				return nil, fmt.Errorf("NIC %d: bad netmask %q", i, n.Netmask)
			}
			ones, size := net.IPMask(m).Size()
			if size == 0 {
				return nil, fmt.Errorf("NIC %d: netmask %q is not contiguous", i, n.Netmask)
			}
			bits = ones
		}
		if n.Gateway != "" && net.ParseIP(n.Gateway).To4() == nil {
			return nil, fmt.Errorf("NIC %d: bad gateway %q", i, n.Gateway)
		}
		out[i].cidr = fmt.Sprintf("%s/%d", ip, bits)
	}
	return out, nil
}

func (d *driver) CreateVM(ctx context.Context, spec hypervisors.VMSpec) (hypervisors.VMInfo, error) {
	const op = "create VM"
	if spec.Name == "" || spec.CPUs <= 0 || spec.MemoryMB <= 0 || spec.Template == "" {
		return hypervisors.VMInfo{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name,
			"need a name, a template, CPUs > 0 and memory > 0 (got %q, %q, %d, %d)", spec.Name, spec.Template, spec.CPUs, spec.MemoryMB)
	}
	nics, err := planNICs(spec)
	if err != nil {
		return hypervisors.VMInfo{}, hypervisors.Wrap(hypervisors.ErrInvalid, op, spec.Name, err)
	}
	unlock := d.locks.Lock("vm:" + spec.Name)
	defer unlock()

	_, _, err = d.findVM(ctx, spec.Name)
	switch {
	case err == nil:
		return hypervisors.VMInfo{}, hypervisors.Errorf(hypervisors.ErrAlreadyExists, op, spec.Name, "a VM named %q exists", spec.Name)
	case !errors.Is(err, hypervisors.ErrNotFound):
		return hypervisors.VMInfo{}, wrap(op, spec.Name, err)
	}
	hostRef, hostMHz := nullRef, 0
	if spec.Host != "" {
		ref, h, err := d.findHost(ctx, spec.Host)
		if err != nil {
			return hypervisors.VMInfo{}, wrap(op, spec.Name, err)
		}
		hostRef = ref
		f, _ := strconv.ParseFloat(h.CPUInfo["speed"], 64)
		hostMHz = int(f)
	}
	srRef := ""
	if spec.Pool != "" {
		ref, _, err := d.findSR(ctx, spec.Pool)
		if err != nil {
			return hypervisors.VMInfo{}, wrap(op, spec.Name, err)
		}
		srRef = ref
	}
	tplRef, _, err := d.findTemplate(ctx, spec.Template, srRef)
	if err != nil {
		return hypervisors.VMInfo{}, wrap(op, spec.Name, err)
	}
	networks := make([]string, len(nics))
	mtus := make([]int64, len(nics))
	for i, n := range nics {
		if networks[i], mtus[i], err = d.findNetwork(ctx, n.nic); err != nil {
			return hypervisors.VMInfo{}, wrap(op, spec.Name, err)
		}
	}

	d.log.Info("creating VM", "vm", spec.Name, "template", spec.Template, "host", spec.Host, "pool", spec.Pool)
	var ref string
	if err := d.c.call(ctx, "VM.clone", &ref, tplRef, spec.Name); err != nil {
		return hypervisors.VMInfo{}, wrap(op, spec.Name, err)
	}
	if err := d.configure(ctx, ref, spec, nics, networks, mtus, hostRef, hostMHz); err != nil {
		// Leave nothing half-built behind, so that a retried CreateVM starts afresh.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if cerr := d.destroyRef(cctx, ref); cerr != nil {
			d.log.Error("cleaning up a half-created VM failed", "vm", spec.Name, "err", cerr)
		}
		return hypervisors.VMInfo{}, wrap(op, spec.Name, err)
	}
	var r vmRecord
	if err := d.c.call(ctx, "VM.get_record", &r, ref); err != nil {
		return hypervisors.VMInfo{}, wrap(op, spec.Name, err)
	}
	l, err := d.fetchFor(ctx, r)
	if err != nil {
		return hypervisors.VMInfo{}, wrap(op, spec.Name, err)
	}
	return vmInfo(r, l), nil
}

// configure turns a fresh template clone into the system VM the spec describes.
func (d *driver) configure(ctx context.Context, ref string, spec hypervisors.VMSpec, nics []nicPlan,
	networks []string, mtus []int64, hostRef string, hostMHz int) error {
	var cur vmRecord
	steps := []func() error{
		func() error { return d.c.call(ctx, "VM.provision", nil, ref) },
		func() error { return d.c.call(ctx, "VM.set_is_a_template", nil, ref, false) },
		func() error { return d.c.call(ctx, "VM.get_record", &cur, ref) },
		func() error { return d.c.call(ctx, "VM.set_affinity", nil, ref, hostRef) },
		// A clone inherits the template's own marker; replace it with the template's name.
		func() error { return d.c.call(ctx, "VM.remove_from_other_config", nil, ref, otherConfigTemplate) },
		func() error {
			return d.c.call(ctx, "VM.add_to_other_config", nil, ref, otherConfigTemplate, spec.Template)
		},
		func() error { return d.setShape(ctx, ref, cur, spec.CPUs, spec.MemoryMB) },
	}
	if spec.CPUMHz > 0 && hostMHz > 0 {
		weight := min(max(int(float64(spec.CPUMHz)*0.99/float64(hostMHz)*maxWeight), 1), 65535)
		steps = append(steps, func() error {
			return d.c.call(ctx, "VM.set_VCPUs_params", nil, ref, map[string]string{"weight": strconv.Itoa(weight)})
		})
	}
	if len(spec.BootArgs) > 0 {
		line := hypervisors.BootArgsString(spec.BootArgs)
		steps = append(steps,
			func() error { return d.c.call(ctx, "VM.set_PV_args", nil, ref, strings.ReplaceAll(line, " ", "%")) },
			func() error {
				return d.c.call(ctx, "VM.set_xenstore_data", nil, ref, map[string]string{XenstoreBootArgsKey: line})
			})
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	for i, n := range nics {
		var vif string
		rec := map[string]any{
			"device": strconv.Itoa(i), "network": networks[i], "VM": ref, "MAC": strings.ToLower(n.nic.MAC),
			"MTU": mtus[i], "other_config": map[string]string{otherConfigNICKind: string(n.nic.Kind)},
			"qos_algorithm_type": "", "qos_algorithm_params": map[string]string{},
			"locking_mode": "network_default", "ipv4_allowed": []string{}, "ipv6_allowed": []string{},
		}
		if err := d.c.call(ctx, "VIF.create", &vif, rec); err != nil {
			return fmt.Errorf("NIC %d: %w", i, err)
		}
		if n.cidr != "" {
			if err := d.c.call(ctx, "VIF.configure_ipv4", nil, vif, "Static", n.cidr, n.nic.Gateway); err != nil {
				return fmt.Errorf("NIC %d: %w", i, err)
			}
		}
	}
	return nil
}

// setShape sets VCPUs and memory on a halted VM, in an order XAPI accepts
// (VCPUs_at_startup <= VCPUs_max at every step; memory limits all at once).
func (d *driver) setShape(ctx context.Context, ref string, cur vmRecord, cpus, memoryMB int) error {
	mem := int64(memoryMB) * mib
	if err := d.c.call(ctx, "VM.set_memory_limits", nil, ref, mem, mem, mem, mem); err != nil {
		return err
	}
	n := int64(cpus)
	if n >= int64(cur.VCPUsAtStartup) {
		if err := d.c.call(ctx, "VM.set_VCPUs_max", nil, ref, n); err != nil {
			return err
		}
		return d.c.call(ctx, "VM.set_VCPUs_at_startup", nil, ref, n)
	}
	if err := d.c.call(ctx, "VM.set_VCPUs_at_startup", nil, ref, n); err != nil {
		return err
	}
	return d.c.call(ctx, "VM.set_VCPUs_max", nil, ref, n)
}

// findNetwork resolves a NIC's network by name_label (or bridge), defaulting by NIC kind.
func (d *driver) findNetwork(ctx context.Context, n hypervisors.NIC) (string, int64, error) {
	name := n.Network
	if name == "" {
		name = DefaultNetwork
		if n.Kind == hypervisors.NICControl {
			name = LinkLocalNetwork
		}
	}
	var refs []string
	if err := d.c.call(ctx, "network.get_by_name_label", &refs, name); err != nil {
		return "", 0, err
	}
	if len(refs) > 0 {
		// The MTU alone: the network's record lists every VIF on it (one per system VM of the
		// pool), which makes each create's payload grow with the pool.
		var mtu xint
		if err := d.c.call(ctx, "network.get_MTU", &mtu, refs[0]); err != nil {
			return "", 0, err
		}
		return refs[0], mtuOr1500(mtu), nil
	}
	var all map[string]networkRecord
	if err := d.c.call(ctx, "network.get_all_records", &all); err != nil {
		return "", 0, err
	}
	for ref, rec := range all {
		if rec.Bridge == name {
			return ref, mtuOr1500(rec.MTU), nil
		}
	}
	return "", 0, hypervisors.Errorf(hypervisors.ErrNotFound, "find network", name, "no network named %q (or with that bridge)", name)
}

func mtuOr1500(m xint) int64 {
	if m <= 0 {
		return 1500
	}
	return int64(m)
}

func (d *driver) StartVM(ctx context.Context, name string) error {
	const op = "start VM"
	ref, r, err := d.findVM(ctx, name)
	if err != nil {
		return wrap(op, name, err)
	}
	switch r.PowerState {
	case "Running":
		return nil
	case "Paused":
		return wrap(op, name, d.c.call(ctx, "VM.unpause", nil, ref))
	case "Halted":
	default:
		return hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM is %s", r.PowerState)
	}
	d.log.Info("starting VM", "vm", name)
	if r.Affinity != "" && r.Affinity != nullRef {
		err = d.c.call(ctx, "VM.start_on", nil, ref, r.Affinity, false, false)
	} else {
		err = d.c.call(ctx, "VM.start", nil, ref, false, false)
	}
	if alreadyIn(err, "running") {
		return nil // started by a concurrent call
	}
	return wrap(op, name, err)
}

// alreadyIn reports a VM_BAD_POWER_STATE whose actual state is the one we wanted.
func alreadyIn(err error, state string) bool {
	var f *Failure
	return errors.As(err, &f) && f.Code == "VM_BAD_POWER_STATE" && len(f.Params) == 3 && f.Params[2] == state
}

func (d *driver) StopVM(ctx context.Context, name string, force bool) error {
	const op = "stop VM"
	ref, r, err := d.findVM(ctx, name)
	if err != nil {
		return wrap(op, name, err)
	}
	if r.PowerState == "Halted" {
		return nil
	}
	method := "VM.clean_shutdown"
	if force || r.PowerState != "Running" {
		method = "VM.hard_shutdown"
	}
	d.log.Info("stopping VM", "vm", name, "force", force)
	err = d.c.call(ctx, method, nil, ref)
	if alreadyIn(err, "halted") {
		return nil
	}
	return wrap(op, name, err)
}

func (d *driver) RebootVM(ctx context.Context, name string) error {
	const op = "reboot VM"
	ref, r, err := d.findVM(ctx, name)
	if err != nil {
		return wrap(op, name, err)
	}
	if r.PowerState != "Running" {
		return hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM is %s, not Running", r.PowerState)
	}
	d.log.Info("rebooting VM", "vm", name)
	return wrap(op, name, d.c.call(ctx, "VM.clean_reboot", nil, ref))
}

func (d *driver) DestroyVM(ctx context.Context, name string) error {
	const op = "destroy VM"
	unlock := d.locks.Lock("vm:" + name)
	defer unlock()
	ref, r, err := d.findVM(ctx, name)
	if err != nil {
		return wrap(op, name, err)
	}
	if r.PowerState != "Halted" {
		err := d.c.call(ctx, "VM.hard_shutdown", nil, ref)
		if err != nil && !alreadyIn(err, "halted") {
			return wrap(op, name, err)
		}
	}
	d.log.Info("destroying VM", "vm", name)
	return wrap(op, name, d.destroyRef(ctx, ref))
}

// destroyRef removes a halted VM and the disks only it uses. The disks go first, so that a
// failure leaves a VM a retry can still find.
func (d *driver) destroyRef(ctx context.Context, ref string) error {
	var vbds []string
	if err := d.c.call(ctx, "VM.get_VBDs", &vbds, ref); err != nil {
		return err
	}
	for _, vbdRef := range vbds {
		var b vbdRecord
		if err := d.c.call(ctx, "VBD.get_record", &b, vbdRef); err != nil {
			if isCode(err, "HANDLE_INVALID") {
				continue
			}
			return err
		}
		if b.Type != "Disk" || b.VDI == nullRef || b.Empty {
			continue
		}
		var users []string
		if err := d.c.call(ctx, "VDI.get_VBDs", &users, b.VDI); err != nil {
			if isCode(err, "HANDLE_INVALID") {
				continue
			}
			return err
		}
		if len(users) > 1 {
			continue // shared with another VM: not ours to delete
		}
		if err := d.c.call(ctx, "VDI.destroy", nil, b.VDI); err != nil && !isCode(err, "HANDLE_INVALID") {
			return err
		}
	}
	return d.c.call(ctx, "VM.destroy", nil, ref)
}

func (d *driver) MigrateVM(ctx context.Context, name, targetHost string) error {
	const op = "migrate VM"
	ref, r, err := d.findVM(ctx, name)
	if err != nil {
		return wrap(op, name, err)
	}
	hostRef, _, err := d.findHost(ctx, targetHost)
	if err != nil {
		return wrap(op, name, err)
	}
	switch r.PowerState {
	case "Running":
		if r.ResidentOn != hostRef {
			d.log.Info("migrating VM", "vm", name, "to", targetHost)
			if err := d.c.call(ctx, "VM.pool_migrate", nil, ref, hostRef, map[string]string{"live": "true"}); err != nil {
				return wrap(op, name, err)
			}
		}
	case "Halted":
		// A halted VM lives on no host; its affinity decides where it starts next.
	default:
		return hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM is %s", r.PowerState)
	}
	// Keep the affinity in step so the VM comes back on this host after a stop.
	return wrap(op, name, d.c.call(ctx, "VM.set_affinity", nil, ref, hostRef))
}

func (d *driver) ScaleVM(ctx context.Context, name string, cpus, memoryMB int) error {
	const op = "scale VM"
	if cpus <= 0 || memoryMB <= 0 {
		return hypervisors.Errorf(hypervisors.ErrInvalid, op, name, "need CPUs > 0 and memory > 0, got %d and %d", cpus, memoryMB)
	}
	ref, r, err := d.findVM(ctx, name)
	if err != nil {
		return wrap(op, name, err)
	}
	if r.PowerState != "Halted" {
		return hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM is %s; XenServer changes VCPUs_max and static memory only on a halted VM", r.PowerState)
	}
	d.log.Info("scaling VM", "vm", name, "cpus", cpus, "memoryMb", memoryMB)
	return wrap(op, name, d.setShape(ctx, ref, r, cpus, memoryMB))
}

// VMStats reads VM_metrics: memory_actual and, for CPU time, the sum of the VCPUs'
// utilisation over the time since start. XAPI publishes network and disk counters only
// through its RRD endpoint, which this driver does not read: those stay 0.
func (d *driver) VMStats(ctx context.Context, name string) (hypervisors.VMStats, error) {
	const op = "VM stats"
	_, r, err := d.findVM(ctx, name)
	if err != nil {
		return hypervisors.VMStats{}, wrap(op, name, err)
	}
	if r.PowerState != "Running" {
		return hypervisors.VMStats{}, hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM is %s, not Running", r.PowerState)
	}
	var m vmMetricsRecord
	if err := d.c.call(ctx, "VM_metrics.get_record", &m, r.Metrics); err != nil {
		return hypervisors.VMStats{}, wrap(op, name, err)
	}
	st := hypervisors.VMStats{MemoryUsedMB: int(int64(m.MemoryActual) >> 20)}
	if start, err := time.Parse("20060102T15:04:05Z", m.StartTime); err == nil {
		up := time.Since(start)
		util := 0.0
		for _, u := range m.VCPUsUtilisation {
			util += u
		}
		if up > 0 {
			st.CPUTimeNs = uint64(util * float64(up.Nanoseconds()))
		}
	}
	return st, nil
}

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

// fetchFor loads the records one VM refers to. Of its host, networks and SR only the
// name_label is read (vmInfo uses nothing else): their records list every VM, VIF or VDI of
// the pool, so fetching them whole made each GetVM's payload grow with the pool.
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
		if _, done := l.hosts[ref]; !done && ref != "" && ref != nullRef {
			var h hostRecord
			if err := get("host.get_name_label", ref, &h.NameLabel); err != nil {
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
			if err := get("network.get_name_label", v.Network, &n.NameLabel); err != nil {
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
			if err := get("SR.get_name_label", v.SR, &sr.NameLabel); err != nil {
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
