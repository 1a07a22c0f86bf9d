package kvm

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sysvm/sysvm/internal/testenv"
)

// requireLibvirtd makes sure the system libvirtd answers on DefaultSocket, running
// scripts/libvirtd-setup.sh when it does not. It skips only when the daemon cannot be started,
// and under CI (CI=true) it fails instead, so a broken set-up never passes as skipped.
func requireLibvirtd(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs libvirtd; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	probe := func() error {
		l, err := dial(ctx, Endpoint{Network: "unix", Address: DefaultSocket, URI: "test:///default"})
		if err != nil {
			return err
		}
		return l.Disconnect()
	}
	if probe() == nil {
		return
	}
	fail := func(format string, args ...any) {
		t.Helper()
		testenv.Require(t, "libvirtd", fmt.Errorf(format, args...))
	}
	if os.Geteuid() != 0 {
		fail("libvirtd does not answer on %s and starting it needs root: run scripts/libvirtd-setup.sh as root", DefaultSocket)
		return
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "libvirtd-setup.sh"))
	if err != nil {
		t.Fatalf("locate setup script: %v", err)
	}
	out, err := exec.CommandContext(ctx, "bash", script).CombinedOutput()
	if err != nil {
		fail("libvirtd cannot start (%s: %v):\n%s", script, err, out)
		return
	}
	if err := probe(); err != nil {
		fail("libvirtd started by %s but does not answer: %v", script, err)
	}
}

// writeHostXML writes a libvirt test-driver node definition (a host with CPUs, memory and the
// same default-pool as test:///default) and returns its absolute path.
func writeHostXML(t *testing.T, cpus, memKiB int) string {
	t.Helper()
	doc := fmt.Sprintf(`<node>
  <cpu><mhz>2400</mhz><nodes>1</nodes><sockets>1</sockets><cores>%d</cores><threads>1</threads><active>%d</active></cpu>
  <memory>%d</memory>
  <pool type='dir'>
    <name>default-pool</name>
    <capacity unit='bytes'>107374182400</capacity>
    <allocation unit='bytes'>0</allocation>
    <available unit='bytes'>107374182400</available>
    <target><path>/default-pool</path></target>
  </pool>
</node>
`, cpus, cpus, memKiB)
	dir := t.TempDir()
	// libvirtd (root) reads the file; keep the directory traversable.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "host.xml")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// qcow2Image builds a valid, empty qcow2 (version 2, 64 KiB clusters) of the given virtual size,
// laid out as qemu-img lays it out: header, refcount table, refcount block, L1 table.
func qcow2Image(virtualSize uint64) []byte {
	const clusterBits = 16
	const cluster = 1 << clusterBits
	l2Covers := uint64(cluster) * (cluster / 8)
	l1Size := (virtualSize + l2Covers - 1) / l2Covers
	img := make([]byte, 4*cluster)
	be := binary.BigEndian
	copy(img[0:4], "QFI\xfb")
	be.PutUint32(img[4:], 2)            // version
	be.PutUint32(img[20:], clusterBits) // cluster_bits
	be.PutUint64(img[24:], virtualSize) // size
	be.PutUint32(img[36:], uint32(l1Size))
	be.PutUint64(img[40:], 3*cluster) // l1_table_offset
	be.PutUint64(img[48:], 1*cluster) // refcount_table_offset
	be.PutUint32(img[56:], 1)         // refcount_table_clusters
	be.PutUint64(img[cluster:], 2*cluster)
	for i := 0; i < 4; i++ { // clusters 0-3 are in use once each (16-bit refcounts)
		be.PutUint16(img[2*cluster+2*i:], 1)
	}
	return img
}

// serveFile serves body at /<name> on a loopback HTTP server for the test's life.
func serveFile(t *testing.T, name string, body []byte) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/"+name, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = w.Write(body)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/" + name
}

// uniq returns a short random suffix so runs never meet each other's leftovers.
func uniq() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
