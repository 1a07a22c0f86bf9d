package workflows

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

func describeSchedule(t *testing.T, c client.Client, id string) *client.ScheduleDescription {
	t.Helper()
	d, err := c.ScheduleClient().GetHandle(context.Background(), id).Describe(context.Background())
	require.NoError(t, err, id)
	return d
}

// waitSchedule describes a schedule until ok holds: a change is applied by the schedule's own
// workflow, so a describe right after it may not show it yet.
func waitSchedule(t *testing.T, c client.Client, id string, ok func(d *client.ScheduleDescription) bool) *client.ScheduleDescription {
	t.Helper()
	var d *client.ScheduleDescription
	require.Eventually(t, func() bool {
		d = describeSchedule(t, c, id)
		return ok(d)
	}, 10*time.Second, 100*time.Millisecond, "schedule %s", id)
	return d
}

func paused(d *client.ScheduleDescription) bool {
	return d.Schedule.State != nil && d.Schedule.State.Paused
}

func interval(d *client.ScheduleDescription) time.Duration {
	if d.Schedule.Spec == nil || len(d.Schedule.Spec.Intervals) == 0 {
		return 0
	}
	return d.Schedule.Spec.Intervals[0].Every
}

// newScheduleEnv is a client of a real Temporal dev server and a SQLite store holding one zone
// named name, for the schedule sync tests.
func newScheduleEnv(t *testing.T, name string) (client.Client, *models.Store, models.Zone) {
	t.Helper()
	srv := testenv.TemporalT(t, false)
	c, err := srv.Client()
	require.NoError(t, err)
	t.Cleanup(c.Close)
	store := modelstest.SQLite(t)
	zone := models.Zone{Name: name}
	require.NoError(t, store.DB.Create(&zone).Error)
	return c, store, zone
}

// TestHealthSchedulesFollowTheSettings runs against a real Temporal dev server: one schedule
// per zone and kind is created from the settings, an interval change reschedules it, 0 or
// enabled=false pauses it (the note names the setting), a removed zone loses its schedules,
// and a scheduled sweep is found by ZoneId and OperationKind.
func TestHealthSchedulesFollowTheSettings(t *testing.T) {
	c, store, zone := newScheduleEnv(t, "zone-a")
	ctx := context.Background()
	set := func(name, value string) {
		t.Helper()
		_, err := store.Settings.Set(ctx, name, models.ScopeZone, zone.ID, value)
		require.NoError(t, err)
	}
	ids := map[activities.HealthKind]string{}
	for _, k := range activities.HealthKinds() {
		ids[k] = HealthScheduleID(k, zone.ID)
	}

	res, err := SyncHealthSchedules(ctx, c, store)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{ids["basic"], ids["advanced"], ids["config"], ids["fetch"]}, res.Created)
	for k, want := range map[activities.HealthKind]time.Duration{"basic": 3 * time.Minute, "advanced": 10 * time.Minute,
		"config": 10 * time.Minute, "fetch": 10 * time.Minute} {
		d := describeSchedule(t, c, ids[k])
		assert.Equal(t, want, interval(d), k)
		assert.False(t, d.Schedule.State.Paused, k)
		assert.Equal(t, enumspb.SCHEDULE_OVERLAP_POLICY_SKIP, d.Schedule.Policy.Overlap)
		act, ok := d.Schedule.Action.(*client.ScheduleWorkflowAction)
		require.True(t, ok)
		assert.Equal(t, HealthSweepWorkflowName, workflowTypeName(act.Workflow))
		assert.Equal(t, TaskQueue, act.TaskQueue)
		require.Len(t, act.Args, 1)
		var in SweepInput
		p, ok := act.Args[0].(*commonpb.Payload)
		require.True(t, ok, "%T", act.Args[0])
		require.NoError(t, converter.GetDefaultDataConverter().FromPayload(p, &in))
		assert.Equal(t, SweepInput{ZoneID: zone.ID, Kind: k}, in)
		zoneSA, _ := act.TypedSearchAttributes.GetKeyword(ZoneIDKey)
		kindSA, _ := act.TypedSearchAttributes.GetKeyword(OperationKindKey)
		assert.Equal(t, zone.ID, zoneSA)
		assert.Equal(t, k.OperationKind(), kindSA)
	}

	res, err = SyncHealthSchedules(ctx, c, store)
	require.NoError(t, err)
	assert.False(t, res.Changed(), "%+v", res)
	assert.Len(t, res.Unchanged, 4)

	set(activities.SettingHealthBasicInterval, "7")
	res, err = SyncHealthSchedules(ctx, c, store)
	require.NoError(t, err)
	assert.Equal(t, []string{ids["basic"]}, res.Updated)
	waitSchedule(t, c, ids["basic"], func(d *client.ScheduleDescription) bool { return interval(d) == 7*time.Minute })

	set(activities.SettingHealthAdvancedInterval, "0")
	res, err = SyncHealthSchedules(ctx, c, store)
	require.NoError(t, err)
	assert.Equal(t, []string{ids["advanced"]}, res.Paused)
	d := waitSchedule(t, c, ids["advanced"], paused)
	assert.Contains(t, d.Schedule.State.Note, activities.SettingHealthAdvancedInterval+" is 0")

	set(activities.SettingHealthAdvancedInterval, "5")
	res, err = SyncHealthSchedules(ctx, c, store)
	require.NoError(t, err)
	assert.Equal(t, []string{ids["advanced"]}, res.Updated)
	assert.Equal(t, []string{ids["advanced"]}, res.Unpaused)
	waitSchedule(t, c, ids["advanced"], func(d *client.ScheduleDescription) bool {
		return !paused(d) && interval(d) == 5*time.Minute
	})

	set(activities.SettingHealthEnabled, "false")
	res, err = SyncHealthSchedules(ctx, c, store)
	require.NoError(t, err)
	assert.Len(t, res.Paused, 4)
	for _, id := range ids {
		d := waitSchedule(t, c, id, paused)
		assert.Contains(t, d.Schedule.State.Note, "router.health.checks.enabled is false")
	}
	set(activities.SettingHealthEnabled, "true")
	set(activities.SettingHealthFetchInterval, "0")
	res, err = SyncHealthSchedules(ctx, c, store)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{ids["basic"], ids["advanced"], ids["config"]}, res.Unpaused)
	assert.Equal(t, []string{ids["fetch"]}, res.Paused, "still paused, now because its interval is 0")
	waitSchedule(t, c, ids["fetch"], func(d *client.ScheduleDescription) bool {
		return paused(d) && strings.Contains(d.Schedule.State.Note, activities.SettingHealthFetchInterval)
	})
	for _, k := range []activities.HealthKind{"basic", "advanced", "config"} {
		waitSchedule(t, c, ids[k], func(d *client.ScheduleDescription) bool { return !paused(d) })
	}

	// A triggered sweep is found by the zone and the kind (no worker: it just waits).
	require.NoError(t, c.ScheduleClient().GetHandle(ctx, ids["basic"]).Trigger(ctx, client.ScheduleTriggerOptions{}))
	query := fmt.Sprintf("ZoneId = '%s' AND OperationKind = 'router.health.basic' AND WorkflowType = '%s'", zone.ID, HealthSweepWorkflowName)
	var found []string
	require.Eventually(t, func() bool {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query})
		if err != nil {
			return false
		}
		found = found[:0]
		for _, e := range resp.Executions {
			found = append(found, e.GetExecution().GetWorkflowId())
		}
		return len(found) == 1
	}, 15*time.Second, 200*time.Millisecond)
	assert.Contains(t, found[0], ids["basic"])

	// The zone goes: its schedules go too.
	require.NoError(t, store.DB.Delete(&zone).Error)
	var deleted []string
	require.Eventually(t, func() bool {
		res, err := SyncHealthSchedules(ctx, c, store)
		if err != nil {
			return false
		}
		deleted = append(deleted, res.Deleted...)
		return len(deleted) >= 4
	}, 20*time.Second, 500*time.Millisecond)
	assert.ElementsMatch(t, []string{ids["basic"], ids["advanced"], ids["config"], ids["fetch"]}, deleted)
}

func TestParseHealthScheduleID(t *testing.T) {
	k, z, ok := parseHealthScheduleID(HealthScheduleID(activities.HealthFetch, "z-1"))
	assert.True(t, ok)
	assert.Equal(t, activities.HealthFetch, k)
	assert.Equal(t, "z-1", z)
	for _, bad := range []string{"health-basic", "health-everything:z", "cert-expiry:z", "health-basic:"} {
		_, _, ok := parseHealthScheduleID(bad)
		assert.False(t, ok, bad)
	}
}

// TestCapacitySchedulesFollowTheSetting runs the shared schedule sync for the capacity scans
// against a real Temporal dev server: a zone's schedule is created every
// consoleproxy.capacityscan.interval seconds, a second sync changes nothing, 0 pauses it with
// a note naming the setting, a new value unpauses and reschedules it, the health schedules
// are left alone by it, and a removed zone's schedule is deleted.
func TestCapacitySchedulesFollowTheSetting(t *testing.T) {
	c, store, zone := newScheduleEnv(t, "zone-c")
	ctx := context.Background()
	id := CapacityScheduleID(zone.ID)
	set := func(value string) {
		t.Helper()
		_, err := store.Settings.Set(ctx, activities.SettingCapacityScanInterval, models.ScopeZone, zone.ID, value)
		require.NoError(t, err)
	}

	res, err := SyncCapacitySchedules(ctx, c, store)
	require.NoError(t, err)
	assert.Equal(t, []string{id}, res.Created)
	d := describeSchedule(t, c, id)
	assert.Equal(t, 30*time.Second, interval(d))
	assert.False(t, paused(d))
	act, ok := d.Schedule.Action.(*client.ScheduleWorkflowAction)
	require.True(t, ok)
	assert.Equal(t, CapacityScanWorkflowName, workflowTypeName(act.Workflow))
	kindSA, _ := act.TypedSearchAttributes.GetKeyword(OperationKindKey)
	assert.Equal(t, CapacityScanKind, kindSA)

	// Health schedules of the zone are not the capacity sync's to delete.
	_, err = SyncHealthSchedules(ctx, c, store)
	require.NoError(t, err)
	res, err = SyncCapacitySchedules(ctx, c, store)
	require.NoError(t, err)
	assert.False(t, res.Changed(), "%+v", res)
	assert.Equal(t, []string{id}, res.Unchanged)

	set("0")
	res, err = SyncCapacitySchedules(ctx, c, store)
	require.NoError(t, err)
	assert.Equal(t, []string{id}, res.Paused)
	d = waitSchedule(t, c, id, paused)
	assert.Contains(t, d.Schedule.State.Note, activities.SettingCapacityScanInterval+" is 0")

	set("12")
	res, err = SyncCapacitySchedules(ctx, c, store)
	require.NoError(t, err)
	assert.Equal(t, []string{id}, res.Updated)
	assert.Equal(t, []string{id}, res.Unpaused)
	waitSchedule(t, c, id, func(d *client.ScheduleDescription) bool { return !paused(d) && interval(d) == 12*time.Second })

	require.NoError(t, store.DB.Delete(&zone).Error)
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Listing schedules is eventually consistent: the deletion may take a sync or two.
		res, err = SyncCapacitySchedules(ctx, c, store)
		require.NoError(t, err)
		if slices.Contains(res.Deleted, id) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the removed zone's capacity schedule was not deleted: %+v", res)
		time.Sleep(500 * time.Millisecond)
	}
	health, err := c.ScheduleClient().GetHandle(ctx, HealthScheduleID("basic", zone.ID)).Describe(ctx)
	require.NoError(t, err, "the capacity sync deleted a health schedule")
	assert.NotNil(t, health)
}
