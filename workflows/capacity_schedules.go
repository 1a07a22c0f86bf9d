package workflows

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

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

func (s CapacitySchedule) spec() client.ScheduleSpec {
	every := s.Interval
	if every <= 0 {
		every = pausedPlaceholder
	}
	return client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}}
}

func (s CapacitySchedule) action() *client.ScheduleWorkflowAction {
	return &client.ScheduleWorkflowAction{ID: s.ID, Workflow: CapacityScanWorkflowName, Args: []any{CapacityScanInput{ZoneID: s.ZoneID}},
		TaskQueue: TaskQueue, WorkflowExecutionTimeout: capacityScanTimeout, TypedSearchAttributes: s.target().TypedSearchAttributes(),
		StaticSummary: "CPVM and SSVM capacity scan of zone " + s.ZoneID}
}

// SyncCapacitySchedules creates, updates, pauses and unpauses every zone's capacity scan
// schedule so it matches consoleproxy.capacityscan.interval, and deletes those of zones that
// are gone. Overlapping scans are skipped. Call it at worker start and after the setting
// changes (KeepCapacitySchedulesInSync also calls it on a clock); it is idempotent.
func SyncCapacitySchedules(ctx context.Context, c client.Client, store *models.Store) (ScheduleSync, error) {
	var out ScheduleSync
	want, err := DesiredCapacitySchedules(ctx, store)
	if err != nil {
		return out, err
	}
	var errs []error
	wanted := map[string]bool{}
	for _, s := range want {
		wanted[s.ID] = true
		if err := syncCapacitySchedule(ctx, c, s, &out); err != nil {
			errs = append(errs, fmt.Errorf("schedule %s: %w", s.ID, err))
		}
	}
	it, err := c.ScheduleClient().List(ctx, client.ScheduleListOptions{PageSize: 500})
	if err != nil {
		return out, errors.Join(append(errs, fmt.Errorf("list schedules: %w", err))...)
	}
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			errs = append(errs, fmt.Errorf("list schedules: %w", err))
			break
		}
		if !strings.HasPrefix(e.ID, "capacity:") || wanted[e.ID] {
			continue
		}
		if err := c.ScheduleClient().GetHandle(ctx, e.ID).Delete(ctx); err != nil {
			var nf *serviceerror.NotFound
			if !errors.As(err, &nf) {
				errs = append(errs, fmt.Errorf("delete schedule %s of a removed zone: %w", e.ID, err))
			}
			continue
		}
		out.Deleted = append(out.Deleted, e.ID)
	}
	return out, errors.Join(errs...)
}

func syncCapacitySchedule(ctx context.Context, c client.Client, s CapacitySchedule, out *ScheduleSync) error {
	h := c.ScheduleClient().GetHandle(ctx, s.ID)
	desc, err := h.Describe(ctx)
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		_, err := c.ScheduleClient().Create(ctx, client.ScheduleOptions{ID: s.ID, Spec: s.spec(), Action: s.action(),
			Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP, CatchupWindow: healthScheduleCatchup, Paused: s.Paused, Note: s.Note,
			Memo: map[string]any{"zoneId": s.ZoneID}, TypedSearchAttributes: s.target().TypedSearchAttributes()})
		if err == nil {
			out.Created = append(out.Created, s.ID)
			return nil
		}
		if !errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
			return fmt.Errorf("create: %w", err)
		}
		if desc, err = h.Describe(ctx); err != nil {
			return fmt.Errorf("describe: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("describe: %w", err)
	}
	sched := desc.Schedule
	paused := sched.State != nil && sched.State.Paused
	act, ok := sched.Action.(*client.ScheduleWorkflowAction)
	same := ok && workflowTypeName(act.Workflow) == CapacityScanWorkflowName && act.TaskQueue == TaskQueue &&
		sched.Spec != nil && len(sched.Spec.Intervals) == 1 && sched.Spec.Intervals[0].Every == s.spec().Intervals[0].Every &&
		paused == s.Paused && sched.Policy != nil && sched.Policy.Overlap == enumspb.SCHEDULE_OVERLAP_POLICY_SKIP
	if same {
		out.Unchanged = append(out.Unchanged, s.ID)
		return nil
	}
	err = h.Update(ctx, client.ScheduleUpdateOptions{DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
		sc := in.Description.Schedule
		spec := s.spec()
		sc.Spec, sc.Action = &spec, s.action()
		if sc.Policy == nil {
			sc.Policy = &client.SchedulePolicies{}
		}
		sc.Policy.Overlap, sc.Policy.CatchupWindow = enumspb.SCHEDULE_OVERLAP_POLICY_SKIP, healthScheduleCatchup
		state := client.ScheduleState{}
		if sc.State != nil {
			state = *sc.State
		}
		state.Paused, state.Note = s.Paused, s.Note
		sc.State = &state
		return &client.ScheduleUpdate{Schedule: &sc}, nil
	}})
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	out.Updated = append(out.Updated, s.ID)
	switch {
	case s.Paused && !paused:
		out.Paused = append(out.Paused, s.ID)
	case !s.Paused && paused:
		out.Unpaused = append(out.Unpaused, s.ID)
	}
	return nil
}

// KeepCapacitySchedulesInSync runs SyncCapacitySchedules now and then every interval until
// ctx ends, so zones added or removed and settings changed elsewhere reach the schedules.
func KeepCapacitySchedulesInSync(ctx context.Context, c client.Client, store *models.Store, interval time.Duration, logger *slog.Logger) {
	if logger == nil {
		logger = slog.Default()
	}
	if interval <= 0 {
		interval = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := SyncCapacitySchedules(ctx, c, store)
		if err != nil && ctx.Err() == nil {
			logger.Error("sync capacity scan schedules", "error", err)
		}
		if res.Changed() {
			logger.Info("capacity scan schedules synced", "created", res.Created, "updated", res.Updated,
				"paused", res.Paused, "unpaused", res.Unpaused, "deleted", res.Deleted)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
