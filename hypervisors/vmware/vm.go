package vmware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sysvm/sysvm/hypervisors"
)

// ExtraConfig keys the driver writes on every system VM.
const (
	// KeyCmdline carries hypervisors.BootArgsString(spec.BootArgs); readable in the guest
	// with `vmtoolsd --cmd "info-get guestinfo.cloudstack.cmdline"`.
	KeyCmdline = "guestinfo.cloudstack.cmdline"
	// KeyMachineID carries the same cmdline under the key CloudStack's VMware resource uses
	// (`vmtoolsd --cmd machine.id.get` in stock system VM images).
	KeyMachineID = "machine.id"
	// KeyTemplate records the template a VM was cloned from (vSphere keeps no such link).
	KeyTemplate = "sysvm.template"
	// KeyNICs records the NICs' roles and addresses as JSON, matched back to the VM's
	// ethernet cards by MAC address.
	KeyNICs = "sysvm.nics"
)

// shutdownWait bounds how long a soft StopVM waits for the guest before powering off.
const shutdownWait = 2 * time.Minute

var vmProps = []string{"name", "config", "runtime", "summary.runtime.bootTime", "guest.toolsRunningStatus", "network", "resourcePool"}

// findVM resolves a (non-template) VM by name in scope.
func (d *Driver) findVM(ctx context.Context, op, name string, props ...string) (mo.VirtualMachine, error) {
	if len(props) == 0 {
		props = vmProps
	}
	props = withName(props)
	if name == "" {
		return mo.VirtualMachine{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, name, "no VM named")
	}
	if v, ok := d.vmRefs.Load(name); ok {
		var vm mo.VirtualMachine
		err := d.pc.RetrieveOne(ctx, v.(types.ManagedObjectReference), withTemplate(props), &vm)
		if err == nil && vm.Name == name && (vm.Config == nil || !vm.Config.Template) {
			return vm, nil
		}
		d.vmRefs.Delete(name) // stale: destroyed, renamed or turned into a template
	}
	found, err := d.search(ctx, d.root, "VirtualMachine", name, "config.template")
	if err != nil {
		return mo.VirtualMachine{}, d.fail(ctx, op, name, err)
	}
	var refs []types.ManagedObjectReference
	for _, oc := range found {
		if !propBool(oc, "config.template") {
			refs = append(refs, oc.Obj)
		}
	}
	switch len(refs) {
	case 0:
		return mo.VirtualMachine{}, hypervisors.Errorf(hypervisors.ErrNotFound, op, name, "no VM of that name")
	case 1:
	default:
		return mo.VirtualMachine{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, name,
			"%d VMs have that name; narrow the connection to one datacenter", len(refs))
	}
	var vm mo.VirtualMachine
	if err := d.pc.RetrieveOne(ctx, refs[0], props, &vm); err != nil {
		return mo.VirtualMachine{}, d.fail(ctx, op, name, err)
	}
	d.vmRefs.Store(name, refs[0])
	return vm, nil
}

func withName(props []string) []string {
	for _, p := range props {
		if p == "name" {
			return props
		}
	}
	return append([]string{"name"}, props...)
}

func withTemplate(props []string) []string {
	for _, p := range props {
		if p == "config" || p == "config.template" {
			return props
		}
	}
	return append(append([]string{}, props...), "config.template")
}

// validateSpec rejects a VMSpec the driver cannot build faithfully.
func validateSpec(spec hypervisors.VMSpec) error {
	const op = "create"
	switch {
	case spec.Name == "":
		return hypervisors.Errorf(hypervisors.ErrInvalid, op, "", "VM name is empty")
	case len(spec.Name) > 80:
		return hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name, "VM name is longer than vSphere's 80 characters")
	case spec.Template == "":
		return hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name, "no template named")
	case spec.CPUs < 1 || spec.MemoryMB < 1:
		return hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name, "cpus=%d memoryMb=%d: both must be positive", spec.CPUs, spec.MemoryMB)
	}
	seen := map[string]bool{}
	for i, n := range spec.NICs {
		if n.MAC == "" {
			continue
		}
		hw, err := net.ParseMAC(n.MAC)
		if err != nil || len(hw) != 6 {
			return hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name, "NIC %d: bad MAC %q", i, n.MAC)
		}
		if seen[hw.String()] {
			return hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name, "NIC %d: MAC %s used twice", i, hw)
		}
		seen[hw.String()] = true
	}
	for k, v := range spec.BootArgs {
		if k == "" || strings.ContainsAny(k, "=") || strings.IndexFunc(k, unicode.IsSpace) >= 0 ||
			strings.IndexFunc(v, unicode.IsSpace) >= 0 {
			return hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name,
				"boot argument %q: keys and values of a space-separated cmdline cannot hold spaces or '=' in the key", k)
		}
	}
	return nil
}

// CreateVM clones spec.Template onto spec.Host and spec.Pool, powered off, with the given
// CPUs, memory, NICs (port groups by name; an empty name means the host's first standard
// port group) and boot arguments in extraConfig. spec.CPUMHz is not enforced: no CPU
// reservation or limit is set. A name that exists anywhere in scope is ErrAlreadyExists.
func (d *Driver) CreateVM(ctx context.Context, spec hypervisors.VMSpec) (hypervisors.VMInfo, error) {
	const op = "create"
	if err := validateSpec(spec); err != nil {
		return hypervisors.VMInfo{}, err
	}
	if _, err := d.findVM(ctx, op, spec.Name, "name"); err == nil {
		return hypervisors.VMInfo{}, hypervisors.Errorf(hypervisors.ErrAlreadyExists, op, spec.Name, "a VM of that name exists")
	} else if !errors.Is(err, hypervisors.ErrNotFound) {
		return hypervisors.VMInfo{}, err
	}

	host, err := d.findHost(ctx, op, spec.Host)
	if err != nil {
		return hypervisors.VMInfo{}, err
	}
	ds, err := d.hostDatastore(ctx, op, host, spec.Pool)
	if err != nil {
		return hypervisors.VMInfo{}, err
	}
	dc, err := d.datacenterOf(ctx, ds.Self)
	if err != nil {
		return hypervisors.VMInfo{}, d.fail(ctx, op, spec.Name, err)
	}
	tpl, err := d.findTemplateIn(ctx, dc.Self, spec.Template, ds.Name)
	if err != nil {
		return hypervisors.VMInfo{}, err
	}
	rp, err := d.hostPool(ctx, host)
	if err != nil {
		return hypervisors.VMInfo{}, d.fail(ctx, op, spec.Name, err)
	}
	devChange, err := d.nicChanges(ctx, host, tpl, spec.NICs)
	if err != nil {
		return hypervisors.VMInfo{}, err
	}
	nics, err := json.Marshal(spec.NICs)
	if err != nil {
		return hypervisors.VMInfo{}, hypervisors.Wrap(hypervisors.ErrInvalid, op, spec.Name, err)
	}
	cmdline := hypervisors.BootArgsString(spec.BootArgs)
	hostRef, dsRef := host.Self, ds.Self
	clone := types.VirtualMachineCloneSpec{
		Location: types.VirtualMachineRelocateSpec{Host: &hostRef, Pool: &rp, Datastore: &dsRef},
		PowerOn:  false,
		Template: false,
		Config: &types.VirtualMachineConfigSpec{
			NumCPUs:  int32(spec.CPUs),
			MemoryMB: int64(spec.MemoryMB),
			ExtraConfig: []types.BaseOptionValue{
				&types.OptionValue{Key: KeyCmdline, Value: cmdline},
				&types.OptionValue{Key: KeyMachineID, Value: cmdline},
				&types.OptionValue{Key: KeyTemplate, Value: spec.Template},
				&types.OptionValue{Key: KeyNICs, Value: string(nics)},
			},
			DeviceChange: devChange,
		},
	}
	folder := object.NewFolder(d.c, dc.VmFolder)
	task, err := object.NewVirtualMachine(d.c, tpl.Self).Clone(ctx, folder, spec.Name, clone)
	if err != nil {
		return hypervisors.VMInfo{}, d.fail(ctx, op, spec.Name, fmt.Errorf("clone %s: %w", spec.Template, err))
	}
	res, err := task.WaitForResult(ctx)
	if err != nil {
		return hypervisors.VMInfo{}, d.fail(ctx, op, spec.Name, fmt.Errorf("clone %s: %w", spec.Template, err))
	}
	if ref, ok := res.Result.(types.ManagedObjectReference); ok {
		d.vmRefs.Store(spec.Name, ref)
	}
	d.log.Info("created VM", "vm", spec.Name, "template", spec.Template, "host", host.Name, "pool", ds.Name)
	return d.GetVM(ctx, spec.Name)
}

// findTemplateIn finds a template by name in one datacenter, preferring the copy on the
// given datastore.
func (d *Driver) findTemplateIn(ctx context.Context, dc types.ManagedObjectReference, name, datastore string) (mo.VirtualMachine, error) {
	const op = "find template"
	found, err := d.search(ctx, dc, "VirtualMachine", name, "config.template", "config.files.vmPathName")
	if err != nil {
		return mo.VirtualMachine{}, d.fail(ctx, op, name, err)
	}
	var pick *types.ObjectContent
	for i, oc := range found {
		if !propBool(oc, "config.template") {
			continue
		}
		if pick == nil || datastoreOfPath(propString(oc, "config.files.vmPathName")) == datastore {
			pick = &found[i]
		}
	}
	if pick == nil {
		return mo.VirtualMachine{}, hypervisors.Errorf(hypervisors.ErrNotFound, op, name,
			"no template of that name in the datacenter of datastore %s", datastore)
	}
	var vm mo.VirtualMachine
	if err := d.pc.RetrieveOne(ctx, pick.Obj, []string{"name", "config"}, &vm); err != nil {
		return mo.VirtualMachine{}, d.fail(ctx, op, name, err)
	}
	return vm, nil
}

// datastoreOfPath takes "ds" out of "[ds] dir/file.vmx".
func datastoreOfPath(p string) string {
	var dp object.DatastorePath
	if dp.FromString(p) {
		return dp.Datastore
	}
	return ""
}

// nicChanges removes the template's ethernet cards and adds one vmxnet3 card per NIC.
func (d *Driver) nicChanges(ctx context.Context, host mo.HostSystem, tpl mo.VirtualMachine, nics []hypervisors.NIC) ([]types.BaseVirtualDeviceConfigSpec, error) {
	const op = "create"
	var changes []types.BaseVirtualDeviceConfigSpec
	if tpl.Config != nil {
		for _, dev := range tpl.Config.Hardware.Device {
			if _, ok := dev.(types.BaseVirtualEthernetCard); ok {
				changes = append(changes, &types.VirtualDeviceConfigSpec{
					Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: dev,
				})
			}
		}
	}
	if len(nics) == 0 {
		return changes, nil
	}
	nets, err := d.hostNetworks(ctx, host)
	if err != nil {
		return nil, d.fail(ctx, op, host.Name, err)
	}
	for i, n := range nics {
		ref, ok := pickNetwork(nets, n.Network)
		if !ok {
			return nil, hypervisors.Errorf(hypervisors.ErrNotFound, op, n.Network,
				"NIC %d: no port group of that name on host %s", i, host.Name)
		}
		nr, ok := object.NewReference(d.c, ref).(object.NetworkReference)
		if !ok {
			return nil, hypervisors.Errorf(hypervisors.ErrUnsupported, op, n.Network, "NIC %d: %s is not a network", i, ref)
		}
		backing, err := nr.EthernetCardBackingInfo(ctx)
		if err != nil {
			return nil, d.fail(ctx, op, n.Network, fmt.Errorf("NIC %d backing: %w", i, err))
		}
		card := types.VirtualEthernetCard{
			VirtualDevice: types.VirtualDevice{
				Key:     int32(-100 - i),
				Backing: backing,
				Connectable: &types.VirtualDeviceConnectInfo{
					StartConnected: true, AllowGuestControl: true,
				},
			},
			AddressType: string(types.VirtualEthernetCardMacTypeGenerated),
		}
		if n.MAC != "" {
			hw, _ := net.ParseMAC(n.MAC) // validated
			card.AddressType = string(types.VirtualEthernetCardMacTypeManual)
			card.MacAddress = hw.String()
		}
		changes = append(changes, &types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd,
			Device:    &types.VirtualVmxnet3{VirtualVmxnet: types.VirtualVmxnet{VirtualEthernetCard: card}},
		})
	}
	return changes, nil
}

type netRec struct {
	ref  types.ManagedObjectReference
	name string
}

func (d *Driver) hostNetworks(ctx context.Context, host mo.HostSystem) ([]netRec, error) {
	if len(host.Network) == 0 {
		return nil, nil
	}
	var ocs []types.ObjectContent
	if err := d.pc.Retrieve(ctx, host.Network, []string{"name"}, &ocs); err != nil {
		return nil, fmt.Errorf("networks of host %s: %w", host.Name, err)
	}
	byRef := map[types.ManagedObjectReference]string{}
	for _, oc := range ocs {
		byRef[oc.Obj] = propString(oc, "name")
	}
	out := make([]netRec, 0, len(host.Network))
	for _, ref := range host.Network { // keep the host's order
		out = append(out, netRec{ref: ref, name: byRef[ref]})
	}
	return out, nil
}

// pickNetwork finds a port group by name; "" picks the first standard port group.
func pickNetwork(nets []netRec, name string) (types.ManagedObjectReference, bool) {
	for _, n := range nets {
		if (name == "" && n.ref.Type == "Network") || (name != "" && n.name == name) {
			return n.ref, true
		}
	}
	if name == "" && len(nets) > 0 {
		return nets[0].ref, true
	}
	return types.ManagedObjectReference{}, false
}

// GetVM inspects one VM: host, pool (the datastore of its .vmx), template, power state,
// shape, NICs (MAC and port group from the VM, role and addresses from extraConfig) and
// the boot arguments read back from extraConfig.
func (d *Driver) GetVM(ctx context.Context, name string) (hypervisors.VMInfo, error) {
	const op = "get"
	vm, err := d.findVM(ctx, op, name)
	if err != nil {
		return hypervisors.VMInfo{}, err
	}
	hostNames := map[types.ManagedObjectReference]string{}
	if h := vm.Runtime.Host; h != nil {
		var hs mo.HostSystem
		if err := d.pc.RetrieveOne(ctx, *h, []string{"name"}, &hs); err != nil {
			return hypervisors.VMInfo{}, d.fail(ctx, op, name, err)
		}
		hostNames[*h] = hs.Name
	}
	pgs, err := d.portgroupNames(ctx, vm.Network)
	if err != nil {
		return hypervisors.VMInfo{}, d.fail(ctx, op, name, err)
	}
	return vmInfo(vm, hostNames, pgs), nil
}

// portgroupNames maps distributed port group keys to names for the given network refs.
func (d *Driver) portgroupNames(ctx context.Context, refs []types.ManagedObjectReference) (map[string]string, error) {
	var pgRefs []types.ManagedObjectReference
	for _, r := range refs {
		if r.Type == "DistributedVirtualPortgroup" {
			pgRefs = append(pgRefs, r)
		}
	}
	out := map[string]string{}
	if len(pgRefs) == 0 {
		return out, nil
	}
	var pgs []mo.DistributedVirtualPortgroup
	if err := d.pc.Retrieve(ctx, pgRefs, []string{"name", "key"}, &pgs); err != nil {
		return nil, fmt.Errorf("port group names: %w", err)
	}
	for _, pg := range pgs {
		out[pg.Key] = pg.Name
	}
	return out, nil
}

func vmInfo(vm mo.VirtualMachine, hostNames map[types.ManagedObjectReference]string, pgs map[string]string) hypervisors.VMInfo {
	vi := hypervisors.VMInfo{Name: vm.Name, State: powerState(vm.Runtime.PowerState)}
	// vCenter keeps the boot time in runtime and its summary; vcsim updates the summary only.
	switch {
	case vm.Summary.Runtime.BootTime != nil:
		vi.BootTime = vm.Summary.Runtime.BootTime.UTC()
	case vm.Runtime.BootTime != nil:
		vi.BootTime = vm.Runtime.BootTime.UTC()
	}
	if h := vm.Runtime.Host; h != nil {
		vi.Host = hostNames[*h]
	}
	c := vm.Config
	if c == nil {
		return vi
	}
	vi.UUID = c.InstanceUuid
	if vi.UUID == "" {
		vi.UUID = c.Uuid
	}
	vi.Pool = datastoreOfPath(c.Files.VmPathName)
	vi.CPUs = int(c.Hardware.NumCPU)
	vi.MemoryMB = int(c.Hardware.MemoryMB)
	extra := map[string]string{}
	for _, bov := range c.ExtraConfig {
		if ov := bov.GetOptionValue(); ov != nil {
			if s, ok := ov.Value.(string); ok {
				extra[ov.Key] = s
			}
		}
	}
	vi.Template = extra[KeyTemplate]
	if cmd, ok := extra[KeyCmdline]; ok {
		vi.BootArgs = parseCmdline(cmd)
	}
	var recorded []hypervisors.NIC
	_ = json.Unmarshal([]byte(extra[KeyNICs]), &recorded) // absent or foreign: roles stay empty
	byMAC := map[string]hypervisors.NIC{}
	for _, n := range recorded {
		if hw, err := net.ParseMAC(n.MAC); err == nil {
			byMAC[hw.String()] = n
		}
	}
	for _, dev := range c.Hardware.Device {
		card, ok := dev.(types.BaseVirtualEthernetCard)
		if !ok {
			continue
		}
		ec := card.GetVirtualEthernetCard()
		nic := hypervisors.NIC{MAC: strings.ToLower(ec.MacAddress)}
		switch b := ec.Backing.(type) {
		case *types.VirtualEthernetCardNetworkBackingInfo:
			nic.Network = b.DeviceName
		case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
			nic.Network = pgs[b.Port.PortgroupKey]
		case *types.VirtualEthernetCardOpaqueNetworkBackingInfo:
			nic.Network = b.OpaqueNetworkId
		}
		if hw, err := net.ParseMAC(ec.MacAddress); err == nil {
			if r, ok := byMAC[hw.String()]; ok {
				nic.Kind, nic.IP, nic.Netmask, nic.Gateway = r.Kind, r.IP, r.Netmask, r.Gateway
			}
		}
		vi.NICs = append(vi.NICs, nic)
	}
	return vi
}

// parseCmdline reads back a space-separated key=value cmdline.
func parseCmdline(s string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		out[k] = v
	}
	return out
}

func powerState(s types.VirtualMachinePowerState) hypervisors.PowerState {
	switch s {
	case types.VirtualMachinePowerStatePoweredOn:
		return hypervisors.PowerRunning
	case types.VirtualMachinePowerStatePoweredOff:
		return hypervisors.PowerStopped
	case types.VirtualMachinePowerStateSuspended:
		return hypervisors.PowerPaused
	}
	return hypervisors.PowerUnknown
}

// runTask waits for a task started by start and maps its failure.
func (d *Driver) runTask(ctx context.Context, op, name string, start func(context.Context) (*object.Task, error)) error {
	task, err := start(ctx)
	if err != nil {
		return d.fail(ctx, op, name, err)
	}
	if err := task.Wait(ctx); err != nil {
		return d.fail(ctx, op, name, err)
	}
	return nil
}

var powerProps = []string{"name", "runtime.powerState", "guest.toolsRunningStatus"}

// StartVM powers a VM on (a suspended VM resumes); a running VM is left as is.
func (d *Driver) StartVM(ctx context.Context, name string) error {
	const op = "start"
	vm, err := d.findVM(ctx, op, name, powerProps...)
	if err != nil {
		return err
	}
	if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
		return nil
	}
	obj := object.NewVirtualMachine(d.c, vm.Self)
	err = d.runTask(ctx, op, name, obj.PowerOn)
	if err != nil && errors.Is(err, hypervisors.ErrBadState) && d.isPowered(ctx, vm.Self, types.VirtualMachinePowerStatePoweredOn) {
		return nil // raced with another start
	}
	if err == nil {
		d.log.Info("started VM", "vm", name)
	}
	return err
}

func (d *Driver) isPowered(ctx context.Context, ref types.ManagedObjectReference, want types.VirtualMachinePowerState) bool {
	var vm mo.VirtualMachine
	if err := d.pc.RetrieveOne(ctx, ref, []string{"runtime.powerState"}, &vm); err != nil {
		return false
	}
	return vm.Runtime.PowerState == want
}

// StopVM shuts a VM down. force powers it off at once; otherwise the guest is asked to shut
// down through VMware Tools and given up to two minutes, and a VM without running Tools (or
// one that does not stop in time) is powered off. A stopped VM is left as is.
func (d *Driver) StopVM(ctx context.Context, name string, force bool) error {
	const op = "stop"
	vm, err := d.findVM(ctx, op, name, powerProps...)
	if err != nil {
		return err
	}
	if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOff {
		return nil
	}
	obj := object.NewVirtualMachine(d.c, vm.Self)
	toolsUp := vm.Guest != nil && vm.Guest.ToolsRunningStatus == string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
	if !force && toolsUp && vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
		if err := obj.ShutdownGuest(ctx); err == nil {
			if d.waitPower(ctx, vm.Self, types.VirtualMachinePowerStatePoweredOff, shutdownWait) {
				d.log.Info("stopped VM (guest shutdown)", "vm", name)
				return nil
			}
			d.log.Warn("guest did not shut down in time; powering off", "vm", name, "waited", shutdownWait)
		} else {
			d.log.Warn("guest shutdown refused; powering off", "vm", name, "err", err)
		}
	}
	err = d.runTask(ctx, op, name, obj.PowerOff)
	if err != nil && fault.IsAlreadyPoweredOffError(err) {
		return nil
	}
	if err == nil {
		d.log.Info("stopped VM (power off)", "vm", name, "force", force)
	}
	return err
}

// waitPower waits up to limit for a VM to reach a power state.
func (d *Driver) waitPower(ctx context.Context, ref types.ManagedObjectReference, want types.VirtualMachinePowerState, limit time.Duration) bool {
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	err := property.Wait(wctx, d.pc, ref, []string{"runtime.powerState"}, func(changes []types.PropertyChange) bool {
		for _, c := range changes {
			if s, ok := c.Val.(types.VirtualMachinePowerState); ok && s == want {
				return true
			}
		}
		return false
	})
	return err == nil
}

// RebootVM restarts a running VM: a guest reboot through VMware Tools when they run, a
// hardware reset otherwise. A VM that is not running is ErrBadState.
func (d *Driver) RebootVM(ctx context.Context, name string) error {
	const op = "reboot"
	vm, err := d.findVM(ctx, op, name, powerProps...)
	if err != nil {
		return err
	}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		return hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM is %s, not running", powerState(vm.Runtime.PowerState))
	}
	obj := object.NewVirtualMachine(d.c, vm.Self)
	if vm.Guest != nil && vm.Guest.ToolsRunningStatus == string(types.VirtualMachineToolsRunningStatusGuestToolsRunning) {
		if err := obj.RebootGuest(ctx); err == nil {
			d.log.Info("rebooted VM (guest reboot)", "vm", name)
			return nil
		}
	}
	if err := d.runTask(ctx, op, name, obj.Reset); err != nil {
		return err
	}
	d.log.Info("rebooted VM (reset)", "vm", name)
	return nil
}

// DestroyVM powers a VM off if needed and deletes it with its disks.
func (d *Driver) DestroyVM(ctx context.Context, name string) error {
	const op = "destroy"
	vm, err := d.findVM(ctx, op, name, powerProps...)
	if err != nil {
		return err
	}
	obj := object.NewVirtualMachine(d.c, vm.Self)
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		if err := d.runTask(ctx, op, name, obj.PowerOff); err != nil && !fault.IsAlreadyPoweredOffError(err) {
			return err
		}
	}
	if err := d.runTask(ctx, op, name, obj.Destroy); err != nil {
		return err
	}
	d.vmRefs.Delete(name)
	d.log.Info("destroyed VM", "vm", name)
	return nil
}

// MigrateVM moves a VM (running or not: vMotion) to another host of the same cluster. An
// unknown target host is ErrNotFound; a host in another cluster is ErrInvalid.
func (d *Driver) MigrateVM(ctx context.Context, name, targetHost string) error {
	const op = "migrate"
	vm, err := d.findVM(ctx, op, name, "name", "runtime.host")
	if err != nil {
		return err
	}
	target, err := d.findHost(ctx, op, targetHost)
	if err != nil {
		return err
	}
	if vm.Runtime.Host == nil {
		return hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM has no host")
	}
	if *vm.Runtime.Host == target.Self {
		return nil
	}
	var src mo.HostSystem
	if err := d.pc.RetrieveOne(ctx, *vm.Runtime.Host, []string{"name", "parent"}, &src); err != nil {
		return d.fail(ctx, op, name, err)
	}
	if src.Parent == nil || target.Parent == nil || *src.Parent != *target.Parent {
		return hypervisors.Errorf(hypervisors.ErrInvalid, op, name,
			"host %s is not in the cluster of host %s", target.Name, src.Name)
	}
	ref := target.Self
	spec := types.VirtualMachineRelocateSpec{Host: &ref}
	obj := object.NewVirtualMachine(d.c, vm.Self)
	if err := d.runTask(ctx, op, name, func(ctx context.Context) (*object.Task, error) {
		return obj.Relocate(ctx, spec, types.VirtualMachineMovePriorityDefaultPriority)
	}); err != nil {
		return err
	}
	d.log.Info("migrated VM", "vm", name, "from", src.Name, "to", target.Name)
	return nil
}

// ScaleVM changes CPU count and memory of a stopped VM (HotScale is false: a running VM is
// ErrBadState).
func (d *Driver) ScaleVM(ctx context.Context, name string, cpus, memoryMB int) error {
	const op = "scale"
	if cpus < 1 || memoryMB < 1 {
		return hypervisors.Errorf(hypervisors.ErrInvalid, op, name, "cpus=%d memoryMb=%d: both must be positive", cpus, memoryMB)
	}
	vm, err := d.findVM(ctx, op, name, powerProps...)
	if err != nil {
		return err
	}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		return hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM is %s; stop it before scaling", powerState(vm.Runtime.PowerState))
	}
	obj := object.NewVirtualMachine(d.c, vm.Self)
	spec := types.VirtualMachineConfigSpec{NumCPUs: int32(cpus), MemoryMB: int64(memoryMB)}
	if err := d.runTask(ctx, op, name, func(ctx context.Context) (*object.Task, error) {
		return obj.Reconfigure(ctx, spec)
	}); err != nil {
		return err
	}
	d.log.Info("scaled VM", "vm", name, "cpus", cpus, "memoryMb", memoryMB)
	return nil
}

// VMStats reads a running VM's quickStats: guest memory in use. vSphere's quickStats carry
// no cumulative CPU time, network or disk byte counters, so those fields stay 0.
func (d *Driver) VMStats(ctx context.Context, name string) (hypervisors.VMStats, error) {
	const op = "stats"
	vm, err := d.findVM(ctx, op, name, "name", "runtime.powerState", "summary.quickStats")
	if err != nil {
		return hypervisors.VMStats{}, err
	}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		return hypervisors.VMStats{}, hypervisors.Errorf(hypervisors.ErrBadState, op, name, "VM is %s, not running", powerState(vm.Runtime.PowerState))
	}
	return hypervisors.VMStats{MemoryUsedMB: int(vm.Summary.QuickStats.GuestMemoryUsage)}, nil
}

// ListVMs lists every VM in scope, templates excluded, sorted by name.
func (d *Driver) ListVMs(ctx context.Context) ([]hypervisors.VMInfo, error) {
	const op = "list VMs"
	var vms []mo.VirtualMachine
	if err := d.retrieve(ctx, d.root, "VirtualMachine", vmProps, &vms); err != nil {
		return nil, d.fail(ctx, op, "", err)
	}
	hosts, err := d.hostNames(ctx)
	if err != nil {
		return nil, d.fail(ctx, op, "", err)
	}
	var nets []types.ManagedObjectReference
	for _, vm := range vms {
		nets = append(nets, vm.Network...)
	}
	pgs, err := d.portgroupNames(ctx, dedupe(nets))
	if err != nil {
		return nil, d.fail(ctx, op, "", err)
	}
	out := make([]hypervisors.VMInfo, 0, len(vms))
	for _, vm := range vms {
		if vm.Config != nil && vm.Config.Template {
			continue
		}
		out = append(out, vmInfo(vm, hosts, pgs))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func dedupe(refs []types.ManagedObjectReference) []types.ManagedObjectReference {
	seen := map[types.ManagedObjectReference]bool{}
	out := refs[:0:0]
	for _, r := range refs {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}
