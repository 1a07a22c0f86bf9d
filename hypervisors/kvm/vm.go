package kvm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/sysvm/sysvm/hypervisors"
)

// rootSuffix names a VM's root volume: "<vm>-ROOT".
const rootSuffix = "-ROOT"

// located is a domain found on one host.
type located struct {
	h   *hostConn
	l   *libvirt.Libvirt
	dom libvirt.Domain
}

// findAll asks every host for the domain. A host that does not answer makes the answer
// uncertain, so the result is then ErrUnreachable rather than ErrNotFound: callers treat
// ErrNotFound as "gone" and must never be told so by a host that is merely down.
func (d *Driver) findAll(ctx context.Context, op, name string) ([]located, error) {
	var found []located
	var unreachable error
	for _, n := range d.names {
		h := d.hosts[n]
		l, err := h.get(ctx)
		if errors.Is(err, hypervisors.ErrUnreachable) {
			unreachable = err
			continue
		}
		if err != nil {
			return nil, err
		}
		dom, err := l.DomainLookupByName(name)
		if isCode(err, libvirt.ErrNoDomain) {
			continue
		}
		if err != nil {
			if h.lost(err) {
				unreachable = classify(op, name, err)
				continue
			}
			return nil, classify(op, name, err)
		}
		found = append(found, located{h: h, l: l, dom: dom})
	}
	if len(found) > 0 {
		return found, nil
	}
	if unreachable != nil {
		return nil, hypervisors.Wrap(hypervisors.ErrUnreachable, op, name,
			fmt.Errorf("VM not found on the hosts that answered, and a host did not answer: %w", unreachable))
	}
	return nil, hypervisors.Errorf(hypervisors.ErrNotFound, op, name, "no VM of that name on hosts %v", d.names)
}

// find returns the domain's one location (the first host, in name order, when an interrupted
// migration left it defined on two).
func (d *Driver) find(ctx context.Context, op, name string) (located, error) {
	all, err := d.findAll(ctx, op, name)
	if err != nil {
		return located{}, err
	}
	return all[0], nil
}

// powerState maps libvirt's domain state to the contract's.
func powerState(s libvirt.DomainState) hypervisors.PowerState {
	switch s {
	case libvirt.DomainRunning, libvirt.DomainBlocked, libvirt.DomainShutdown:
		return hypervisors.PowerRunning
	case libvirt.DomainPaused, libvirt.DomainPmsuspended:
		return hypervisors.PowerPaused
	case libvirt.DomainShutoff, libvirt.DomainCrashed:
		return hypervisors.PowerStopped
	}
	return hypervisors.PowerUnknown
}

// power reads the domain's power state.
func (loc located) power(op string) (hypervisors.PowerState, error) {
	st, _, err := loc.l.DomainGetState(loc.dom, 0)
	if err != nil {
		return "", classify(op, loc.dom.Name, err)
	}
	return powerState(libvirt.DomainState(st)), nil
}

// lockVM takes a VM's lock, finds the VM and reads its power state. On success the caller
// must call unlock; on error the lock is already released.
func (d *Driver) lockVM(ctx context.Context, op, name string) (loc located, ps hypervisors.PowerState, unlock func(), err error) {
	unlock = d.locks.Lock(vmLockKey(name))
	if loc, err = d.find(ctx, op, name); err == nil {
		if ps, err = loc.power(op); err == nil {
			return loc, ps, unlock, nil
		}
	}
	unlock()
	return located{}, "", nil, err
}

// vmLockKey is the KeyedMutex key of a VM's name.
func vmLockKey(name string) string { return "vm\x00" + name }

// domainXML reads and parses a domain's XML (flags as for virDomainGetXMLDesc).
func (loc located) domainXML(op string, flags libvirt.DomainXMLFlags) (*libvirtxml.Domain, string, error) {
	raw, err := loc.l.DomainGetXMLDesc(loc.dom, flags)
	if err != nil {
		return nil, "", classify(op, loc.dom.Name, err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(raw); err != nil {
		return nil, "", hypervisors.Wrap(hypervisors.ErrInvalid, op, loc.dom.Name, fmt.Errorf("parse domain XML: %w", err))
	}
	return &dom, raw, nil
}

func (d *Driver) info(op string, loc located) (hypervisors.VMInfo, error) {
	dom, _, err := loc.domainXML(op, 0)
	if err != nil {
		return hypervisors.VMInfo{}, err
	}
	vi, err := vmFromDomain(dom)
	if err != nil {
		return hypervisors.VMInfo{}, hypervisors.Wrap(hypervisors.ErrInvalid, op, loc.dom.Name, err)
	}
	ps, err := loc.power(op)
	if err != nil {
		return hypervisors.VMInfo{}, err
	}
	vi.State = ps
	vi.Host = loc.h.name
	return vi, nil
}

// CreateVM defines the system VM, stopped, on spec.Host (the first host when empty), with a
// root disk cloned from the template volume. A VM of that name anywhere in the cluster is
// ErrAlreadyExists; an unknown host, pool or template is ErrNotFound.
func (d *Driver) CreateVM(ctx context.Context, spec hypervisors.VMSpec) (hypervisors.VMInfo, error) {
	const op = "create"
	switch {
	case spec.Name == "":
		return hypervisors.VMInfo{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, "", "VM has no name")
	case spec.CPUs <= 0 || spec.MemoryMB <= 0:
		return hypervisors.VMInfo{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name, "VM needs CPUs and memory (got %d CPUs, %d MB)", spec.CPUs, spec.MemoryMB)
	case spec.Template == "" || spec.Pool == "":
		return hypervisors.VMInfo{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name, "VM needs a template and a pool")
	}
	host := spec.Host
	if host == "" {
		host = d.names[0]
	}
	h, ok := d.hosts[host]
	if !ok {
		return hypervisors.VMInfo{}, hypervisors.Errorf(hypervisors.ErrNotFound, op, spec.Name, "no host %q in this cluster", host)
	}
	unlock := d.locks.Lock(vmLockKey(spec.Name))
	defer unlock()

	if _, err := d.find(ctx, op, spec.Name); err == nil {
		return hypervisors.VMInfo{}, hypervisors.Errorf(hypervisors.ErrAlreadyExists, op, spec.Name, "a VM of that name exists")
	} else if !errors.Is(err, hypervisors.ErrNotFound) {
		return hypervisors.VMInfo{}, err
	}
	domType, arch, err := h.domainType()
	if err != nil {
		if _, gerr := h.get(ctx); gerr != nil {
			return hypervisors.VMInfo{}, gerr
		}
		if domType, arch, err = h.domainType(); err != nil {
			return hypervisors.VMInfo{}, err
		}
	}
	hl, err := h.get(ctx)
	if err != nil {
		return hypervisors.VMInfo{}, err
	}

	sl, err := d.storage.get(ctx)
	if err != nil {
		return hypervisors.VMInfo{}, err
	}
	pool, err := sl.StoragePoolLookupByName(spec.Pool)
	if err != nil {
		return hypervisors.VMInfo{}, classify(op, spec.Name, fmt.Errorf("pool %s: %w", spec.Pool, err))
	}
	tpl, err := sl.StorageVolLookupByName(pool, spec.Template)
	if err != nil {
		return hypervisors.VMInfo{}, classify(op, spec.Name, fmt.Errorf("template %s in pool %s: %w", spec.Template, spec.Pool, err))
	}
	root, rootPath, format, err := d.cloneRoot(sl, pool, tpl, spec.Name+rootSuffix)
	if err != nil {
		return hypervisors.VMInfo{}, classify(op, spec.Name, err)
	}
	dom, err := buildDomain(spec, domainParams{Type: domType, Arch: arch, RootPath: rootPath, RootFormat: format})
	if err != nil {
		d.dropVolume(sl, root)
		return hypervisors.VMInfo{}, hypervisors.Wrap(hypervisors.ErrInvalid, op, spec.Name, err)
	}
	doc, err := dom.Marshal()
	if err != nil {
		d.dropVolume(sl, root)
		return hypervisors.VMInfo{}, hypervisors.Wrap(hypervisors.ErrInvalid, op, spec.Name, fmt.Errorf("marshal domain: %w", err))
	}
	ldom, err := hl.DomainDefineXML(doc)
	if err != nil {
		d.dropVolume(sl, root)
		return hypervisors.VMInfo{}, classify(op, spec.Name, fmt.Errorf("define domain on %s: %w", h.name, err))
	}
	d.log.Info("VM defined", "vm", spec.Name, "host", h.name, "template", spec.Template, "pool", spec.Pool)
	return d.info(op, located{h: h, l: hl, dom: ldom})
}

// cloneRoot makes the VM's root volume a full copy of the template, replacing a leftover of an
// earlier attempt that failed before its domain was defined.
func (d *Driver) cloneRoot(l *libvirt.Libvirt, pool libvirt.StoragePool, tpl libvirt.StorageVol, name string) (libvirt.StorageVol, string, string, error) {
	raw, err := l.StorageVolGetXMLDesc(tpl, 0)
	if err != nil {
		return libvirt.StorageVol{}, "", "", fmt.Errorf("template volume XML: %w", err)
	}
	var tv libvirtxml.StorageVolume
	if err := tv.Unmarshal(raw); err != nil {
		return libvirt.StorageVol{}, "", "", fmt.Errorf("parse template volume XML: %w", err)
	}
	format := "raw"
	if tv.Target != nil && tv.Target.Format != nil && tv.Target.Format.Type != "" {
		format = tv.Target.Format.Type
	}
	if old, err := l.StorageVolLookupByName(pool, name); err == nil {
		d.log.Warn("removing leftover root volume of an earlier failed create", "volume", name)
		if err := l.StorageVolDelete(old, libvirt.StorageVolDeleteNormal); err != nil {
			return libvirt.StorageVol{}, "", "", fmt.Errorf("remove leftover volume %s: %w", name, err)
		}
	}
	capacity, err := volumeBytes(tv.Capacity)
	if err != nil {
		return libvirt.StorageVol{}, "", "", fmt.Errorf("template volume %s: %w", tpl.Name, err)
	}
	vol, err := cloneVolume(l, pool, tpl, name, format, capacity)
	if err != nil {
		return libvirt.StorageVol{}, "", "", fmt.Errorf("clone template %s: %w", tpl.Name, err)
	}
	path, err := l.StorageVolGetPath(vol)
	if err != nil {
		return libvirt.StorageVol{}, "", "", fmt.Errorf("path of volume %s: %w", name, err)
	}
	return vol, path, format, nil
}

// volumeBytes reads a volume size (libvirt writes bytes; other units are converted).
func volumeBytes(sz *libvirtxml.StorageVolumeSize) (uint64, error) {
	if sz == nil {
		return 0, nil
	}
	mult := map[string]uint64{"": 1, "b": 1, "bytes": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": 1 << 20, "mib": 1 << 20, "mb": 1000 * 1000,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1000 * 1000 * 1000, "t": 1 << 40, "tib": 1 << 40, "tb": 1000 * 1000 * 1000 * 1000}
	m, ok := mult[strings.ToLower(sz.Unit)]
	if !ok {
		return 0, fmt.Errorf("unknown size unit %q", sz.Unit)
	}
	return sz.Value * m, nil
}

func (d *Driver) dropVolume(l *libvirt.Libvirt, vol libvirt.StorageVol) {
	if err := l.StorageVolDelete(vol, libvirt.StorageVolDeleteNormal); err != nil && !isCode(err, libvirt.ErrNoStorageVol) {
		d.log.Warn("could not remove volume", "volume", vol.Name, "err", err)
	}
}

// StartVM powers a VM on (resumes a paused one); a running VM is left alone.
func (d *Driver) StartVM(ctx context.Context, name string) error {
	const op = "start"
	loc, ps, unlock, err := d.lockVM(ctx, op, name)
	if err != nil {
		return err
	}
	defer unlock()
	switch ps {
	case hypervisors.PowerRunning:
		return nil
	case hypervisors.PowerPaused:
		if err := loc.l.DomainResume(loc.dom); err != nil {
			return classify(op, name, fmt.Errorf("resume: %w", err))
		}
		return nil
	}
	if err := loc.l.DomainCreate(loc.dom); err != nil {
		return classify(op, name, err)
	}
	d.log.Info("VM started", "vm", name, "host", loc.h.name)
	return nil
}

// StopVM shuts a VM down: force powers it off at once; otherwise it asks the guest (ACPI) and
// powers it off when it has not stopped within the shutdown timeout. A stopped VM is left alone.
func (d *Driver) StopVM(ctx context.Context, name string, force bool) error {
	const op = "stop"
	loc, ps, unlock, err := d.lockVM(ctx, op, name)
	if err != nil {
		return err
	}
	defer unlock()
	switch ps {
	case hypervisors.PowerStopped:
		return nil
	case hypervisors.PowerPaused:
		force = true // a paused guest cannot hear ACPI
	}
	if !force {
		stopped, err := d.shutdown(ctx, loc)
		if err != nil {
			return err
		}
		if stopped {
			d.log.Info("VM shut down", "vm", name, "host", loc.h.name)
			return nil
		}
		d.log.Warn("guest did not shut down in time; powering off", "vm", name, "timeout", d.shutdownTimeout)
	}
	if err := loc.l.DomainDestroy(loc.dom); err != nil && !isCode(err, libvirt.ErrOperationInvalid) {
		return classify(op, name, fmt.Errorf("power off: %w", err))
	}
	d.log.Info("VM powered off", "vm", name, "host", loc.h.name)
	return nil
}

// shutdown asks the guest to power off and waits (bounded) until it has.
func (d *Driver) shutdown(ctx context.Context, loc located) (bool, error) {
	const op = "stop"
	if err := loc.l.DomainShutdown(loc.dom); err != nil {
		if isCode(err, libvirt.ErrOperationInvalid) {
			return true, nil // stopped meanwhile
		}
		return false, classify(op, loc.dom.Name, fmt.Errorf("shutdown: %w", err))
	}
	deadline := time.NewTimer(d.shutdownTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ps, err := loc.power(op)
		if err != nil {
			return false, err
		}
		if ps == hypervisors.PowerStopped {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, hypervisors.Wrap(hypervisors.ErrUnreachable, op, loc.dom.Name, fmt.Errorf("waiting for shutdown: %w", ctx.Err()))
		case <-deadline.C:
			return false, nil
		case <-tick.C:
		}
	}
}

// RebootVM restarts a running VM; a VM that is not running is ErrBadState.
func (d *Driver) RebootVM(ctx context.Context, name string) error {
	const op = "reboot"
	loc, ps, unlock, err := d.lockVM(ctx, op, name)
	if err != nil {
		return err
	}
	defer unlock()
	if ps != hypervisors.PowerRunning {
		return hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM is %s, not Running", ps)
	}
	if err := loc.l.DomainReboot(loc.dom, 0); err != nil {
		return classify(op, name, err)
	}
	d.log.Info("VM rebooted", "vm", name, "host", loc.h.name)
	return nil
}

// DestroyVM powers the VM off, undefines it and removes the root volume CreateVM made for it.
func (d *Driver) DestroyVM(ctx context.Context, name string) error {
	const op = "destroy"
	unlock := d.locks.Lock(vmLockKey(name))
	defer unlock()
	all, err := d.findAll(ctx, op, name)
	if err != nil {
		return err
	}
	var rootVolume string
	for _, loc := range all {
		dom, _, err := loc.domainXML(op, libvirt.DomainXMLInactive)
		if err != nil {
			return err
		}
		if md, ok, err := decodeMetadata(dom.Metadata); err == nil && ok && md.RootVolume != "" {
			rootVolume = md.RootVolume
		}
		ps, err := loc.power(op)
		if err != nil {
			return err
		}
		if ps != hypervisors.PowerStopped {
			if err := loc.l.DomainDestroy(loc.dom); err != nil && !isCode(err, libvirt.ErrOperationInvalid) {
				return classify(op, name, fmt.Errorf("power off: %w", err))
			}
		}
		if err := undefine(loc); err != nil {
			return classify(op, name, err)
		}
		d.log.Info("VM undefined", "vm", name, "host", loc.h.name)
	}
	if rootVolume == "" {
		return nil
	}
	sl, err := d.storage.get(ctx)
	if err != nil {
		return err
	}
	vol, err := sl.StorageVolLookupByPath(rootVolume)
	if isCode(err, libvirt.ErrNoStorageVol) {
		return nil
	}
	if err != nil {
		return classify(op, name, fmt.Errorf("root volume %s: %w", rootVolume, err))
	}
	if err := sl.StorageVolDelete(vol, libvirt.StorageVolDeleteNormal); err != nil && !isCode(err, libvirt.ErrNoStorageVol) {
		return classify(op, name, fmt.Errorf("remove root volume %s: %w", rootVolume, err))
	}
	return nil
}

// undefine removes a stopped domain's definition with its managed save and snapshot metadata,
// falling back to a plain undefine where the driver takes no flags.
func undefine(loc located) error {
	err := loc.l.DomainUndefineFlags(loc.dom, libvirt.DomainUndefineManagedSave|libvirt.DomainUndefineSnapshotsMetadata)
	if isCode(err, libvirt.ErrInvalidArg) || isCode(err, libvirt.ErrNoSupport) {
		err = loc.l.DomainUndefine(loc.dom)
	}
	if isCode(err, libvirt.ErrNoDomain) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("undefine on %s: %w", loc.h.name, err)
	}
	return nil
}

// MigrateVM moves a stopped VM to another host of the cluster (cold migration): its inactive
// XML is defined on the target, then undefined on the source; the root disk stays on the
// shared pool. A running VM is ErrBadState (LiveMigration is false); a VM already on the
// target is left there. Retried after an interruption it completes the move.
func (d *Driver) MigrateVM(ctx context.Context, name, targetHost string) error {
	const op = "migrate"
	th, ok := d.hosts[targetHost]
	if !ok {
		return hypervisors.Errorf(hypervisors.ErrNotFound, op, name, "no host %q in this cluster", targetHost)
	}
	unlock := d.locks.Lock(vmLockKey(name))
	defer unlock()
	all, err := d.findAll(ctx, op, name)
	if err != nil {
		return err
	}
	var src *located
	onTarget := false
	for i := range all {
		if all[i].h == th {
			onTarget = true
		} else if src == nil {
			src = &all[i]
		}
	}
	if src == nil {
		return nil // already there
	}
	for _, loc := range all {
		ps, err := loc.power(op)
		if err != nil {
			return err
		}
		if ps != hypervisors.PowerStopped {
			return hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM is %s on %s; KVM migration here is cold: stop it first", ps, loc.h.name)
		}
	}
	if !onTarget {
		_, raw, err := src.domainXML(op, libvirt.DomainXMLInactive|libvirt.DomainXMLSecure)
		if err != nil {
			return err
		}
		tl, err := th.get(ctx)
		if err != nil {
			return err
		}
		if _, err := tl.DomainDefineXML(raw); err != nil {
			return classify(op, name, fmt.Errorf("define on %s: %w", targetHost, err))
		}
	}
	for _, loc := range all {
		if loc.h == th {
			continue
		}
		if err := undefine(loc); err != nil {
			return classify(op, name, fmt.Errorf("after defining on %s: %w", targetHost, err))
		}
	}
	d.log.Info("VM migrated (cold)", "vm", name, "from", src.h.name, "to", targetHost)
	return nil
}

// ScaleVM sets a stopped VM's CPU count and memory (HotScale is false: a running VM is
// ErrBadState). CPU shares keep their per-CPU speed.
func (d *Driver) ScaleVM(ctx context.Context, name string, cpus, memoryMB int) error {
	const op = "scale"
	unlock := d.locks.Lock(vmLockKey(name))
	defer unlock()
	loc, err := d.find(ctx, op, name)
	if err != nil {
		return err
	}
	if cpus <= 0 || memoryMB <= 0 {
		return hypervisors.Errorf(hypervisors.ErrInvalid, op, name, "need CPUs and memory (got %d CPUs, %d MB)", cpus, memoryMB)
	}
	ps, err := loc.power(op)
	if err != nil {
		return err
	}
	if ps != hypervisors.PowerStopped {
		return hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM is %s; KVM scaling here needs it stopped", ps)
	}
	dom, _, err := loc.domainXML(op, libvirt.DomainXMLInactive|libvirt.DomainXMLSecure)
	if err != nil {
		return err
	}
	oldCPUs := uint(1)
	if dom.VCPU != nil && dom.VCPU.Value > 0 {
		oldCPUs = dom.VCPU.Value
	}
	if dom.CPUTune != nil && dom.CPUTune.Shares != nil {
		dom.CPUTune.Shares.Value = dom.CPUTune.Shares.Value / oldCPUs * uint(cpus)
	}
	dom.VCPU = &libvirtxml.DomainVCPU{Placement: "static", Value: uint(cpus)}
	dom.Memory = &libvirtxml.DomainMemory{Value: uint(memoryMB), Unit: "MiB"}
	dom.CurrentMemory = &libvirtxml.DomainCurrentMemory{Value: uint(memoryMB), Unit: "MiB"}
	if dom.MaximumMemory != nil && dom.MaximumMemory.Value < uint(memoryMB)*1024 {
		dom.MaximumMemory = nil
	}
	doc, err := dom.Marshal()
	if err != nil {
		return hypervisors.Wrap(hypervisors.ErrInvalid, op, name, fmt.Errorf("marshal domain: %w", err))
	}
	if _, err := loc.l.DomainDefineXML(doc); err != nil {
		return classify(op, name, fmt.Errorf("redefine: %w", err))
	}
	d.log.Info("VM scaled", "vm", name, "cpus", cpus, "memoryMB", memoryMB)
	return nil
}

// GetVM inspects one VM.
func (d *Driver) GetVM(ctx context.Context, name string) (hypervisors.VMInfo, error) {
	const op = "get"
	loc, err := d.find(ctx, op, name)
	if err != nil {
		return hypervisors.VMInfo{}, err
	}
	return d.info(op, loc)
}

// Memory statistic tags of virDomainMemoryStats.
const (
	memStatUnused    = 4
	memStatAvailable = 5
	memStatRSS       = 7
)

// VMStats reads a running VM's counters; a VM that is not running is ErrBadState.
func (d *Driver) VMStats(ctx context.Context, name string) (hypervisors.VMStats, error) {
	const op = "stats"
	loc, err := d.find(ctx, op, name)
	if err != nil {
		return hypervisors.VMStats{}, err
	}
	st, _, curMem, _, cpuTime, err := loc.l.DomainGetInfo(loc.dom)
	if err != nil {
		return hypervisors.VMStats{}, classify(op, name, err)
	}
	if ps := powerState(libvirt.DomainState(st)); ps != hypervisors.PowerRunning {
		return hypervisors.VMStats{}, hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM is %s, not Running", ps)
	}
	out := hypervisors.VMStats{CPUTimeNs: cpuTime, MemoryUsedMB: int(curMem / 1024)}
	if ms, err := loc.l.DomainMemoryStats(loc.dom, 16, 0); err == nil {
		var unused, avail, rss uint64
		for _, s := range ms {
			switch s.Tag {
			case memStatUnused:
				unused = s.Val
			case memStatAvailable:
				avail = s.Val
			case memStatRSS:
				rss = s.Val
			}
		}
		switch {
		case avail > 0 && unused <= avail:
			out.MemoryUsedMB = int((avail - unused) / 1024)
		case rss > 0:
			out.MemoryUsedMB = int(rss / 1024)
		}
	} else if !unsupported(err) {
		return hypervisors.VMStats{}, classify(op, name, fmt.Errorf("memory stats: %w", err))
	}
	dom, _, err := loc.domainXML(op, 0)
	if err != nil {
		return hypervisors.VMStats{}, err
	}
	if dom.Devices != nil {
		for _, ifc := range dom.Devices.Interfaces {
			dev := ""
			if ifc.Target != nil && ifc.Target.Dev != "" {
				dev = ifc.Target.Dev
			} else if ifc.MAC != nil {
				dev = ifc.MAC.Address
			}
			if dev == "" {
				continue
			}
			rx, _, _, _, tx, _, _, _, err := loc.l.DomainInterfaceStats(loc.dom, dev)
			if err != nil {
				if unsupported(err) {
					continue
				}
				return hypervisors.VMStats{}, classify(op, name, fmt.Errorf("interface %s stats: %w", dev, err))
			}
			out.NetRxBytes += nonNeg(rx)
			out.NetTxBytes += nonNeg(tx)
		}
		for _, disk := range dom.Devices.Disks {
			if disk.Target == nil || disk.Target.Dev == "" {
				continue
			}
			_, rd, _, wr, _, err := loc.l.DomainBlockStats(loc.dom, disk.Target.Dev)
			if err != nil {
				if unsupported(err) {
					continue
				}
				return hypervisors.VMStats{}, classify(op, name, fmt.Errorf("disk %s stats: %w", disk.Target.Dev, err))
			}
			out.DiskReadB += nonNeg(rd)
			out.DiskWriteB += nonNeg(wr)
		}
	}
	return out, nil
}

// unsupported: the driver does not keep this counter.
func unsupported(err error) bool {
	return isCode(err, libvirt.ErrNoSupport) || isCode(err, libvirt.ErrOperationUnsupported) ||
		errors.Is(err, libvirt.ErrUnsupported)
}

// nonNeg turns libvirt's "-1 means unknown" counters into unsigned values.
func nonNeg(v int64) uint64 {
	if v < 0 {
		return 0
	}
	return uint64(v)
}

// ListVMs lists every domain of every host. A host that does not answer makes it fail with
// ErrUnreachable rather than return a list that silently misses that host's VMs.
func (d *Driver) ListVMs(ctx context.Context) ([]hypervisors.VMInfo, error) {
	const op = "list"
	results := make([][]hypervisors.VMInfo, len(d.names))
	errs := make([]error, len(d.names))
	var wg sync.WaitGroup
	for i, n := range d.names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = d.listHost(ctx, op, d.hosts[n])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var out []hypervisors.VMInfo
	for _, r := range results {
		out = append(out, r...)
	}
	return out, nil
}

func (d *Driver) listHost(ctx context.Context, op string, h *hostConn) ([]hypervisors.VMInfo, error) {
	l, err := h.get(ctx)
	if err != nil {
		return nil, err
	}
	doms, _, err := l.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, classify(op, h.name, err)
	}
	out := make([]hypervisors.VMInfo, 0, len(doms))
	for _, dom := range doms {
		vi, err := d.info(op, located{h: h, l: l, dom: dom})
		if errors.Is(err, hypervisors.ErrNotFound) {
			continue // undefined while we listed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, vi)
	}
	return out, nil
}
