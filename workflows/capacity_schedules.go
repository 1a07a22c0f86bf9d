package workflows

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// capacityScanTimeout bounds one capacity scan (its deploys included).
const capacityScanTimeout = 30 * time.Minute

// CapacitySchedule is the wanted state of one zone's capacity scan schedule.
type CapacitySchedule struct {
	ID       string        `json:"id"`
	ZoneID   string        `json:"zoneId"`
	Interval time.Duration `json:"interval"`
	Paused   bool          `json:"paused"`
	Note     string        `json:"note"`
}

// DesiredCapacitySchedules derives every zone's capacity scan schedule from
// consoleproxy.capacityscan.interval (seconds; a zone's value wins; 0 pauses).
func DesiredCapacitySchedules(ctx context.Context, store *models.Store) ([]CapacitySchedule, error) {
	var zones []models.Zone
	if err := store.DB.WithContext(ctx).Order("id").Find(&zones).Error; err != nil {
		return nil, fmt.Errorf("list zones: %w", err)
	}
	out := make([]CapacitySchedule, 0, len(zones))
	for _, z := range zones {
		secs, err := store.Settings.Int(ctx, activities.SettingCapacityScanInterval, models.Scope{ZoneID: z.ID})
		if err != nil {
			return nil, fmt.Errorf("zone %s: %w", z.Name, err)
		}
		s := CapacitySchedule{ID: CapacityScheduleID(z.ID), ZoneID: z.ID, Interval: time.Duration(secs) * time.Second}
		if secs <= 0 {
			s.Paused, s.Note = true, fmt.Sprintf("paused: %s is 0 in zone %s", activities.SettingCapacityScanInterval, z.Name)
		} else {
			s.Note = fmt.Sprintf("every %d seconds (%s in zone %s)", secs, activities.SettingCapacityScanInterval, z.Name)
		}
		out = append(out, s)
	}
	return out, nil
}

func (s CapacitySchedule) target() Target { return ZoneTarget(s.ID, s.ZoneID, CapacityScanKind) }

// managed is the schedule as the shared sync keeps it.
func (s CapacitySchedule) managed() managedSchedule {
	return managedSchedule{ID: s.ID, Interval: s.Interval, Paused: s.Paused, Note: s.Note, Target: s.target(),
		Memo: map[string]any{"zoneId": s.ZoneID},
		Action: &client.ScheduleWorkflowAction{ID: s.ID, Workflow: CapacityScanWorkflowName, Args: []any{CapacityScanInput{ZoneID: s.ZoneID}},
			TaskQueue: TaskQueue, WorkflowExecutionTimeout: capacityScanTimeout, TypedSearchAttributes: s.target().TypedSearchAttributes(),
			StaticSummary: "CPVM and SSVM capacity scan of zone " + s.ZoneID}}
}

// SyncCapacitySchedules creates, updates, pauses and unpauses every zone's capacity scan
// schedule so it matches consoleproxy.capacityscan.interval, and deletes those of zones that
// are gone. Overlapping scans are skipped. Call it at worker start and after the setting
// changes (KeepCapacitySchedulesInSync also calls it on a clock); it is idempotent.
func SyncCapacitySchedules(ctx context.Context, c client.Client, store *models.Store) (ScheduleSync, error) {
	want, err := DesiredCapacitySchedules(ctx, store)
	if err != nil {
		return ScheduleSync{}, err
	}
	managed := make([]managedSchedule, len(want))
	for i, s := range want {
		managed[i] = s.managed()
	}
	return syncManagedSchedules(ctx, c, managed, func(id string) bool { return strings.HasPrefix(id, "capacity:") })
}

// KeepCapacitySchedulesInSync runs SyncCapacitySchedules now and then every interval until
// ctx ends, so zones added or removed and settings changed elsewhere reach the schedules.
func KeepCapacitySchedulesInSync(ctx context.Context, c client.Client, store *models.Store, interval time.Duration, logger *slog.Logger) {
	keepInSync(ctx, interval, logger, "capacity scan schedules", func(ctx context.Context) (ScheduleSync, error) {
		return SyncCapacitySchedules(ctx, c, store)
	})
}
