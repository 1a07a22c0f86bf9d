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

// Health schedules: one Temporal Schedule per zone and kind of health task, each starting a
// HealthSweep every <kind interval> minutes. They are derived from the settings and kept in
// line with them by SyncHealthSchedules.

// healthScheduleCatchup: a sweep missed while the server was down is taken only if it is at
// most this late (the next one is never far off).
const healthScheduleCatchup = time.Minute

// healthSweepTimeout bounds one sweep, all its runs together; a sweep that would outlast it
// is cut so the next scheduled one can start (overlapping sweeps are skipped).
const healthSweepTimeout = 2 * time.Hour

// pausedPlaceholder is the interval a paused schedule keeps when its setting is 0.
const pausedPlaceholder = time.Hour

// HealthSchedule is the wanted state of one schedule.
type HealthSchedule struct {
	ID     string                `json:"id"`
	ZoneID string                `json:"zoneId"`
	Kind   activities.HealthKind `json:"kind"`
	// Interval is the kind's interval setting in the zone (0 = not scheduled).
	Interval time.Duration `json:"interval"`
	// Paused when the interval is 0 or health checks are disabled in the zone; Note says why.
	Paused bool   `json:"paused"`
	Note   string `json:"note"`
}

// DesiredHealthSchedules derives the wanted schedules of every zone from the settings
// (zone-scoped values win over global ones).
func DesiredHealthSchedules(ctx context.Context, store *models.Store) ([]HealthSchedule, error) {
	var zones []models.Zone
	if err := store.DB.WithContext(ctx).Order("id").Find(&zones).Error; err != nil {
		return nil, fmt.Errorf("list zones: %w", err)
	}
	var out []HealthSchedule
	for _, z := range zones {
		sc := models.Scope{ZoneID: z.ID}
		enabled, err := store.Settings.Bool(ctx, activities.SettingHealthEnabled, sc)
		if err != nil {
			return nil, fmt.Errorf("zone %s: %w", z.Name, err)
		}
		for _, k := range activities.HealthKinds() {
			minutes, err := store.Settings.Int(ctx, k.IntervalSetting(), sc)
			if err != nil {
				return nil, fmt.Errorf("zone %s: %w", z.Name, err)
			}
			s := HealthSchedule{ID: HealthScheduleID(k, z.ID), ZoneID: z.ID, Kind: k,
				Interval: time.Duration(minutes) * time.Minute}
			switch {
			case !enabled:
				s.Paused, s.Note = true, fmt.Sprintf("paused: %s is false in zone %s", activities.SettingHealthEnabled, z.Name)
			case minutes <= 0:
				s.Paused, s.Note = true, fmt.Sprintf("paused: %s is 0 in zone %s", k.IntervalSetting(), z.Name)
			default:
				s.Note = fmt.Sprintf("every %d minutes (%s in zone %s)", minutes, k.IntervalSetting(), z.Name)
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// ScheduleSync says what a schedule sync (SyncHealthSchedules, SyncCapacitySchedules) changed,
// by schedule ID.
type ScheduleSync struct {
	Created   []string `json:"created,omitempty"`
	Updated   []string `json:"updated,omitempty"`
	Paused    []string `json:"paused,omitempty"`
	Unpaused  []string `json:"unpaused,omitempty"`
	Deleted   []string `json:"deleted,omitempty"`
	Unchanged []string `json:"unchanged,omitempty"`
}

// Changed reports whether anything was created, updated, paused, unpaused or deleted.
func (s ScheduleSync) Changed() bool {
	return len(s.Created)+len(s.Updated)+len(s.Paused)+len(s.Unpaused)+len(s.Deleted) > 0
}

// SyncHealthSchedules creates, updates, pauses and unpauses the health schedules of every zone
// (config refresh, basic checks, advanced checks, results fetch) on the client's namespace so
// they match the settings: interval changes reschedule them; an interval of 0 or
// router.health.checks.enabled=false pauses them, with a note saying which setting. Schedules
// of zones that no longer exist are deleted. Call it at worker start and after a settings
// change (KeepHealthSchedulesInSync also calls it on a clock); it is idempotent.
func SyncHealthSchedules(ctx context.Context, c client.Client, store *models.Store) (ScheduleSync, error) {
	want, err := DesiredHealthSchedules(ctx, store)
	if err != nil {
		return ScheduleSync{}, err
	}
	managed := make([]managedSchedule, len(want))
	for i, s := range want {
		managed[i] = s.managed()
	}
	return syncManagedSchedules(ctx, c, managed, func(id string) bool { _, _, ok := parseHealthScheduleID(id); return ok })
}

// managed is the schedule as the shared sync keeps it.
func (s HealthSchedule) managed() managedSchedule {
	return managedSchedule{ID: s.ID, Interval: s.Interval, Paused: s.Paused, Note: s.Note, Target: s.target(),
		Memo: map[string]any{"zoneId": s.ZoneID, "kind": string(s.Kind)},
		Action: &client.ScheduleWorkflowAction{
			ID:                       s.ID,
			Workflow:                 HealthSweepWorkflowName,
			Args:                     []any{SweepInput{ZoneID: s.ZoneID, Kind: s.Kind}},
			TaskQueue:                TaskQueue,
			WorkflowExecutionTimeout: healthSweepTimeout,
			TypedSearchAttributes:    s.target().TypedSearchAttributes(),
			StaticSummary:            fmt.Sprintf("router health %s sweep of zone %s", s.Kind, s.ZoneID),
		}}
}

// target is what the schedule's sweeps act on: the zone, under the schedule's ID.
func (s HealthSchedule) target() Target {
	return ZoneTarget(s.ID, s.ZoneID, s.Kind.OperationKind())
}

// managedSchedule is the wanted state of one schedule sysvm owns (a zone's health sweep or
// capacity scan): an interval (0 with Paused), a pause note saying which setting, and the
// workflow it starts. Overlapping runs are skipped; a run missed while the server was down is
// taken only within healthScheduleCatchup.
type managedSchedule struct {
	ID       string
	Interval time.Duration
	Paused   bool
	Note     string
	Action   *client.ScheduleWorkflowAction
	Memo     map[string]any
	Target   Target
}

func (m managedSchedule) spec() client.ScheduleSpec {
	every := m.Interval
	if every <= 0 {
		every = pausedPlaceholder
	}
	return client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}}
}

func (m managedSchedule) options() client.ScheduleOptions {
	return client.ScheduleOptions{
		ID:                    m.ID,
		Spec:                  m.spec(),
		Action:                m.Action,
		Overlap:               enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
		CatchupWindow:         healthScheduleCatchup,
		Paused:                m.Paused,
		Note:                  m.Note,
		Memo:                  m.Memo,
		TypedSearchAttributes: m.Target.TypedSearchAttributes(),
	}
}

// syncManagedSchedules brings every wanted schedule in line and deletes the schedules owned
// (by ID) that are no longer wanted (their zones are gone).
func syncManagedSchedules(ctx context.Context, c client.Client, want []managedSchedule, owned func(id string) bool) (ScheduleSync, error) {
	var out ScheduleSync
	var errs []error
	wanted := map[string]bool{}
	for _, m := range want {
		wanted[m.ID] = true
		if err := syncSchedule(ctx, c, m, &out); err != nil {
			errs = append(errs, fmt.Errorf("schedule %s: %w", m.ID, err))
		}
	}
	if err := deleteOrphanSchedules(ctx, c, owned, wanted, &out); err != nil {
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

func syncSchedule(ctx context.Context, c client.Client, s managedSchedule, out *ScheduleSync) error {
	h := c.ScheduleClient().GetHandle(ctx, s.ID)
	desc, err := h.Describe(ctx)
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		_, err := c.ScheduleClient().Create(ctx, s.options())
		if err == nil {
			out.Created = append(out.Created, s.ID)
			return nil
		}
		if !errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
			return fmt.Errorf("create: %w", err)
		}
		// Created meanwhile (another worker): bring it in line below.
		if desc, err = h.Describe(ctx); err != nil {
			return fmt.Errorf("describe: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("describe: %w", err)
	}
	paused := desc.Schedule.State != nil && desc.Schedule.State.Paused
	note := ""
	if desc.Schedule.State != nil {
		note = desc.Schedule.State.Note
	}
	if scheduleDiffers(desc, s) {
		// One update carries the paused state too: a separate pause or unpause could be
		// applied by the schedule before the update, which would then undo it.
		err := h.Update(ctx, client.ScheduleUpdateOptions{DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
			sched := in.Description.Schedule
			opts := s.options()
			sched.Spec = &opts.Spec
			sched.Action = opts.Action
			if sched.Policy == nil {
				sched.Policy = &client.SchedulePolicies{}
			}
			sched.Policy.Overlap, sched.Policy.CatchupWindow = opts.Overlap, opts.CatchupWindow
			state := client.ScheduleState{}
			if sched.State != nil {
				state = *sched.State
			}
			state.Paused, state.Note = s.Paused, s.Note
			sched.State = &state
			return &client.ScheduleUpdate{Schedule: &sched}, nil
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
	changed := false
	switch {
	case s.Paused && (!paused || note != s.Note):
		if err := h.Pause(ctx, client.SchedulePauseOptions{Note: s.Note}); err != nil {
			return fmt.Errorf("pause: %w", err)
		}
		out.Paused = append(out.Paused, s.ID)
		changed = true
	case !s.Paused && paused:
		if err := h.Unpause(ctx, client.ScheduleUnpauseOptions{Note: s.Note}); err != nil {
			return fmt.Errorf("unpause: %w", err)
		}
		out.Unpaused = append(out.Unpaused, s.ID)
		changed = true
	}
	if !changed {
		out.Unchanged = append(out.Unchanged, s.ID)
	}
	return nil
}

// scheduleDiffers compares what the sync manages: the interval (of a running schedule), the
// action's workflow type, ID and task queue, and the overlap policy.
func scheduleDiffers(desc *client.ScheduleDescription, s managedSchedule) bool {
	sched := desc.Schedule
	if sched.Spec == nil || len(sched.Spec.Intervals) != 1 || len(sched.Spec.Calendars) > 0 || len(sched.Spec.CronExpressions) > 0 {
		return true
	}
	if !s.Paused && sched.Spec.Intervals[0].Every != s.Interval {
		return true
	}
	act, ok := sched.Action.(*client.ScheduleWorkflowAction)
	if !ok || act.TaskQueue != s.Action.TaskQueue || workflowTypeName(act.Workflow) != workflowTypeName(s.Action.Workflow) || act.ID != s.ID {
		return true
	}
	return sched.Policy == nil || sched.Policy.Overlap != enumspb.SCHEDULE_OVERLAP_POLICY_SKIP
}

func workflowTypeName(w any) string {
	if s, ok := w.(string); ok {
		return s
	}
	return fmt.Sprint(w)
}

// parseHealthScheduleID reads "health-<kind>:<zoneid>".
func parseHealthScheduleID(id string) (activities.HealthKind, string, bool) {
	rest, ok := strings.CutPrefix(id, "health-")
	if !ok {
		return "", "", false
	}
	kind, zone, ok := strings.Cut(rest, ":")
	if !ok || zone == "" {
		return "", "", false
	}
	k, err := activities.ParseHealthKind(kind)
	if err != nil {
		return "", "", false
	}
	return k, zone, true
}

// deleteOrphanSchedules deletes the owned schedules not wanted (of zones that are gone). Listing
// schedules is eventually consistent, so a schedule just created may be missed until the next
// sync.
func deleteOrphanSchedules(ctx context.Context, c client.Client, owned func(id string) bool, wanted map[string]bool, out *ScheduleSync) error {
	it, err := c.ScheduleClient().List(ctx, client.ScheduleListOptions{PageSize: 500})
	if err != nil {
		return fmt.Errorf("list schedules: %w", err)
	}
	var errs []error
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("list schedules: %w", err))...)
		}
		if !owned(e.ID) || wanted[e.ID] {
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
	return errors.Join(errs...)
}

// KeepHealthSchedulesInSync runs SyncHealthSchedules now and then every interval until ctx
// ends, logging what changed, so a settings change made anywhere (another API instance, the
// database) reaches the schedules within one interval even without a hook.
func KeepHealthSchedulesInSync(ctx context.Context, c client.Client, store *models.Store, interval time.Duration, logger *slog.Logger) {
	keepInSync(ctx, interval, logger, "health check schedules", func(ctx context.Context) (ScheduleSync, error) {
		return SyncHealthSchedules(ctx, c, store)
	})
}

// keepInSync runs sync now and then every interval (a minute if unset) until ctx ends, logging
// its errors and what it changed.
func keepInSync(ctx context.Context, interval time.Duration, logger *slog.Logger, what string, sync func(context.Context) (ScheduleSync, error)) {
	if logger == nil {
		logger = slog.Default()
	}
	if interval <= 0 {
		interval = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := sync(ctx)
		if err != nil && ctx.Err() == nil {
			logger.Error("sync "+what, "error", err)
		}
		if res.Changed() {
			logger.Info(what+" synced", "created", res.Created, "updated", res.Updated,
				"paused", res.Paused, "unpaused", res.Unpaused, "deleted", res.Deleted)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
