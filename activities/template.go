package activities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
)

// Template rollout activities: plan, download (by the zone's SSVM role, into the zone's
// secondary store), seed one pool, switch router.template.<hypervisor>, record failures.

// TemplatePlanInput names the templates a rollout rolls out.
type TemplatePlanInput struct {
	TemplateIDs []string `json:"templateIds"`
}

// TemplatePlan is what a rollout does: per template, per zone, the pools to seed.
type TemplatePlan struct {
	Templates []TemplatePlanItem `json:"templates"`
}

// TemplatePlanItem is one template's part of a rollout.
type TemplatePlanItem struct {
	TemplateID string             `json:"templateId"`
	Name       string             `json:"name"`
	Hypervisor string             `json:"hypervisor"`
	Version    string             `json:"version"`
	Zones      []TemplateZonePlan `json:"zones"`
	// Error is set when the template cannot be rolled out at all (no zone to go to).
	Error string `json:"error,omitempty"`
}

// TemplateZonePlan is one zone of a template's rollout.
type TemplateZonePlan struct {
	ZoneID string             `json:"zoneId"`
	Zone   string             `json:"zone"`
	Pools  []TemplatePoolPlan `json:"pools"`
}

// TemplatePoolPlan is one primary storage pool to seed.
type TemplatePoolPlan struct {
	PoolID    string `json:"poolId"`
	Name      string `json:"name"`
	ClusterID string `json:"clusterId"`
}

// TemplatePlan lists, per template, its zones (the one it was registered for, or every zone)
// and in each the primary storage pools of its hypervisor's clusters, sorted by name.
func (a *Activities) TemplatePlan(ctx context.Context, in TemplatePlanInput) (TemplatePlan, error) {
	var out TemplatePlan
	db := a.Store.DB.WithContext(ctx)
	for _, id := range in.TemplateIDs {
		var tpl models.Template
		if err := db.First(&tpl, "id = ?", id).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				out.Templates = append(out.Templates, TemplatePlanItem{TemplateID: id, Error: "no template with id " + id})
				continue
			}
			return out, fmt.Errorf("load template %s: %w", id, err)
		}
		item := TemplatePlanItem{TemplateID: tpl.ID, Name: tpl.Name, Hypervisor: tpl.Hypervisor, Version: tpl.Version}
		var zones []models.Zone
		q := db.Order("name")
		if tpl.ZoneID != "" {
			q = q.Where("id = ?", tpl.ZoneID)
		}
		if err := q.Find(&zones).Error; err != nil {
			return out, fmt.Errorf("zones of template %s: %w", tpl.Name, err)
		}
		if len(zones) == 0 {
			item.Error = "no zone to roll out to"
		}
		for _, z := range zones {
			zp := TemplateZonePlan{ZoneID: z.ID, Zone: z.Name, Pools: []TemplatePoolPlan{}}
			var clusters []models.Cluster
			if err := db.Where("zone_id = ? AND hypervisor_type = ?", z.ID, tpl.Hypervisor).Order("name").Find(&clusters).Error; err != nil {
				return out, fmt.Errorf("clusters of zone %s: %w", z.Name, err)
			}
			for _, c := range clusters {
				var pools []models.StoragePool
				if err := db.Where("cluster_id = ?", c.ID).Order("name").Find(&pools).Error; err != nil {
					return out, fmt.Errorf("pools of cluster %s: %w", c.Name, err)
				}
				for _, p := range pools {
					zp.Pools = append(zp.Pools, TemplatePoolPlan{PoolID: p.ID, Name: p.Name, ClusterID: c.ID})
				}
			}
			sort.Slice(zp.Pools, func(i, j int) bool { return zp.Pools[i].Name < zp.Pools[j].Name })
			item.Zones = append(item.Zones, zp)
		}
		out.Templates = append(out.Templates, item)
	}
	return out, nil
}

// TemplateDownloadInput asks for one template's image in one zone's secondary store.
type TemplateDownloadInput struct {
	OperationID string `json:"operationId"`
	TemplateID  string `json:"templateId"`
	ZoneID      string `json:"zoneId"`
}

// TemplateDownloadResult is the image in the secondary store.
type TemplateDownloadResult struct {
	// Path is the decompressed image (a file the drivers seed from with a file:// URL).
	Path      string `json:"path"`
	SizeBytes int64  `json:"sizeBytes"`
	// Checksum is the digest of the downloaded bytes ("<algo>:<hex>").
	Checksum string `json:"checksum"`
	// Resumed is the offset a retried download resumed from (0 when it did not resume).
	Resumed int64 `json:"resumed,omitempty"`
	// Skipped: the zone's store already held the verified image.
	Skipped bool   `json:"skipped,omitempty"`
	SSVM    string `json:"ssvm,omitempty"`
}

// httpClient is the client downloads use: a.TemplateHTTP, or one with the system's roots.
func (a *Activities) httpClient() *http.Client {
	if a.TemplateHTTP != nil {
		return a.TemplateHTTP
	}
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment,
		ResponseHeaderTimeout: 30 * time.Second, TLSHandshakeTimeout: 15 * time.Second}}
}

// templateURL is a template's full URL (from its secret when it carries credentials).
func (a *Activities) templateURL(ctx context.Context, tpl models.Template) (string, error) {
	if tpl.URLSecretRef == "" {
		return tpl.URL, nil
	}
	b, err := a.Store.Secrets.GetSecret(ctx, tpl.URLSecretRef)
	if err != nil {
		return "", fmt.Errorf("template %s URL: %w", tpl.Name, err)
	}
	return string(b), nil
}

// SecondaryStoreDir is the local directory of a secondary store: a file:// URL or an absolute
// path. Other stores (nfs://) must be mounted and registered by their mount point.
func SecondaryStoreDir(st models.SecondaryStore) (string, error) {
	raw := strings.TrimSpace(st.URL)
	if strings.HasPrefix(raw, "/") {
		return filepath.Clean(raw), nil
	}
	u, err := url.Parse(raw)
	if err == nil && u.Scheme == "file" && u.Path != "" {
		return filepath.Clean(u.Path), nil
	}
	return "", final(ErrTypeDownload, "secondary store %s (%s) is not a local directory: mount it and register it as file:///<mount point>",
		st.Name, RedactURL(raw))
}

// zoneRef loads (or makes) the row of a template in a zone.
func (a *Activities) zoneRef(ctx context.Context, templateID, zoneID string) (models.TemplateZoneRef, error) {
	db := a.Store.DB.WithContext(ctx)
	ref := models.TemplateZoneRef{TemplateID: templateID, ZoneID: zoneID}
	if err := db.Clauses(clause.OnConflict{DoNothing: true}).Create(&ref).Error; err != nil {
		return ref, fmt.Errorf("template %s zone %s: %w", templateID, zoneID, err)
	}
	var got models.TemplateZoneRef
	err := db.Where("template_id = ? AND zone_id = ?", templateID, zoneID).First(&got).Error
	return got, err
}

func (a *Activities) updateZoneRef(ctx context.Context, id string, updates map[string]any) error {
	return a.Store.DB.WithContext(ctx).Model(&models.TemplateZoneRef{}).Where("id = ?", id).Updates(updates).Error
}

// TemplateDownload downloads a template's image into the zone's secondary store on behalf of
// the zone's SSVM role: a streaming HTTP(S) download, resumed with a Range request from the
// partial file after a crash (the heartbeat carries the offset), hashed on the way and
// verified, then decompressed (bz2, zip; an OVA is kept as is). Progress goes to heartbeats
// and to the zone's row ("x% Downloaded", "Download Complete"). A store that already holds
// the verified image is skipped. A checksum mismatch fails for good naming both digests and
// removes the partial file, so a new rollout downloads afresh.
func (a *Activities) TemplateDownload(ctx context.Context, in TemplateDownloadInput) (TemplateDownloadResult, error) {
	var res TemplateDownloadResult
	db := a.Store.DB.WithContext(ctx)
	var tpl models.Template
	if err := db.First(&tpl, "id = ?", in.TemplateID).Error; err != nil {
		return res, fmt.Errorf("load template %s: %w", in.TemplateID, err)
	}
	var store models.SecondaryStore
	if err := db.Where("zone_id = ?", in.ZoneID).Order("name").First(&store).Error; err != nil {
		return res, temporal.NewNonRetryableApplicationError("zone "+in.ZoneID+" has no secondary store", ErrTypeDownload, err)
	}
	dir, err := SecondaryStoreDir(store)
	if err != nil {
		return res, asTemporal(err)
	}
	ref, err := a.zoneRef(ctx, tpl.ID, in.ZoneID)
	if err != nil {
		return res, err
	}
	// The SSVM role of the zone does the download: name the SSVM that holds it.
	var ssvm models.SystemVM
	if err := db.Where("zone_id = ? AND type = ? AND removed_at IS NULL", in.ZoneID, models.TypeSSVM).
		Order("state = 'Running' DESC, name").First(&ssvm).Error; err == nil {
		res.SSVM = ssvm.Name
	}
	if ref.Checksum != "" && ref.InstallPath != "" {
		if st, err := os.Stat(ref.InstallPath); err == nil && st.Mode().IsRegular() {
			res.Path, res.SizeBytes, res.Checksum, res.Skipped = ref.InstallPath, st.Size(), ref.Checksum, true
			return res, nil
		}
	}
	full, err := a.templateURL(ctx, tpl)
	if err != nil {
		return res, err
	}
	sum, err := hypervisors.ParseChecksum(tpl.Checksum)
	if err != nil {
		return res, temporal.NewNonRetryableApplicationError("checksum: "+err.Error(), ErrTypeDownload, nil)
	}
	downloadName, imageName, compression := imageNames(full)
	tdir := filepath.Join(dir, "template", "tmpl", "1", tpl.ID)
	part := filepath.Join(tdir, downloadName+".part")
	image := filepath.Join(tdir, imageName)
	if err := a.updateZoneRef(ctx, ref.ID, map[string]any{"store_id": store.ID, "ssvm": res.SSVM}); err != nil {
		return res, err
	}

	var prev DownloadProgress
	if activity.IsActivity(ctx) && activity.HasHeartbeatDetails(ctx) {
		if err := activity.GetHeartbeatDetails(ctx, &prev); err != nil {
			prev = DownloadProgress{}
		}
	}
	if st, err := os.Stat(part); err == nil && st.Size() > 0 {
		res.Resumed = st.Size()
	}
	log := a.logger().With("template", tpl.Name, "zone", in.ZoneID, "url", RedactURL(full), "ssvm", res.SSVM)
	log.Info("template download", "resume_from", res.Resumed, "heartbeat_offset", prev.Offset)

	var mu sync.Mutex
	var lastHB, lastDB time.Time
	dl := &downloader{client: a.httpClient(), url: full, object: RedactURL(full), part: part, dig: newDigester(sum),
		report: func(p DownloadProgress) {
			mu.Lock()
			defer mu.Unlock()
			now := time.Now()
			if now.Sub(lastHB) >= 250*time.Millisecond || (p.Total > 0 && p.Offset == p.Total) {
				lastHB = now
				heartbeat(ctx, p)
			}
			if now.Sub(lastDB) >= time.Second || (p.Total > 0 && p.Offset == p.Total) {
				lastDB = now
				pct := 0
				if p.Total > 0 {
					pct = int(p.Offset * 100 / p.Total)
				}
				_ = a.updateZoneRef(context.WithoutCancel(ctx), ref.ID, map[string]any{
					"status": fmt.Sprintf("%d%% Downloaded", pct), "download_pct": pct, "bytes_done": p.Offset, "bytes_total": p.Total})
			}
		}}
	if _, err := os.Stat(image); err == nil && compression == "" {
		// The image was renamed into place before a crash: hash it again to verify.
		if err := os.Rename(image, part); err != nil {
			return res, err
		}
	}
	p, err := dl.run(ctx, prev)
	if err != nil {
		if p.Offset > 0 {
			// The retry resumes from here: the last heartbeat says how far the file is.
			heartbeat(ctx, p)
			pct := 0
			if p.Total > 0 {
				pct = int(p.Offset * 100 / p.Total)
			}
			_ = a.updateZoneRef(context.WithoutCancel(ctx), ref.ID, map[string]any{
				"status": fmt.Sprintf("%d%% Downloaded", pct), "download_pct": pct, "bytes_done": p.Offset, "bytes_total": p.Total})
		}
		log.Warn("template download failed", "offset", p.Offset, "err", err)
		return res, asTemporal(err)
	}
	if err := dl.dig.verify(); err != nil {
		_ = os.Remove(part)
		log.Error("template checksum mismatch", "err", err)
		return res, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeChecksum, nil)
	}
	res.Checksum = dl.dig.sum()
	if err := a.updateZoneRef(ctx, ref.ID, map[string]any{"status": models.TemplateDownloadComplete, "download_pct": 100,
		"bytes_done": p.Total, "bytes_total": p.Total}); err != nil {
		return res, err
	}
	heartbeat(ctx, p)
	size, err := heartbeatWhileErr(ctx, p, func() (int64, error) {
		return unpack(ctx, part, image, compression, nil)
	})
	if err != nil {
		if errors.As(err, new(*finalError)) {
			_ = os.Remove(part)
		}
		return res, asTemporal(err)
	}
	res.Path, res.SizeBytes = image, size
	if err := a.updateZoneRef(ctx, ref.ID, map[string]any{"install_path": image, "checksum": res.Checksum}); err != nil {
		return res, err
	}
	if err := db.Model(&models.Template{}).Where("id = ? AND (size_bytes = 0 OR size_bytes IS NULL)", tpl.ID).
		Update("size_bytes", size).Error; err != nil {
		return res, err
	}
	log.Info("template downloaded", "bytes", p.Total, "image_bytes", size, "checksum", res.Checksum, "resumed", res.Resumed)
	return res, nil
}

// heartbeatWhileErr is heartbeatWhile for a function with a result.
func heartbeatWhileErr[T any](ctx context.Context, details any, f func() (T, error)) (T, error) {
	var out T
	err := heartbeatWhile(ctx, details, func() error {
		var err error
		out, err = f()
		return err
	})
	return out, err
}

func (a *Activities) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}
