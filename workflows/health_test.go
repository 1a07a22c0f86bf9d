package workflows

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// sweepRecorder watches a test environment: the batches started (their inputs), how many ran
// at once, the recreations started as children.
type sweepRecorder struct {
	mu          sync.Mutex
	batches     []activities.BatchInput
	inFlight    int
	maxInFlight int
	children    []LifecycleInput
	childIDs    []string
	activities  map[string]int
	onBatch     func(n int)
}

func newHealthEnv(t *testing.T, fx *healthFixture) (*testsuite.TestWorkflowEnvironment, *sweepRecorder) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	// Every sweep is its own run, as under a schedule (the default test workflow ID is fixed).
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: "health-test:" + models.NewID()})
	env.RegisterWorkflowWithOptions(HealthSweep, workflow.RegisterOptions{Name: HealthSweepWorkflowName})
	env.RegisterWorkflowWithOptions(RouterHealthCheck, workflow.RegisterOptions{Name: RouterHealthCheckWorkflowName})
	env.RegisterWorkflowWithOptions(SystemVMLifecycle, workflow.RegisterOptions{Name: LifecycleWorkflowName})
	env.RegisterActivity(fx.h)
	rec := &sweepRecorder{activities: map[string]int{}}
	env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, args converter.EncodedValues) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.activities[info.ActivityType.Name]++
		if info.ActivityType.Name != "HealthCheckBatch" {
			return
		}
		var in activities.BatchInput
		require.NoError(t, args.Get(&in))
		rec.batches = append(rec.batches, in)
		rec.inFlight++
		rec.maxInFlight = max(rec.maxInFlight, rec.inFlight)
		if rec.onBatch != nil {
			rec.onBatch(len(rec.batches))
		}
	})
	env.SetOnActivityCompletedListener(func(info *activity.Info, _ converter.EncodedValue, _ error) {
		if info.ActivityType.Name == "HealthCheckBatch" {
			rec.mu.Lock()
			rec.inFlight--
			rec.mu.Unlock()
		}
	})
	// The recreation itself (stop, destroy, create, start on a hypervisor) is the lifecycle
	// workflow's, tested on its own; here the child records what it was asked.
	env.OnWorkflow(LifecycleWorkflowName, mock.Anything, mock.Anything).Return(
		func(ctx workflow.Context, in LifecycleInput) (LifecycleResult, error) {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			rec.children = append(rec.children, in)
			rec.childIDs = append(rec.childIDs, workflow.GetInfo(ctx).WorkflowExecution.ID)
			return LifecycleResult{VMID: in.VMID, Action: string(in.Action), State: models.StateRunning}, nil
		})
	return env, rec
}

func runSweep(t *testing.T, fx *healthFixture, in SweepInput) (SweepResult, *sweepRecorder) {
	t.Helper()
	env, rec := newHealthEnv(t, fx)
	env.ExecuteWorkflow(HealthSweep, in)
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var res SweepResult
	require.NoError(t, env.GetWorkflowResult(&res))
	return res, rec
}

func TestSweepFansOutInBoundedBatches(t *testing.T) {
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{})
	vms := fx.routers(30)
	fx.set(activities.SettingHealthSweepConcurrency, "40") // 16 routers per batch at once, 3 batches at once
	res, rec := runSweep(t, fx, SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic, BatchSize: 4})

	assert.Equal(t, 30, res.Summary.Routers)
	assert.Equal(t, 30, res.Summary.Reachable)
	assert.Equal(t, 0, res.Summary.Failing, "%v", res.Summary.ErrorSamples)
	assert.Equal(t, 8, res.Batches)
	require.Len(t, rec.batches, 8)
	seen := map[string]int{}
	for _, b := range rec.batches {
		assert.LessOrEqual(t, len(b.RouterIDs), 4)
		assert.Equal(t, 16, b.Parallel)
		assert.Equal(t, activities.HealthBasic, b.Kind)
		for _, id := range b.RouterIDs {
			seen[id]++
		}
	}
	assert.Len(t, seen, 30)
	for _, vm := range vms {
		assert.Equal(t, 1, seen[vm.ID], "%s is in exactly one batch", vm.Name)
		r, ok := fx.result(vm, agent.CheckDisk)
		require.True(t, ok, vm.Name)
		assert.True(t, r.Success)
	}
	assert.LessOrEqual(t, rec.maxInFlight, 3, "ceil(40 / 16) batches at once")
	assert.GreaterOrEqual(t, rec.maxInFlight, 2, "batches run side by side")
	assert.Equal(t, 1, rec.activities["HealthListRouters"], "30 IDs fit one page")
	assert.Equal(t, 1, rec.activities["HealthPlanRecreations"], "no recreate-listed checks: the rules run only to close an open breaker")
}

func TestSweepContinuesAsNewAndResumesAtItsCursor(t *testing.T) {
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	vms := fx.routers(20)
	fx.set(activities.SettingHealthSweepConcurrency, "4") // one batch at a time
	env, rec := newHealthEnv(t, fx)
	rec.onBatch = func(n int) {
		if n == 2 {
			env.SetCurrentHistoryLength(sweepMaxHistoryEvents + 1)
		}
	}
	env.ExecuteWorkflow(HealthSweep, SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic, BatchSize: 3})
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(env.GetWorkflowError(), &can), "%v", env.GetWorkflowError())
	var next SweepInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
	require.NotNil(t, next.State)
	assert.Equal(t, 2, len(rec.batches), "the batch in flight finishes, no new one starts")
	assert.Equal(t, rec.batches[1].RouterIDs[2], next.State.Cursor)
	assert.Equal(t, 6, next.State.Summary.Routers)
	first := rec.batches

	env2, rec2 := newHealthEnv(t, fx)
	env2.ExecuteWorkflow(HealthSweep, next)
	require.NoError(t, env2.GetWorkflowError())
	var res SweepResult
	require.NoError(t, env2.GetWorkflowResult(&res))
	assert.Equal(t, 2, res.Runs)
	assert.Equal(t, 20, res.Summary.Routers)
	assert.Equal(t, 7, res.Batches)
	assert.Zero(t, rec2.activities["HealthSweepSettings"], "settings are carried, read once per sweep")
	seen := map[string]int{}
	for _, b := range append(first, rec2.batches...) {
		assert.Equal(t, next.State.At, b.At, "one sweep time across runs")
		for _, id := range b.RouterIDs {
			seen[id]++
		}
	}
	for _, vm := range vms {
		assert.Equal(t, 1, seen[vm.ID], vm.Name)
	}
}

func TestSweepRecreatesAfterNConsecutiveFailures(t *testing.T) {
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	vms := fx.routers(10)
	bad := vms[3]
	fx.inject(bad, fleet.FaultDiskFull)
	fx.set(activities.SettingHealthRecreateChecks, "dns_check.py,"+agent.CheckDisk)
	in := SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic}

	res, rec := runSweep(t, fx, in)
	assert.Empty(t, rec.children, "one failure: N is 2")
	require.NotNil(t, res.Plan)
	assert.Empty(t, res.Plan.Recreate)
	assert.Equal(t, 1, res.Summary.RecreateFailing)

	res, rec = runSweep(t, fx, in)
	require.Len(t, rec.children, 1)
	child := rec.children[0]
	assert.Equal(t, bad.ID, child.VMID)
	assert.Equal(t, ActionRecreate, child.Action)
	assert.Contains(t, child.Reason, agent.CheckDisk+" failed 2 consecutive runs")
	assert.Equal(t, LifecycleWorkflowID(bad.ID), rec.childIDs[0])
	require.Len(t, res.Recreations, 1)
	assert.True(t, res.Recreations[0].Started)
	var op models.Operation
	require.NoError(t, fx.store.Get(fx.ctx, &op, child.OperationID))
	assert.Equal(t, activities.RequestedByHealthChecks, op.RequestedBy)
	assert.Equal(t, ActionRecreate.OperationKind(), op.Kind)
	assert.Equal(t, LifecycleWorkflowID(bad.ID), op.WorkflowID)
	assert.NotEmpty(t, op.RunID, "the child's run is recorded")
	assert.Equal(t, fx.zone.ID, op.ZoneID)
}

func TestSweepMatchesRecreateChecksByExactName(t *testing.T) {
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	vms := fx.routers(5)
	fx.inject(vms[0], fleet.FaultDiskFull)
	fx.set(activities.SettingHealthRecreateChecks, "disk_space_check,space_check.py,disk")
	fx.set(activities.SettingHealthFailuresBefore, "1")
	for range 3 {
		res, rec := runSweep(t, fx, SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic})
		assert.Empty(t, rec.children)
		assert.Equal(t, 0, res.Summary.RecreateFailing)
		assert.Equal(t, 1, res.Summary.Failing)
	}
	r, _ := fx.result(vms[0], agent.CheckDisk)
	assert.Equal(t, 3, r.ConsecutiveFailures)
}

func TestSweepCapsConcurrentRecreationsPerZone(t *testing.T) {
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	vms := fx.routers(12)
	for _, vm := range vms[:3] { // 25%: under the circuit breaker's 30%
		fx.inject(vm, fleet.FaultDiskFull)
	}
	fx.set(activities.SettingHealthRecreateChecks, agent.CheckDisk)
	fx.set(activities.SettingHealthFailuresBefore, "1")
	fx.set(activities.SettingHealthMaxRecreations, "2")
	in := SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic}
	res, rec := runSweep(t, fx, in)
	assert.Len(t, rec.children, 2)
	assert.Equal(t, 1, res.Plan.Deferred)
	// The two recreations still run (their journal says so): a second sweep starts none.
	res, rec = runSweep(t, fx, in)
	assert.Empty(t, rec.children)
	assert.Equal(t, 2, res.Plan.Busy)
	assert.Equal(t, 1, res.Plan.Deferred)
	assert.Equal(t, int64(2), fx.count(&models.Operation{}, "status = ? AND requested_by = ?", models.OpRunning, activities.RequestedByHealthChecks))
}

func TestSweepCircuitBreakerAlertsInsteadOfRecreating(t *testing.T) {
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	vms := fx.routers(10)
	for _, vm := range vms[:4] { // 40% > 30%
		fx.inject(vm, fleet.FaultUnreachable)
	}
	fx.set(activities.SettingHealthRecreateChecks, activities.CheckConnectivity)
	fx.set(activities.SettingHealthFailuresBefore, "1")
	res, rec := runSweep(t, fx, SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic})
	assert.Empty(t, rec.children)
	assert.True(t, res.Plan.BreakerTripped)
	assert.Equal(t, 4, res.Summary.Unreachable)
	assert.Equal(t, 4, res.Summary.RecreateFailing)
	assert.Len(t, res.Summary.Candidates, 4)
	var alerts []models.Alert
	require.NoError(t, fx.store.DB.Where("type = ? AND zone_id = ?", activities.AlertCircuitBreaker, fx.zone.ID).Find(&alerts).Error)
	require.Len(t, alerts, 1)
	assert.Contains(t, alerts[0].Subject, "4 of 10 routers")
	assert.Zero(t, fx.count(&models.Operation{}, "1 = 1"))
}

func TestSweepStopsRecreatingARouterPastTheLimit(t *testing.T) {
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	vms := fx.routers(6)
	fx.inject(vms[1], fleet.FaultDiskFull)
	fx.set(activities.SettingHealthRecreateChecks, agent.CheckDisk)
	fx.set(activities.SettingHealthFailuresBefore, "1")
	fx.set(activities.SettingHealthRecreateLimit, "1")
	in := SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic}
	_, rec := runSweep(t, fx, in)
	require.Len(t, rec.children, 1)
	// The recreation ends (the router still fails its check afterwards).
	require.NoError(t, fx.store.DB.Model(&models.Operation{}).Where("id = ?", rec.children[0].OperationID).
		Update("status", models.OpCompleted).Error)
	res, rec := runSweep(t, fx, in)
	assert.Empty(t, rec.children)
	require.Len(t, res.Plan.Refused, 1)
	assert.Equal(t, vms[1].ID, res.Plan.Refused[0].RouterID)
	assert.Equal(t, int64(1), fx.count(&models.Alert{}, "type = ? AND resource_id = ?", activities.AlertRecreateLimit, vms[1].ID))
}

func TestOnDemandCheckNeverRecreates(t *testing.T) {
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	vms := fx.routers(3)
	bad := vms[0]
	fx.inject(bad, fleet.FaultDiskFull)
	fx.set(activities.SettingHealthRecreateChecks, agent.CheckDisk)
	fx.set(activities.SettingHealthFailuresBefore, "3")
	// Two scheduled failures, one short of recreation.
	for range 2 {
		_, rec := runSweep(t, fx, SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic})
		require.Empty(t, rec.children)
	}
	for range 3 {
		env, rec := newHealthEnv(t, fx)
		env.ExecuteWorkflow(RouterHealthCheck, RouterHealthCheckInput{RouterID: bad.ID})
		require.NoError(t, env.GetWorkflowError())
		var out activities.FreshResult
		require.NoError(t, env.GetWorkflowResult(&out))
		assert.True(t, out.HealthChecksFailed)
		assert.Empty(t, rec.children)
		assert.Zero(t, rec.activities["HealthPlanRecreations"])
	}
	r, _ := fx.result(bad, agent.CheckDisk)
	assert.Equal(t, 2, r.ConsecutiveFailures, "on-demand runs do not count")
	assert.Zero(t, fx.count(&models.Operation{}, "1 = 1"))
}

func TestSweepDoesNothingWhenHealthChecksAreDisabled(t *testing.T) {
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	vms := fx.routers(3)
	fx.set(activities.SettingHealthEnabled, "false")
	for _, kind := range activities.HealthKinds() {
		res, rec := runSweep(t, fx, SweepInput{ZoneID: fx.zone.ID, Kind: kind})
		assert.True(t, res.Disabled, kind)
		assert.Empty(t, rec.batches)
		assert.Zero(t, rec.activities["HealthListRouters"])
	}
	_, ok := fx.result(vms[0], activities.CheckConnectivity)
	assert.False(t, ok)

	env, _ := newHealthEnv(t, fx)
	env.ExecuteWorkflow(RouterHealthCheck, RouterHealthCheckInput{RouterID: vms[0].ID})
	err := env.GetWorkflowError()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "router.health.checks.enabled is false")
}

func TestConfigSweepPushesAndNeverRecreates(t *testing.T) {
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	vms := fx.routers(4)
	fx.inject(vms[0], fleet.FaultUnreachable)
	fx.set(activities.SettingHealthRecreateChecks, activities.CheckConnectivity)
	fx.set(activities.SettingHealthFailuresBefore, "1")
	res, rec := runSweep(t, fx, SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthConfig})
	assert.Equal(t, 3, res.Summary.Reachable)
	assert.Equal(t, 1, res.Summary.Unreachable)
	assert.Nil(t, res.Plan)
	assert.Empty(t, rec.children)
	c, ok := fx.result(vms[0], activities.CheckConnectivity)
	require.True(t, ok)
	assert.False(t, c.Success)
}

func TestSweepRejectsAnUnknownKind(t *testing.T) {
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	env, _ := newHealthEnv(t, fx)
	env.ExecuteWorkflow(HealthSweep, SweepInput{ZoneID: fx.zone.ID, Kind: "everything"})
	require.Error(t, env.GetWorkflowError())
	assert.Contains(t, env.GetWorkflowError().Error(), "want basic, advanced, config or fetch")
}

// TestSweepRetriedBatchCountsOnce: a batch that stored its results and then failed (its
// worker lost before it answered, the last heartbeats throttled away) is retried and checks
// the same routers again; the failure still counts once in the sweep, so one failing sweep
// and its retry do not recreate the router at router.health.checks.failures.before.recreate
// = 2. The next sweep counts again and recreates it.
func TestSweepRetriedBatchCountsOnce(t *testing.T) {
	fx := newHealthFixture(t, modelstest.SQLite(t), fixtureOptions{noSample: true})
	vms := fx.routers(4)
	bad := vms[2]
	fx.inject(bad, fleet.FaultDiskFull)
	fx.set(activities.SettingHealthRecreateChecks, agent.CheckDisk)
	in := SweepInput{ZoneID: fx.zone.ID, Kind: activities.HealthBasic}

	sweepWithRetry := func() (SweepResult, *sweepRecorder, []int32) {
		t.Helper()
		env, rec := newHealthEnv(t, fx)
		var mu sync.Mutex
		var attempts []int32
		env.OnActivity(ha.HealthCheckBatch, mock.Anything, mock.Anything).Return(
			func(ctx context.Context, in activities.BatchInput) (activities.BatchSummary, error) {
				attempt := activity.GetInfo(ctx).Attempt
				mu.Lock()
				attempts = append(attempts, attempt)
				mu.Unlock()
				// Outside the activity's context nothing is heartbeated: the retry does not
				// know which routers the first attempt did, as when its heartbeats were lost.
				sum, err := fx.h.HealthCheckBatch(context.WithoutCancel(context.Background()), in)
				if err == nil && attempt == 1 {
					return activities.BatchSummary{}, errors.New("worker lost after storing the results")
				}
				return sum, err
			})
		env.ExecuteWorkflow(HealthSweep, in)
		require.True(t, env.IsWorkflowCompleted())
		require.NoError(t, env.GetWorkflowError())
		var res SweepResult
		require.NoError(t, env.GetWorkflowResult(&res))
		return res, rec, attempts
	}

	res, rec, attempts := sweepWithRetry()
	assert.Equal(t, []int32{1, 2}, attempts, "one batch, retried once")
	assert.Equal(t, 2, rec.activities["HealthCheckBatch"])
	require.Len(t, rec.batches, 2)
	assert.Equal(t, rec.batches[0].SweepKey, rec.batches[1].SweepKey, "the retry carries the sweep's key")
	assert.NotEmpty(t, rec.batches[0].SweepKey)
	r, ok := fx.result(bad, agent.CheckDisk)
	require.True(t, ok)
	assert.False(t, r.Success)
	assert.Equal(t, 1, r.ConsecutiveFailures, "the retried batch counted the failure again")
	assert.Empty(t, rec.children, "one failing sweep must not recreate at N = 2")
	require.NotNil(t, res.Plan)
	assert.Empty(t, res.Plan.Recreate)
	assert.Equal(t, 4, res.Summary.Routers)

	res, rec, _ = sweepWithRetry()
	r, _ = fx.result(bad, agent.CheckDisk)
	assert.Equal(t, 2, r.ConsecutiveFailures, "the next sweep counts")
	require.Len(t, rec.children, 1, "two failing sweeps recreate")
	assert.Equal(t, bad.ID, rec.children[0].VMID)
	require.Len(t, res.Recreations, 1)
}
