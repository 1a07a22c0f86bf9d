package models

import "time"

// HealthRecreation records one recreation started by health checks: which router, for which
// check. Counted per router and check within router.health.checks.recreate.window for
// router.health.checks.recreate.limit. The Operation row with the same ID journals the run.
type HealthRecreation struct {
	OperationID string    `gorm:"primaryKey;size:36" json:"operationid"`
	RouterID    string    `gorm:"size:36;index:idx_health_recreation_router" json:"routerid"`
	CheckName   string    `gorm:"size:128;index:idx_health_recreation_router" json:"checkname"`
	ZoneID      string    `gorm:"size:36;index" json:"zoneid"`
	Failures    int       `json:"failures"`
	CreatedAt   time.Time `gorm:"index" json:"created"`
}
