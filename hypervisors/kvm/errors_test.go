package kvm

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/sysvm/sysvm/hypervisors"
)

// TestErrorMappingThroughDaemon provokes each libvirt error on the real libvirtd and checks
// the kind the driver gives it: the codes come from the daemon, not from a table in the test.
func TestErrorMappingThroughDaemon(t *testing.T) {
	d, _ := twoHostCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := d.hosts["kvm-host-1"].get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A stopped scratch domain to provoke state errors with.
	scratch := "errmap-" + uniq()
	doc, err := (&libvirtxml.Domain{Type: "test", Name: scratch,
		Memory: &libvirtxml.DomainMemory{Value: 64, Unit: "MiB"},
		OS:     &libvirtxml.DomainOS{Type: &libvirtxml.DomainOSType{Type: "hvm"}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	dom, err := l.DomainDefineXML(doc)
	if err != nil {
		t.Fatalf("define scratch domain: %v", err)
	}
	t.Cleanup(func() { _ = l.DomainUndefine(dom) })
	pool, err := l.StoragePoolLookupByName("default-pool")
	if err != nil {
		t.Fatal(err)
	}
	volName := "errmap-vol-" + uniq()
	vol, err := createVolume(l, pool, volName, "raw", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.StorageVolDelete(vol, 0) })

	cases := []struct {
		name string
		call func() error
		code libvirt.ErrorNumber
		want error
	}{
		{"no domain", func() error { _, err := l.DomainLookupByName("no-such-domain"); return err },
			libvirt.ErrNoDomain, hypervisors.ErrNotFound},
		{"no pool", func() error { _, err := l.StoragePoolLookupByName("no-such-pool"); return err },
			libvirt.ErrNoStoragePool, hypervisors.ErrNotFound},
		{"no volume", func() error { _, err := l.StorageVolLookupByName(pool, "no-such-vol"); return err },
			libvirt.ErrNoStorageVol, hypervisors.ErrNotFound},
		{"reboot a stopped domain", func() error { return l.DomainReboot(dom, 0) },
			libvirt.ErrOperationInvalid, hypervisors.ErrBadState},
		{"destroy a stopped domain", func() error { return l.DomainDestroy(dom) },
			libvirt.ErrOperationInvalid, hypervisors.ErrBadState},
		{"volume exists", func() error { _, err := createVolume(l, pool, volName, "raw", 1<<20); return err },
			libvirt.ErrOperationFailed, hypervisors.ErrAlreadyExists}, // the test driver's code for it
		{"domain name taken by another UUID", func() error {
			clash, err := (&libvirtxml.Domain{Type: "test", Name: scratch, UUID: "6f1d8a5e-1111-4222-8333-944455556666",
				Memory: &libvirtxml.DomainMemory{Value: 64, Unit: "MiB"},
				OS:     &libvirtxml.DomainOS{Type: &libvirtxml.DomainOSType{Type: "hvm"}}}).Marshal()
			if err != nil {
				return err
			}
			_, err = l.DomainDefineXML(clash)
			return err
		}, libvirt.ErrOperationFailed, hypervisors.ErrAlreadyExists},
		{"malformed domain XML", func() error { _, err := l.DomainDefineXML("<domain"); return err },
			libvirt.ErrXMLDetail, hypervisors.ErrInvalid},
		{"upload on the test driver", func() error { return l.StorageVolUpload(vol, nil, 0, 0, 0) },
			libvirt.ErrNoSupport, hypervisors.ErrUnsupported},
	}
	for _, c := range cases {
		err := c.call()
		if err == nil {
			t.Errorf("%s: libvirtd returned no error", c.name)
			continue
		}
		if code, ok := libvirtCode(err); !ok || code != c.code {
			t.Errorf("%s: libvirt error %v (code %d), want code %d", c.name, err, code, c.code)
		}
		got := classify("op", "obj", err)
		var he *hypervisors.Error
		if !errors.As(got, &he) || !errors.Is(got, c.want) {
			t.Errorf("%s: classified %v, want kind %v", c.name, got, c.want)
		}
	}
}

// TestReadOnlySocketIsAuth connects through libvirtd's read-only socket: reading works, and a
// write is refused by the daemon with VIR_ERR_OPERATION_DENIED, which is ErrAuth.
func TestReadOnlySocketIsAuth(t *testing.T) {
	requireLibvirtd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ro := "unix://" + DefaultSocket + "-ro?uri=test:///default"
	drv, err := Connect(ctx, hypervisors.Connection{Type: hypervisors.KVM, Endpoint: ro})
	if err != nil {
		t.Fatalf("Connect read-only: %v", err)
	}
	defer drv.Close()
	if _, err := drv.StoragePools(ctx); err != nil {
		t.Errorf("reading through the read-only socket: %v", err)
	}
	_, err = drv.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "ro-" + uniq(), Pool: "default-pool", SizeBytes: 1 << 20}, nil)
	if !errors.Is(err, hypervisors.ErrAuth) {
		t.Errorf("SeedTemplate through the read-only socket = %v, want ErrAuth", err)
	}
	if !isCode(err, libvirt.ErrOperationDenied) {
		t.Errorf("cause %v is not libvirt's VIR_ERR_OPERATION_DENIED", err)
	}
}

// TestConnectErrors covers what goes wrong before a driver exists.
func TestConnectErrors(t *testing.T) {
	requireLibvirtd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	missing := filepath.Join(t.TempDir(), "nothing-listens-here.sock")
	cases := []struct {
		name string
		conn hypervisors.Connection
		want error
	}{
		{"no daemon on the socket", hypervisors.Connection{Endpoint: "unix://" + missing + "?uri=test:///default"}, hypervisors.ErrUnreachable},
		{"nothing on the tcp port", hypervisors.Connection{Endpoint: "tcp://127.0.0.1:1?uri=qemu:///system"}, hypervisors.ErrUnreachable},
		{"daemon has no such driver", hypervisors.Connection{Endpoint: UnixEndpoint(DefaultSocket, "bogus:///x")}, hypervisors.ErrUnreachable},
		{"test driver file is not there", hypervisors.Connection{Endpoint: UnixEndpoint(DefaultSocket, "test:///no/such/node.xml")}, hypervisors.ErrInvalid},
		{"unknown scheme", hypervisors.Connection{Endpoint: "ftp://h/x"}, hypervisors.ErrInvalid},
		{"no endpoint at all", hypervisors.Connection{}, hypervisors.ErrInvalid},
		{"not a KVM connection", hypervisors.Connection{Type: hypervisors.VMware, Endpoint: UnixEndpoint(DefaultSocket, "test:///default")}, hypervisors.ErrInvalid},
		{"two hosts on one endpoint", hypervisors.Connection{Hosts: map[string]string{
			"a": UnixEndpoint(DefaultSocket, "test:///default"), "b": UnixEndpoint(DefaultSocket, "test:///default")}}, hypervisors.ErrInvalid},
	}
	for _, c := range cases {
		drv, err := Connect(ctx, c.conn)
		if err == nil {
			_ = drv.Close()
			t.Errorf("%s: Connect succeeded", c.name)
			continue
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Connect = %v, want %v", c.name, err, c.want)
		}
	}
}

// TestHostDownIsNotNotFound: with one host's libvirtd not answering, the driver must never say
// a VM is gone (ErrNotFound means "done" to DestroyVM's callers) nor list a partial fleet.
func TestHostDownIsNotNotFound(t *testing.T) {
	requireLibvirtd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	up := UnixEndpoint(DefaultSocket, "test:///default")
	down := "unix://" + filepath.Join(t.TempDir(), "down.sock") + "?uri=test:///default"
	d, err := ConnectWithOptions(ctx, hypervisors.Connection{Endpoint: up, Hosts: map[string]string{"up": up, "down": down}}, Options{})
	if err != nil {
		t.Fatalf("Connect with one host down: %v", err)
	}
	defer d.Close()
	hosts, err := d.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	state := map[string]bool{}
	for _, h := range hosts {
		state[h.Name] = h.Connected
	}
	if !state["up"] || state["down"] {
		t.Errorf("Hosts connected = %v, want up=true down=false", state)
	}
	if _, err := d.GetVM(ctx, "r-ghost-VM"); !errors.Is(err, hypervisors.ErrUnreachable) || errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("GetVM with a host down = %v, want ErrUnreachable", err)
	}
	if err := d.DestroyVM(ctx, "r-ghost-VM"); !errors.Is(err, hypervisors.ErrUnreachable) {
		t.Errorf("DestroyVM with a host down = %v, want ErrUnreachable", err)
	}
	if _, err := d.ListVMs(ctx); !errors.Is(err, hypervisors.ErrUnreachable) {
		t.Errorf("ListVMs with a host down = %v, want ErrUnreachable", err)
	}
	// The dead host is not dialled again on every call (that would cost a dial timeout each).
	if h := d.hosts["down"]; h.failErr == nil || time.Since(h.failedAt) > redialAfter {
		t.Errorf("down host has no recent failed dial recorded: %v at %v", h.failErr, h.failedAt)
	}
	if err := d.MigrateVM(ctx, "r-ghost-VM", "nowhere"); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("MigrateVM to an unknown host = %v, want ErrNotFound", err)
	}
}

// TestReconnectsAfterLostConnection drops the driver's connection under it; the next call
// dials again. A second connection holds test:///default so its state survives the drop.
func TestReconnectsAfterLostConnection(t *testing.T) {
	d, _ := twoHostCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	holder, err := dial(ctx, Endpoint{Network: "unix", Address: DefaultSocket, URI: "test:///default"})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Disconnect()
	tpl := seedEmpty(t, d, "systemvm-rc-"+uniq())
	name := "r-rc-" + uniq() + "-VM"
	spec := trickySpec(name, "kvm-host-1", "default-pool", tpl)
	if _, err := d.CreateVM(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.DestroyVM(context.Background(), name) })

	h := d.hosts["kvm-host-1"]
	old, err := h.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Disconnect(); err != nil {
		t.Fatal(err)
	}
	vi, err := d.GetVM(ctx, name)
	if err != nil {
		t.Fatalf("GetVM after the connection was lost: %v", err)
	}
	if vi.Host != "kvm-host-1" {
		t.Errorf("VM on %q", vi.Host)
	}
	if now, _ := h.get(ctx); now == old {
		t.Error("driver kept the dead connection")
	}
}
