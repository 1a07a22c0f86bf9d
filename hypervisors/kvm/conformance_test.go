package kvm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/conformance"
)

// twoHostCluster connects a Driver to a two-host cluster on the system libvirtd's test driver:
// host 1 is test:///default (also the storage connection, with its default-pool), host 2 a
// node defined in a file, which the Driver holds open for its whole life.
func twoHostCluster(t *testing.T) (*Driver, hypervisors.Connection) {
	t.Helper()
	requireLibvirtd(t)
	host1 := UnixEndpoint(DefaultSocket, "test:///default")
	host2 := UnixEndpoint(DefaultSocket, "test://"+writeHostXML(t, 8, 8<<20))
	conn := hypervisors.Connection{
		Type:     hypervisors.KVM,
		Endpoint: host1,
		Hosts:    map[string]string{"kvm-host-1": host1, "kvm-host-2": host2},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := ConnectWithOptions(ctx, conn, Options{ShutdownTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("Connect %v: %v", conn, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d, conn
}

func TestConformance(t *testing.T) {
	d, _ := twoHostCluster(t)
	img := qcow2Image(2 << 30)
	sum := sha256.Sum256(img)
	tpl := hypervisors.TemplateSpec{
		Name:     "systemvm-kvm-conf-" + uniq(),
		URL:      serveFile(t, "systemvm.qcow2", img),
		Format:   "QCOW2",
		Checksum: "sha256:" + hex.EncodeToString(sum[:]),
		Pool:     "default-pool",
	}
	t.Cleanup(func() { cleanupConformance(t, d, tpl) })
	conformance.Run(t, conformance.Fixture{
		Name:     "kvm",
		Driver:   d,
		Hosts:    []string{"kvm-host-1", "kvm-host-2"},
		Pool:     "default-pool",
		Template: tpl,
	})
	// What the scenarios leave implicit: the seeded volume has the image's virtual size.
	tp, err := d.SeedTemplate(context.Background(), tpl, nil)
	if err != nil {
		t.Fatalf("SeedTemplate after the run: %v", err)
	}
	if tp.SizeBytes != 2<<30 || !strings.HasSuffix(tp.Ref, "/"+tpl.Name) {
		t.Errorf("template %+v, want 2 GiB at .../%s", tp, tpl.Name)
	}
}

// cleanupConformance removes what a failed run may leave on the shared test:///default host.
func cleanupConformance(t *testing.T, d *Driver, tpl hypervisors.TemplateSpec) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, vm := range []string{"r-conf-1-VM", "r-conc-0-VM", "r-conc-1-VM", "r-conc-2-VM", "r-conc-3-VM", "r-badtpl-VM"} {
		_ = d.DestroyVM(ctx, vm)
	}
	l, err := d.storage.get(ctx)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	pool, err := l.StoragePoolLookupByName(tpl.Pool)
	if err != nil {
		return
	}
	for _, name := range []string{tpl.Name, tpl.Name + "-bad"} {
		if vol, err := l.StorageVolLookupByName(pool, name); err == nil {
			_ = l.StorageVolDelete(vol, libvirt.StorageVolDeleteNormal)
		}
	}
}
