package workflows

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// startHealthWorker runs a real worker with the health workflows and activities on the dev
// server until the test ends.
func startHealthWorker(t *testing.T, c client.Client, fx *healthFixture) {
	t.Helper()
	w := sdkworker.New(c, TaskQueue, sdkworker.Options{})
	w.RegisterWorkflowWithOptions(HealthSweep, workflow.RegisterOptions{Name: HealthSweepWorkflowName})
	w.RegisterWorkflowWithOptions(RouterHealthCheck, workflow.RegisterOptions{Name: RouterHealthCheckWorkflowName})
	w.RegisterWorkflowWithOptions(SystemVMLifecycle, workflow.RegisterOptions{Name: LifecycleWorkflowName})
	w.RegisterActivity(fx.h)
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)
}

// sweepHistory counts the events of every run of a workflow (continue-as-new chains included).
func sweepHistory(t *testing.T, c client.Client, workflowID string) (events, runs int) {
	t.Helper()
	ctx := context.Background()
	runID := ""
	for {
		it := c.GetWorkflowHistory(ctx, workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		runs++
		next := ""
		for it.HasNext() {
			e, err := it.Next()
			require.NoError(t, err)
			events++
			if a := e.GetWorkflowExecutionStartedEventAttributes(); a != nil && a.GetContinuedExecutionRunId() != "" {
				next = a.GetContinuedExecutionRunId()
			}
		}
		if next == "" {
			return events, runs
		}
		runID = next
	}
}

// replayRun replays the recorded history of a run with today's workflow code: a sweep whose
// code took another path on replay (a map iteration, a clock read) fails here.
func replayRun(t *testing.T, c client.Client, workflowID string) {
	t.Helper()
	ctx := context.Background()
	hist := &historypb.History{}
	it := c.GetWorkflowHistory(ctx, workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		require.NoError(t, err)
		hist.Events = append(hist.Events, e)
	}
	r := sdkworker.NewWorkflowReplayer()
	r.RegisterWorkflowWithOptions(HealthSweep, workflow.RegisterOptions{Name: HealthSweepWorkflowName})
	r.RegisterWorkflowWithOptions(RouterHealthCheck, workflow.RegisterOptions{Name: RouterHealthCheckWorkflowName})
	r.RegisterWorkflowWithOptions(SystemVMLifecycle, workflow.RegisterOptions{Name: LifecycleWorkflowName})
	require.NoError(t, r.ReplayWorkflowHistory(nil, hist), "replay %s", workflowID)
}

// TestSweepOnTemporalServer runs a basic sweep over a fleet of routers on a real Temporal dev
// server with a real worker, and reports the history size: it must stay a few events per
// batch, whatever the number of routers. SYSVM_HEALTH_SWEEP_ROUTERS sets the fleet size (the
// default keeps the test short; 10000 is the scale the sweep is built for).
func TestSweepOnTemporalServer(t *testing.T) {
	n := 600
	if v := os.Getenv("SYSVM_HEALTH_SWEEP_ROUTERS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	srv := testenv.TemporalT(t, false)
	c, err := srv.Client()
	require.NoError(t, err)
	defer c.Close()
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	start := time.Now()
	vms := fx.routers(n)
	t.Logf("%d routers in the inventory and the fleet in %s", n, time.Since(start).Round(time.Millisecond))
	fx.inject(vms[n/2], fleet.FaultDiskFull)
	startHealthWorker(t, c, fx)

	ctx := context.Background()
	id := HealthScheduleID(activities.HealthBasic, fx.zone.ID) + "-test"
	start = time.Now()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: TaskQueue,
		TypedSearchAttributes: temporal.NewSearchAttributes(ZoneIDKey.ValueSet(fx.zone.ID),
			OperationKindKey.ValueSet(activities.HealthBasic.OperationKind()))},
		HealthSweepWorkflowName, SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic})
	require.NoError(t, err)
	var res SweepResult
	require.NoError(t, run.Get(ctx, &res))
	took := time.Since(start)
	assert.Equal(t, n, res.Summary.Routers)
	assert.Equal(t, n, res.Summary.Reachable)
	assert.Equal(t, 1, res.Summary.Failing)
	assert.Zero(t, res.Summary.Errors, "%v", res.Summary.ErrorSamples)
	r, ok := fx.result(vms[n/2], agent.CheckDisk)
	require.True(t, ok)
	assert.False(t, r.Success)
	assert.Equal(t, int64(n), fx.count(&models.SystemVM{}, "zone_id = ? AND type = ?", fx.zone.ID, models.TypeRouter))
	stored := fx.count(&models.HealthCheckResult{}, "check_name = ?", activities.CheckConnectivity)
	assert.Equal(t, int64(n), stored)

	events, runs := sweepHistory(t, c, id)
	t.Logf("sweep of %d routers: %d batches, %d run(s), %d history events (%.2f per batch), %s",
		n, res.Batches, runs, events, float64(events)/float64(res.Batches), took.Round(time.Millisecond))
	// Per batch: scheduled, started, completed, and a workflow task (3 events) at most;
	// plus settings, listing pages and the start and end.
	assert.LessOrEqual(t, events, 6*res.Batches+6*(n/1000+1)+20)

	replayRun(t, c, id)
	desc, err := c.DescribeWorkflowExecution(ctx, id, "")
	require.NoError(t, err)
	sa := desc.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()
	assert.Contains(t, string(sa["ZoneId"].GetData()), fx.zone.ID)
	assert.Contains(t, string(sa["OperationKind"].GetData()), "router.health.basic")
}

// TestSweepSkipsARouterWithARunningOperation: a recreation whose lifecycle workflow ID is taken
// (an operation runs on the router) does not start, and its plan is released.
func TestSweepSkipsARouterWithARunningOperation(t *testing.T) {
	srv := testenv.TemporalT(t, false)
	c, err := srv.Client()
	require.NoError(t, err)
	defer c.Close()
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	vms := fx.routers(8)
	bad := vms[2]
	fx.inject(bad, fleet.FaultDiskFull)
	fx.set(activities.SettingHealthRecreateChecks, agent.CheckDisk)
	fx.set(activities.SettingHealthFailuresBefore, "1")
	ctx := context.Background()
	// An operation started outside the journal holds the router's lifecycle workflow ID; it
	// waits on a queue no worker polls, so it stays running.
	_, err = c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: LifecycleWorkflowID(bad.ID), TaskQueue: "nobody-polls"},
		LifecycleWorkflowName, LifecycleInput{VMID: bad.ID, Action: ActionReboot})
	require.NoError(t, err)
	startHealthWorker(t, c, fx)
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "sweep-busy", TaskQueue: TaskQueue},
		HealthSweepWorkflowName, SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic})
	require.NoError(t, err)
	var res SweepResult
	require.NoError(t, run.Get(ctx, &res))
	require.Len(t, res.Recreations, 1)
	rc := res.Recreations[0]
	assert.False(t, rc.Started)
	assert.Contains(t, rc.Error, "another operation runs on the router")
	assert.Zero(t, fx.count(&models.Operation{}, "id = ?", rc.OperationID), "the plan is released")
	assert.Zero(t, fx.count(&models.HealthRecreation{}, "router_id = ?", bad.ID), "it does not count in the window")
	replayRun(t, c, "sweep-busy")
}
