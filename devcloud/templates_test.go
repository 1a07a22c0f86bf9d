package devcloud

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// TestDevTemplates builds dev's images once, serves them with Range support, and points the
// demo's nfs:// secondary store at a local directory (a file:// one is left alone).
func TestDevTemplates(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img is missing (apt-get install qemu-utils)")
		}
		t.Skip("qemu-img is missing")
	}
	ctx := context.Background()
	store := modelstest.SQLite(t)
	nfs := models.SecondaryStore{ZoneID: "z-1", Name: "nfs", URL: "nfs://10.1.0.5/export/secondary", Protocol: "nfs"}
	local := models.SecondaryStore{ZoneID: "z-2", Name: "local", URL: "file:///srv/secondary", Protocol: "file"}
	modelstest.Must(t, store.DB.Create(&nfs).Error, "store")
	modelstest.Must(t, store.DB.Create(&local).Error, "store")
	dir := t.TempDir()
	srv, imgs, err := DevTemplates(ctx, store, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if len(imgs) != 4 {
		t.Fatalf("images %+v, want the guide's four", imgs)
	}
	for _, want := range []string{"-kvm.qcow2.bz2", "-vmware.ova", "-xen.vhd.bz2", "-hyperv.vhd.zip"} {
		found := false
		for _, im := range imgs {
			found = found || strings.HasSuffix(im.File, want)
		}
		if !found {
			t.Errorf("no image named *%s in %+v", want, imgs)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/"+imgs[0].File, nil)
	req.Header.Set("Range", "bytes=10-19")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || len(b) != 10 {
		t.Errorf("Range request: %d, %d bytes", resp.StatusCode, len(b))
	}
	var got []models.SecondaryStore
	modelstest.Must(t, store.DB.Order("name").Find(&got).Error, "stores")
	if got[0].URL != "file:///srv/secondary" || !strings.HasPrefix(got[1].URL, "file://"+dir) {
		t.Errorf("stores after dev: %+v", got)
	}
	// A second start reuses the images.
	srv2, imgs2, err := DevTemplates(ctx, store, dir)
	if err != nil || imgs2[0].SHA256 != imgs[0].SHA256 {
		t.Errorf("second start: %v, images rebuilt", err)
	}
	if srv2 != nil {
		srv2.Close()
	}
}
