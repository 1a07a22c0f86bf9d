package vmware

import (
	"context"
	"fmt"
	"strings"

	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sysvm/sysvm/hypervisors"
)

// retrieve loads properties of every object of one kind under container into dst (a pointer
// to a slice of mo types or of types.ObjectContent).
func (d *Driver) retrieve(ctx context.Context, container types.ManagedObjectReference, kind string, props []string, dst any) error {
	v, err := view.NewManager(d.c).CreateContainerView(ctx, container, []string{kind}, true)
	if err != nil {
		return fmt.Errorf("create %s view: %w", kind, err)
	}
	defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()
	if err := v.Retrieve(ctx, []string{kind}, props, dst); err != nil {
		return fmt.Errorf("retrieve %s: %w", kind, err)
	}
	return nil
}

// search returns the objects of a kind under container whose name is exactly name, with
// the extra properties loaded.
func (d *Driver) search(ctx context.Context, container types.ManagedObjectReference, kind, name string, extra ...string) ([]types.ObjectContent, error) {
	var all []types.ObjectContent
	if err := d.retrieve(ctx, container, kind, append([]string{"name"}, extra...), &all); err != nil {
		return nil, err
	}
	var out []types.ObjectContent
	for _, oc := range all {
		if propString(oc, "name") == name {
			out = append(out, oc)
		}
	}
	return out, nil
}

func prop(oc types.ObjectContent, name string) any {
	for _, p := range oc.PropSet {
		if p.Name == name {
			return p.Val
		}
	}
	return nil
}

func propString(oc types.ObjectContent, name string) string {
	s, _ := prop(oc, name).(string)
	return s
}

func propBool(oc types.ObjectContent, name string) bool {
	b, _ := prop(oc, name).(bool)
	return b
}

// findDatacenter resolves a datacenter by name anywhere in the inventory.
func (d *Driver) findDatacenter(ctx context.Context, name string) (types.ManagedObjectReference, error) {
	found, err := d.search(ctx, d.c.ServiceContent.RootFolder, "Datacenter", name)
	if err != nil {
		return types.ManagedObjectReference{}, d.fail(ctx, "find datacenter", name, err)
	}
	if len(found) == 0 {
		return types.ManagedObjectReference{}, hypervisors.Errorf(hypervisors.ErrNotFound, "find datacenter", name,
			"no datacenter of that name")
	}
	return found[0].Obj, nil
}

// datacenterOf returns the datacenter an entity belongs to.
func (d *Driver) datacenterOf(ctx context.Context, ref types.ManagedObjectReference) (mo.Datacenter, error) {
	ancestors, err := mo.Ancestors(ctx, d.c, d.pc.Reference(), ref)
	if err != nil {
		return mo.Datacenter{}, fmt.Errorf("ancestors of %s: %w", ref, err)
	}
	for _, a := range ancestors {
		if a.Self.Type == "Datacenter" {
			var dc mo.Datacenter
			if err := d.pc.RetrieveOne(ctx, a.Self, []string{"name", "vmFolder", "hostFolder"}, &dc); err != nil {
				return mo.Datacenter{}, fmt.Errorf("datacenter of %s: %w", ref, err)
			}
			return dc, nil
		}
	}
	return mo.Datacenter{}, fmt.Errorf("%s is in no datacenter", ref)
}

var hostProps = []string{"name", "summary", "parent", "datastore", "network"}

func (d *Driver) findHost(ctx context.Context, op, name string) (mo.HostSystem, error) {
	if name == "" {
		return mo.HostSystem{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, name, "no host named")
	}
	found, err := d.search(ctx, d.root, "HostSystem", name)
	if err != nil {
		return mo.HostSystem{}, d.fail(ctx, op, name, err)
	}
	switch len(found) {
	case 0:
		return mo.HostSystem{}, hypervisors.Errorf(hypervisors.ErrNotFound, op, name, "no ESXi host of that name")
	case 1:
	default:
		return mo.HostSystem{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, name,
			"%d hosts have that name; narrow the connection to one datacenter", len(found))
	}
	var h mo.HostSystem
	if err := d.pc.RetrieveOne(ctx, found[0].Obj, hostProps, &h); err != nil {
		return mo.HostSystem{}, d.fail(ctx, op, name, err)
	}
	return h, nil
}

func hostInfo(h mo.HostSystem) hypervisors.HostInfo {
	hi := hypervisors.HostInfo{Name: h.Name}
	if hw := h.Summary.Hardware; hw != nil {
		hi.UUID = hw.Uuid
		hi.CPUs = int(hw.NumCpuThreads)
		if hi.CPUs == 0 {
			hi.CPUs = int(hw.NumCpuCores)
		}
		hi.CPUMHz = int(hw.CpuMhz)
		hi.MemoryMB = hw.MemorySize / (1 << 20)
	}
	if p := h.Summary.Config.Product; p != nil {
		hi.Version = p.Version
		if p.Build != "" {
			hi.Version += "-" + p.Build
		}
	}
	if rt := h.Summary.Runtime; rt != nil {
		hi.Connected = rt.ConnectionState == types.HostSystemConnectionStateConnected
	}
	return hi
}

// datastoreRec is one datastore with the datacenter it lives in.
type datastoreRec struct {
	ds mo.Datastore
	dc string
}

// datastores lists the datastores in scope with their datacenter names.
func (d *Driver) datastores(ctx context.Context) ([]datastoreRec, error) {
	var dcs []mo.Datacenter
	if d.root.Type == "Datacenter" {
		var dc mo.Datacenter
		if err := d.pc.RetrieveOne(ctx, d.root, []string{"name", "datastore"}, &dc); err != nil {
			return nil, err
		}
		dcs = append(dcs, dc)
	} else if err := d.retrieve(ctx, d.root, "Datacenter", []string{"name", "datastore"}, &dcs); err != nil {
		return nil, err
	}
	var refs []types.ManagedObjectReference
	dcOf := map[types.ManagedObjectReference]string{}
	for _, dc := range dcs {
		for _, ref := range dc.Datastore {
			refs = append(refs, ref)
			dcOf[ref] = dc.Name
		}
	}
	if len(refs) == 0 {
		return nil, nil
	}
	var dss []mo.Datastore
	if err := d.pc.Retrieve(ctx, refs, []string{"name", "summary", "host"}, &dss); err != nil {
		return nil, fmt.Errorf("retrieve datastores: %w", err)
	}
	out := make([]datastoreRec, 0, len(dss))
	for _, ds := range dss {
		out = append(out, datastoreRec{ds: ds, dc: dcOf[ds.Self]})
	}
	return out, nil
}

// poolNames names each datastore: its own name, or "<datacenter>/<datastore>" when that
// name is used in more than one datacenter in scope.
func poolNames(recs []datastoreRec) []string {
	count := map[string]int{}
	for _, r := range recs {
		count[r.ds.Name]++
	}
	names := make([]string, len(recs))
	for i, r := range recs {
		names[i] = r.ds.Name
		if count[r.ds.Name] > 1 {
			names[i] = r.dc + "/" + r.ds.Name
		}
	}
	return names
}

// datastoreUUID takes the volume id out of a datastore URL (ds:///vmfs/volumes/<id>/), or
// falls back to the managed object id.
func datastoreUUID(u, moid string) string {
	u = strings.TrimSuffix(u, "/")
	if i := strings.LastIndex(u, "/"); i >= 0 && i+1 < len(u) {
		return u[i+1:]
	}
	return moid
}

// findPool resolves a pool name ("ds" or "dc/ds") to one datastore in scope.
func (d *Driver) findPool(ctx context.Context, op, pool string) (datastoreRec, error) {
	if pool == "" {
		return datastoreRec{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, pool, "no storage pool named")
	}
	recs, err := d.datastores(ctx)
	if err != nil {
		return datastoreRec{}, d.fail(ctx, op, pool, err)
	}
	var match []datastoreRec
	for _, r := range recs {
		if r.ds.Name == pool || r.dc+"/"+r.ds.Name == pool {
			match = append(match, r)
		}
	}
	switch len(match) {
	case 0:
		return datastoreRec{}, hypervisors.Errorf(hypervisors.ErrNotFound, op, pool, "no datastore of that name")
	case 1:
		return match[0], nil
	}
	return datastoreRec{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, pool,
		"datastore name is used in %d datacenters; name it as <datacenter>/%s", len(match), pool)
}

// hostDatastore resolves a pool name among the datastores mounted on a host.
func (d *Driver) hostDatastore(ctx context.Context, op string, h mo.HostSystem, pool string) (mo.Datastore, error) {
	want := pool
	if i := strings.LastIndex(pool, "/"); i >= 0 {
		want = pool[i+1:] // "dc/ds": the host already fixes the datacenter
	}
	if len(h.Datastore) > 0 {
		var dss []mo.Datastore
		if err := d.pc.Retrieve(ctx, h.Datastore, []string{"name", "summary"}, &dss); err != nil {
			return mo.Datastore{}, d.fail(ctx, op, pool, err)
		}
		for _, ds := range dss {
			if ds.Name == want {
				return ds, nil
			}
		}
	}
	return mo.Datastore{}, hypervisors.Errorf(hypervisors.ErrNotFound, op, pool,
		"no datastore of that name is mounted on host %s", h.Name)
}

// hostPool returns the root resource pool of the cluster (or standalone compute resource)
// a host belongs to; vCenter places VMs into resource pools, not hosts.
func (d *Driver) hostPool(ctx context.Context, h mo.HostSystem) (types.ManagedObjectReference, error) {
	if h.Parent == nil {
		return types.ManagedObjectReference{}, fmt.Errorf("host %s has no compute resource", h.Name)
	}
	var cr mo.ComputeResource
	if err := d.pc.RetrieveOne(ctx, *h.Parent, []string{"resourcePool"}, &cr); err != nil {
		return types.ManagedObjectReference{}, fmt.Errorf("resource pool of host %s: %w", h.Name, err)
	}
	if cr.ResourcePool == nil {
		return types.ManagedObjectReference{}, fmt.Errorf("host %s: compute resource has no resource pool", h.Name)
	}
	return *cr.ResourcePool, nil
}

// hostNames maps host refs to names for everything in scope.
func (d *Driver) hostNames(ctx context.Context) (map[types.ManagedObjectReference]string, error) {
	var hosts []mo.HostSystem
	if err := d.retrieve(ctx, d.root, "HostSystem", []string{"name"}, &hosts); err != nil {
		return nil, err
	}
	m := make(map[types.ManagedObjectReference]string, len(hosts))
	for _, h := range hosts {
		m[h.Self] = h.Name
	}
	return m, nil
}
