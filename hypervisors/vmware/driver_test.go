package vmware

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sysvm/sysvm/hypervisors"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// vmMO reads a VM straight from vCenter, bypassing the driver, to check what it wrote.
func vmMO(t *testing.T, d *Driver, name string) mo.VirtualMachine {
	t.Helper()
	ctx := testCtx(t)
	found, err := d.search(ctx, d.c.ServiceContent.RootFolder, "VirtualMachine", name)
	if err != nil || len(found) != 1 {
		t.Fatalf("find VM %s in vCenter: %v (%d found)", name, err, len(found))
	}
	var vm mo.VirtualMachine
	if err := d.pc.RetrieveOne(ctx, found[0].Obj, []string{"name", "config", "runtime"}, &vm); err != nil {
		t.Fatal(err)
	}
	return vm
}

func extraConfig(vm mo.VirtualMachine) map[string]string {
	out := map[string]string{}
	for _, b := range vm.Config.ExtraConfig {
		ov := b.GetOptionValue()
		if s, ok := ov.Value.(string); ok {
			out[ov.Key] = s
		}
	}
	return out
}

// TestCreateVMShape checks that what CreateVM writes is really in vCenter and that GetVM
// reads every field back: NICs replace the template's card, carry their MACs and port
// groups (standard and distributed), boot args land in guestinfo and machine.id.
func TestCreateVMShape(t *testing.T) {
	s := startSim(t, 1, 1, 2)
	d := s.open(t)
	ctx := testCtx(t)
	ova, sum := writeOVA(t, t.TempDir(), 64<<10)
	tpl, err := d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "sysvm-tpl", URL: "file://" + ova, Checksum: sum, Pool: "LocalDS_0"}, nil)
	if err != nil {
		t.Fatalf("SeedTemplate: %v", err)
	}
	// The imported template has the OVF's NIC; the VM must not inherit it.
	tvm := vmMO(t, d, "sysvm-tpl")
	if !tvm.Config.Template || len(object.VirtualDeviceList(tvm.Config.Hardware.Device).SelectByType((*types.VirtualEthernetCard)(nil))) != 1 {
		t.Fatalf("template %s: template=%v, want a template with the OVF's one NIC", tpl.Ref, tvm.Config.Template)
	}

	spec := hypervisors.VMSpec{
		Name: "s-1-VM", Host: "DC0_C0_H1", Pool: "LocalDS_0", Template: "sysvm-tpl", CPUs: 2, MemoryMB: 1024,
		NICs: []hypervisors.NIC{
			{Kind: hypervisors.NICControl, Network: "VM Network", MAC: "02:00:4C:00:00:01", IP: "10.1.1.5", Netmask: "255.255.255.0", Gateway: "10.1.1.1"},
			{Kind: hypervisors.NICPublic, Network: "DC0_DVPG0", MAC: "1e:00:0a:00:00:05", IP: "192.0.2.5", Netmask: "255.255.255.0", Gateway: "192.0.2.1"},
		},
		BootArgs: map[string]string{"type": "secstorage", "name": "s-1-VM", "eth0ip": "10.1.1.5", "authorized_key": "c3NoLXJzYSBBQUFB"},
	}
	info, err := d.CreateVM(ctx, spec)
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	want := hypervisors.VMInfo{
		Name: "s-1-VM", UUID: info.UUID, Host: "DC0_C0_H1", Pool: "LocalDS_0", Template: "sysvm-tpl",
		State: hypervisors.PowerStopped, CPUs: 2, MemoryMB: 1024,
		NICs: []hypervisors.NIC{
			{Kind: hypervisors.NICControl, Network: "VM Network", MAC: "02:00:4c:00:00:01", IP: "10.1.1.5", Netmask: "255.255.255.0", Gateway: "10.1.1.1"},
			{Kind: hypervisors.NICPublic, Network: "DC0_DVPG0", MAC: "1e:00:0a:00:00:05", IP: "192.0.2.5", Netmask: "255.255.255.0", Gateway: "192.0.2.1"},
		},
		BootArgs: spec.BootArgs,
	}
	if info.UUID == "" || !reflect.DeepEqual(info, want) {
		t.Errorf("CreateVM returned\n %+v\nwant\n %+v", info, want)
	}

	vm := vmMO(t, d, "s-1-VM")
	ec := extraConfig(vm)
	cmdline := "authorized_key=c3NoLXJzYSBBQUFB eth0ip=10.1.1.5 name=s-1-VM type=secstorage"
	if ec[KeyCmdline] != cmdline || ec[KeyMachineID] != cmdline {
		t.Errorf("extraConfig cmdline %q / machine.id %q, want %q", ec[KeyCmdline], ec[KeyMachineID], cmdline)
	}
	var macs []string
	for _, dev := range object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualEthernetCard)(nil)) {
		c := dev.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
		if c.AddressType != string(types.VirtualEthernetCardMacTypeManual) {
			t.Errorf("NIC %s address type %q, want manual", c.MacAddress, c.AddressType)
		}
		if _, ok := dev.(*types.VirtualVmxnet3); !ok {
			t.Errorf("NIC %s is %T, want vmxnet3", c.MacAddress, dev)
		}
		macs = append(macs, c.MacAddress)
	}
	if strings.Join(macs, ",") != "02:00:4c:00:00:01,1e:00:0a:00:00:05" {
		t.Errorf("VM NIC MACs in vCenter = %v", macs)
	}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("new VM power state %s", vm.Runtime.PowerState)
	}

	list, err := d.ListVMs(ctx)
	if err != nil {
		t.Fatalf("ListVMs: %v", err)
	}
	if len(list) != 1 || !reflect.DeepEqual(list[0], want) {
		t.Errorf("ListVMs (templates excluded) = %+v, want just %+v", list, want)
	}

	bad := spec
	bad.Name = "s-2-VM"
	bad.NICs = []hypervisors.NIC{{Kind: hypervisors.NICGuest, Network: "no-such-portgroup"}}
	if _, err := d.CreateVM(ctx, bad); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("CreateVM on unknown port group = %v, want ErrNotFound", err)
	}
	bad.NICs = nil
	bad.Pool = "no-such-ds"
	if _, err := d.CreateVM(ctx, bad); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("CreateVM on unknown pool = %v, want ErrNotFound", err)
	}
	bad.Pool, bad.Host = "LocalDS_0", "no-such-host"
	if _, err := d.CreateVM(ctx, bad); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("CreateVM on unknown host = %v, want ErrNotFound", err)
	}
	bad.Host = "DC0_C0_H0"
	bad.BootArgs = map[string]string{"name": "has space"}
	if _, err := d.CreateVM(ctx, bad); !errors.Is(err, hypervisors.ErrInvalid) {
		t.Errorf("CreateVM with a space in a boot arg = %v, want ErrInvalid", err)
	}
	bad.BootArgs = nil
	bad.NICs = []hypervisors.NIC{{MAC: "zz:00"}}
	if _, err := d.CreateVM(ctx, bad); !errors.Is(err, hypervisors.ErrInvalid) {
		t.Errorf("CreateVM with a bad MAC = %v, want ErrInvalid", err)
	}
	if _, err := d.GetVM(ctx, "s-2-VM"); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("a rejected CreateVM left a VM behind: %v", err)
	}

	// A running VM cannot be scaled (no hot scale) and VMStats refuses a stopped one.
	if err := d.StartVM(ctx, "s-1-VM"); err != nil {
		t.Fatal(err)
	}
	if err := d.ScaleVM(ctx, "s-1-VM", 4, 2048); !errors.Is(err, hypervisors.ErrBadState) {
		t.Errorf("ScaleVM(running) = %v, want ErrBadState", err)
	}
	if err := d.StopVM(ctx, "s-1-VM", false); err != nil {
		t.Fatal(err)
	}
	if _, err := d.VMStats(ctx, "s-1-VM"); !errors.Is(err, hypervisors.ErrBadState) {
		t.Errorf("VMStats(stopped) = %v, want ErrBadState", err)
	}
}

// TestSeedTemplate covers the seeding paths: an OVA over HTTP (progress reported, disk
// uploaded), the same name again (same Ref, nothing re-downloaded), a checksum mismatch
// (ErrInvalid, nothing left in vCenter), an empty placeholder template, and bad specs.
func TestSeedTemplate(t *testing.T) {
	s := startSim(t, 1, 1, 2)
	d := s.open(t)
	ctx := testCtx(t)
	const diskSize = 300 << 10
	ova, sum := writeOVA(t, t.TempDir(), diskSize)
	var gets int
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/systemvm.ova" {
			http.NotFound(w, r)
			return
		}
		gets++
		http.ServeFile(w, r, ova)
	}))
	defer ts.Close()
	st, err := os.Stat(ova)
	if err != nil {
		t.Fatal(err)
	}

	var reports []int64
	var lastDone, lastTotal int64
	spec := hypervisors.TemplateSpec{Name: "sysvm-http", URL: ts.URL + "/systemvm.ova", Format: "ova", Checksum: "sha256:" + sum, Pool: "LocalDS_0"}
	// A wrong checksum creates nothing in vCenter, not even the template folder.
	early := hypervisors.TemplateSpec{Name: "sysvm-early", URL: "file://" + ova, Checksum: "md5:0123456789abcdef0123456789abcdef", Pool: "LocalDS_0"}
	if _, err := d.SeedTemplate(ctx, early, nil); !errors.Is(err, hypervisors.ErrInvalid) {
		t.Errorf("seed with a wrong checksum = %v, want ErrInvalid", err)
	}
	if _, err := find.NewFinder(d.c).Folder(ctx, "/DC0/vm/"+TemplateFolder); err == nil {
		t.Errorf("a seed with a wrong checksum created the template folder")
	}
	tpl, err := d.SeedTemplate(ctx, spec, func(done, total int64) {
		reports = append(reports, done)
		lastDone, lastTotal = done, total
	})
	if err != nil {
		t.Fatalf("SeedTemplate over HTTP: %v", err)
	}
	if gets != 1 {
		t.Errorf("OVA downloaded %d times, want 1", gets)
	}
	if len(reports) < 2 || lastDone != diskSize || lastTotal != diskSize {
		t.Errorf("progress: %d reports, last %d/%d; want the upload to end at %d/%d", len(reports), lastDone, lastTotal, diskSize, diskSize)
	}
	if reports[0] > st.Size() {
		t.Errorf("first progress report %d beyond the OVA size %d", reports[0], st.Size())
	}
	if tpl.Ref != "/DC0/vm/sysvm-templates/LocalDS_0/sysvm-http" || tpl.SizeBytes != 2<<30 || tpl.Pool != "LocalDS_0" {
		t.Errorf("template %+v: want ref in the datastore's template folder and the OVF's 2 GiB disk", tpl)
	}

	again, err := d.SeedTemplate(ctx, spec, nil)
	if err != nil || again.Ref != tpl.Ref {
		t.Errorf("second seed = %+v, %v; want the same Ref %q", again, err, tpl.Ref)
	}
	if gets != 1 {
		t.Errorf("second seed downloaded the OVA again (%d GETs)", gets)
	}

	bad := spec
	bad.Name = "sysvm-badsum"
	bad.Checksum = "md5:0123456789abcdef0123456789abcdef"
	if _, err := d.SeedTemplate(ctx, bad, nil); !errors.Is(err, hypervisors.ErrInvalid) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("seed with wrong md5 = %v, want ErrInvalid checksum mismatch", err)
	}
	if _, err := find.NewFinder(d.c).VirtualMachine(ctx, "/DC0/vm/sysvm-templates/LocalDS_0/sysvm-badsum"); err == nil {
		t.Errorf("a template with a wrong checksum was imported")
	}

	missing := spec
	missing.Name, missing.URL = "sysvm-404", ts.URL+"/nope.ova"
	if _, err := d.SeedTemplate(ctx, missing, nil); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("seed from a 404 URL = %v, want ErrNotFound", err)
	}
	notOVA := spec
	notOVA.Name, notOVA.Format = "sysvm-qcow", "QCOW2"
	if _, err := d.SeedTemplate(ctx, notOVA, nil); !errors.Is(err, hypervisors.ErrUnsupported) {
		t.Errorf("seed of QCOW2 = %v, want ErrUnsupported", err)
	}
	garbage := t.TempDir() + "/garbage.ova"
	if err := os.WriteFile(garbage, []byte("this is not a tar archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "sysvm-garbage", URL: "file://" + garbage, Pool: "LocalDS_0"}, nil); !errors.Is(err, hypervisors.ErrInvalid) {
		t.Errorf("seed of a non-OVA file = %v, want ErrInvalid", err)
	}

	empty := hypervisors.TemplateSpec{Name: "sysvm-empty", Pool: "LocalDS_0", SizeBytes: 3 << 30}
	et, err := d.SeedTemplate(ctx, empty, nil)
	if err != nil {
		t.Fatalf("seed empty template: %v", err)
	}
	if et.SizeBytes != 3<<30 {
		t.Errorf("empty template size %d, want %d", et.SizeBytes, int64(3<<30))
	}
	if vm := vmMO(t, d, "sysvm-empty"); !vm.Config.Template {
		t.Errorf("empty template is not marked as a template in vCenter")
	}
	empty.Checksum = "sha256:" + sum
	if _, err := d.SeedTemplate(ctx, empty, nil); !errors.Is(err, hypervisors.ErrInvalid) {
		t.Errorf("checksum on an empty template = %v, want ErrInvalid", err)
	}
	if _, err := d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "x", Pool: "no-such-ds", SizeBytes: 1}, nil); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("seed into unknown pool = %v, want ErrNotFound", err)
	}

	// A VM left in the template folder by an interrupted seed is replaced, not adopted.
	folder, err := find.NewFinder(d.c).Folder(ctx, "/DC0/vm/sysvm-templates/LocalDS_0")
	if err != nil {
		t.Fatal(err)
	}
	host, rp, err := d.placement(ctx, mustPool(t, d, "LocalDS_0"))
	if err != nil {
		t.Fatal(err)
	}
	half, err := d.createEmpty(ctx, hypervisors.TemplateSpec{Name: "sysvm-half", SizeBytes: 1 << 20}, folder.Reference(), mustPool(t, d, "LocalDS_0").ds, host, rp)
	if err != nil {
		t.Fatal(err)
	}
	redo, err := d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "sysvm-half", URL: "file://" + ova, Checksum: sum, Pool: "LocalDS_0"}, nil)
	if err != nil {
		t.Fatalf("seed over a half-seeded leftover: %v", err)
	}
	if redo.SizeBytes != 2<<30 {
		t.Errorf("re-seeded template size %d: the 1 MiB leftover was adopted instead of replaced", redo.SizeBytes)
	}
	var gone mo.VirtualMachine
	if err := d.pc.RetrieveOne(ctx, half, []string{"name"}, &gone); err == nil {
		t.Errorf("leftover VM %s still exists", half)
	}
}

func mustPool(t *testing.T, d *Driver, name string) datastoreRec {
	t.Helper()
	rec, err := d.findPool(testCtx(t), "test", name)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestFacts checks host and datastore facts beyond what the conformance scenarios need,
// and the declared capabilities.
func TestFacts(t *testing.T) {
	s := startSim(t, 1, 1, 2)
	d := s.open(t)
	ctx := testCtx(t)
	hosts, err := d.Hosts(ctx)
	if err != nil || len(hosts) != 2 {
		t.Fatalf("Hosts = %+v, %v", hosts, err)
	}
	for _, h := range hosts {
		if h.UUID == "" || h.Version == "" || !h.Connected || h.CPUMHz <= 0 {
			t.Errorf("host %+v: want UUID, version, connected and CPU speed", h)
		}
	}
	if hosts[0].UUID == hosts[1].UUID {
		t.Errorf("two hosts share UUID %s", hosts[0].UUID)
	}
	pools, err := d.StoragePools(ctx)
	if err != nil || len(pools) != 1 || pools[0].Name != "LocalDS_0" || pools[0].UUID == "" || pools[0].Type == "" {
		t.Errorf("StoragePools = %+v, %v", pools, err)
	}
	caps := d.Capabilities()
	if !caps.LiveMigration || caps.HotScale || caps.LinkLocalControl || !reflect.DeepEqual(caps.TemplateFormats, []string{"OVA"}) {
		t.Errorf("capabilities %+v", caps)
	}
	if d.Type() != hypervisors.VMware {
		t.Errorf("Type() = %s", d.Type())
	}
}

func TestParseCmdline(t *testing.T) {
	args := map[string]string{"type": "domainrouter", "eth0ip": "169.254.3.4", "empty": "", "authorized_key": "c3NoLXJzYQ=="}
	if got := parseCmdline(hypervisors.BootArgsString(args)); !reflect.DeepEqual(got, args) {
		t.Errorf("round trip %v -> %v", args, got)
	}
}
