package models

import (
	"time"

	"gorm.io/gorm"
)

// migrateTemplates is the template rollout's schema step: registration fields of templates,
// the per-pool state of a seed, and the per-zone download and switch (template_zone_refs).
func migrateTemplates(tx *gorm.DB) error {
	type Template struct {
		Bits               int
		URLSecretRef       string `gorm:"size:255"`
		MinVersionSet      bool
		PreviousMinVersion string `gorm:"size:64"`
	}
	if err := AddColumns(tx, &Template{}, "Bits", "URLSecretRef", "MinVersionSet", "PreviousMinVersion"); err != nil {
		return err
	}
	type TemplatePoolRef struct {
		ZoneID    string `gorm:"size:36"`
		PoolName  string `gorm:"size:255"`
		Checksum  string `gorm:"size:200"`
		SizeBytes int64
		Error     string `gorm:"type:text"`
	}
	if err := AddColumns(tx, &TemplatePoolRef{}, "ZoneID", "PoolName", "Checksum", "SizeBytes", "Error"); err != nil {
		return err
	}
	type TemplateZoneRef struct {
		ID               string `gorm:"primaryKey;size:36"`
		CreatedAt        time.Time
		UpdatedAt        time.Time
		TemplateID       string `gorm:"size:36;uniqueIndex:idx_tpl_zone"`
		ZoneID           string `gorm:"size:36;uniqueIndex:idx_tpl_zone"`
		StoreID          string `gorm:"size:36"`
		SSVM             string `gorm:"column:ssvm;size:255"`
		Status           string `gorm:"size:1024"`
		DownloadPct      int
		BytesDone        int64
		BytesTotal       int64
		InstallPath      string `gorm:"size:1024"`
		Checksum         string `gorm:"size:200"`
		Switched         bool
		SwitchedAt       *time.Time
		PreviousTemplate string `gorm:"size:255"`
		PreviousSet      bool
	}
	if tx.Migrator().HasTable(&TemplateZoneRef{}) {
		return nil
	}
	return tx.Migrator().CreateTable(&TemplateZoneRef{})
}
