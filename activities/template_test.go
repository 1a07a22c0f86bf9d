package activities_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// downloadFixture is a zone with a file:// secondary store, the images of every hypervisor
// served on loopback (plain and TLS), and the activities over them.
type downloadFixture struct {
	store  *models.Store
	acts   *activities.Activities
	zoneID string
	dir    string
	images map[string]devcloud.TemplateImage // by hypervisor
	plain  *devcloud.TemplateServer
	tls    *devcloud.TemplateServer
	logs   *syncBuffer
}

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

func newDownloadFixture(t *testing.T, dataBytes int64) *downloadFixture {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img is missing (apt-get install qemu-utils)")
		}
		t.Skip("qemu-img is missing (apt-get install qemu-utils)")
	}
	f := &downloadFixture{store: modelstest.SQLite(t), dir: t.TempDir(), images: map[string]devcloud.TemplateImage{}, logs: &syncBuffer{}}
	imgDir := t.TempDir()
	imgs, err := devcloud.BuildTemplateImages(context.Background(), imgDir, "4.15.0", dataBytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range imgs {
		f.images[im.Hypervisor] = im
	}
	f.plain = devcloud.StartTemplateServer(imgDir, false)
	t.Cleanup(f.plain.Close)
	f.tls = devcloud.StartTemplateServer(imgDir, true)
	t.Cleanup(f.tls.Close)
	zone := models.Zone{Name: "zone-1"}
	modelstest.Must(t, f.store.DB.Create(&zone).Error, "zone")
	f.zoneID = zone.ID
	modelstest.Must(t, f.store.DB.Create(&models.SecondaryStore{ZoneID: zone.ID, Name: "sec-1", URL: "file://" + f.dir, Protocol: "file"}).Error, "store")
	modelstest.Must(t, f.store.DB.Create(&models.SystemVM{Name: "s-1-VM", Type: models.TypeSSVM, State: models.StateRunning, ZoneID: zone.ID}).Error, "ssvm")
	f.acts = &activities.Activities{Store: f.store, TemplateHTTP: f.tls.Client,
		Logger: slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	return f
}

func (f *downloadFixture) template(t *testing.T, hv, url, checksum string) models.Template {
	t.Helper()
	tpl := models.Template{Name: "systemvm-" + hv, Hypervisor: hv, Format: f.images[hv].Format, URL: url, Checksum: checksum,
		Type: "SYSTEM", Version: "4.15.0", Bits: 64}
	modelstest.Must(t, f.store.DB.Create(&tpl).Error, "template")
	return tpl
}

// download runs TemplateDownload in the SDK's activity environment with the given heartbeat
// details (nil: a first attempt), returning its result, error and the last heartbeat.
func (f *downloadFixture) download(t *testing.T, tpl models.Template, prev *activities.DownloadProgress) (activities.TemplateDownloadResult, activities.DownloadProgress, error) {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(f.acts)
	if prev != nil {
		env.SetHeartbeatDetails(*prev)
	}
	var mu sync.Mutex
	var last activities.DownloadProgress
	env.SetOnActivityHeartbeatListener(func(_ *activity.Info, details converter.EncodedValues) {
		var p activities.DownloadProgress
		if details.HasValues() && details.Get(&p) == nil {
			mu.Lock()
			last = p
			mu.Unlock()
		}
	})
	v, err := env.ExecuteActivity(f.acts.TemplateDownload, activities.TemplateDownloadInput{TemplateID: tpl.ID, ZoneID: f.zoneID})
	var res activities.TemplateDownloadResult
	if err == nil {
		modelstest.Must(t, v.Get(&res), "decode result")
	}
	mu.Lock()
	defer mu.Unlock()
	return res, last, err
}

func (f *downloadFixture) zoneRef(t *testing.T, tplID string) models.TemplateZoneRef {
	t.Helper()
	var ref models.TemplateZoneRef
	modelstest.Must(t, f.store.DB.Where("template_id = ? AND zone_id = ?", tplID, f.zoneID).First(&ref).Error, "zone ref")
	return ref
}

// TestTemplateDownloadFormats downloads the guide's four images over TLS with their checksums
// ({SHA-256}, bare hex, none) and wants each decompressed into the zone's secondary store as
// the image the hypervisor takes (qcow2, VHD, the OVA kept as a tar, the VHD out of its zip),
// and the zone's row at Download Complete with the SSVM named.
func TestTemplateDownloadFormats(t *testing.T) {
	f := newDownloadFixture(t, 2<<20)
	magic := map[string]func([]byte) bool{
		"KVM":       func(b []byte) bool { return bytes.HasPrefix(b, []byte("QFI\xfb")) },
		"XenServer": func(b []byte) bool { return bytes.Contains(b, []byte("conectix")) },
		"Hyperv":    func(b []byte) bool { return bytes.Contains(b, []byte("conectix")) },
		"VMware":    func(b []byte) bool { return len(b) > 262 && string(b[257:262]) == "ustar" },
	}
	for hv, im := range f.images {
		sum := "{SHA-256}" + im.SHA256
		if hv == "XenServer" {
			sum = im.SHA256 // bare hex
		}
		if hv == "Hyperv" {
			sum = ""
		}
		tpl := f.template(t, hv, f.tls.URL+"/"+im.File, sum)
		res, _, err := f.download(t, tpl, nil)
		if err != nil {
			t.Fatalf("%s: download: %v", hv, err)
		}
		st, err := os.Stat(res.Path)
		if err != nil || st.Size() != im.ImageSize {
			t.Errorf("%s: image %s: %v, size %d, want %d", hv, res.Path, err, sizeOf(st), im.ImageSize)
		}
		head := make([]byte, 512)
		fh, _ := os.Open(res.Path)
		n, _ := fh.Read(head)
		_ = fh.Close()
		if hv == "XenServer" || hv == "Hyperv" {
			// The VHD footer is the last 512 bytes (qemu's vpc also writes a copy first).
			b, _ := os.ReadFile(res.Path)
			head = b[len(b)-512:]
			n = 512
		}
		if !magic[hv](head[:n]) {
			t.Errorf("%s: %s is not the decompressed image", hv, res.Path)
		}
		if !strings.HasPrefix(res.Path, filepath.Join(f.dir, "template", "tmpl")) {
			t.Errorf("%s: image %s is not in the secondary store %s", hv, res.Path, f.dir)
		}
		if sum != "" && res.Checksum != "sha256:"+im.SHA256 {
			t.Errorf("%s: checksum %s, want sha256:%s", hv, res.Checksum, im.SHA256)
		}
		ref := f.zoneRef(t, tpl.ID)
		if ref.Status != models.TemplateDownloadComplete || ref.DownloadPct != 100 || ref.SSVM != "s-1-VM" || ref.InstallPath != res.Path {
			t.Errorf("%s: zone row %+v, want Download Complete 100%% by s-1-VM at %s", hv, ref, res.Path)
		}
		// Again: the store holds the verified image, nothing is downloaded.
		before := len(f.tls.Requests())
		again, _, err := f.download(t, tpl, nil)
		if err != nil || !again.Skipped || len(f.tls.Requests()) != before {
			t.Errorf("%s: second download %+v %v (%d requests), want skipped without a request", hv, again, err, len(f.tls.Requests())-before)
		}
	}
}

func sizeOf(st os.FileInfo) int64 {
	if st == nil {
		return -1
	}
	return st.Size()
}

// TestTemplateDownloadResumes cuts the connection mid-way: the attempt fails retryably with the
// partial file kept and its offset in the last heartbeat; the retry sends a Range request from
// that offset and completes with the right checksum, the server having sent less than twice
// the image.
func TestTemplateDownloadResumes(t *testing.T) {
	f := newDownloadFixture(t, 4<<20)
	f.acts.TemplateHTTP = nil // plain HTTP with the default client
	im := f.images["KVM"]
	path := "/" + im.File
	f.plain.SetFault(path, devcloud.TemplateFault{CutAfter: im.Size / 2, CutOnce: true})
	tpl := f.template(t, "KVM", f.plain.URL+path, "{SHA-256}"+im.SHA256)
	_, hb, err := f.download(t, tpl, nil)
	if err == nil {
		t.Fatal("a download cut mid-way succeeded")
	}
	var app *temporal.ApplicationError
	if errors.As(err, &app) && app.NonRetryable() {
		t.Fatalf("a cut download is final (%v), want retryable", err)
	}
	if hb.Offset <= 0 || hb.Offset > im.Size/2 || hb.Total != im.Size {
		t.Fatalf("last heartbeat %+v, want an offset in (0, %d] of %d", hb, im.Size/2, im.Size)
	}
	if ref := f.zoneRef(t, tpl.ID); !strings.HasSuffix(ref.Status, "% Downloaded") || ref.BytesDone <= 0 {
		t.Errorf("zone row after the cut: %+v, want x%% Downloaded", ref)
	}
	res, _, err := f.download(t, tpl, &hb)
	if err != nil {
		t.Fatalf("resumed download: %v", err)
	}
	if res.Resumed < hb.Offset {
		t.Errorf("resumed from %d, want at least the heartbeat's %d", res.Resumed, hb.Offset)
	}
	reqs := f.plain.Requests()
	var served int64
	for _, r := range reqs {
		served += r.Served
	}
	if len(reqs) != 2 || !strings.HasPrefix(reqs[1].Range, "bytes=") || reqs[1].Range == "bytes=0-" || reqs[1].Status != 206 {
		t.Errorf("requests %+v, want a second one with Range from the offset answered 206", reqs)
	}
	if served >= 2*im.Size {
		t.Errorf("served %d bytes for an image of %d, want less than twice", served, im.Size)
	}
	if st, err := os.Stat(res.Path); err != nil || st.Size() != im.ImageSize {
		t.Errorf("image after resume: %v %d, want %d bytes", err, sizeOf(st), im.ImageSize)
	}
}

// TestTemplateDownloadFaults: wrong bytes fail for good naming both digests and leave nothing
// behind; a missing file is final; a slow server still completes; a URL password never reaches
// the logs, the zone's status or the error.
func TestTemplateDownloadFaults(t *testing.T) {
	f := newDownloadFixture(t, 1<<20)
	im := f.images["XenServer"]
	path := "/" + im.File

	f.tls.SetFault(path, devcloud.TemplateFault{Corrupt: true})
	bad := f.template(t, "XenServer", f.tls.URL+path, "{SHA-256}"+im.SHA256)
	_, _, err := f.download(t, bad, nil)
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || !app.NonRetryable() || app.Type() != activities.ErrTypeChecksum ||
		!strings.Contains(err.Error(), "expected sha256:"+im.SHA256) || !strings.Contains(err.Error(), "actual sha256:") {
		t.Errorf("wrong bytes: %v, want a final checksum mismatch naming expected and actual", err)
	}
	if parts, _ := filepath.Glob(filepath.Join(f.dir, "template", "tmpl", "1", bad.ID, "*")); len(parts) != 0 {
		t.Errorf("a mismatch left %v behind", parts)
	}
	f.tls.SetFault(path, devcloud.TemplateFault{})

	missing := f.template(t, "KVM", f.tls.URL+"/nope-kvm.qcow2.bz2", "")
	missing.Name = "missing"
	if _, _, err := f.download(t, missing, nil); !errors.As(err, &app) || !app.NonRetryable() || !strings.Contains(err.Error(), "404") {
		t.Errorf("missing file: %v, want a final 404", err)
	}

	f.tls.SetFault(path, devcloud.TemplateFault{Delay: 2 * 1e6}) // 2 ms per 32 KiB
	withPW := models.Template{Name: "pw", Hypervisor: "XenServer", Format: "VHD", Type: "SYSTEM", Version: "4.15.0",
		URL: strings.Replace(f.tls.URL, "https://", "https://mirror:xxxxx@", 1) + path, URLSecretRef: "template-url:pw",
		Checksum: "{SHA-256}" + im.SHA256}
	modelstest.Must(t, f.store.Secrets.Put(context.Background(), withPW.URLSecretRef, "template-url",
		[]byte(strings.Replace(f.tls.URL, "https://", "https://mirror:s3cret-pw@", 1)+path)), "secret")
	modelstest.Must(t, f.store.DB.Create(&withPW).Error, "template")
	res, _, err := f.download(t, withPW, nil)
	if err != nil {
		t.Fatalf("slow download with credentials: %v", err)
	}
	if st, _ := os.Stat(res.Path); sizeOf(st) != im.ImageSize {
		t.Errorf("slow download: %d bytes, want %d", sizeOf(st), im.ImageSize)
	}
	if strings.Contains(f.logs.String(), "s3cret-pw") || !strings.Contains(f.logs.String(), "mirror:xxxxx@") {
		t.Errorf("the logs show the password, or no redacted URL: %s", f.logs.String())
	}
	// A failing download with credentials: the error and the status name the URL redacted.
	f.tls.SetFault(path, devcloud.TemplateFault{Corrupt: true})
	modelstest.Must(t, f.store.DB.Model(&models.TemplateZoneRef{}).Where("template_id = ?", withPW.ID).
		Updates(map[string]any{"checksum": "", "install_path": ""}).Error, "reset")
	_ = os.Remove(res.Path)
	_, _, err = f.download(t, withPW, nil)
	if err == nil || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("failed download with credentials: %v", err)
	}
}
