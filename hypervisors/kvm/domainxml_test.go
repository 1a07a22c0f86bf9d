package kvm

import (
	"context"
	"encoding/xml"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/sysvm/sysvm/hypervisors"
)

// trickySpec has boot arguments and NICs that a naive cmdline or string template would mangle.
func trickySpec(name, host, pool, tpl string) hypervisors.VMSpec {
	return hypervisors.VMSpec{
		Name: name, Host: host, Pool: pool, Template: tpl, CPUs: 2, CPUMHz: 1000, MemoryMB: 384,
		NICs: []hypervisors.NIC{
			{Kind: hypervisors.NICControl, MAC: "0E:00:A9:FE:03:04", IP: "169.254.3.4", Netmask: "255.255.0.0"},
			{Kind: hypervisors.NICPublic, Network: "cloudbr1", MAC: "1e:00:c0:00:02:05", IP: "192.0.2.5", Netmask: "255.255.255.0", Gateway: "192.0.2.1"},
			{Kind: hypervisors.NICGuest, MAC: "02:00:10:00:00:01", IP: "10.1.1.1", Netmask: "255.255.255.0"},
		},
		BootArgs: map[string]string{
			"type":           "domainrouter",
			"name":           name,
			"eth0ip":         "169.254.3.4",
			"authorized_key": "c3NoLXJzYSBBQUFBQjNOemFDMXljMkVBQUFBREFRQUJBQUFCQVFD+/==",
			"template":       "domP",
			"dns":            "8.8.8.8,1.1.1.1",
			"odd":            `a value with spaces & <xml> "quotes"`,
		},
	}
}

func TestDomainXMLRoundTrip(t *testing.T) {
	spec := trickySpec("r-42-VM", "h1", "pool-a", "systemvm-4.20")
	dom, err := buildDomain(spec, domainParams{Type: "kvm", Arch: "x86_64", RootPath: "/mnt/pool-a/r-42-VM-ROOT", RootFormat: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := dom.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var back libvirtxml.Domain
	if err := back.Unmarshal(doc); err != nil {
		t.Fatalf("unmarshal our own XML: %v\n%s", err, doc)
	}
	vi, err := vmFromDomain(&back)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(vi.BootArgs, spec.BootArgs) {
		t.Errorf("boot args changed in the round trip:\n got %v\nwant %v", vi.BootArgs, spec.BootArgs)
	}
	wantNICs := []hypervisors.NIC{
		{Kind: hypervisors.NICControl, Network: DefaultControlBridge, MAC: "0e:00:a9:fe:03:04", IP: "169.254.3.4", Netmask: "255.255.0.0"},
		{Kind: hypervisors.NICPublic, Network: "cloudbr1", MAC: "1e:00:c0:00:02:05", IP: "192.0.2.5", Netmask: "255.255.255.0", Gateway: "192.0.2.1"},
		{Kind: hypervisors.NICGuest, Network: DefaultBridge, MAC: "02:00:10:00:00:01", IP: "10.1.1.1", Netmask: "255.255.255.0"},
	}
	if !reflect.DeepEqual(vi.NICs, wantNICs) {
		t.Errorf("NICs:\n got %+v\nwant %+v", vi.NICs, wantNICs)
	}
	if vi.CPUs != 2 || vi.MemoryMB != 384 || vi.Template != "systemvm-4.20" || vi.Pool != "pool-a" {
		t.Errorf("shape %+v", vi)
	}

	// The parts of the document a real KVM host needs.
	if back.Type != "kvm" || back.OS.Type.Arch != "x86_64" || back.OS.Type.Type != "hvm" {
		t.Errorf("domain type/os = %s %+v", back.Type, back.OS.Type)
	}
	if back.CPUTune == nil || back.CPUTune.Shares == nil || back.CPUTune.Shares.Value != 2000 {
		t.Errorf("cpu shares = %+v, want 2000 (2 CPUs x 1000 MHz)", back.CPUTune)
	}
	disks := back.Devices.Disks
	if len(disks) != 1 || disks[0].Source.File.File != "/mnt/pool-a/r-42-VM-ROOT" || disks[0].Driver.Type != "qcow2" || disks[0].Target.Bus != "virtio" {
		t.Errorf("disks = %+v", disks)
	}
	if ch := back.Devices.Channels; len(ch) != 1 || ch[0].Target.VirtIO == nil || ch[0].Target.VirtIO.Name != guestAgentChannel {
		t.Errorf("channels = %+v, want the guest agent channel", ch)
	}
	for _, ifc := range back.Devices.Interfaces {
		if ifc.Model == nil || ifc.Model.Type != "virtio" {
			t.Errorf("interface %+v is not virtio", ifc)
		}
	}
	// The metadata element is namespaced and carries the cmdline CloudStack would render.
	md, ok, err := decodeMetadata(back.Metadata)
	if err != nil || !ok {
		t.Fatalf("metadata not found (%v) in %s", err, doc)
	}
	if md.Cmdline != hypervisors.BootArgsString(spec.BootArgs) {
		t.Errorf("cmdline %q, want %q", md.Cmdline, hypervisors.BootArgsString(spec.BootArgs))
	}
	if md.RootVolume != "/mnt/pool-a/r-42-VM-ROOT" {
		t.Errorf("root volume %q", md.RootVolume)
	}
	if !strings.Contains(doc, MetadataNamespace) {
		t.Errorf("XML lacks the sysvm namespace:\n%s", doc)
	}
}

func TestBuildDomainRejectsNICWithoutMAC(t *testing.T) {
	spec := trickySpec("r-1-VM", "h", "p", "t")
	spec.NICs[1].MAC = ""
	if _, err := buildDomain(spec, domainParams{Type: "test"}); err == nil {
		t.Fatal("a NIC without MAC was accepted")
	}
}

func TestDecodeMetadataIgnoresOtherNamespaces(t *testing.T) {
	md := &libvirtxml.DomainMetadata{XML: `<other:thing xmlns:other="urn:x"><instance>no</instance></other:thing>` +
		`<sysvm:instance xmlns:sysvm="` + MetadataNamespace + `"><sysvm:cmdline>a=b</sysvm:cmdline><sysvm:arg key="a">b</sysvm:arg></sysvm:instance>`}
	m, ok, err := decodeMetadata(md)
	if err != nil || !ok {
		t.Fatalf("decode: ok=%v err=%v", ok, err)
	}
	if got := m.BootArgs(); !maps.Equal(got, map[string]string{"a": "b"}) {
		t.Errorf("args %v", got)
	}
	if _, ok, _ := decodeMetadata(&libvirtxml.DomainMetadata{XML: `<other:thing xmlns:other="urn:x"/>`}); ok {
		t.Error("found sysvm metadata where there is none")
	}
}

// TestDomainThroughDaemon defines a system VM on the real libvirtd and reads it back: what
// libvirt stored (its own XML and its metadata API) must carry the boot arguments and NICs.
func TestDomainThroughDaemon(t *testing.T) {
	d, _ := twoHostCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tpl := seedEmpty(t, d, "systemvm-xml-"+uniq())
	name := "r-xml-" + uniq() + "-VM"
	spec := trickySpec(name, "kvm-host-2", "default-pool", tpl)
	t.Cleanup(func() { _ = d.DestroyVM(context.Background(), name) })

	if _, err := d.CreateVM(ctx, spec); err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	vi, err := d.GetVM(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(vi.BootArgs, spec.BootArgs) {
		t.Errorf("boot args after libvirt stored them:\n got %v\nwant %v", vi.BootArgs, spec.BootArgs)
	}
	if len(vi.NICs) != 3 || vi.NICs[0].MAC != "0e:00:a9:fe:03:04" || vi.NICs[0].Kind != hypervisors.NICControl ||
		vi.NICs[1].Network != "cloudbr1" || vi.NICs[1].Gateway != "192.0.2.1" {
		t.Errorf("NICs after libvirt stored them: %+v", vi.NICs)
	}
	if vi.Host != "kvm-host-2" || vi.State != hypervisors.PowerStopped || vi.UUID == "" {
		t.Errorf("VM %+v, want Stopped on kvm-host-2 with a UUID", vi)
	}

	// libvirt's own metadata API finds our element by namespace (what `virsh metadata` shows).
	h := d.hosts["kvm-host-2"]
	l, err := h.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dom, err := l.DomainLookupByName(name)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := l.DomainGetMetadata(dom, int32(libvirt.DomainMetadataElement), libvirt.OptString{MetadataNamespace}, 0)
	if err != nil {
		t.Fatalf("DomainGetMetadata: %v", err)
	}
	// libvirt hands the element back without its namespace; decode it as such.
	var m struct {
		Metadata
		XMLName xml.Name `xml:"instance"`
	}
	if err := xml.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatalf("metadata %q: %v", raw, err)
	}
	if m.Cmdline != hypervisors.BootArgsString(spec.BootArgs) || m.Template != tpl {
		t.Errorf("libvirt's metadata element = %+v", m)
	}

	full, err := l.DomainGetXMLDesc(dom, 0)
	if err != nil {
		t.Fatal(err)
	}
	if i := strings.Index(full, "<metadata>"); i < 0 || !strings.Contains(full[i:], `<instance xmlns="`+MetadataNamespace+`">`) {
		t.Errorf("stored XML lacks the namespaced sysvm metadata:\n%s", full)
	}

	// The root disk is a clone in the pool, and it goes with the VM.
	sl, err := d.storage.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sl.StorageVolLookupByPath(m.RootVolume); err != nil {
		t.Fatalf("root volume %s: %v", m.RootVolume, err)
	}
	if !strings.HasSuffix(m.RootVolume, "/"+name+"-ROOT") {
		t.Errorf("root volume path %q", m.RootVolume)
	}
	vms, err := d.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, v := range vms {
		if v.Name == name && v.Host == "kvm-host-2" && maps.Equal(v.BootArgs, spec.BootArgs) {
			listed = true
		}
	}
	if !listed {
		t.Errorf("ListVMs does not show %s on kvm-host-2: %+v", name, vms)
	}
	if err := d.DestroyVM(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := sl.StorageVolLookupByPath(m.RootVolume); !isCode(err, libvirt.ErrNoStorageVol) {
		t.Errorf("root volume still there after DestroyVM (err %v)", err)
	}
}

// seedEmpty seeds an empty template volume and removes it when the test ends.
func seedEmpty(t *testing.T, d *Driver, name string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: name, Pool: "default-pool", Format: "QCOW2", SizeBytes: 1 << 30}, nil); err != nil {
		t.Fatalf("SeedTemplate: %v", err)
	}
	t.Cleanup(func() {
		l, err := d.storage.get(ctx)
		if err != nil {
			return
		}
		if p, err := l.StoragePoolLookupByName("default-pool"); err == nil {
			if v, err := l.StorageVolLookupByName(p, name); err == nil {
				_ = l.StorageVolDelete(v, 0)
			}
		}
	})
	return name
}
