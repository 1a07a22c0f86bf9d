package main

// `sysvm-bench template`: the template rollout's download + checksum + seed of one image into
// two VMware pools (vcsim datastores, NFC import), against a plain copy of the same bytes (one
// HTTP GET to disk, two file copies) in the same run.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/vmware"
	"github.com/sysvm/sysvm/models"
)

func runTemplate(ctx context.Context, logger *slog.Logger, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("template", flag.ContinueOnError)
	size := fs.Int64("size", 1<<30, "bytes of disk in the image")
	dirFlag := fs.String("dir", "", "scratch directory (default: the system's temporary directory); removed afterwards")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(*dirFlag, "sysvm-bench-template-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()

	// The image: an OVA (tar of an OVF and a disk of random bytes, so nothing compresses).
	imgDir := filepath.Join(dir, "images")
	if err := os.MkdirAll(imgDir, 0o755); err != nil {
		return err
	}
	disk := filepath.Join(dir, "disk.vmdk")
	if err := randomFile(disk, *size); err != nil {
		return err
	}
	ova := filepath.Join(imgDir, "systemvmtemplate-4.16.0-vmware.ova")
	if err := devcloud.WriteOVA(ova, disk, *size); err != nil {
		return err
	}
	_ = os.Remove(disk)
	sum, total, err := sha256Of(ova)
	if err != nil {
		return err
	}
	srv := devcloud.StartTemplateServer(imgDir, false)
	defer srv.Close()
	url := srv.URL + "/" + filepath.Base(ova)
	logger.Info("image ready", "bytes", total)

	// Plain copy: GET to a file, then the file into two "pools".
	plainStart := time.Now()
	if err := plainCopy(ctx, url, filepath.Join(dir, "plain")); err != nil {
		return err
	}
	plain := time.Since(plainStart)
	_ = os.RemoveAll(filepath.Join(dir, "plain"))

	// sysvm: SQLite, two vcsim clusters (one datastore each) in one zone, the activities.
	store, err := models.OpenAndMigrate(ctx, "sqlite://"+filepath.Join(dir, "bench.db"), benchKey())
	if err != nil {
		return err
	}
	defer func() { _ = store.Close() }()
	sims, stopSims, err := devcloud.StartVMware(ctx, 2)
	if err != nil {
		return err
	}
	defer stopSims()
	if _, err := devcloud.Seed(ctx, store, devcloud.Clusters{VMware: sims}, devcloud.SeedOptions{Zones: 2}); err != nil {
		return err
	}
	var zone models.Zone
	if err := store.DB.Order("name").First(&zone).Error; err != nil {
		return err
	}
	// Both clusters and pools in the first zone: one download, two pools.
	for _, m := range []any{&models.Cluster{}, &models.StoragePool{}} {
		if err := store.DB.Model(m).Where("1 = 1").Update("zone_id", zone.ID).Error; err != nil {
			return err
		}
	}
	sec := filepath.Join(dir, "secondary")
	if err := store.DB.Model(&models.SecondaryStore{}).Where("zone_id = ?", zone.ID).Update("url", "file://"+sec).Error; err != nil {
		return err
	}
	tpl := models.Template{Name: "bench-vmware", Hypervisor: string(hypervisors.VMware), Format: "OVA", URL: url,
		Checksum: "sha256:" + sum, Type: "SYSTEM", Version: "4.16.0", ZoneID: zone.ID, Bits: 64}
	if err := store.DB.Create(&tpl).Error; err != nil {
		return err
	}
	reg := hypervisors.NewRegistry().Register(hypervisors.VMware, vmware.Connect)
	acts := &activities.Activities{Store: store, Drivers: activities.NewDriverPool(store, reg), Logger: logger}
	defer acts.Drivers.Close()
	plan, err := acts.TemplatePlan(ctx, activities.TemplatePlanInput{TemplateIDs: []string{tpl.ID}})
	if err != nil {
		return err
	}
	if len(plan.Templates) != 1 || len(plan.Templates[0].Zones) == 0 || len(plan.Templates[0].Zones[0].Pools) != 2 {
		return fmt.Errorf("plan %+v: want one zone with two pools", plan)
	}
	pools := plan.Templates[0].Zones[0].Pools

	peak := newMemPeak()
	begin := time.Now()
	dl, err := acts.TemplateDownload(ctx, activities.TemplateDownloadInput{TemplateID: tpl.ID, ZoneID: zone.ID})
	if err != nil {
		peak.stop()
		return fmt.Errorf("download: %w", err)
	}
	downloaded := time.Since(begin)
	var wg sync.WaitGroup
	errs := make([]error, len(pools))
	for i, p := range pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = acts.TemplateSeedPool(ctx, activities.TemplateSeedInput{TemplateID: tpl.ID, ZoneID: zone.ID,
				PoolID: p.PoolID, Path: dl.Path, Checksum: dl.Checksum})
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	heap, rss := peak.stop()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("seed %s: %w", pools[i].Name, err)
		}
	}
	mb := func(d time.Duration) float64 { return float64(total) / d.Seconds() / (1 << 20) }
	fmt.Fprintf(out, "template rollout bench: %s image, one download, two pools (vcsim datastores)\n", human(total))
	fmt.Fprintf(out, "  plain copy (GET to disk + 2 file copies)       %8.1f MiB/s  (%s)\n", mb(plain), plain.Round(time.Millisecond))
	fmt.Fprintf(out, "  sysvm (download+sha256 %s, seed 2 pools)  %8.1f MiB/s  (%s)\n", downloaded.Round(time.Millisecond), mb(elapsed), elapsed.Round(time.Millisecond))
	fmt.Fprintf(out, "  ratio sysvm / plain                            %8.2f    (target >= 0.80)\n", plain.Seconds()/elapsed.Seconds())
	fmt.Fprintf(out, "  peak Go heap in use %s, peak RSS %s (one process: worker activities AND vcsim)\n", human(int64(heap)), human(rss))
	return nil
}

// benchKey is a fixed master key for the scratch database.
func benchKey() []byte { return []byte("sysvm-bench-template-key-32bytes") }

func randomFile(p string, n int64) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	// Random blocks repeated: incompressible enough for a copy, fast to make.
	block := make([]byte, 4<<20)
	if _, err := rand.Read(block); err != nil {
		return err
	}
	for n > 0 {
		k := min(n, int64(len(block)))
		if _, err := f.Write(block[:k]); err != nil {
			_ = f.Close()
			return err
		}
		block[0]++
		n -= k
	}
	return f.Close()
}

func sha256Of(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// plainCopy is the baseline: the same bytes fetched to disk (fsynced, as the download is) and
// written to two places (not fsynced, as vcsim writes its datastore files).
func plainCopy(ctx context.Context, url, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	first := filepath.Join(dir, "image")
	f, err := os.Create(first)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	_ = f.Close()
	for i := range 2 {
		if err := copyFile(first, filepath.Join(dir, "pool-"+strconv.Itoa(i))); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	// A real copy (no copy_file_range), not fsynced: like the pools' writes in vcsim.
	if _, err := io.Copy(struct{ io.Writer }{out}, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// memPeak samples the Go heap in use while it runs; stop returns its peak and the process's
// peak RSS (VmHWM).
type memPeak struct {
	done chan struct{}
	wg   sync.WaitGroup
	peak uint64
}

func newMemPeak() *memPeak {
	m := &memPeak{done: make(chan struct{})}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			m.peak = max(m.peak, ms.HeapInuse)
			select {
			case <-m.done:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *memPeak) stop() (uint64, int64) {
	close(m.done)
	m.wg.Wait()
	var rss int64
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				rss = kb << 10
			}
		}
	}
	return m.peak, rss
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
