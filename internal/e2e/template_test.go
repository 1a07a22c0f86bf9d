package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// needQemuImg skips (fails under CI) without qemu-img, which builds the test images.
func needQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img is missing (apt-get install qemu-utils)")
		}
		t.Skip("qemu-img is missing (apt-get install qemu-utils)")
	}
}

// localSecondaryStores points every zone's secondary store at a directory of the test.
func localSecondaryStores(t *testing.T, store *models.Store) string {
	t.Helper()
	dir := t.TempDir()
	modelstest.Must(t, store.DB.Model(&models.SecondaryStore{}).Where("1 = 1").Update("url", "file://"+dir).Error, "secondary stores")
	return dir
}

// registerTemplate registers a template through the API without starting its rollout.
func (s *stack) registerTemplate(name string, im devcloud.TemplateImage, url string) models.Template {
	s.t.Helper()
	var out struct {
		Template models.Template `json:"template"`
		Error    any             `json:"error"`
	}
	body := map[string]any{"name": name, "url": url, "format": im.Format, "hypervisor": im.Hypervisor, "zoneid": "-1",
		"checksum": "{SHA-256}" + im.SHA256, "templatetype": "SYSTEM", "version": "4.16.0", "rollout": false}
	if code := s.do(http.MethodPost, "/api/v1/templates", body, &out); code != http.StatusCreated {
		s.t.Fatalf("register %s = %d (%v)", name, code, out.Error)
	}
	return out.Template
}

// rollout starts one rollout of the templates.
func (s *stack) rollout(ids ...string) operation {
	s.t.Helper()
	return s.rolloutWith(map[string]any{"templateids": ids, "setminversion": true})
}

func (s *stack) rolloutWith(body map[string]any) operation {
	s.t.Helper()
	var out struct {
		Operation operation `json:"operation"`
		Error     any       `json:"error"`
	}
	if code := s.do(http.MethodPost, "/api/v1/templates/rollout", body, &out); code != http.StatusAccepted {
		s.t.Fatalf("rollout = %d (%v)", code, out.Error)
	}
	return out.Operation
}

// templateDetail is GET /templates/{id}.
type templateDetail struct {
	models.Template
	Zones []models.TemplateZoneRef `json:"zones"`
	Pools []models.TemplatePoolRef `json:"storagepools"`
}

func (s *stack) template(id string) templateDetail {
	s.t.Helper()
	var d templateDetail
	if code := s.do(http.MethodGet, "/api/v1/templates/"+id, nil, &d); code != http.StatusOK {
		s.t.Fatalf("GET template %s = %d", id, code)
	}
	return d
}

// poolTemplate asks the pool's hypervisor for the template: a seed of an empty 1-byte template
// of that name returns the template present as it is, so a size other than 1 is the seeded one
// (and 1 means it was missing, and is now an empty placeholder).
func (s *stack) poolTemplate(poolID, name string) hypervisors.Template {
	s.t.Helper()
	var pool models.StoragePool
	modelstest.Must(s.t, s.store.DB.First(&pool, "id = ?", poolID).Error, "pool")
	d, err := s.acts.Drivers.For(context.Background(), pool.ClusterID)
	modelstest.Must(s.t, err, "driver of %s", pool.Name)
	tpl, err := d.SeedTemplate(context.Background(), hypervisors.TemplateSpec{Name: name, SizeBytes: 1, Pool: pool.Name}, nil)
	modelstest.Must(s.t, err, "template %s in %s", name, pool.Name)
	return tpl
}

// TestTemplateRolloutEveryHypervisor rolls out KVM, VMware, XenServer and Hyper-V templates in
// one operation, the Hyper-V one with a URL that answers 404: KVM, VMware and XenServer are
// downloaded, seeded into their pools (checked on libvirt, vcsim and the XAPI simulator),
// switched live, and a router recreated afterwards runs on the new template; Hyper-V is
// reported failed with the reason and its router.template is left alone. A rollback sets the
// setting back.
func TestTemplateRolloutEveryHypervisor(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, libvirt, vcsim and the XAPI simulator")
	}
	needQemuImg(t)
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		p := newPlatform(t, store, platformOptions{kvm: true, vmware: true, xen: true, fleet: true})
		localSecondaryStores(t, store)
		imgDir := t.TempDir()
		const data = 3 << 20
		imgs, err := devcloud.BuildTemplateImages(context.Background(), imgDir, "4.16.0", data)
		modelstest.Must(t, err, "images")
		srv := devcloud.StartTemplateServer(imgDir, false)
		t.Cleanup(srv.Close)
		by := map[string]devcloud.TemplateImage{}
		for _, im := range imgs {
			by[im.Hypervisor] = im
		}
		kvmOK := p.kvmReason == ""
		kvm := p.registerTemplate("systemvm-kvm-4.16.0", by["KVM"], srv.URL+"/"+by["KVM"].File)
		vmw := p.registerTemplate("systemvm-vmware-4.16.0", by["VMware"], srv.URL+"/"+by["VMware"].File)
		xen := p.registerTemplate("systemvm-xen-4.16.0", by["XenServer"], srv.URL+"/"+by["XenServer"].File)
		hyperv := p.registerTemplate("systemvm-hyperv-4.16.0", by["Hyperv"], srv.URL+"/gone/"+by["Hyperv"].File)
		prevHyperv, _ := store.Settings.String(context.Background(), "router.template.hyperv", models.Scope{ZoneID: p.zoneID})
		prevKVM, _ := store.Settings.String(context.Background(), "router.template.kvm", models.Scope{ZoneID: p.zoneID})

		begin := time.Now()
		op := p.wait(p.rollout(kvm.ID, vmw.ID, xen.ID, hyperv.ID), 3*time.Minute)
		t.Logf("rollout %s in %s", op.Status, time.Since(begin).Round(time.Millisecond))
		if op.Status != models.OpCompleted {
			t.Fatalf("rollout %s: %s", op.Status, op.Error)
		}
		p.recordHistory("template/rollout_one_bad_url.json", op)
		var res workflows.TemplateRolloutResult
		modelstest.Must(t, json.Unmarshal(op.Result, &res), "result")
		outcome := map[string]workflows.TemplateOutcome{}
		for _, o := range res.Templates {
			outcome[o.Hypervisor] = o
		}
		ready := []string{"VMware", "XenServer"}
		if kvmOK {
			ready = append(ready, "KVM")
		}
		for _, hv := range ready {
			o := outcome[hv]
			if len(o.Zones) != 1 || o.Zones[0].Status != models.TemplateReady || !o.Zones[0].Switched || len(o.Zones[0].Pools) == 0 {
				t.Fatalf("%s outcome %+v, want Ready and switched with its pools", hv, o)
			}
			for _, pl := range o.Zones[0].Pools {
				if pl.State != models.TemplateReady {
					t.Errorf("%s pool %s: %+v", hv, pl.Pool, pl)
				}
				got := p.poolTemplate(pl.PoolID, o.Name)
				if got.SizeBytes < data {
					t.Errorf("%s pool %s holds %+v, want the seeded template of at least %d bytes", hv, pl.Pool, got, data)
				}
			}
			d := p.template(o.TemplateID)
			if len(d.Zones) != 1 || d.Zones[0].Status != models.TemplateReady || d.Zones[0].SSVM == "" || len(d.Pools) != len(o.Zones[0].Pools) {
				t.Errorf("GET %s template: zones %+v pools %+v", hv, d.Zones, d.Pools)
			}
			for _, pr := range d.Pools {
				if pr.State != models.TemplateReady || pr.Checksum == "" || pr.InstallPath == "" {
					t.Errorf("%s pool row %+v, want Ready with checksum and path", hv, pr)
				}
			}
			name := activities.TemplateSettingName(hv)
			if v, _ := store.Settings.String(context.Background(), name, models.Scope{ZoneID: p.zoneID}); v != o.Name {
				t.Errorf("%s = %q after the rollout, want %q", name, v, o.Name)
			}
		}
		x := outcome["Hyperv"]
		if len(x.Zones) != 1 || !strings.Contains(x.Zones[0].Status, "Failed: download") || !strings.Contains(x.Zones[0].Status, "404") || x.Zones[0].Switched {
			t.Errorf("Hyper-V outcome %+v, want Failed: download ... 404 and not switched", x)
		}
		if d := p.template(hyperv.ID); len(d.Zones) != 1 || !strings.HasPrefix(d.Zones[0].Status, "Failed: ") {
			t.Errorf("GET Hyper-V template zones %+v, want Failed: <reason>", d.Zones)
		}
		if v, _ := store.Settings.String(context.Background(), "router.template.hyperv", models.Scope{ZoneID: p.zoneID}); v != prevHyperv {
			t.Errorf("router.template.hyperv = %q, want it left at %q", v, prevHyperv)
		}
		if res.Ready != len(ready) || res.Failed != 4-len(ready) || res.MinVersion != "4.16.0" {
			t.Errorf("result ready %d failed %d minversion %q", res.Ready, res.Failed, res.MinVersion)
		}

		// New system VMs use it at once: a VMware router recreated now is built from it.
		var r models.SystemVM
		modelstest.Must(t, store.DB.Where("type = ? AND hypervisor_type = ? AND state = ? AND is_redundant = ?",
			models.TypeRouter, "VMware", models.StateRunning, false).Order("name").First(&r).Error, "VMware router")
		rec := p.wait(p.start("/api/v1/routers/"+r.ID+"/recreate"), 2*time.Minute)
		if rec.Status != models.OpCompleted {
			t.Fatalf("recreate %s: %s %s", r.Name, rec.Status, rec.Error)
		}
		after := p.vm(r.ID)
		if after.TemplateID != vmw.ID || after.Version != "4.16.0" {
			t.Errorf("recreated router template %s version %s, want %s 4.16.0", after.TemplateID, after.Version, vmw.ID)
		}
		if info, err := p.hv(after); err != nil || (info.Template != "" && info.Template != vmw.Name) {
			t.Errorf("recreated router on vcsim: %+v %v, want it from %s", info, err, vmw.Name)
		}

		// A rollback sets router.template.kvm back (the zone had no override: it is removed).
		if kvmOK {
			var rb activities.TemplateRollbackResult
			if code := p.do(http.MethodPost, "/api/v1/templates/"+kvm.ID+"/rollback", nil, &rb); code != http.StatusOK || len(rb.Restored) == 0 {
				t.Fatalf("rollback = %d %+v", code, rb)
			}
			if v, _ := store.Settings.String(context.Background(), "router.template.kvm", models.Scope{ZoneID: p.zoneID}); v != prevKVM {
				t.Errorf("router.template.kvm after rollback = %q, want %q", v, prevKVM)
			}
		}

		// A second rollout of the same bytes skips every pool (same checksum) and downloads
		// nothing; with rollon it recreates the zone's VMware SSVMs and CPVMs on it, one at a time.
		var sysvms []models.SystemVM
		modelstest.Must(t, store.DB.Where("zone_id = ? AND hypervisor_type = ? AND type IN ? AND state <> ?", p.zoneID, "VMware",
			[]string{models.TypeSSVM, models.TypeCPVM}, models.StateDestroyed).Find(&sysvms).Error, "system VMs")
		before := len(srv.Requests())
		op2 := p.wait(p.rolloutWith(map[string]any{"templateids": []string{vmw.ID}, "rollon": true}), 3*time.Minute)
		if op2.Status != models.OpCompleted {
			t.Logf("pools after the second rollout: %+v", p.template(vmw.ID).Pools)
		}
		var res2 workflows.TemplateRolloutResult
		_ = json.Unmarshal(op2.Result, &res2)
		if op2.Status != models.OpCompleted || len(res2.Templates) != 1 || len(res2.Templates[0].Zones[0].Pools) == 0 ||
			!res2.Templates[0].Zones[0].Pools[0].Skipped || len(srv.Requests()) != before {
			t.Errorf("second rollout %s (%s) %+v (%d new requests), want every pool skipped and nothing downloaded", op2.Status, op2.Error, res2, len(srv.Requests())-before)
		}
		if len(sysvms) == 0 {
			t.Fatal("the demo zone has no VMware SSVM or CPVM to roll on")
		}
		if z := res2.Templates[0].Zones[0]; len(z.Recreated) != len(sysvms) || z.RollOnError != "" {
			t.Errorf("roll-on recreated %+v (%q), want the zone's %d VMware SSVMs and CPVMs", z.Recreated, z.RollOnError, len(sysvms))
		}
		for _, vm := range sysvms {
			if got := p.vm(vm.ID); got.TemplateID != vmw.ID || got.State != models.StateRunning {
				t.Errorf("%s after roll-on: template %s state %s, want %s Running", vm.Name, got.TemplateID, got.State, vmw.ID)
			}
			if _, err := p.hv(p.vm(vm.ID)); err != nil {
				t.Errorf("%s is not on vcsim after roll-on: %v", vm.Name, err)
			}
		}
	})
}

// TestTemplateDownloadSurvivesWorkerKill kills a `sysvm worker` process with SIGKILL once the
// template server has sent a third of the image, starts another worker, and shows the download
// resuming from its offset (a Range request from beyond 0, less than twice the image sent in
// all) and the rollout finishing with the VMware pool seeded.
func TestTemplateDownloadSurvivesWorkerKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim and worker processes")
	}
	needQemuImg(t)
	dsn := modelstest.MySQLDSN(t)
	store, err := models.OpenAndMigrate(context.Background(), dsn, modelstest.TestKey)
	modelstest.Must(t, err, "open")
	t.Cleanup(func() { _ = store.Close() })
	s := newStack(t, store, false)
	localSecondaryStores(t, store)
	imgDir := t.TempDir()
	imgs, err := devcloud.BuildTemplateImages(context.Background(), imgDir, "4.16.0", 24<<20)
	modelstest.Must(t, err, "images")
	var ova devcloud.TemplateImage
	for _, im := range imgs {
		if im.Hypervisor == "VMware" {
			ova = im
		}
	}
	srv := devcloud.StartTemplateServer(imgDir, false)
	t.Cleanup(srv.Close)
	// About 8 s for the whole image: time enough to be killed in the middle.
	srv.SetFault("/"+ova.File, devcloud.TemplateFault{Delay: 10 * time.Millisecond})

	first := startWorkerProcess(t, dsn, s.temporal.Address)
	var once sync.Once
	killed := make(chan int64, 1)
	srv.OnServe(func(path string, served int64) {
		if served > ova.Size/3 {
			once.Do(func() {
				_ = first.Process.Kill() // SIGKILL
				killed <- served
			})
		}
	})
	tpl := s.registerTemplate("systemvm-vmware-4.16.0", ova, srv.URL+"/"+ova.File)
	op := s.rollout(tpl.ID)
	select {
	case n := <-killed:
		t.Logf("worker killed after %d of %d bytes", n, ova.Size)
	case <-time.After(90 * time.Second):
		t.Fatal("the download never got a third of the way")
	}
	_, _ = first.Process.Wait()
	startWorkerProcess(t, dsn, s.temporal.Address)
	got := s.wait(op, 3*time.Minute)
	if got.Status != models.OpCompleted {
		t.Fatalf("rollout after the kill: %s %s", got.Status, got.Error)
	}
	var served int64
	resumed := false
	for _, r := range srv.Requests() {
		served += r.Served
		if from, ok := strings.CutPrefix(r.Range, "bytes="); ok {
			if n, err := strconv.ParseInt(strings.TrimSuffix(from, "-"), 10, 64); err == nil && n > 0 && r.Status == http.StatusPartialContent {
				resumed = true
			}
		}
	}
	if !resumed {
		t.Errorf("requests %+v: want a Range request from beyond byte 0 answered 206", srv.Requests())
	}
	if served >= 2*ova.Size {
		t.Errorf("served %d bytes for an image of %d: the download started over", served, ova.Size)
	}
	var res workflows.TemplateRolloutResult
	modelstest.Must(t, json.Unmarshal(got.Result, &res), "result")
	z := res.Templates[0].Zones[0]
	if z.Status != models.TemplateReady || z.Resumed <= 0 || len(z.Pools) == 0 {
		t.Fatalf("zone outcome %+v, want Ready after resuming", z)
	}
	for _, pl := range z.Pools {
		if tp := s.poolTemplate(pl.PoolID, tpl.Name); tp.SizeBytes < 24<<20 {
			t.Errorf("pool %s holds %+v, want the seeded template", pl.Pool, tp)
		}
	}
}
