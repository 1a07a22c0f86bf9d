package xapisim

import (
	"encoding/xml"
	"fmt"
	"strconv"
	"time"
)

const (
	classVM        = "VM"
	classVMMetrics = "VM_metrics"
	// CodeProvisionOnlyAllowedOnTemplate: VM.provision of a VM that is not a template.
	CodeProvisionOnlyAllowedOnTemplate = "PROVISION_ONLY_ALLOWED_ON_TEMPLATE"
)

// VM power states as XAPI spells them.
const (
	powerHalted    = "Halted"
	powerRunning   = "Running"
	powerPaused    = "Paused"
	powerSuspended = "Suspended"
)

// vmRec is XAPI's VM class (templates, snapshots and control domains included).
type vmRec struct {
	UUID                 string            `xapi:"uuid"`
	NameLabel            string            `xapi:"name_label,rw"`
	NameDescription      string            `xapi:"name_description,rw"`
	UserVersion          int64             `xapi:"user_version,rw"`
	IsATemplate          bool              `xapi:"is_a_template,rw"`
	IsDefaultTemplate    bool              `xapi:"is_default_template"`
	IsASnapshot          bool              `xapi:"is_a_snapshot"`
	SnapshotOf           string            `xapi:"snapshot_of"`
	IsControlDomain      bool              `xapi:"is_control_domain"`
	PowerState           string            `xapi:"power_state"`
	Domid                int64             `xapi:"domid"`
	Domarch              string            `xapi:"domarch"`
	ResidentOn           string            `xapi:"resident_on"`
	Affinity             string            `xapi:"affinity,rw"`
	MemoryOverhead       int64             `xapi:"memory_overhead"`
	MemoryTarget         int64             `xapi:"memory_target"`
	MemoryStaticMax      int64             `xapi:"memory_static_max,rw"`
	MemoryDynamicMax     int64             `xapi:"memory_dynamic_max,rw"`
	MemoryDynamicMin     int64             `xapi:"memory_dynamic_min,rw"`
	MemoryStaticMin      int64             `xapi:"memory_static_min,rw"`
	VCPUsParams          map[string]string `xapi:"VCPUs_params,rw"`
	VCPUsMax             int64             `xapi:"VCPUs_max,rw"`
	VCPUsAtStartup       int64             `xapi:"VCPUs_at_startup,rw"`
	ActionsAfterShutdown string            `xapi:"actions_after_shutdown,rw"`
	ActionsAfterReboot   string            `xapi:"actions_after_reboot,rw"`
	ActionsAfterCrash    string            `xapi:"actions_after_crash,rw"`
	Consoles             []string          `xapi:"consoles"`
	VIFs                 []string          `xapi:"VIFs"`
	VBDs                 []string          `xapi:"VBDs"`
	PVBootloader         string            `xapi:"PV_bootloader,rw"`
	PVKernel             string            `xapi:"PV_kernel,rw"`
	PVRamdisk            string            `xapi:"PV_ramdisk,rw"`
	PVArgs               string            `xapi:"PV_args,rw"`
	PVBootloaderArgs     string            `xapi:"PV_bootloader_args,rw"`
	PVLegacyArgs         string            `xapi:"PV_legacy_args,rw"`
	HVMBootPolicy        string            `xapi:"HVM_boot_policy,rw"`
	HVMBootParams        map[string]string `xapi:"HVM_boot_params,rw"`
	Platform             map[string]string `xapi:"platform,rw"`
	PCIBus               string            `xapi:"PCI_bus,rw"`
	OtherConfig          map[string]string `xapi:"other_config,rw"`
	XenstoreData         map[string]string `xapi:"xenstore_data,rw"`
	Metrics              string            `xapi:"metrics"`
	GuestMetrics         string            `xapi:"guest_metrics"`
	AllowedOperations    []string          `xapi:"allowed_operations"`
	CurrentOperations    map[string]string `xapi:"current_operations"`
	BlockedOperations    map[string]string `xapi:"blocked_operations,rw"`
	Tags                 []string          `xapi:"tags,rw"`
	HARestartPriority    string            `xapi:"ha_restart_priority,rw"`
	// reserved is the host memory this VM holds while resident (not a XAPI field).
	reserved int64
}

func (v *vmRec) ops() map[string]string { return v.CurrentOperations }

// vmMetricsRec is XAPI's VM_metrics class.
type vmMetricsRec struct {
	UUID              string             `xapi:"uuid"`
	MemoryActual      int64              `xapi:"memory_actual"`
	VCPUsNumber       int64              `xapi:"VCPUs_number"`
	VCPUsUtilisation  map[string]float64 `xapi:"VCPUs_utilisation"`
	StartTime         time.Time          `xapi:"start_time"`
	InstallTime       time.Time          `xapi:"install_time"`
	LastUpdated       time.Time          `xapi:"last_updated"`
	State             []string           `xapi:"state"`
	OtherConfig       map[string]string  `xapi:"other_config,rw"`
	CurrentDomainType string             `xapi:"current_domain_type"`
}

func newVMClass() *class        { return newClass(classVM, vmRec{}) }
func newVMMetricsClass() *class { return newClass(classVMMetrics, vmMetricsRec{}) }

// refreshAllowed recomputes allowed_operations from the power state, as xapi_vm_lifecycle
// does after every change.
func (v *vmRec) refreshAllowed() {
	switch {
	case v.IsControlDomain:
		v.AllowedOperations = []string{}
	case v.IsATemplate:
		v.AllowedOperations = []string{"clone", "copy", "provision", "destroy", "export", "changing_memory_limits", "changing_VCPUs"}
	case v.PowerState == powerHalted:
		v.AllowedOperations = []string{"start", "start_on", "clone", "copy", "destroy", "export",
			"make_into_template", "changing_memory_limits", "changing_VCPUs", "provision"}
	case v.PowerState == powerRunning:
		v.AllowedOperations = []string{"clean_shutdown", "hard_shutdown", "shutdown", "clean_reboot",
			"hard_reboot", "pool_migrate", "pause", "changing_dynamic_range", "changing_VCPUs_live"}
	case v.PowerState == powerPaused:
		v.AllowedOperations = []string{"unpause", "hard_shutdown", "hard_reboot"}
	default:
		v.AllowedOperations = []string{"resume", "hard_shutdown"}
	}
}

func (s *Server) newVMMetrics() string {
	return s.db.add(classVMMetrics, &vmMetricsRec{
		UUID: newUUID(), VCPUsUtilisation: map[string]float64{}, InstallTime: time.Now().UTC(),
		LastUpdated: time.Now().UTC(), State: []string{}, OtherConfig: map[string]string{},
		CurrentDomainType: "unspecified",
	})
}

func (s *Server) vmMetrics(v *vmRec) *vmMetricsRec {
	m, _ := lookup[vmMetricsRec](s.db, classVMMetrics, v.Metrics)
	return m
}

func baseVM(name string) *vmRec {
	return &vmRec{
		UUID: newUUID(), NameLabel: name, SnapshotOf: NullRef, PowerState: powerHalted, Domid: -1,
		Domarch: "", ResidentOn: NullRef, Affinity: NullRef,
		MemoryStaticMax: 256 * mib, MemoryDynamicMax: 256 * mib, MemoryDynamicMin: 256 * mib,
		MemoryStaticMin: 128 * mib, VCPUsParams: map[string]string{}, VCPUsMax: 1, VCPUsAtStartup: 1,
		ActionsAfterShutdown: "destroy", ActionsAfterReboot: "restart", ActionsAfterCrash: "restart",
		Consoles: []string{}, VIFs: []string{}, VBDs: []string{},
		HVMBootParams: map[string]string{}, Platform: map[string]string{}, OtherConfig: map[string]string{},
		XenstoreData: map[string]string{}, GuestMetrics: NullRef, CurrentOperations: map[string]string{},
		BlockedOperations: map[string]string{}, Tags: []string{},
	}
}

// addControlDomain creates a host's dom0, running and holding part of its memory.
func (s *Server) addControlDomain(hostRef string, h *hostRec, total int64) string {
	v := baseVM("Control domain on host: " + h.NameLabel)
	dom0 := int64(4096) * mib
	if total < 16*1024*mib {
		dom0 = total / 8
	}
	v.IsControlDomain, v.PowerState, v.Domid, v.ResidentOn, v.Affinity = true, powerRunning, 0, hostRef, hostRef
	v.MemoryStaticMax, v.MemoryDynamicMax, v.MemoryDynamicMin, v.MemoryStaticMin = dom0, dom0, dom0, dom0
	v.VCPUsMax, v.VCPUsAtStartup = 4, 4
	v.Metrics = s.newVMMetrics()
	v.refreshAllowed()
	ref := s.db.add(classVM, v)
	s.place(ref, v, hostRef, h)
	return ref
}

// addDefaultTemplate creates one of the templates a fresh pool ships with.
func (s *Server) addDefaultTemplate(name string) string {
	v := baseVM(name)
	v.IsATemplate, v.IsDefaultTemplate = true, true
	v.NameDescription = "Template which allows VM installation from install media"
	v.HVMBootPolicy = "BIOS order"
	v.HVMBootParams = map[string]string{"order": "cdn"}
	v.Platform = map[string]string{"acpi": "1", "apic": "true", "pae": "true", "nx": "true", "viridian": "false"}
	v.OtherConfig = map[string]string{"install-methods": "cdrom", "default_template": "true"}
	v.Metrics = s.newVMMetrics()
	v.refreshAllowed()
	return s.db.add(classVM, v)
}

// place makes a VM resident on a host, taking its memory.
func (s *Server) place(ref string, v *vmRec, hostRef string, h *hostRec) {
	need := v.MemoryDynamicMax + v.MemoryOverhead
	s.hostMetrics(h).MemoryFree -= need
	v.reserved = need
	v.ResidentOn = hostRef
	h.ResidentVMs = append(h.ResidentVMs, ref)
}

// unplace releases a VM's host memory.
func (s *Server) unplace(ref string, v *vmRec) {
	if h, f := lookup[hostRec](s.db, classHost, v.ResidentOn); f == nil {
		s.hostMetrics(h).MemoryFree += v.reserved
		h.ResidentVMs = without(h.ResidentVMs, ref)
	}
	v.reserved = 0
	v.ResidentOn = NullRef
}

func (s *Server) registerVM() {
	reg := func(name string, params []param, fn handler) {
		s.methods["VM."+name] = &method{name: "VM." + name, params: params, fn: fn}
	}
	reg("start", []param{vmP("vm"), pBool("start_paused"), pBool("force")}, s.vmStart)
	reg("start_on", []param{vmP("vm"), pRef("host", classHost), pBool("start_paused"), pBool("force")}, s.vmStartOn)
	reg("clean_shutdown", []param{vmP("vm")}, s.vmShutdown(false))
	reg("hard_shutdown", []param{vmP("vm")}, s.vmShutdown(true))
	reg("shutdown", []param{vmP("vm")}, s.vmShutdown(false))
	reg("clean_reboot", []param{vmP("vm")}, s.vmReboot)
	reg("hard_reboot", []param{vmP("vm")}, s.vmReboot)
	reg("pause", []param{vmP("vm")}, s.vmPause(true))
	reg("unpause", []param{vmP("vm")}, s.vmPause(false))
	reg("pool_migrate", []param{vmP("vm"), pRef("host", classHost), pStrMap("options")}, s.vmPoolMigrate)
	reg("destroy", []param{vmP("self")}, s.vmDestroy)
	reg("clone", []param{vmP("vm"), pString("new_name")}, s.vmClone)
	reg("copy", []param{vmP("vm"), pString("new_name"), pRefOrNull("sr", classSR)}, s.vmCopy)
	reg("provision", []param{vmP("vm")}, s.vmProvision)
	reg("set_VCPUs_max", []param{vmP("self"), pInt("value")}, s.vmSetVCPUsMax)
	reg("set_VCPUs_at_startup", []param{vmP("self"), pInt("value")}, s.vmSetVCPUsAtStartup)
	reg("set_VCPUs_number_live", []param{vmP("self"), pInt("nvcpu")}, s.vmSetVCPUsLive)
	reg("set_memory_limits", []param{vmP("self"), pInt("static_min"), pInt("static_max"), pInt("dynamic_min"), pInt("dynamic_max")}, s.vmSetMemoryLimits)
	reg("set_memory_static_max", []param{vmP("self"), pInt("value")}, s.vmSetMemoryField("static_max"))
	reg("set_memory_static_min", []param{vmP("self"), pInt("value")}, s.vmSetMemoryField("static_min"))
	reg("set_memory_dynamic_max", []param{vmP("self"), pInt("value")}, s.vmSetMemoryField("dynamic_max"))
	reg("set_memory_dynamic_min", []param{vmP("self"), pInt("value")}, s.vmSetMemoryField("dynamic_min"))
	reg("set_memory_dynamic_range", []param{vmP("self"), pInt("min"), pInt("max")}, s.vmSetDynamicRange)
	reg("set_memory", []param{vmP("self"), pInt("value")}, s.vmSetMemory)
	reg("set_is_a_template", []param{vmP("self"), pBool("value")}, s.vmSetIsATemplate)
	reg("set_affinity", []param{vmP("self"), pRefOrNull("value", classHost)}, s.vmSetAffinity)
}

// vmP is a VM ref parameter.
func vmP(name string) param { return pRef(name, classVM) }

// vm is the decoded VM parameter i: its ref and record.
func (c *call) vm(i int) (string, *vmRec) {
	ref := c.ref(i)
	return ref, c.object(i).(*vmRec)
}

// startable checks what VM.start and VM.start_on both require.
func (s *Server) startable(ref string, v *vmRec) *Failure {
	if v.IsATemplate {
		return fail(CodeVMIsTemplate, ref)
	}
	if v.IsControlDomain {
		return fail(CodeOperationNotAllowed, "Operations on the control domain are not allowed")
	}
	if v.PowerState != powerHalted {
		return badPowerState(ref, powerHalted, v.PowerState)
	}
	return busy(classVM, ref, v)
}

func (s *Server) vmStart(c *call) (any, error) {
	ref, v := c.vm(0)
	paused := c.bool(1)
	if f := s.startable(ref, v); f != nil {
		return nil, f
	}
	// Like xapi's host selection: the affinity host if it can run the VM, else the first
	// live, enabled host with enough free memory.
	need := v.MemoryDynamicMax + v.MemoryOverhead
	hostRefs, hosts := all[hostRec](s.db, classHost)
	order := make([]int, 0, len(hosts))
	for i, r := range hostRefs {
		if r == v.Affinity {
			order = append([]int{i}, order...)
		} else {
			order = append(order, i)
		}
	}
	best, usable := int64(-1), false
	for _, i := range order {
		if s.hostUsable(hostRefs[i], hosts[i]) != nil {
			continue
		}
		usable = true
		free := s.hostMetrics(hosts[i]).MemoryFree
		if free >= need {
			return s.boot(c, ref, v, hostRefs[i], hosts[i], paused)
		}
		best = max(best, free)
	}
	if !usable {
		return nil, fail(CodeNoHostsAvailable)
	}
	return nil, fail(CodeHostNotEnoughFreeMemory, strconv.FormatInt(need, 10), strconv.FormatInt(best, 10))
}

func (s *Server) vmStartOn(c *call) (any, error) {
	ref, v := c.vm(0)
	hostRef := c.ref(1)
	paused := c.bool(2)
	if f := s.startable(ref, v); f != nil {
		return nil, f
	}
	h, _ := lookup[hostRec](s.db, classHost, hostRef)
	if f := s.hostUsable(hostRef, h); f != nil {
		return nil, f
	}
	need := v.MemoryDynamicMax + v.MemoryOverhead
	if free := s.hostMetrics(h).MemoryFree; free < need {
		return nil, fail(CodeHostNotEnoughFreeMemory, strconv.FormatInt(need, 10), strconv.FormatInt(free, 10))
	}
	return s.boot(c, ref, v, hostRef, h, paused)
}

// boot reserves the host's memory at once (so concurrent starts cannot oversubscribe it),
// then completes after OpDelay.
func (s *Server) boot(c *call, ref string, v *vmRec, hostRef string, h *hostRec, paused bool) (any, error) {
	s.place(ref, v, hostRef, h)
	return c.later([]opHolder{v}, "start", func() (any, error) {
		v.PowerState = powerRunning
		if paused {
			v.PowerState = powerPaused
		}
		s.domid++
		v.Domid = s.domid
		v.Domarch = "x64"
		s.setAttached(v, true)
		m := s.vmMetrics(v)
		m.StartTime = time.Now().UTC()
		m.LastUpdated = m.StartTime
		m.MemoryActual = v.MemoryDynamicMax
		m.VCPUsNumber = v.VCPUsAtStartup
		m.CurrentDomainType = "hvm"
		m.VCPUsUtilisation = map[string]float64{}
		for i := int64(0); i < v.VCPUsAtStartup; i++ {
			m.VCPUsUtilisation[strconv.FormatInt(i, 10)] = 0.05
		}
		v.refreshAllowed()
		return "", nil
	})
}

// setAttached plugs or unplugs a VM's devices with its domain.
func (s *Server) setAttached(v *vmRec, on bool) {
	for _, r := range v.VBDs {
		if b, f := lookup[vbdRec](s.db, classVBD, r); f == nil {
			b.CurrentlyAttached = on
		}
	}
	for _, r := range v.VIFs {
		if n, f := lookup[vifRec](s.db, classVIF, r); f == nil {
			n.CurrentlyAttached = on
		}
	}
}

func (s *Server) halt(ref string, v *vmRec) {
	v.PowerState, v.Domid, v.Domarch = powerHalted, -1, ""
	s.unplace(ref, v)
	s.setAttached(v, false)
	m := s.vmMetrics(v)
	m.MemoryActual, m.VCPUsNumber, m.VCPUsUtilisation = 0, 0, map[string]float64{}
	m.CurrentDomainType = "unspecified"
	m.LastUpdated = time.Now().UTC()
	v.refreshAllowed()
}

func (s *Server) vmShutdown(hard bool) handler {
	return func(c *call) (any, error) {
		ref, v := c.vm(0)
		if v.IsControlDomain {
			return nil, fail(CodeOperationNotAllowed, "Operations on the control domain are not allowed")
		}
		ok := v.PowerState == powerRunning || (hard && (v.PowerState == powerPaused || v.PowerState == powerSuspended))
		if !ok {
			return nil, badPowerState(ref, powerRunning, v.PowerState)
		}
		if f := busy(classVM, ref, v); f != nil {
			return nil, f
		}
		op := "clean_shutdown"
		if hard {
			op = "hard_shutdown"
		}
		return c.later([]opHolder{v}, op, func() (any, error) {
			s.halt(ref, v)
			return "", nil
		})
	}
}

func (s *Server) vmReboot(c *call) (any, error) {
	ref, v := c.vm(0)
	if v.IsControlDomain {
		return nil, fail(CodeOperationNotAllowed, "Operations on the control domain are not allowed")
	}
	if v.PowerState != powerRunning {
		return nil, badPowerState(ref, powerRunning, v.PowerState)
	}
	if f := busy(classVM, ref, v); f != nil {
		return nil, f
	}
	return c.later([]opHolder{v}, c.method[len("VM."):], func() (any, error) {
		s.domid++
		v.Domid = s.domid
		m := s.vmMetrics(v)
		m.StartTime = time.Now().UTC()
		m.LastUpdated = m.StartTime
		return "", nil
	})
}

func (s *Server) vmPause(pause bool) handler {
	return func(c *call) (any, error) {
		ref, v := c.vm(0)
		from, to := powerRunning, powerPaused
		if !pause {
			from, to = powerPaused, powerRunning
		}
		if v.PowerState != from || v.IsControlDomain {
			return nil, badPowerState(ref, from, v.PowerState)
		}
		if f := busy(classVM, ref, v); f != nil {
			return nil, f
		}
		v.PowerState = to
		v.refreshAllowed()
		return "", nil
	}
}

func (s *Server) vmPoolMigrate(c *call) (any, error) {
	ref, v := c.vm(0)
	hostRef := c.ref(1)
	if v.IsControlDomain {
		return nil, fail(CodeOperationNotAllowed, "Operations on the control domain are not allowed")
	}
	if v.PowerState != powerRunning {
		return nil, badPowerState(ref, powerRunning, v.PowerState)
	}
	if f := busy(classVM, ref, v); f != nil {
		return nil, f
	}
	h, _ := lookup[hostRec](s.db, classHost, hostRef)
	if f := s.hostUsable(hostRef, h); f != nil {
		return nil, f
	}
	if hostRef == v.ResidentOn {
		// xapi allows a localhost migration; it moves nothing.
		return c.later([]opHolder{v}, "pool_migrate", func() (any, error) { return "", nil })
	}
	need := v.MemoryDynamicMax + v.MemoryOverhead
	if free := s.hostMetrics(h).MemoryFree; free < need {
		return nil, fail(CodeHostNotEnoughFreeMemory, strconv.FormatInt(need, 10), strconv.FormatInt(free, 10))
	}
	// The target's memory is held for the whole migration, the source's until it ends.
	s.hostMetrics(h).MemoryFree -= need
	return c.later([]opHolder{v}, "pool_migrate", func() (any, error) {
		s.hostMetrics(h).MemoryFree += need
		s.unplace(ref, v)
		s.place(ref, v, hostRef, h)
		s.domid++
		v.Domid = s.domid
		return "", nil
	})
}

func (s *Server) vmDestroy(c *call) (any, error) {
	ref, v := c.vm(0)
	if v.IsControlDomain {
		return nil, fail(CodeOperationNotAllowed, "Operations on the control domain are not allowed")
	}
	if v.PowerState != powerHalted && v.PowerState != powerSuspended {
		return nil, badPowerState(ref, powerHalted, v.PowerState)
	}
	if f := busy(classVM, ref, v); f != nil {
		return nil, f
	}
	for _, r := range append([]string(nil), v.VBDs...) {
		s.removeVBD(r)
	}
	for _, r := range append([]string(nil), v.VIFs...) {
		s.removeVIF(r)
	}
	s.db.remove(classVMMetrics, v.Metrics)
	s.db.remove(classVM, ref)
	return "", nil
}

func (s *Server) vmClone(c *call) (any, error) {
	ref, v := c.vm(0)
	name := c.str(1)
	return s.duplicate(c, ref, v, name, "", true)
}

func (s *Server) vmCopy(c *call) (any, error) {
	ref, v := c.vm(0)
	name := c.str(1)
	sr := c.ref(2)
	if sr == NullRef {
		sr = ""
	}
	return s.duplicate(c, ref, v, name, sr, false)
}

// duplicate implements VM.clone (disks fast-cloned in their SR) and VM.copy (disks fully
// copied, into sr when given). The new VM keeps the source's template flag.
func (s *Server) duplicate(c *call, ref string, v *vmRec, name, sr string, clone bool) (any, error) {
	if v.IsControlDomain {
		return nil, fail(CodeOperationNotAllowed, "Operations on the control domain are not allowed")
	}
	if v.PowerState != powerHalted {
		return nil, badPowerState(ref, powerHalted, v.PowerState)
	}
	if f := busy(classVM, ref, v); f != nil {
		return nil, f
	}
	op := "clone"
	if !clone {
		op = "copy"
	}
	return c.later([]opHolder{v}, op, func() (any, error) {
		nv := *v
		nv.UUID, nv.NameLabel, nv.IsDefaultTemplate = newUUID(), name, false
		nv.VCPUsParams, nv.HVMBootParams, nv.Platform = cloneMap(v.VCPUsParams), cloneMap(v.HVMBootParams), cloneMap(v.Platform)
		nv.OtherConfig, nv.XenstoreData = cloneMap(v.OtherConfig), cloneMap(v.XenstoreData)
		delete(nv.OtherConfig, "default_template")
		nv.BlockedOperations, nv.CurrentOperations = cloneMap(v.BlockedOperations), map[string]string{}
		nv.Tags, nv.Consoles, nv.VIFs, nv.VBDs = append([]string{}, v.Tags...), []string{}, []string{}, []string{}
		nv.Metrics = s.newVMMetrics()
		nv.refreshAllowed()
		nref := s.db.add(classVM, &nv)
		created := []string{}
		undo := func() {
			for _, r := range created {
				vdi, _ := lookup[vdiRec](s.db, classVDI, r)
				sr, _ := lookup[srRec](s.db, classSR, vdi.SR)
				sr.PhysicalUtilisation -= vdi.PhysicalUtilisation
				sr.VirtualAllocation -= vdi.VirtualSize
				sr.VDIs = without(sr.VDIs, r)
				delete(s.content, vdi.UUID)
				s.db.remove(classVDI, r)
			}
			for _, r := range append([]string(nil), nv.VBDs...) {
				s.removeVBD(r)
			}
			for _, r := range append([]string(nil), nv.VIFs...) {
				s.removeVIF(r)
			}
			s.db.remove(classVMMetrics, nv.Metrics)
			s.db.remove(classVM, nref)
		}
		for _, vbdRef := range v.VBDs {
			b, _ := lookup[vbdRec](s.db, classVBD, vbdRef)
			vdiRef := b.VDI
			if b.Type == "Disk" && vdiRef != NullRef {
				vdi, f := lookup[vdiRec](s.db, classVDI, vdiRef)
				if f != nil {
					undo()
					return nil, f
				}
				target := vdi.SR
				if sr != "" {
					target = sr
				}
				nvdi, err := s.copyVDI(vdiRef, vdi, target, clone)
				if err != nil {
					undo()
					return nil, err
				}
				created = append(created, nvdi)
				vdiRef = nvdi
			}
			nb := &vbdRec{
				UUID: newUUID(), VM: nref, VDI: vdiRef, Userdevice: b.Userdevice, Bootable: b.Bootable,
				Mode: b.Mode, Type: b.Type, Unpluggable: b.Unpluggable, Empty: b.Empty,
				OtherConfig: cloneMap(b.OtherConfig), QosAlgorithmType: b.QosAlgorithmType,
				QosAlgorithmParams: cloneMap(b.QosAlgorithmParams), AllowedOperations: []string{"attach"},
				CurrentOperations: map[string]string{},
			}
			nbRef := s.db.add(classVBD, nb)
			nv.VBDs = append(nv.VBDs, nbRef)
			if vdi, f := lookup[vdiRec](s.db, classVDI, vdiRef); f == nil {
				vdi.VBDs = append(vdi.VBDs, nbRef)
			}
		}
		for _, vifRef := range v.VIFs {
			n, _ := lookup[vifRec](s.db, classVIF, vifRef)
			nn := *n
			nn.UUID, nn.VM, nn.CurrentlyAttached = newUUID(), nref, false
			nn.OtherConfig, nn.QosAlgorithmParams = cloneMap(n.OtherConfig), cloneMap(n.QosAlgorithmParams)
			nn.CurrentOperations = map[string]string{}
			nnRef := s.db.add(classVIF, &nn)
			nv.VIFs = append(nv.VIFs, nnRef)
			if nw, f := lookup[networkRec](s.db, classNetwork, nn.Network); f == nil {
				nw.VIFs = append(nw.VIFs, nnRef)
			}
		}
		return nref, nil
	})
}

// provisionSpec is the other_config:disks XML of a template, as xapi's provision reads it:
// <provision><disk device="0" size="8589934592" sr="<uuid>" bootable="true" type="system"/></provision>
type provisionSpec struct {
	XMLName xml.Name `xml:"provision"`
	Disks   []struct {
		Device   string `xml:"device,attr"`
		Size     int64  `xml:"size,attr"`
		SR       string `xml:"sr,attr"`
		Bootable bool   `xml:"bootable,attr"`
		Type     string `xml:"type,attr"`
	} `xml:"disk"`
}

func (s *Server) vmProvision(c *call) (any, error) {
	ref, v := c.vm(0)
	if !v.IsATemplate {
		return nil, fail(CodeProvisionOnlyAllowedOnTemplate)
	}
	if f := busy(classVM, ref, v); f != nil {
		return nil, f
	}
	raw, ok := v.OtherConfig["disks"]
	if !ok || raw == "" {
		return "", nil
	}
	var spec provisionSpec
	if err := xml.Unmarshal([]byte(raw), &spec); err != nil {
		return nil, fail(CodeInternalError, fmt.Sprintf("Failed to parse provisioning XML: %v", err))
	}
	for _, d := range spec.Disks {
		srRef := s.defaultSR()
		if d.SR != "" {
			r, ok := s.db.classes[classSR].byUUID(d.SR)
			if !ok {
				return nil, fail(CodeUUIDInvalid, classSR, d.SR)
			}
			srRef = r
		}
		sr, f := lookup[srRec](s.db, classSR, srRef)
		if f != nil {
			return nil, fail("SR_REQUIRED")
		}
		typ := d.Type
		if typ == "" {
			typ = "system"
		}
		vdiRef, err := s.newVDI(srRef, sr, &vdiRec{
			NameLabel: fmt.Sprintf("%s %s", v.NameLabel, d.Device), VirtualSize: d.Size, Type: typ,
		})
		if err != nil {
			return nil, err
		}
		vdi, _ := lookup[vdiRec](s.db, classVDI, vdiRef)
		b := &vbdRec{
			UUID: newUUID(), VM: ref, VDI: vdiRef, Userdevice: d.Device, Bootable: d.Bootable, Mode: "RW",
			Type: "Disk", Unpluggable: true, OtherConfig: map[string]string{"owner": "true"},
			QosAlgorithmParams: map[string]string{}, AllowedOperations: []string{"attach"},
			CurrentOperations: map[string]string{},
		}
		bRef := s.db.add(classVBD, b)
		v.VBDs = append(v.VBDs, bRef)
		vdi.VBDs = append(vdi.VBDs, bRef)
	}
	delete(v.OtherConfig, "disks")
	return "", nil
}

// halted fails with VM_BAD_POWER_STATE unless a VM is halted (static settings).
func halted(ref string, v *vmRec) *Failure {
	if v.PowerState != powerHalted {
		return badPowerState(ref, powerHalted, v.PowerState)
	}
	return nil
}

func vcpuErr(field string, value int64, reason string) *Failure {
	return fail(CodeValueNotSupported, field, strconv.FormatInt(value, 10), reason)
}

func (s *Server) vmSetVCPUsMax(c *call) (any, error) {
	ref, v := c.vm(0)
	n := c.int(1)
	if f := halted(ref, v); f != nil {
		return nil, f
	}
	if n < 1 || n > 64 {
		return nil, vcpuErr("VCPUs_max", n, "value must be between 1 and 64")
	}
	if n < v.VCPUsAtStartup {
		return nil, vcpuErr("VCPUs_max", n, "VCPUs_at_startup must be less than or equal to VCPUs_max")
	}
	v.VCPUsMax = n
	return "", nil
}

func (s *Server) vmSetVCPUsAtStartup(c *call) (any, error) {
	ref, v := c.vm(0)
	n := c.int(1)
	if f := halted(ref, v); f != nil {
		return nil, f
	}
	if n < 1 || n > v.VCPUsMax {
		return nil, vcpuErr("VCPUs_at_startup", n, "VCPUs_at_startup must be greater than 0 and less than or equal to VCPUs_max")
	}
	v.VCPUsAtStartup = n
	return "", nil
}

func (s *Server) vmSetVCPUsLive(c *call) (any, error) {
	ref, v := c.vm(0)
	n := c.int(1)
	if v.PowerState != powerRunning {
		return nil, badPowerState(ref, powerRunning, v.PowerState)
	}
	if n < 1 || n > v.VCPUsMax {
		return nil, vcpuErr("VCPU values", n, "VCPUs must be between 1 and VCPUs_max")
	}
	v.VCPUsAtStartup = n
	s.vmMetrics(v).VCPUsNumber = n
	return "", nil
}

// checkMemory enforces static_min <= dynamic_min <= dynamic_max <= static_max.
func checkMemory(smin, smax, dmin, dmax int64) *Failure {
	if smin < 0 || smin > dmin || dmin > dmax || dmax > smax {
		return fail(CodeMemoryConstraintViolation,
			"Memory limits must satisfy: static_min <= dynamic_min <= dynamic_max <= static_max")
	}
	return nil
}

func (s *Server) vmSetMemoryLimits(c *call) (any, error) {
	ref, v := c.vm(0)
	var vals [4]int64
	for i := range vals {
		vals[i] = c.int(i + 1)
	}
	if f := halted(ref, v); f != nil {
		return nil, f
	}
	if f := checkMemory(vals[0], vals[1], vals[2], vals[3]); f != nil {
		return nil, f
	}
	v.MemoryStaticMin, v.MemoryStaticMax, v.MemoryDynamicMin, v.MemoryDynamicMax = vals[0], vals[1], vals[2], vals[3]
	v.MemoryTarget = v.MemoryDynamicMax
	return "", nil
}

func (s *Server) vmSetMemoryField(which string) handler {
	return func(c *call) (any, error) {
		ref, v := c.vm(0)
		n := c.int(1)
		if f := halted(ref, v); f != nil {
			return nil, f
		}
		smin, smax, dmin, dmax := v.MemoryStaticMin, v.MemoryStaticMax, v.MemoryDynamicMin, v.MemoryDynamicMax
		switch which {
		case "static_min":
			smin = n
		case "static_max":
			smax = n
		case "dynamic_min":
			dmin = n
		case "dynamic_max":
			dmax = n
		}
		if f := checkMemory(smin, smax, dmin, dmax); f != nil {
			return nil, f
		}
		v.MemoryStaticMin, v.MemoryStaticMax, v.MemoryDynamicMin, v.MemoryDynamicMax = smin, smax, dmin, dmax
		return "", nil
	}
}

func (s *Server) vmSetDynamicRange(c *call) (any, error) {
	_, v := c.vm(0)
	dmin := c.int(1)
	dmax := c.int(2)
	if f := checkMemory(v.MemoryStaticMin, v.MemoryStaticMax, dmin, dmax); f != nil {
		return nil, f
	}
	v.MemoryDynamicMin, v.MemoryDynamicMax = dmin, dmax
	return "", nil
}

// vmSetMemory is VM.set_memory: static_max, dynamic_min and dynamic_max all to value.
func (s *Server) vmSetMemory(c *call) (any, error) {
	ref, v := c.vm(0)
	n := c.int(1)
	if f := halted(ref, v); f != nil {
		return nil, f
	}
	smin := min(v.MemoryStaticMin, n)
	if f := checkMemory(smin, n, n, n); f != nil {
		return nil, f
	}
	v.MemoryStaticMin, v.MemoryStaticMax, v.MemoryDynamicMin, v.MemoryDynamicMax = smin, n, n, n
	return "", nil
}

func (s *Server) vmSetIsATemplate(c *call) (any, error) {
	ref, v := c.vm(0)
	b := c.bool(1)
	if v.IsControlDomain {
		return nil, fail(CodeOperationNotAllowed, "Operations on the control domain are not allowed")
	}
	if b && v.PowerState != powerHalted {
		return nil, badPowerState(ref, powerHalted, v.PowerState)
	}
	v.IsATemplate = b
	if !b {
		v.IsDefaultTemplate = false
	}
	v.refreshAllowed()
	return "", nil
}

func (s *Server) vmSetAffinity(c *call) (any, error) {
	_, v := c.vm(0)
	v.Affinity = c.ref(1)
	return "", nil
}
