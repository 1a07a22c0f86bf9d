package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
)

// TemplateSeedInput asks for a downloaded template image in one primary storage pool.
type TemplateSeedInput struct {
	OperationID string `json:"operationId"`
	TemplateID  string `json:"templateId"`
	ZoneID      string `json:"zoneId"`
	PoolID      string `json:"poolId"`
	// Path is the image in the secondary store; Checksum the digest of the download.
	Path     string `json:"path"`
	Checksum string `json:"checksum"`
}

// TemplateSeedResult is a pool's copy of the template.
type TemplateSeedResult struct {
	PoolID    string `json:"poolId"`
	Pool      string `json:"pool"`
	State     string `json:"state"`
	Ref       string `json:"ref,omitempty"`
	SizeBytes int64  `json:"sizeBytes"`
	// Skipped: the pool already held the template from the same bytes (same checksum).
	Skipped bool `json:"skipped,omitempty"`
}

// TemplateSeedPool seeds the downloaded image into one pool through the pool's hypervisor
// driver (a libvirt volume upload, a vcsim datastore import, a VDI import over XAPI's HTTP),
// from the secondary store's file (file:// URL). A pool whose row says Ready from the same
// checksum is skipped; the driver itself returns a template already present under its name,
// so a retry never copies twice. The pool's row goes Installing, then Ready with the driver's
// reference and size.
func (a *Activities) TemplateSeedPool(ctx context.Context, in TemplateSeedInput) (TemplateSeedResult, error) {
	res := TemplateSeedResult{PoolID: in.PoolID}
	db := a.Store.DB.WithContext(ctx)
	var tpl models.Template
	if err := db.First(&tpl, "id = ?", in.TemplateID).Error; err != nil {
		return res, fmt.Errorf("load template %s: %w", in.TemplateID, err)
	}
	var pool models.StoragePool
	if err := db.First(&pool, "id = ?", in.PoolID).Error; err != nil {
		return res, temporal.NewNonRetryableApplicationError("no storage pool "+in.PoolID, ErrTypeNotFound, err)
	}
	res.Pool = pool.Name
	ref := models.TemplatePoolRef{TemplateID: tpl.ID, PoolID: pool.ID, ZoneID: in.ZoneID, PoolName: pool.Name,
		State: models.TemplateInstalling}
	if err := db.Clauses(clause.OnConflict{DoNothing: true}).Create(&ref).Error; err != nil {
		return res, fmt.Errorf("record template %s in pool %s: %w", tpl.Name, pool.Name, err)
	}
	// A fresh value: First would also match the primary key of a struct that has one set.
	ref = models.TemplatePoolRef{}
	if err := db.Where("template_id = ? AND pool_id = ?", tpl.ID, pool.ID).First(&ref).Error; err != nil {
		return res, fmt.Errorf("read template %s in pool %s: %w", tpl.Name, pool.Name, err)
	}
	if ref.State == models.TemplateReady && ref.Checksum != "" && ref.Checksum == in.Checksum {
		res.State, res.Ref, res.SizeBytes, res.Skipped = models.TemplateReady, ref.InstallPath, ref.SizeBytes, true
		return res, nil
	}
	if err := a.updatePoolRef(ctx, ref.ID, map[string]any{"state": models.TemplateInstalling, "error": "", "download_pct": 0,
		"zone_id": in.ZoneID, "pool_name": pool.Name}); err != nil {
		return res, err
	}
	_ = a.updateZoneStatus(ctx, tpl.ID, in.ZoneID, models.TemplateInstalling)
	clusterID := pool.ClusterID
	if clusterID == "" {
		var c models.Cluster
		if err := db.Where("zone_id = ? AND hypervisor_type = ?", pool.ZoneID, tpl.Hypervisor).Order("name").First(&c).Error; err != nil {
			return res, temporal.NewNonRetryableApplicationError("no "+tpl.Hypervisor+" cluster for zone-wide pool "+pool.Name, ErrTypeNotFound, err)
		}
		clusterID = c.ID
	}
	d, err := a.driverFor(ctx, clusterID)
	if err != nil {
		return res, err
	}
	var mu sync.Mutex
	var last time.Time
	progress := func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) < time.Second || total <= 0 {
			return
		}
		last = time.Now()
		heartbeat(ctx, done)
		_ = a.updatePoolRef(context.WithoutCancel(ctx), ref.ID, map[string]any{"download_pct": int(done * 100 / total)})
	}
	var got hypervisors.Template
	err = heartbeatWhile(ctx, in.PoolID, func() error {
		var err error
		got, err = d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: tpl.Name, URL: "file://" + in.Path,
			Format: tpl.Format, Pool: pool.Name}, progress)
		return err
	})
	if err != nil {
		if errors.Is(err, hypervisors.ErrUnreachable) {
			a.Drivers.Forget(clusterID)
		}
		return res, classify(fmt.Errorf("seed %s into pool %s: %w", tpl.Name, pool.Name, err))
	}
	if err := a.updatePoolRef(ctx, ref.ID, map[string]any{"state": models.TemplateReady, "download_pct": 100,
		"install_path": got.Ref, "size_bytes": got.SizeBytes, "checksum": in.Checksum, "error": ""}); err != nil {
		return res, err
	}
	a.logger().Info("template seeded", "template", tpl.Name, "pool", pool.Name, "ref", got.Ref, "bytes", got.SizeBytes)
	res.State, res.Ref, res.SizeBytes = models.TemplateReady, got.Ref, got.SizeBytes
	return res, nil
}

func (a *Activities) updatePoolRef(ctx context.Context, id string, updates map[string]any) error {
	return a.Store.DB.WithContext(ctx).Model(&models.TemplatePoolRef{}).Where("id = ?", id).Updates(updates).Error
}

func (a *Activities) updateZoneStatus(ctx context.Context, templateID, zoneID, status string) error {
	return a.Store.DB.WithContext(ctx).Model(&models.TemplateZoneRef{}).
		Where("template_id = ? AND zone_id = ?", templateID, zoneID).Update("status", status).Error
}

// TemplateFailureInput records why a zone's download or a pool's seed failed for good.
type TemplateFailureInput struct {
	TemplateID string `json:"templateId"`
	ZoneID     string `json:"zoneId"`
	// PoolID is empty for the zone's download.
	PoolID string `json:"poolId,omitempty"`
	Reason string `json:"reason"`
}

// TemplateRecordFailure writes "Failed: <reason>" to the zone's row (a download) or Failed
// and the reason to the pool's row (a seed).
func (a *Activities) TemplateRecordFailure(ctx context.Context, in TemplateFailureInput) error {
	reason := truncate(in.Reason, 900)
	db := a.Store.DB.WithContext(ctx)
	if in.PoolID != "" {
		return db.Model(&models.TemplatePoolRef{}).Where("template_id = ? AND pool_id = ?", in.TemplateID, in.PoolID).
			Updates(map[string]any{"state": models.TemplateFailed, "error": reason}).Error
	}
	if _, err := a.zoneRef(ctx, in.TemplateID, in.ZoneID); err != nil {
		return err
	}
	return a.updateZoneStatus(ctx, in.TemplateID, in.ZoneID, models.TemplateFailed+": "+reason)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// TemplateSettingName is router.template.<hypervisor> of a template's hypervisor.
func TemplateSettingName(hypervisor string) string {
	if t, err := hypervisors.ParseType(hypervisor); err == nil {
		return "router.template." + t.SettingSuffix()
	}
	return "router.template." + strings.ToLower(strings.ReplaceAll(hypervisor, "-", ""))
}

// TemplateSwitchInput switches a zone to a template once its pools are Ready.
type TemplateSwitchInput struct {
	OperationID string   `json:"operationId"`
	TemplateID  string   `json:"templateId"`
	ZoneID      string   `json:"zoneId"`
	PoolIDs     []string `json:"poolIds"`
}

// TemplateSwitchResult is the setting changed.
type TemplateSwitchResult struct {
	Setting  string `json:"setting"`
	Value    string `json:"value"`
	Previous string `json:"previous,omitempty"`
}

// TemplateSwitch sets the zone's router.template.<hypervisor> to the template, live (createVM
// reads the setting when it runs), only when every pool the zone needs is Ready. The zone's
// override before the switch is kept on the zone's row for a rollback; a retried switch keeps
// the first one. The zone's status becomes Ready.
func (a *Activities) TemplateSwitch(ctx context.Context, in TemplateSwitchInput) (TemplateSwitchResult, error) {
	db := a.Store.DB.WithContext(ctx)
	var tpl models.Template
	if err := db.First(&tpl, "id = ?", in.TemplateID).Error; err != nil {
		return TemplateSwitchResult{}, fmt.Errorf("load template %s: %w", in.TemplateID, err)
	}
	res := TemplateSwitchResult{Setting: TemplateSettingName(tpl.Hypervisor), Value: tpl.Name}
	if len(in.PoolIDs) > 0 {
		var ready int64
		if err := db.Model(&models.TemplatePoolRef{}).Where("template_id = ? AND pool_id IN ? AND state = ?",
			tpl.ID, in.PoolIDs, models.TemplateReady).Count(&ready).Error; err != nil {
			return res, err
		}
		if int(ready) != len(in.PoolIDs) {
			return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"not switching %s: %d of %d pools are Ready", res.Setting, ready, len(in.PoolIDs)), ErrTypeNotAllowed, nil)
		}
	}
	ref, err := a.zoneRef(ctx, tpl.ID, in.ZoneID)
	if err != nil {
		return res, err
	}
	err = db.Transaction(func(tx *gorm.DB) error {
		var cur models.Setting
		err := tx.Where("name = ? AND scope = ? AND scope_id = ?", res.Setting, models.ScopeZone, in.ZoneID).First(&cur).Error
		had := err == nil
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
			return err
		}
		res.Previous = cur.Value
		if !ref.Switched {
			now := time.Now().UTC()
			if err := tx.Model(&models.TemplateZoneRef{}).Where("id = ?", ref.ID).Updates(map[string]any{
				"switched": true, "switched_at": &now, "previous_template": cur.Value, "previous_set": had}).Error; err != nil {
				return err
			}
		} else {
			res.Previous = ref.PreviousTemplate
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("record switch of %s: %w", res.Setting, err)
	}
	if _, err := a.Store.Settings.Set(ctx, res.Setting, models.ScopeZone, in.ZoneID, tpl.Name); err != nil {
		return res, fmt.Errorf("set %s: %w", res.Setting, err)
	}
	if err := a.updateZoneStatus(ctx, tpl.ID, in.ZoneID, models.TemplateReady); err != nil {
		return res, err
	}
	if err := db.Model(&models.Template{}).Where("id = ?", tpl.ID).Update("state", models.TemplateReady).Error; err != nil {
		return res, err
	}
	_ = a.Store.AddEvent(ctx, models.Event{Type: "TEMPLATE.SWITCH", Level: "INFO", ZoneID: in.ZoneID, OperationID: in.OperationID,
		ResourceType: "Template", ResourceID: tpl.ID,
		Description: fmt.Sprintf("%s set to %s in zone %s (was %q)", res.Setting, tpl.Name, in.ZoneID, res.Previous)})
	return res, nil
}

// TemplateMinVersion sets minreq.sysvmtemplate.version to the template's version, keeping the
// value before on the template for a rollback (a retry keeps the first one).
func (a *Activities) TemplateMinVersion(ctx context.Context, templateID string) (TemplateSwitchResult, error) {
	const name = "minreq.sysvmtemplate.version"
	var tpl models.Template
	if err := a.Store.DB.WithContext(ctx).First(&tpl, "id = ?", templateID).Error; err != nil {
		return TemplateSwitchResult{}, err
	}
	res := TemplateSwitchResult{Setting: name, Value: tpl.Version}
	if tpl.Version == "" {
		return res, temporal.NewNonRetryableApplicationError("template "+tpl.Name+" has no version", ErrTypeNotAllowed, nil)
	}
	prev, err := a.Store.Settings.String(ctx, name, models.Scope{})
	if err != nil {
		return res, err
	}
	if !tpl.MinVersionSet {
		if err := a.Store.DB.WithContext(ctx).Model(&models.Template{}).Where("id = ?", tpl.ID).
			Updates(map[string]any{"min_version_set": true, "previous_min_version": prev}).Error; err != nil {
			return res, err
		}
		res.Previous = prev
	} else {
		res.Previous = tpl.PreviousMinVersion
	}
	if _, err := a.Store.Settings.Set(ctx, name, models.ScopeGlobal, "", tpl.Version); err != nil {
		return res, err
	}
	return res, nil
}

// TemplateRollbackResult lists the settings a rollback set back.
type TemplateRollbackResult struct {
	TemplateID string                 `json:"templateid"`
	Restored   []TemplateSwitchResult `json:"restored"`
}

// RollbackTemplate sets back what the rollouts of a template switched: each zone's
// router.template.<hypervisor> to its value before (removing the zone override when there
// was none), where it still names this template, and minreq.sysvmtemplate.version when the
// rollout set it. New system VMs use the previous template at once.
func RollbackTemplate(ctx context.Context, store *models.Store, templateID string) (TemplateRollbackResult, error) {
	res := TemplateRollbackResult{TemplateID: templateID, Restored: []TemplateSwitchResult{}}
	db := store.DB.WithContext(ctx)
	var tpl models.Template
	if err := db.First(&tpl, "id = ?", templateID).Error; err != nil {
		return res, err
	}
	name := TemplateSettingName(tpl.Hypervisor)
	var refs []models.TemplateZoneRef
	if err := db.Where("template_id = ? AND switched = ?", tpl.ID, true).Order("zone_id").Find(&refs).Error; err != nil {
		return res, err
	}
	for _, ref := range refs {
		cur, err := store.Settings.String(ctx, name, models.Scope{ZoneID: ref.ZoneID})
		if err != nil {
			return res, err
		}
		if cur == tpl.Name {
			if ref.PreviousSet {
				if _, err := store.Settings.Set(ctx, name, models.ScopeZone, ref.ZoneID, ref.PreviousTemplate); err != nil {
					return res, fmt.Errorf("set %s back in zone %s: %w", name, ref.ZoneID, err)
				}
			} else if err := store.Settings.Reset(ctx, name, models.ScopeZone, ref.ZoneID); err != nil {
				return res, fmt.Errorf("reset %s in zone %s: %w", name, ref.ZoneID, err)
			}
			now, _ := store.Settings.String(ctx, name, models.Scope{ZoneID: ref.ZoneID})
			res.Restored = append(res.Restored, TemplateSwitchResult{Setting: name + " (zone " + ref.ZoneID + ")", Value: now, Previous: cur})
		}
		if err := db.Model(&models.TemplateZoneRef{}).Where("id = ?", ref.ID).
			Updates(map[string]any{"switched": false, "switched_at": nil}).Error; err != nil {
			return res, err
		}
	}
	if tpl.MinVersionSet {
		const mv = "minreq.sysvmtemplate.version"
		cur, err := store.Settings.String(ctx, mv, models.Scope{})
		if err != nil {
			return res, err
		}
		if cur == tpl.Version {
			if tpl.PreviousMinVersion == "" {
				err = store.Settings.Reset(ctx, mv, models.ScopeGlobal, "")
			} else {
				_, err = store.Settings.Set(ctx, mv, models.ScopeGlobal, "", tpl.PreviousMinVersion)
			}
			if err != nil {
				return res, fmt.Errorf("set %s back: %w", mv, err)
			}
			res.Restored = append(res.Restored, TemplateSwitchResult{Setting: mv, Value: tpl.PreviousMinVersion, Previous: cur})
		}
		if err := db.Model(&models.Template{}).Where("id = ?", tpl.ID).Update("min_version_set", false).Error; err != nil {
			return res, err
		}
	}
	_ = store.AddEvent(ctx, models.Event{Type: "TEMPLATE.ROLLBACK", Level: "INFO", ResourceType: "Template", ResourceID: tpl.ID,
		Description: fmt.Sprintf("rollback of %s: %d settings set back", tpl.Name, len(res.Restored))})
	return res, nil
}

// TemplateRollOnInput names the zone and hypervisor whose SSVMs and CPVMs a rollout recreates.
type TemplateRollOnInput struct {
	TemplateID string `json:"templateId"`
	ZoneID     string `json:"zoneId"`
}

// TemplateRollOnVM is one SSVM or CPVM to recreate on the new template.
type TemplateRollOnVM struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// TemplateRollOnVMs lists the zone's SSVMs and CPVMs on the template's hypervisor that do not
// run it yet (not destroyed), by type then name, so a rollout recreates them one at a time.
func (a *Activities) TemplateRollOnVMs(ctx context.Context, in TemplateRollOnInput) ([]TemplateRollOnVM, error) {
	var tpl models.Template
	if err := a.Store.DB.WithContext(ctx).First(&tpl, "id = ?", in.TemplateID).Error; err != nil {
		return nil, fmt.Errorf("load template %s: %w", in.TemplateID, err)
	}
	var vms []models.SystemVM
	if err := a.Store.DB.WithContext(ctx).Where("zone_id = ? AND hypervisor_type = ? AND type IN ? AND state <> ? AND template_id <> ?",
		in.ZoneID, tpl.Hypervisor, []string{models.TypeSSVM, models.TypeCPVM}, models.StateDestroyed, tpl.ID).
		Order("type DESC, name").Find(&vms).Error; err != nil {
		return nil, fmt.Errorf("system VMs of zone %s: %w", in.ZoneID, err)
	}
	out := make([]TemplateRollOnVM, 0, len(vms))
	for _, vm := range vms {
		out = append(out, TemplateRollOnVM{ID: vm.ID, Name: vm.Name, Type: vm.Type})
	}
	return out, nil
}
