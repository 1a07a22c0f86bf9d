package metrics

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// Template download states of a zone (sysvm_template_zone_state's state label), normalized
// from TemplateZoneRef.Status ("x% Downloaded", "Download Complete", "Installing", "Ready",
// "Failed: <reason>") so the reason and the percentage never become label values.
const (
	TemplateZoneDownloading = "downloading"
	TemplateZoneDownloaded  = "downloaded"
	TemplateZoneInstalling  = "installing"
	TemplateZoneReady       = "ready"
	TemplateZoneFailed      = "failed"
	TemplateZoneOther       = "other"
)

// TemplateZoneState maps a zone ref's free-text status to one of the TemplateZone* states.
func TemplateZoneState(status string) string {
	switch {
	case strings.HasPrefix(status, models.TemplateFailed):
		return TemplateZoneFailed
	case status == models.TemplateDownloadComplete:
		return TemplateZoneDownloaded
	case status == models.TemplateInstalling:
		return TemplateZoneInstalling
	case status == models.TemplateReady:
		return TemplateZoneReady
	case strings.HasSuffix(status, "% Downloaded"), status == models.TemplateDownloading:
		return TemplateZoneDownloading
	}
	return TemplateZoneOther
}

type templateInfo struct{ Name, Hypervisor string }

// collectTemplates reads the template rollout's rows: each zone's download (state, bytes done
// and total, switched) and each pool's seed state counted per template, hypervisor and zone.
func (f *FleetCollector) collectTemplates(ctx context.Context, gauge func(*prometheus.Desc, float64, ...string), zone func(string) string) error {
	db := f.store.DB.WithContext(ctx)
	var tpls []struct{ ID, Name, Hypervisor string }
	if err := db.Model(&models.Template{}).Select("id, name, hypervisor").Scan(&tpls).Error; err != nil {
		return fmt.Errorf("templates: %w", err)
	}
	info := make(map[string]templateInfo, len(tpls))
	for _, t := range tpls {
		info[t.ID] = templateInfo{t.Name, t.Hypervisor}
	}
	tpl := func(id string) templateInfo {
		if i, ok := info[id]; ok {
			return i
		}
		return templateInfo{Name: id}
	}

	var zrefs []models.TemplateZoneRef
	if err := db.Select("template_id, zone_id, status, bytes_done, bytes_total, switched").Find(&zrefs).Error; err != nil {
		return fmt.Errorf("template zone refs: %w", err)
	}
	// Keyed by label values, not row: two templates registered under one name share series
	// (a duplicate series would fail the whole scrape).
	states := map[[4]string]int64{}
	done := map[[2]string]int64{}
	total := map[[2]string]int64{}
	switched := map[[3]string]float64{}
	for _, r := range zrefs {
		t, z := tpl(r.TemplateID), zone(r.ZoneID)
		st := TemplateZoneState(r.Status)
		for _, s := range []string{TemplateZoneDownloading, TemplateZoneDownloaded, TemplateZoneInstalling, TemplateZoneReady, TemplateZoneFailed, TemplateZoneOther} {
			k := [4]string{t.Name, t.Hypervisor, z, s}
			states[k] += 0
			if s == st {
				states[k]++
			}
		}
		done[[2]string{t.Name, z}] += r.BytesDone
		total[[2]string{t.Name, z}] += r.BytesTotal
		k := [3]string{t.Name, t.Hypervisor, z}
		switched[k] += 0
		if r.Switched {
			switched[k] = 1
		}
	}
	for k, n := range states {
		gauge(f.tplZoneState, float64(n), k[0], k[1], k[2], k[3])
	}
	for k, n := range done {
		gauge(f.tplBytes, float64(n), k[0], k[1])
	}
	for k, n := range total {
		gauge(f.tplBytesTotal, float64(n), k[0], k[1])
	}
	for k, v := range switched {
		gauge(f.tplSwitched, v, k[0], k[1], k[2])
	}

	var prefs []struct {
		TemplateID, ZoneID, State string
		N                         int64
	}
	if err := db.Model(&models.TemplatePoolRef{}).Select("template_id, zone_id, state, COUNT(*) AS n").
		Group("template_id, zone_id, state").Scan(&prefs).Error; err != nil {
		return fmt.Errorf("template pool refs: %w", err)
	}
	pools := map[[4]string]int64{}
	for _, p := range prefs {
		t := tpl(p.TemplateID)
		pools[[4]string{t.Name, t.Hypervisor, zone(p.ZoneID), p.State}] += p.N
	}
	for k, n := range pools {
		gauge(f.tplPoolState, float64(n), k[0], k[1], k[2], k[3])
	}
	return nil
}

// collectUpgrades reads what the database knows of router upgrades: routers that require
// upgrade per zone (computed as the API computes requiresupgrade), running upgrade operations
// per zone, and running upgrades with an open failure-budget alert. The per-router progress
// of a running upgrade (pending, upgrading, done, failed) lives in the workflow's state and is
// not read here.
func (f *FleetCollector) collectUpgrades(ctx context.Context, zones []models.Zone, gauge func(*prometheus.Desc, float64, ...string), zone func(string) string) error {
	db := f.store.DB.WithContext(ctx)
	var vers []struct {
		ZoneID, Version, SoftwareVersion string
		N                                int64
	}
	if err := db.Model(&models.SystemVM{}).Select("zone_id, version, software_version, COUNT(*) AS n").
		Where("type = ? AND removed_at IS NULL", models.TypeRouter).Group("zone_id, version, software_version").Scan(&vers).Error; err != nil {
		return fmt.Errorf("router versions: %w", err)
	}
	minreq := &models.MinReqVersions{Settings: f.store.Settings}
	requiring := map[string]int64{}
	running := map[string]int64{}
	paused := map[string]int64{}
	for _, z := range zones {
		requiring[z.ID], running[z.ID], paused[z.ID] = 0, 0, 0
	}
	for _, v := range vers {
		req, _, err := minreq.RouterRequiresUpgrade(ctx, models.SystemVM{ZoneID: v.ZoneID, Version: v.Version, SoftwareVersion: v.SoftwareVersion})
		if err != nil {
			return err
		}
		if req {
			requiring[v.ZoneID] += v.N
		}
	}

	var ops []struct {
		ZoneID string
		N      int64
	}
	if err := db.Model(&models.Operation{}).Select("zone_id, COUNT(*) AS n").
		Where("kind = ? AND status = ?", workflows.RouterUpgradeOperationKind, models.OpRunning).
		Group("zone_id").Scan(&ops).Error; err != nil {
		return fmt.Errorf("running upgrades: %w", err)
	}
	for _, o := range ops {
		running[o.ZoneID] += o.N
	}

	var ps []struct {
		ZoneID string
		N      int64
	}
	if err := db.Table("alerts AS a").Joins("JOIN operations AS o ON o.id = a.resource_id").
		Select("a.zone_id AS zone_id, COUNT(DISTINCT o.id) AS n").
		Where("a.type = ? AND a.cleared_at IS NULL AND o.kind = ? AND o.status = ?",
			activities.AlertUpgradeBudget, workflows.RouterUpgradeOperationKind, models.OpRunning).
		Group("a.zone_id").Scan(&ps).Error; err != nil {
		return fmt.Errorf("paused upgrades: %w", err)
	}
	for _, p := range ps {
		paused[p.ZoneID] += p.N
	}
	for id, n := range requiring {
		gauge(f.requiringUpgrade, float64(n), zone(id))
	}
	for id, n := range running {
		gauge(f.upgradesRunning, float64(n), zone(id))
	}
	for id, n := range paused {
		gauge(f.upgradesPaused, float64(n), zone(id))
	}
	return nil
}
