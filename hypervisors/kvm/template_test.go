package kvm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/sysvm/sysvm/hypervisors"
)

func TestQcow2VirtualSize(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.qcow2")
	if err := os.WriteFile(p, qcow2Image(5<<30), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := qcow2VirtualSize(p); err != nil || n != 5<<30 {
		t.Errorf("virtual size = %d, %v; want 5 GiB", n, err)
	}
	raw := filepath.Join(dir, "b.raw")
	if err := os.WriteFile(raw, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := qcow2VirtualSize(raw); err == nil {
		t.Error("a raw file passed as qcow2")
	}
}

func TestVolumeFormat(t *testing.T) {
	for in, want := range map[[2]string]string{
		{"QCOW2", ""}: "qcow2", {"raw", ""}: "raw", {"", "http://x/a.qcow2"}: "qcow2",
		{"", "http://x/a.img"}: "raw", {"", "file:///a.raw"}: "raw",
	} {
		if got, err := volumeFormat(in[0], in[1]); err != nil || got != want {
			t.Errorf("volumeFormat(%q, %q) = %q, %v; want %q", in[0], in[1], got, err, want)
		}
	}
	for _, f := range []string{"VHD", "OVA", "vmdk"} {
		if _, err := volumeFormat(f, ""); err == nil {
			t.Errorf("format %s accepted", f)
		}
	}
}

// TestSeedTemplateErrors covers the template paths the conformance scenarios do not.
func TestSeedTemplateErrors(t *testing.T) {
	d, _ := twoHostCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img := qcow2Image(1 << 30)
	url := serveFile(t, "tpl.qcow2", img)
	cases := []struct {
		name string
		spec hypervisors.TemplateSpec
		want error
	}{
		{"unknown pool", hypervisors.TemplateSpec{Name: "t-" + uniq(), URL: url, Pool: "no-such-pool"}, hypervisors.ErrNotFound},
		{"URL not found", hypervisors.TemplateSpec{Name: "t-" + uniq(), URL: url + ".missing", Pool: "default-pool"}, hypervisors.ErrNotFound},
		{"file not found", hypervisors.TemplateSpec{Name: "t-" + uniq(), URL: "file:///no/such/template.qcow2", Pool: "default-pool"}, hypervisors.ErrNotFound},
		{"unsupported scheme", hypervisors.TemplateSpec{Name: "t-" + uniq(), URL: "ftp://127.0.0.1/t.qcow2", Pool: "default-pool"}, hypervisors.ErrInvalid},
		{"unsupported format", hypervisors.TemplateSpec{Name: "t-" + uniq(), URL: url, Format: "VHD", Pool: "default-pool"}, hypervisors.ErrInvalid},
		{"bad checksum syntax", hypervisors.TemplateSpec{Name: "t-" + uniq(), URL: url, Checksum: "sha256:xyz", Pool: "default-pool"}, hypervisors.ErrInvalid},
		{"raw bytes called QCOW2", hypervisors.TemplateSpec{Name: "t-" + uniq(), URL: serveFile(t, "x.raw", make([]byte, 8192)), Format: "QCOW2", Pool: "default-pool"}, hypervisors.ErrInvalid},
		{"empty URL without size", hypervisors.TemplateSpec{Name: "t-" + uniq(), Pool: "default-pool"}, hypervisors.ErrInvalid},
	}
	for _, c := range cases {
		if _, err := d.SeedTemplate(ctx, c.spec, nil); !errors.Is(err, c.want) {
			t.Errorf("%s: SeedTemplate = %v, want %v", c.name, err, c.want)
		}
	}
	// A checksum mismatch creates no volume.
	bad := hypervisors.TemplateSpec{Name: "t-bad-" + uniq(), URL: url, Checksum: "md5:00000000000000000000000000000000", Pool: "default-pool"}
	if _, err := d.SeedTemplate(ctx, bad, nil); !errors.Is(err, hypervisors.ErrInvalid) {
		t.Fatalf("mismatch = %v", err)
	}
	l, _ := d.storage.get(ctx)
	p, _ := l.StoragePoolLookupByName("default-pool")
	if _, err := l.StorageVolLookupByName(p, bad.Name); !isCode(err, libvirt.ErrNoStorageVol) {
		t.Errorf("a volume exists after a checksum mismatch (lookup err %v)", err)
	}
}

// TestSeedTemplateUploadsBytes runs SeedTemplate and the root-disk clone against libvirt's real
// storage driver (a transient dir pool opened through qemu:///system on the system libvirtd):
// the bytes served over HTTP must land in the pool's file, and the clone must copy them.
func TestSeedTemplateUploadsBytes(t *testing.T) {
	requireLibvirtd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ep := UnixEndpoint(DefaultSocket, "qemu:///system")
	d, err := ConnectWithOptions(ctx, hypervisors.Connection{Type: hypervisors.KVM, Endpoint: ep}, Options{})
	if err != nil {
		t.Fatalf("connect qemu:///system (libvirt's real storage driver): %v", err)
	}
	defer d.Close()
	l, err := d.storage.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	poolName := "sysvm-test-" + uniq()
	pdoc, err := (&libvirtxml.StoragePool{Type: "dir", Name: poolName,
		Target: &libvirtxml.StoragePoolTarget{Path: dir}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := l.StoragePoolCreateXML(pdoc, 0)
	if err != nil {
		t.Fatalf("create transient dir pool: %v", err)
	}
	t.Cleanup(func() { _ = l.StoragePoolDestroy(pool) })

	body := make([]byte, 3<<20+123)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	spec := hypervisors.TemplateSpec{
		Name: "systemvm-raw", URL: serveFile(t, "systemvm.raw", body), Format: "RAW",
		Checksum: "sha256:" + hex.EncodeToString(sum[:]), Pool: poolName,
	}
	// The leftover of an interrupted seed is not taken for the template and is replaced.
	if _, err := createVolume(l, pool, spec.Name+partSuffix, "raw", 4096); err != nil {
		t.Fatal(err)
	}
	var calls int
	var last, lastTotal int64
	monotonic := true
	tpl, err := d.SeedTemplate(ctx, spec, func(done, total int64) {
		if done < last {
			monotonic = false
		}
		calls++
		last, lastTotal = done, total
	})
	if err != nil {
		t.Fatalf("SeedTemplate: %v", err)
	}
	if tpl.Ref != filepath.Join(dir, "systemvm-raw") || tpl.SizeBytes != int64(len(body)) {
		t.Errorf("template %+v, want %d bytes at %s", tpl, len(body), filepath.Join(dir, "systemvm-raw"))
	}
	got, err := os.ReadFile(filepath.Join(dir, "systemvm-raw"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("pool file holds %d bytes that differ from the %d served", len(got), len(body))
	}
	if calls < 2 || !monotonic || last != lastTotal || lastTotal != 2*int64(len(body)) {
		t.Errorf("progress: %d calls, monotonic=%v, last %d/%d; want it to end at %d/%d", calls, monotonic, last, lastTotal, 2*len(body), 2*len(body))
	}

	if _, err := os.Stat(filepath.Join(dir, "systemvm-raw"+partSuffix)); !os.IsNotExist(err) {
		t.Errorf("upload volume %s left behind: %v", "systemvm-raw"+partSuffix, err)
	}
	// Seeding again is a no-op that returns the same volume.
	again, err := d.SeedTemplate(ctx, spec, nil)
	if err != nil || again.Ref != tpl.Ref {
		t.Errorf("second seed = %+v, %v", again, err)
	}
	// The real storage driver reports an existing volume with its own code.
	p, err := l.StoragePoolLookupByName(poolName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := createVolume(l, p, "systemvm-raw", "raw", 1<<20); !errors.Is(classify("op", "v", err), hypervisors.ErrAlreadyExists) {
		t.Errorf("creating an existing volume = %v, want ErrAlreadyExists", err)
	}

	// The root disk of a VM is a full copy of the template.
	tv, err := l.StorageVolLookupByName(p, "systemvm-raw")
	if err != nil {
		t.Fatal(err)
	}
	root, path, format, err := d.cloneRoot(l, p, tv, "r-7-VM-ROOT")
	if err != nil {
		t.Fatalf("clone: %v", err)
	}
	if format != "raw" || path != filepath.Join(dir, "r-7-VM-ROOT") {
		t.Errorf("clone %s format %s", path, format)
	}
	cl, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(cl, body) {
		t.Errorf("clone does not hold the template's bytes (err %v)", err)
	}
	d.dropVolume(l, root)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("root volume file still there after delete: %v", err)
	}
	if tv, err := l.StorageVolLookupByName(p, "systemvm-raw"); err == nil {
		_ = l.StorageVolDelete(tv, 0)
	}
}
