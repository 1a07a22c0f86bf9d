package kvm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/internal/testenv"
)

// bootBanner is what bootSector prints on COM1, over and over.
const bootBanner = "SYSVM-BOOT-OK"

// bootSector is a 512-byte x86 boot sector that writes bootBanner to the first serial port in
// a loop (cld; ds=0; si=msg; out each byte to 0x3f8; short delay; repeat).
func bootSector() []byte {
	code := []byte{
		0xFC,       // cld
		0x31, 0xC0, // xor ax, ax
		0x8E, 0xD8, // mov ds, ax
		0xBE, 0x1A, 0x7C, // again: mov si, 0x7c1a (msg)
		0xBA, 0xF8, 0x03, // mov dx, 0x3f8
		0xAC,       // loop: lodsb
		0x84, 0xC0, // test al, al
		0x74, 0x03, // jz delay
		0xEE,       // out dx, al
		0xEB, 0xF8, // jmp loop
		0xB9, 0xFF, 0xFF, // delay: mov cx, 0xffff
		0xE2, 0xFE, // d: loop d
		0xEB, 0xEB, // jmp again
	}
	msg := append([]byte(bootBanner+"\r\n"), 0)
	s := make([]byte, 512)
	copy(s, code)
	copy(s[len(code):], msg)
	s[510], s[511] = 0x55, 0xAA
	return s
}

// syncBuffer is a bytes.Buffer safe for the console stream's writer and the test's reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestQEMUSmoke boots a system VM the driver defines on real QEMU (qemu:///system on the system
// libvirtd, TCG or KVM as the host offers) from a RAW template seeded over HTTP: the guest's
// code must run and print on the serial console. It needs Debian's qemu-system-x86
// (scripts/libvirtd-setup.sh installs it); without it the test is skipped, and fails under CI=true.
func TestQEMUSmoke(t *testing.T) {
	requireLibvirtd(t)
	_, err := exec.LookPath("qemu-system-x86_64")
	testenv.Require(t, "qemu-system-x86 (scripts/libvirtd-setup.sh installs it)", err)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d, err := ConnectWithOptions(ctx, hypervisors.Connection{Type: hypervisors.KVM, Endpoint: UnixEndpoint(DefaultSocket, "qemu:///system")},
		Options{ShutdownTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	host := d.HostNames()[0]
	l, err := d.storage.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// QEMU runs as libvirt-qemu: the pool directory must be reachable for it.
	dir, err := os.MkdirTemp("", "sysvm-qemu-smoke-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	poolName := "sysvm-smoke-" + uniq()
	pdoc, err := (&libvirtxml.StoragePool{Type: "dir", Name: poolName, Target: &libvirtxml.StoragePoolTarget{Path: dir}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := l.StoragePoolCreateXML(pdoc, 0)
	if err != nil {
		t.Fatalf("create pool: %v", err)
	}
	t.Cleanup(func() { _ = l.StoragePoolDestroy(pool) })

	img := make([]byte, 1<<20)
	copy(img, bootSector())
	sum := sha256.Sum256(img)
	tpl := hypervisors.TemplateSpec{Name: "systemvm-smoke.raw", URL: serveFile(t, "smoke.raw", img), Format: "RAW",
		Checksum: "sha256:" + hex.EncodeToString(sum[:]), Pool: poolName}
	if _, err := d.SeedTemplate(ctx, tpl, nil); err != nil {
		t.Fatalf("SeedTemplate: %v", err)
	}
	// A private bridge with no address for the NICs: libvirt plugs a tap per NIC into it and
	// nothing leaves the machine.
	bridge := "sysvmbr" + uniq()[:6]
	if out, err := exec.CommandContext(ctx, "ip", "link", "add", bridge, "type", "bridge").CombinedOutput(); err != nil {
		t.Fatalf("create bridge %s: %v: %s", bridge, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", bridge).Run() })
	name := "r-smoke-" + uniq() + "-VM"
	spec := hypervisors.VMSpec{Name: name, Host: host, Pool: poolName, Template: tpl.Name, CPUs: 1, CPUMHz: 500, MemoryMB: 64,
		NICs: []hypervisors.NIC{
			{Kind: hypervisors.NICControl, Network: bridge, MAC: "0e:00:a9:fe:07:01", IP: "169.254.7.1", Netmask: "255.255.0.0"},
			{Kind: hypervisors.NICPublic, Network: bridge, MAC: "1e:00:c0:00:02:07", IP: "192.0.2.7", Netmask: "255.255.255.0", Gateway: "192.0.2.1"},
		},
		BootArgs: map[string]string{"type": "domainrouter", "name": name}}
	start := time.Now()
	if _, err := d.CreateVM(ctx, spec); err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	t.Cleanup(func() {
		if err := d.DestroyVM(context.Background(), name); err != nil && !errors.Is(err, hypervisors.ErrNotFound) {
			t.Errorf("DestroyVM: %v", err)
		}
	})
	if err := d.StartVM(ctx, name); err != nil {
		t.Fatalf("StartVM on real QEMU: %v", err)
	}
	vi, err := d.GetVM(ctx, name)
	if err != nil || vi.State != hypervisors.PowerRunning {
		t.Fatalf("GetVM = %+v, %v; want Running", vi, err)
	}

	ports, err := os.ReadDir(filepath.Join("/sys/class/net", bridge, "brif"))
	if err != nil || len(ports) != 2 {
		t.Errorf("bridge %s has ports %v (%v), want the VM's 2 taps", bridge, ports, err)
	}
	if len(vi.NICs) != 2 || vi.NICs[0].MAC != "0e:00:a9:fe:07:01" || vi.NICs[1].Kind != hypervisors.NICPublic {
		t.Errorf("NICs of the running VM: %+v", vi.NICs)
	}

	// Read the serial console through libvirt's console stream until the banner shows.
	loc, err := d.find(ctx, "console", name)
	if err != nil {
		t.Fatal(err)
	}
	var console syncBuffer
	consoleDone := make(chan error, 1)
	go func() { consoleDone <- loc.l.DomainOpenConsole(loc.dom, nil, &console, 0) }()
	deadline := time.Now().Add(45 * time.Second)
	for !strings.Contains(console.String(), bootBanner) && time.Now().Before(deadline) {
		select {
		case err := <-consoleDone:
			t.Fatalf("console closed before the banner: %v (read %q)", err, console.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !strings.Contains(console.String(), bootBanner) {
		t.Fatalf("guest printed no %q within 45s; console: %q", bootBanner, console.String())
	}
	t.Logf("guest code ran %v after CreateVM", time.Since(start).Round(time.Millisecond))

	st, err := d.VMStats(ctx, name)
	if err != nil {
		t.Fatalf("VMStats: %v", err)
	}
	if st.CPUTimeNs == 0 {
		t.Errorf("running guest has no CPU time: %+v", st)
	}
	// No OS answers ACPI: the graceful stop must fall back to power-off after its timeout.
	if err := d.StopVM(ctx, name, false); err != nil {
		t.Fatalf("StopVM: %v", err)
	}
	if vi, err := d.GetVM(ctx, name); err != nil || vi.State != hypervisors.PowerStopped {
		t.Errorf("after StopVM: %+v, %v", vi, err)
	}
	select {
	case <-consoleDone:
	case <-time.After(10 * time.Second):
		t.Error("console stream did not end with the VM")
	}
	if err := d.DestroyVM(ctx, name); err != nil {
		t.Fatalf("DestroyVM: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, name+rootSuffix)); !os.IsNotExist(err) {
		t.Errorf("root disk file still there after DestroyVM: %v", err)
	}
}
