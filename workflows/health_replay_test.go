package workflows

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models/modelstest"
)

// healthHistories holds HealthSweep histories recorded on a Temporal dev server by
// TestRecordHealthSweepHistories: the rules run without a recreate list (the versioned branch
// "rules-without-recreate-list"), a config sweep (no results, no rules) and a sweep that plans
// and starts a recreation. They were recorded before HealthSweep became the sweep struct.
const healthHistories = "testdata/health"

// TestReplayHealthSweepHistories replays the recorded sweeps with today's code: a change to
// the sweep's command sequence without workflow.GetVersion fails here, as it would fail the
// sweeps running in production.
func TestReplayHealthSweepHistories(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(healthHistories, "*.json"))
	require.NoError(t, err)
	require.Len(t, files, 3, "recorded sweep histories")
	r := sdkworker.NewWorkflowReplayer()
	r.RegisterWorkflowWithOptions(HealthSweep, workflow.RegisterOptions{Name: HealthSweepWorkflowName})
	r.RegisterWorkflowWithOptions(SystemVMLifecycle, workflow.RegisterOptions{Name: LifecycleWorkflowName})
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			require.NoError(t, r.ReplayWorkflowHistoryFromJSONFile(nil, f))
		})
	}
}

// TestRecordHealthSweepHistories records the sweep histories replayed above, from a real
// worker on a Temporal dev server, when SYSVM_RECORD_HISTORY is set.
func TestRecordHealthSweepHistories(t *testing.T) {
	if os.Getenv("SYSVM_RECORD_HISTORY") == "" {
		t.Skip("set SYSVM_RECORD_HISTORY=1 to record the HealthSweep histories into " + healthHistories)
	}
	srv := testenv.TemporalT(t, false)
	c, err := srv.Client()
	require.NoError(t, err)
	defer c.Close()
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	vms := fx.routers(5)
	fx.inject(vms[1], fleet.FaultDiskFull)
	startHealthWorker(t, c, fx)
	ctx := context.Background()
	record := func(name, id string, in SweepInput) {
		t.Helper()
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: TaskQueue,
			TypedSearchAttributes: temporal.NewSearchAttributes(ZoneIDKey.ValueSet(fx.zone.ID),
				OperationKindKey.ValueSet(in.Kind.OperationKind()))}, HealthSweepWorkflowName, in)
		require.NoError(t, err)
		var res SweepResult
		require.NoError(t, run.Get(ctx, &res))
		it := c.GetWorkflowHistory(ctx, id, run.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		var h historypb.History
		for it.HasNext() {
			ev, err := it.Next()
			require.NoError(t, err)
			h.Events = append(h.Events, ev)
		}
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(&h)
		require.NoError(t, err)
		path := filepath.Join(testenv.RepoRoot(), "workflows", healthHistories, name)
		require.NoError(t, os.WriteFile(path, b, 0o644))
		t.Logf("recorded %d events to %s", len(h.Events), path)
	}
	// No recreate-listed check: the rules run anyway (the versioned branch).
	record("health_sweep_rules.json", HealthScheduleID(activities.HealthBasic, fx.zone.ID)+"-rec1",
		SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic, BatchSize: 2})
	// A config sweep produces no results: it ends after the batches.
	record("health_sweep_config.json", HealthScheduleID(activities.HealthConfig, fx.zone.ID)+"-rec2",
		SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthConfig, BatchSize: 2})
	// A recreate-listed check failing (N = 1): the plan and a recreation started as a child.
	fx.set(activities.SettingHealthRecreateChecks, agent.CheckDisk)
	fx.set(activities.SettingHealthFailuresBefore, "1")
	record("health_sweep_recreate.json", HealthScheduleID(activities.HealthBasic, fx.zone.ID)+"-rec3",
		SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic, BatchSize: 2})
}
