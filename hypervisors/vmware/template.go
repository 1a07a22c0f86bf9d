package vmware

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf/importer"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sysvm/sysvm/hypervisors"
)

// TemplateFolder is the folder, under a datacenter's VM folder, that holds one sub-folder
// of templates per datastore.
const TemplateFolder = "sysvm-templates"

// SeedTemplate makes a template present in a datastore (spec.Pool, "ds" or "dc/ds").
//
//   - spec.URL empty: an empty template VM with one thin disk of spec.SizeBytes (simulators);
//     a checksum is then ErrInvalid, as there is nothing to verify.
//   - spec.URL file:///path.ova or http(s)://…/x.ova: the OVA is read (downloaded to a
//     temporary file first) while its checksum is computed (hypervisors.FetchTemplate); a
//     mismatch is ErrInvalid and nothing is created in vCenter. The OVA is then imported through an NFC lease and marked as a
//     template. progress sees the bytes hashed (total: the OVA size), then the bytes uploaded
//     (total: the sum of the OVA's disk files).
//
// A template of that name already in the datastore's template folder is returned as is
// (same Ref); a non-template VM left there by an interrupted seed is deleted and redone.
func (d *Driver) SeedTemplate(ctx context.Context, spec hypervisors.TemplateSpec, progress hypervisors.ProgressFunc) (hypervisors.Template, error) {
	const op = "seed template"
	if progress == nil {
		progress = func(int64, int64) {}
	}
	switch {
	case spec.Name == "":
		return hypervisors.Template{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, "", "template name is empty")
	case spec.URL != "" && spec.Format != "" && !strings.EqualFold(spec.Format, "OVA"):
		return hypervisors.Template{}, hypervisors.Errorf(hypervisors.ErrUnsupported, op, spec.Name,
			"format %q: the VMware driver imports OVA only", spec.Format)
	case spec.URL == "" && spec.Checksum != "":
		return hypervisors.Template{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name,
			"checksum given for an empty template: there is no image to verify")
	case spec.URL == "" && spec.SizeBytes <= 0:
		return hypervisors.Template{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name,
			"an empty template needs a positive size, got %d", spec.SizeBytes)
	}
	sum, err := hypervisors.ParseChecksum(spec.Checksum)
	if err != nil {
		return hypervisors.Template{}, hypervisors.Wrap(hypervisors.ErrInvalid, op, spec.Name, err)
	}
	rec, err := d.findPool(ctx, op, spec.Pool)
	if err != nil {
		return hypervisors.Template{}, err
	}
	defer d.seedLocks.Lock(rec.dc + "\x00" + rec.ds.Name + "\x00" + spec.Name)()

	dc, err := d.datacenterOf(ctx, rec.ds.Self)
	if err != nil {
		return hypervisors.Template{}, d.fail(ctx, op, spec.Name, err)
	}
	// Nothing is created in vCenter until the image is verified: look the template up first.
	folder, found, err := d.findTemplateFolder(ctx, dc, rec.ds.Name)
	if err != nil {
		return hypervisors.Template{}, d.fail(ctx, op, spec.Name, err)
	}
	if found {
		if tpl, ok, err := d.existingTemplate(ctx, folder, spec); err != nil || ok {
			return tpl, err
		}
	}

	host, rp, err := d.placement(ctx, rec)
	if err != nil {
		return hypervisors.Template{}, err
	}
	var local string
	if spec.URL != "" {
		path, _, cleanup, err := hypervisors.FetchTemplate(ctx, spec.URL, sum, progress)
		if err != nil {
			return hypervisors.Template{}, fmt.Errorf("%s %s: %w", op, spec.Name, err)
		}
		defer cleanup()
		local = path
	}
	if !found {
		if folder, err = d.templateFolder(ctx, dc, rec.ds.Name); err != nil {
			return hypervisors.Template{}, d.fail(ctx, op, spec.Name, err)
		}
	}
	var ref types.ManagedObjectReference
	if spec.URL == "" {
		ref, err = d.createEmpty(ctx, spec, folder, rec.ds, host, rp)
	} else {
		ref, err = d.importOVA(ctx, spec, local, progress, folder, dc, rec.ds, host, rp)
	}
	if err != nil {
		return hypervisors.Template{}, err
	}
	vm := object.NewVirtualMachine(d.c, ref)
	if err := vm.MarkAsTemplate(ctx); err != nil {
		d.destroyQuietly(ctx, ref, spec.Name)
		return hypervisors.Template{}, d.fail(ctx, op, spec.Name, fmt.Errorf("mark as template: %w", err))
	}
	tpl, err := d.templateInfo(ctx, ref, spec)
	if err != nil {
		return hypervisors.Template{}, d.fail(ctx, op, spec.Name, err)
	}
	d.log.Info("seeded template", "template", spec.Name, "pool", spec.Pool, "ref", tpl.Ref, "sizeBytes", tpl.SizeBytes)
	return tpl, nil
}

// existingTemplate returns the template already in folder, if any; it deletes a leftover
// non-template VM of that name so the seed starts afresh.
func (d *Driver) existingTemplate(ctx context.Context, folder types.ManagedObjectReference, spec hypervisors.TemplateSpec) (hypervisors.Template, bool, error) {
	const op = "seed template"
	ref, ok, err := d.childNamed(ctx, folder, "VirtualMachine", spec.Name)
	if err != nil {
		return hypervisors.Template{}, false, d.fail(ctx, op, spec.Name, err)
	}
	if !ok {
		return hypervisors.Template{}, false, nil
	}
	var vm mo.VirtualMachine
	if err := d.pc.RetrieveOne(ctx, ref, []string{"config.template", "runtime.powerState"}, &vm); err != nil {
		return hypervisors.Template{}, false, d.fail(ctx, op, spec.Name, err)
	}
	if vm.Config != nil && vm.Config.Template {
		tpl, err := d.templateInfo(ctx, ref, spec)
		if err != nil {
			return hypervisors.Template{}, false, d.fail(ctx, op, spec.Name, err)
		}
		return tpl, true, nil
	}
	d.log.Warn("removing a half-seeded template left by an earlier attempt", "template", spec.Name, "ref", ref.Value)
	obj := object.NewVirtualMachine(d.c, ref)
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		if err := d.runTask(ctx, op, spec.Name, obj.PowerOff); err != nil && !errors.Is(err, hypervisors.ErrBadState) {
			return hypervisors.Template{}, false, err
		}
	}
	if err := d.runTask(ctx, op, spec.Name, obj.Destroy); err != nil {
		return hypervisors.Template{}, false, err
	}
	return hypervisors.Template{}, false, nil
}

func (d *Driver) templateInfo(ctx context.Context, ref types.ManagedObjectReference, spec hypervisors.TemplateSpec) (hypervisors.Template, error) {
	var vm mo.VirtualMachine
	if err := d.pc.RetrieveOne(ctx, ref, []string{"name", "config.hardware.device"}, &vm); err != nil {
		return hypervisors.Template{}, err
	}
	path, err := find.InventoryPath(ctx, d.c, ref)
	if err != nil {
		return hypervisors.Template{}, fmt.Errorf("inventory path of %s: %w", ref, err)
	}
	var size int64
	if vm.Config != nil {
		for _, dev := range vm.Config.Hardware.Device {
			if disk, ok := dev.(*types.VirtualDisk); ok {
				if disk.CapacityInBytes > 0 {
					size += disk.CapacityInBytes
				} else {
					size += disk.CapacityInKB * 1024
				}
			}
		}
	}
	return hypervisors.Template{Name: spec.Name, Pool: spec.Pool, SizeBytes: size, Ref: path}, nil
}

// findTemplateFolder looks up <dc vm folder>/sysvm-templates/<datastore> without creating it.
func (d *Driver) findTemplateFolder(ctx context.Context, dc mo.Datacenter, datastore string) (types.ManagedObjectReference, bool, error) {
	top, ok, err := d.childNamed(ctx, dc.VmFolder, "Folder", TemplateFolder)
	if err != nil || !ok {
		return top, ok, err
	}
	return d.childNamed(ctx, top, "Folder", datastore)
}

// templateFolder returns (creating as needed) <dc vm folder>/sysvm-templates/<datastore>.
func (d *Driver) templateFolder(ctx context.Context, dc mo.Datacenter, datastore string) (types.ManagedObjectReference, error) {
	top, err := d.ensureFolder(ctx, dc.VmFolder, TemplateFolder)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	return d.ensureFolder(ctx, top, datastore)
}

func (d *Driver) ensureFolder(ctx context.Context, parent types.ManagedObjectReference, name string) (types.ManagedObjectReference, error) {
	ref, ok, err := d.childNamed(ctx, parent, "Folder", name)
	if err != nil || ok {
		return ref, err
	}
	f, err := object.NewFolder(d.c, parent).CreateFolder(ctx, name)
	if err == nil {
		return f.Reference(), nil
	}
	if kindOf(err) == hypervisors.ErrAlreadyExists { // created concurrently
		if ref, ok, err2 := d.childNamed(ctx, parent, "Folder", name); err2 == nil && ok {
			return ref, nil
		}
	}
	return types.ManagedObjectReference{}, fmt.Errorf("create folder %s: %w", name, err)
}

// childNamed finds a direct child of a folder by type and name.
func (d *Driver) childNamed(ctx context.Context, folder types.ManagedObjectReference, kind, name string) (types.ManagedObjectReference, bool, error) {
	var f mo.Folder
	if err := d.pc.RetrieveOne(ctx, folder, []string{"childEntity"}, &f); err != nil {
		return types.ManagedObjectReference{}, false, fmt.Errorf("children of %s: %w", folder, err)
	}
	var refs []types.ManagedObjectReference
	for _, c := range f.ChildEntity {
		if c.Type == kind {
			refs = append(refs, c)
		}
	}
	if len(refs) == 0 {
		return types.ManagedObjectReference{}, false, nil
	}
	var ocs []types.ObjectContent
	if err := d.pc.Retrieve(ctx, refs, []string{"name"}, &ocs); err != nil {
		return types.ManagedObjectReference{}, false, fmt.Errorf("names of children of %s: %w", folder, err)
	}
	for _, oc := range ocs {
		if propString(oc, "name") == name {
			return oc.Obj, true, nil
		}
	}
	return types.ManagedObjectReference{}, false, nil
}

// placement picks a connected host that mounts the datastore, and its resource pool.
func (d *Driver) placement(ctx context.Context, rec datastoreRec) (mo.HostSystem, types.ManagedObjectReference, error) {
	const op = "seed template"
	var refs []types.ManagedObjectReference
	for _, m := range rec.ds.Host {
		if m.MountInfo.Accessible == nil || *m.MountInfo.Accessible {
			refs = append(refs, m.Key)
		}
	}
	if len(refs) == 0 {
		return mo.HostSystem{}, types.ManagedObjectReference{}, hypervisors.Errorf(hypervisors.ErrBadState, op, rec.ds.Name,
			"no host mounts the datastore")
	}
	var hosts []mo.HostSystem
	if err := d.pc.Retrieve(ctx, refs, hostProps, &hosts); err != nil {
		return mo.HostSystem{}, types.ManagedObjectReference{}, d.fail(ctx, op, rec.ds.Name, err)
	}
	for _, h := range hosts {
		if !hostInfo(h).Connected {
			continue
		}
		rp, err := d.hostPool(ctx, h)
		if err != nil {
			return mo.HostSystem{}, types.ManagedObjectReference{}, d.fail(ctx, op, rec.ds.Name, err)
		}
		return h, rp, nil
	}
	return mo.HostSystem{}, types.ManagedObjectReference{}, hypervisors.Errorf(hypervisors.ErrBadState, op, rec.ds.Name,
		"no connected host mounts the datastore")
}

// createEmpty creates a powered-off VM with one empty thin disk of spec.SizeBytes.
func (d *Driver) createEmpty(ctx context.Context, spec hypervisors.TemplateSpec, folder types.ManagedObjectReference,
	ds mo.Datastore, host mo.HostSystem, rp types.ManagedObjectReference) (types.ManagedObjectReference, error) {
	const op = "seed template"
	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return types.ManagedObjectReference{}, hypervisors.Wrap(hypervisors.ErrInvalid, op, spec.Name, err)
	}
	devices = append(devices, scsi)
	disk := devices.CreateDisk(scsi.(types.BaseVirtualController), ds.Self, "")
	disk.CapacityInBytes = spec.SizeBytes
	disk.CapacityInKB = (spec.SizeBytes + 1023) / 1024
	cfg := types.VirtualMachineConfigSpec{
		Name:       spec.Name,
		GuestId:    string(types.VirtualMachineGuestOsIdentifierOtherLinux64Guest),
		NumCPUs:    1,
		MemoryMB:   256,
		Annotation: "sysvm system VM template (empty placeholder disk)",
		Files:      &types.VirtualMachineFileInfo{VmPathName: "[" + ds.Name + "]"},
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: scsi},
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd,
				FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate, Device: disk},
		},
	}
	task, err := object.NewFolder(d.c, folder).CreateVM(ctx, cfg, object.NewResourcePool(d.c, rp), object.NewHostSystem(d.c, host.Self))
	if err != nil {
		return types.ManagedObjectReference{}, d.fail(ctx, op, spec.Name, fmt.Errorf("create VM: %w", err))
	}
	res, err := task.WaitForResult(ctx)
	if err != nil {
		return types.ManagedObjectReference{}, d.fail(ctx, op, spec.Name, fmt.Errorf("create VM: %w", err))
	}
	ref, ok := res.Result.(types.ManagedObjectReference)
	if !ok {
		return types.ManagedObjectReference{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name, "create VM returned %T", res.Result)
	}
	return ref, nil
}

// destroyQuietly removes a half-made template VM; failures are only logged.
func (d *Driver) destroyQuietly(ctx context.Context, ref types.ManagedObjectReference, name string) {
	ctx = context.WithoutCancel(ctx)
	vm := object.NewVirtualMachine(d.c, ref)
	if t, err := vm.PowerOff(ctx); err == nil {
		_ = t.Wait(ctx)
	}
	t, err := vm.Destroy(ctx)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil && kindOf(err) != hypervisors.ErrNotFound {
		d.log.Warn("could not remove half-seeded template", "template", name, "ref", ref.Value, "err", err)
	}
}

// importOVA imports the verified OVA at the local path through an NFC lease.
func (d *Driver) importOVA(ctx context.Context, spec hypervisors.TemplateSpec, local string, progress hypervisors.ProgressFunc,
	folder types.ManagedObjectReference, dc mo.Datacenter, ds mo.Datastore, host mo.HostSystem, rp types.ManagedObjectReference) (types.ManagedObjectReference, error) {
	const op = "seed template"
	archive := &importer.TapeArchive{Path: local, Opener: importer.Opener{Client: d.c}}
	imp := importer.Importer{
		Client:       d.c,
		Finder:       find.NewFinder(d.c),
		Datacenter:   object.NewDatacenter(d.c, dc.Self),
		Datastore:    object.NewDatastore(d.c, ds.Self),
		ResourcePool: object.NewResourcePool(d.c, rp),
		Host:         object.NewHostSystem(d.c, host.Self),
		Folder:       object.NewFolder(d.c, folder),
		Archive:      archive,
		Log: func(msg string) (int, error) {
			d.log.Info("OVF import", "template", spec.Name, "msg", strings.TrimSpace(msg))
			return len(msg), nil
		},
	}
	// A file that is no OVA, or whose descriptor does not parse, is a bad image: say so
	// before vCenter is involved, so the error is not mistaken for a passing failure.
	desc, err := importer.ReadOvf("*.ovf", archive)
	if err != nil {
		return types.ManagedObjectReference{}, hypervisors.Wrap(hypervisors.ErrInvalid, op, spec.Name,
			fmt.Errorf("read OVF descriptor from %s: %w", spec.URL, err))
	}
	if env, err := importer.ReadEnvelope(desc); err != nil {
		return types.ManagedObjectReference{}, hypervisors.Wrap(hypervisors.ErrInvalid, op, spec.Name, err)
	} else if env.VirtualSystem == nil {
		return types.ManagedObjectReference{}, hypervisors.Errorf(hypervisors.ErrUnsupported, op, spec.Name,
			"the OVA holds no single virtual system; a system VM template must be one virtual machine")
	}
	name := spec.Name
	info, lease, err := imp.ImportVApp(ctx, "*.ovf", importer.Options{Name: &name})
	if err != nil {
		d.cleanupImport(ctx, folder, spec.Name)
		return types.ManagedObjectReference{}, d.fail(ctx, op, spec.Name, fmt.Errorf("import OVA: %w", err))
	}
	if info.Entity.Type != "VirtualMachine" {
		_ = lease.Abort(ctx, nil)
		d.cleanupImport(ctx, folder, spec.Name)
		return types.ManagedObjectReference{}, hypervisors.Errorf(hypervisors.ErrUnsupported, op, spec.Name,
			"the OVA holds a %s; a system VM template must be a single virtual machine", info.Entity.Type)
	}
	var total int64
	for _, item := range info.Items {
		total += item.Size
	}
	var done int64
	updater := lease.StartUpdater(ctx, info)
	upload := func() error {
		for _, item := range info.Items {
			f, size, err := archive.Open(item.Path)
			if err != nil {
				return fmt.Errorf("open %s in OVA: %w", item.Path, err)
			}
			r := hypervisors.NewProgressReader(ctx, f, done, total, progress)
			err = lease.Upload(ctx, item, r, soap.Upload{ContentLength: size})
			_ = f.Close()
			done += r.N()
			if err != nil {
				return fmt.Errorf("upload %s: %w", item.Path, err)
			}
		}
		return nil
	}
	err = upload()
	updater.Done()
	if err != nil {
		_ = lease.Abort(context.WithoutCancel(ctx), &types.LocalizedMethodFault{
			Fault: &types.FileFault{}, LocalizedMessage: err.Error()})
		d.destroyQuietly(ctx, info.Entity, spec.Name)
		return types.ManagedObjectReference{}, d.fail(ctx, op, spec.Name, err)
	}
	if err := lease.Complete(ctx); err != nil {
		d.destroyQuietly(ctx, info.Entity, spec.Name)
		return types.ManagedObjectReference{}, d.fail(ctx, op, spec.Name, fmt.Errorf("complete NFC lease: %w", err))
	}
	return info.Entity, nil
}

// cleanupImport removes a VM that a failed import may have left in the template folder.
func (d *Driver) cleanupImport(ctx context.Context, folder types.ManagedObjectReference, name string) {
	ctx = context.WithoutCancel(ctx)
	if ref, ok, err := d.childNamed(ctx, folder, "VirtualMachine", name); err == nil && ok {
		d.destroyQuietly(ctx, ref, name)
	}
}
