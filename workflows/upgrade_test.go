package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// upgradeRig runs RouterUpgrade in the SDK testsuite with a stand-in for the lifecycle child
// (it takes a given virtual time per router) and mocked plan, check, gate and alert
// activities, and records what happens when (in virtual time).
type upgradeRig struct {
	t     *testing.T
	env   *testsuite.TestWorkflowEnvironment
	start time.Time

	mu        sync.Mutex
	dur       map[string]time.Duration // recreate time per router (default 10m)
	gateFail  map[string]string        // router -> gate failure
	skip      map[string]string        // router -> check says skip, why
	childFail map[string]string        // router -> its recreate child fails, why
	// slowCheck and slowGate are the routers whose check or gate takes virtual time (their
	// own mocks, checkTakes and gateTakes; the rig's mocks answer the others at once).
	slowCheck map[string]bool
	slowGate  map[string]bool
	awaited   map[string][]activities.AwaitRecreateInput // AwaitRecreate calls per router
	started   map[string]time.Time                       // child start, virtual
	ended     map[string]time.Time                       // child end
	gated     map[string]time.Time                       // gate passed or failed
	order     []string                                   // child start order
	inFlight  int
	maxFlight int
	children  map[string]int // child starts per router
	childIDs  map[string]string
	alerts    []activities.UpgradeAlertInput
	resolved  []resolvedAlert
	finished  []activities.FinishInput
}

func newUpgradeRig(t *testing.T, plan activities.UpgradePlan) *upgradeRig {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetTestTimeout(30 * time.Second)
	r := &upgradeRig{t: t, env: env, start: env.Now(), dur: map[string]time.Duration{}, gateFail: map[string]string{},
		skip: map[string]string{}, started: map[string]time.Time{}, ended: map[string]time.Time{}, gated: map[string]time.Time{},
		children: map[string]int{}, childIDs: map[string]string{}, childFail: map[string]string{}, slowCheck: map[string]bool{},
		slowGate: map[string]bool{}, awaited: map[string][]activities.AwaitRecreateInput{}}
	env.RegisterWorkflowWithOptions(RouterUpgrade, workflow.RegisterOptions{Name: RouterUpgradeWorkflowName})
	env.RegisterWorkflowWithOptions(r.fakeLifecycle, workflow.RegisterOptions{Name: LifecycleWorkflowName})
	env.RegisterActivity(&activities.Activities{})
	env.RegisterActivity(&activities.Health{})
	env.OnActivity(a.PlanRouterUpgrade, mock.Anything, mock.Anything).Return(plan, nil)
	env.OnActivity(a.RouterUpgradeCheck, mock.Anything, mock.MatchedBy(func(in activities.UpgradeCheckInput) bool {
		return !r.isSlow(r.slowCheck, in.RouterID)
	})).Return(r.check)
	env.OnActivity(ha.UpgradeHealthGate, mock.Anything, mock.MatchedBy(func(in activities.UpgradeGateInput) bool {
		return !r.isSlow(r.slowGate, in.RouterID)
	})).Return(r.gate)
	recordAlertsAndFinish(env, &r.mu, &r.alerts, &r.finished)
	env.OnActivity(a.ResolveUpgradeAlert, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.UpgradeAlertResolveInput) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.resolved = append(r.resolved, resolvedAlert{in: in, at: env.Now(), alerts: len(r.alerts)})
			return nil
		})
	return r
}

func (r *upgradeRig) check(_ context.Context, in activities.UpgradeCheckInput) (activities.UpgradeCheck, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if why, ok := r.skip[in.RouterID]; ok {
		return activities.UpgradeCheck{Skip: true, Reason: why, Version: "4.15.0", MinReq: "4.15.0"}, nil
	}
	return activities.UpgradeCheck{Version: "4.14.0", MinReq: "4.15.0"}, nil
}

func (r *upgradeRig) gate(_ context.Context, in activities.UpgradeGateInput) (activities.UpgradeGateResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gated[in.RouterID] = r.env.Now()
	if why, ok := r.gateFail[in.RouterID]; ok {
		return activities.UpgradeGateResult{}, temporal.NewNonRetryableApplicationError(why, activities.ErrTypeGateFailed, nil)
	}
	return activities.UpgradeGateResult{RouterID: in.RouterID, Version: "4.15.0", Attempts: 1}, nil
}

func (r *upgradeRig) isSlow(set map[string]bool, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return set[id]
}

// checkTakes makes router id's check take d (virtual).
func (r *upgradeRig) checkTakes(id string, d time.Duration) {
	r.slowCheck[id] = true
	r.env.OnActivity(a.RouterUpgradeCheck, mock.Anything, mock.MatchedBy(func(in activities.UpgradeCheckInput) bool {
		return in.RouterID == id
	})).After(d).Return(r.check)
}

// gateTakes makes router id's gate take d (virtual).
func (r *upgradeRig) gateTakes(id string, d time.Duration) {
	r.slowGate[id] = true
	r.env.OnActivity(ha.UpgradeHealthGate, mock.Anything, mock.MatchedBy(func(in activities.UpgradeGateInput) bool {
		return in.RouterID == id
	})).After(d).Return(r.gate)
}

// carriedChild answers AwaitRecreate of router id after d (virtual): its child run ended with
// a result in state, or failed with why (when not "").
func (r *upgradeRig) carriedChild(id string, d time.Duration, state, why string) {
	r.env.OnActivity(a.AwaitRecreate, mock.Anything, mock.MatchedBy(func(in activities.AwaitRecreateInput) bool {
		return in.RouterID == id
	})).After(d).Return(func(_ context.Context, in activities.AwaitRecreateInput) (activities.AwaitRecreateResult, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.awaited[id] = append(r.awaited[id], in)
		if why != "" {
			return activities.AwaitRecreateResult{}, temporal.NewNonRetryableApplicationError(why, activities.ErrTypeRecreateFailed, nil)
		}
		out, err := json.Marshal(LifecycleResult{VMID: id, Name: "r-" + id, Action: string(ActionRecreate), State: state})
		return activities.AwaitRecreateResult{Result: out}, err
	})
}

// runningAt reports, once the run is over, whether it was still running at each of the
// virtual times given (a callback after its end fires only while abandoned children run on,
// so the clock at the end says nothing).
func (r *upgradeRig) runningAt(at ...time.Duration) *[]bool {
	out := make([]bool, len(at))
	for i, d := range at {
		r.at(d, func() { out[i] = !r.env.IsWorkflowCompleted() })
	}
	return &out
}

// next is the input the run continued as new with (it fails the test when the run did not).
func (r *upgradeRig) next() RouterUpgradeInput {
	r.t.Helper()
	var can *workflow.ContinueAsNewError
	require.True(r.t, errors.As(r.env.GetWorkflowError(), &can), "error %v, want a continue-as-new", r.env.GetWorkflowError())
	require.Equal(r.t, RouterUpgradeWorkflowName, can.WorkflowType.Name)
	var next RouterUpgradeInput
	require.NoError(r.t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
	require.NotNil(r.t, next.State)
	return next
}

// resolvedAlert is one ResolveUpgradeAlert call: when (virtual) and how many alerts were
// raised by then.
type resolvedAlert struct {
	in     activities.UpgradeAlertResolveInput
	at     time.Time
	alerts int
}

// fakeLifecycle stands in for SystemVMLifecycle: it takes the router's time (virtual) and
// ends Running.
func (r *upgradeRig) fakeLifecycle(ctx workflow.Context, in LifecycleInput) (LifecycleResult, error) {
	if in.Action != ActionRecreate {
		return LifecycleResult{}, fmt.Errorf("action %s, want recreate", in.Action)
	}
	r.mu.Lock()
	r.started[in.VMID] = workflow.Now(ctx)
	r.order = append(r.order, in.VMID)
	r.children[in.VMID]++
	r.childIDs[in.VMID] = workflow.GetInfo(ctx).WorkflowExecution.ID
	r.inFlight++
	r.maxFlight = max(r.maxFlight, r.inFlight)
	d, ok := r.dur[in.VMID]
	r.mu.Unlock()
	if !ok {
		d = 10 * time.Minute
	}
	if err := workflow.Sleep(ctx, d); err != nil {
		return LifecycleResult{}, err
	}
	r.mu.Lock()
	r.inFlight--
	r.ended[in.VMID] = workflow.Now(ctx)
	why, failed := r.childFail[in.VMID]
	r.mu.Unlock()
	if failed {
		return LifecycleResult{}, temporal.NewNonRetryableApplicationError(why, "RecreateStepFailed", nil)
	}
	return LifecycleResult{VMID: in.VMID, Name: "r-" + in.VMID, Action: string(in.Action), State: models.StateRunning}, nil
}

func (r *upgradeRig) run(req RouterUpgradeRequest) {
	r.env.ExecuteWorkflow(RouterUpgrade, RouterUpgradeInput{OperationID: "op-1", Request: req})
	require.True(r.t, r.env.IsWorkflowCompleted())
}

func (r *upgradeRig) at(d time.Duration, f func()) { r.env.RegisterDelayedCallback(f, d) }

func (r *upgradeRig) progress() RouterUpgradeProgress {
	return queryUpgradeProgress(r.t, r.env)
}

func (r *upgradeRig) result() RouterUpgradeResult {
	var res RouterUpgradeResult
	require.NoError(r.t, r.env.GetWorkflowResult(&res))
	return res
}

func (r *upgradeRig) states(res RouterUpgradeResult) map[string]string {
	m := map[string]string{}
	for _, x := range res.Routers {
		m[x.ID] = x.State
	}
	return m
}

// plainPlan is one group of n routers r1..rn (no pairs).
func plainPlan(groups ...[]string) activities.UpgradePlan {
	p := activities.UpgradePlan{GroupBy: "zone"}
	for gi, ids := range groups {
		g := activities.PlannedGroup{Key: fmt.Sprintf("z%d", gi+1), Name: fmt.Sprintf("zone-%d", gi+1)}
		for _, id := range ids {
			g.Routers = append(g.Routers, activities.PlannedRouter{ID: id, Name: "r-" + id, ZoneID: g.Key, Version: "4.14.0"})
		}
		p.Groups = append(p.Groups, g)
	}
	return p
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%02d", prefix, i+1)
	}
	return out
}

// TestUpgradeSlidingWindow: at most Parallelism routers are in flight, always that many while
// there is work, and a slow router does not hold the others back (no batch barrier).
func TestUpgradeSlidingWindow(t *testing.T) {
	routers := ids("r", 12)
	r := newUpgradeRig(t, plainPlan(routers))
	r.dur["r01"] = 100 * time.Minute // slow
	r.run(RouterUpgradeRequest{Parallelism: 3})
	require.NoError(t, r.env.GetWorkflowError())
	res := r.result()
	require.Equal(t, 12, res.Counts[UpgradeDone], "%+v", res.Counts)
	require.Equal(t, 3, r.maxFlight, "max in flight")
	// The two other slots went through the 11 quick routers (10 min each) while r01 ran.
	require.WithinDuration(t, r.start.Add(10*time.Minute), r.started["r04"], 0, "r04 starts as soon as r02 or r03 ends")
	require.True(t, r.ended["r12"].Before(r.ended["r01"]), "r12 ended %s, before slow r01 at %s", r.ended["r12"], r.ended["r01"])
	for _, id := range routers {
		require.Equal(t, 1, r.children[id], "children of %s", id)
		require.Equal(t, LifecycleWorkflowID(id), r.childIDs[id], "child of %s runs on the router's own workflow ID", id)
	}
	// Plan order: the first three at once, r12 last (child starts of one instant may
	// interleave).
	for _, id := range routers[:3] {
		require.WithinDuration(t, r.start, r.started[id], 0, "%s starts at once", id)
	}
	require.Equal(t, "r12", r.order[11])
	require.Len(t, r.finished, 1)
	require.Equal(t, models.OpCompleted, r.finished[0].Status)
}

// TestUpgradeGroupsInOrder: the second group's routers start only once the first group's
// have all started, and each router is gated.
func TestUpgradeGroupsInOrder(t *testing.T) {
	r := newUpgradeRig(t, plainPlan([]string{"a1", "a2", "a3"}, []string{"b1", "b2"}))
	r.run(RouterUpgradeRequest{Parallelism: 2})
	require.NoError(t, r.env.GetWorkflowError())
	require.ElementsMatch(t, []string{"a1", "a2", "a3", "b1", "b2"}, r.order)
	for _, x := range []string{"a1", "a2", "a3"} {
		for _, y := range []string{"b1", "b2"} {
			require.False(t, r.started[y].Before(r.started[x]), "%s of group 2 started before %s of group 1", y, x)
		}
	}
	require.WithinDuration(t, r.start.Add(10*time.Minute), r.started["b1"], 0, "b1 fills the slot a1 freed: no group barrier")
	for _, id := range r.order {
		require.False(t, r.gated[id].IsZero(), "%s gated", id)
		require.False(t, r.gated[id].Before(r.ended[id]), "%s gated after its recreate", id)
	}
}

// TestUpgradeWindowWaitsOnTimer: a group whose window opens later waits on a durable timer
// (skipped in the testsuite) and says so in its progress; a daily window is honored in its
// time zone.
func TestUpgradeWindowWaitsOnTimer(t *testing.T) {
	r := newUpgradeRig(t, plainPlan([]string{"a1"}, []string{"b1", "b2"}))
	nb := r.start.Add(3 * time.Hour)
	var mid RouterUpgradeProgress
	r.at(time.Hour, func() { mid = r.progress() })
	r.run(RouterUpgradeRequest{Parallelism: 5, Windows: map[string]UpgradeWindow{"z2": {NotBefore: &nb}}})
	require.NoError(t, r.env.GetWorkflowError())
	require.Equal(t, "waiting-window", mid.Status)
	require.Equal(t, UpgradeWaitingWindow, mid.Routers[1].State, "b1 waits for its window")
	require.Equal(t, UpgradeDone, mid.Routers[0].State, "a1 had no window")
	require.Equal(t, nb.UnixMilli(), mid.Groups[1].WaitingUntil)
	require.False(t, r.started["b1"].Before(nb), "b1 started %s, before its window %s", r.started["b1"], nb)
	require.WithinDuration(t, nb, r.started["b1"], 0)
}

func TestUpgradeDailyWindow(t *testing.T) {
	r := newUpgradeRig(t, plainPlan([]string{"a1", "a2"}))
	seoul, err := time.LoadLocation("Asia/Seoul")
	require.NoError(t, err)
	r.run(RouterUpgradeRequest{Parallelism: 1, Window: &UpgradeWindow{DailyStart: "02:00", DailyEnd: "04:00", TimeZone: "Asia/Seoul"}})
	require.NoError(t, r.env.GetWorkflowError())
	for _, id := range []string{"a1", "a2"} {
		local := r.started[id].In(seoul)
		require.True(t, local.Hour() >= 2 && local.Hour() < 4, "%s started at %s Seoul time", id, local)
	}
}

// TestUpgradeWindowEndedSkips: routers of a group whose window has ended are skipped, not
// waited for forever.
func TestUpgradeWindowEndedSkips(t *testing.T) {
	r := newUpgradeRig(t, plainPlan([]string{"a1"}, []string{"b1"}))
	na := r.start.Add(-time.Minute)
	r.run(RouterUpgradeRequest{Windows: map[string]UpgradeWindow{"z2": {NotAfter: &na}}})
	require.NoError(t, r.env.GetWorkflowError())
	st := r.states(r.result())
	require.Equal(t, UpgradeDone, st["a1"])
	require.Equal(t, UpgradeSkipped, st["b1"])
	require.Zero(t, r.children["b1"])
}

// TestUpgradeFailureBudgetPauses: more failed gates than the budget pause the upgrade, raise
// one alert naming the failed routers and why, and start nothing more until resumed.
func TestUpgradeFailureBudgetPauses(t *testing.T) {
	r := newUpgradeRig(t, plainPlan(ids("r", 6)))
	r.gateFail["r01"] = "health gate: dns_check.py failing"
	r.gateFail["r02"] = "health gate: dhcp.service down"
	var paused RouterUpgradeProgress
	r.at(3*time.Hour, func() {
		paused = r.progress()
		r.env.SignalWorkflow(SignalUpgradeResume, nil)
	})
	r.run(RouterUpgradeRequest{Parallelism: 1, Budget: FailureBudget{Count: 1}})
	require.NoError(t, r.env.GetWorkflowError())
	require.Equal(t, "paused", paused.Status, "%+v", paused.Step)
	require.Contains(t, paused.PauseReason, "failure budget 1 exceeded")
	require.Equal(t, 2, paused.Counts[UpgradeFailed])
	require.Equal(t, 4, paused.Counts[UpgradePending], "nothing started after the second failure")
	require.Len(t, r.alerts, 1)
	require.Contains(t, r.alerts[0].Subject, "r-r01")
	require.Contains(t, r.alerts[0].Subject, "r-r02")
	require.Contains(t, r.alerts[0].Description, "dhcp.service down")
	require.False(t, r.started["r03"].Before(r.start.Add(3*time.Hour)), "r03 started only after the resume")
	res := r.result()
	require.Equal(t, 4, res.Counts[UpgradeDone])
	require.Equal(t, 2, res.Counts[UpgradeFailed])
}

// TestUpgradeBudgetAlertResolvedOnResume: each budget pause raises its alert, and the
// operator's resume resolves it at once (before the next router starts); a second pause raises
// and a second resume resolves the second alert; the end resolves nothing more.
func TestUpgradeBudgetAlertResolvedOnResume(t *testing.T) {
	r := newUpgradeRig(t, plainPlan(ids("r", 6)))
	for _, id := range []string{"r01", "r02", "r03", "r04"} {
		r.gateFail[id] = "health gate: dhcp.service down"
	}
	var pausedAgain RouterUpgradeProgress
	r.at(3*time.Hour, func() { r.env.SignalWorkflow(SignalUpgradeResume, nil) })
	r.at(5*time.Hour, func() { pausedAgain = r.progress() })
	r.at(6*time.Hour, func() { r.env.SignalWorkflow(SignalUpgradeResume, nil) })
	r.run(RouterUpgradeRequest{Parallelism: 1, Budget: FailureBudget{Count: 1}})
	require.NoError(t, r.env.GetWorkflowError())
	require.Equal(t, "paused", pausedAgain.Status, "the budget counts anew after the resume and is spent again")
	require.Len(t, r.alerts, 2)
	require.Len(t, r.resolved, 2, "one resolve per resume, none at the end")
	for i, at := range []time.Duration{3 * time.Hour, 6 * time.Hour} {
		got := r.resolved[i]
		require.Equal(t, "op-1", got.in.OperationID)
		require.Equal(t, "resumed by an operator", got.in.Why)
		require.WithinDuration(t, r.start.Add(at), got.at, 0, "resolved at the resume")
		require.Equal(t, i+1, got.alerts, "resolve %d follows alert %d", i+1, i+1)
	}
	require.False(t, r.started["r03"].Before(r.start.Add(3*time.Hour)))
	require.False(t, r.started["r05"].Before(r.start.Add(6*time.Hour)))
	res := r.result()
	require.Equal(t, 2, res.Counts[UpgradeDone])
	require.Equal(t, 4, res.Counts[UpgradeFailed])
}

// TestUpgradeBudgetAlertResolvedAtEnd: an upgrade that ends while paused by its budget (its
// last routers failed; or it is canceled) resolves the alert before recording its end.
func TestUpgradeBudgetAlertResolvedAtEnd(t *testing.T) {
	t.Run("all ended", func(t *testing.T) {
		r := newUpgradeRig(t, plainPlan(ids("r", 2)))
		r.gateFail["r01"], r.gateFail["r02"] = "health gate: dns_check.py failing", "health gate: dns_check.py failing"
		r.run(RouterUpgradeRequest{Parallelism: 2})
		require.NoError(t, r.env.GetWorkflowError())
		require.Len(t, r.alerts, 1)
		require.Len(t, r.resolved, 1)
		require.Contains(t, r.resolved[0].in.Why, "the upgrade ended: 2 failed")
		require.Len(t, r.finished, 1)
		require.Equal(t, models.OpCompleted, r.finished[0].Status)
	})
	t.Run("canceled", func(t *testing.T) {
		r := newUpgradeRig(t, plainPlan(ids("r", 4)))
		r.gateFail["r01"] = "health gate: dns_check.py failing"
		var paused RouterUpgradeProgress
		r.at(2*time.Hour, func() {
			paused = r.progress()
			r.env.CancelWorkflow()
		})
		r.run(RouterUpgradeRequest{Parallelism: 1})
		require.Equal(t, "paused", paused.Status)
		var canceled *temporal.CanceledError
		require.True(t, errors.As(r.env.GetWorkflowError(), &canceled), "error %v", r.env.GetWorkflowError())
		require.Len(t, r.resolved, 1, "the cancel does not keep the alert open")
		require.Contains(t, r.resolved[0].in.Why, "the upgrade ended")
		require.WithinDuration(t, r.start.Add(2*time.Hour), r.resolved[0].at, 0)
		require.Equal(t, models.OpCanceled, r.finished[len(r.finished)-1].Status)
	})
	t.Run("continued as new while paused", func(t *testing.T) {
		routers := ids("r", 4)
		r := newUpgradeRig(t, plainPlan(routers))
		r.gateFail["r01"], r.gateFail["r02"] = "health gate: dns_check.py failing", "health gate: dns_check.py failing"
		r.run(RouterUpgradeRequest{Parallelism: 1, RoutersPerRun: 2, Budget: FailureBudget{Count: 1}})
		var can *workflow.ContinueAsNewError
		require.True(t, errors.As(r.env.GetWorkflowError(), &can), "error %v", r.env.GetWorkflowError())
		var next RouterUpgradeInput
		require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
		require.True(t, next.State.Paused && next.State.BudgetAlertOpen, "the open alert is carried: %+v", next.State)
		require.Len(t, r.alerts, 1)
		require.Empty(t, r.resolved, "still paused: the alert stays open")

		r2 := newUpgradeRig(t, plainPlan(routers))
		r2.at(time.Hour, func() { r2.env.SignalWorkflow(SignalUpgradeResume, nil) })
		r2.env.ExecuteWorkflow(RouterUpgrade, next)
		require.NoError(t, r2.env.GetWorkflowError())
		require.Empty(t, r2.alerts, "the next run raises no second alert for the same pause")
		require.Len(t, r2.resolved, 1)
		require.Equal(t, "resumed by an operator", r2.resolved[0].in.Why)
		require.WithinDuration(t, r2.start.Add(time.Hour), r2.resolved[0].at, 0)
		require.Equal(t, 2, r2.result().Counts[UpgradeDone])
	})
	t.Run("recorded before the change", func(t *testing.T) {
		r := newUpgradeRig(t, plainPlan(ids("r", 2)))
		r.env.OnGetVersion(resolveBudgetAlertChange, workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
		r.gateFail["r01"] = "health gate: dns_check.py failing"
		r.at(time.Hour, func() { r.env.SignalWorkflow(SignalUpgradeResume, nil) })
		r.run(RouterUpgradeRequest{Parallelism: 1})
		require.NoError(t, r.env.GetWorkflowError())
		require.Len(t, r.alerts, 1)
		require.Empty(t, r.resolved, "a run at the default version keeps its old command sequence")
	})
}

func TestUpgradeFailureBudgetPercent(t *testing.T) {
	b, err := ParseFailureBudget("10%")
	require.NoError(t, err)
	require.Equal(t, 2, b.Allowed(25))
	b, err = ParseFailureBudget("3")
	require.NoError(t, err)
	require.Equal(t, 3, b.Allowed(1000))
	_, err = ParseFailureBudget("ten")
	require.ErrorContains(t, err, "failureBudget")
	_, err = ParseFailureBudget("150%")
	require.ErrorContains(t, err, "failureBudget")
}

// TestUpgradePauseResumeCancel: pause stops new starts (in-flight finish), resume goes on,
// cancel lets the routers in flight finish and starts nothing new; the operation ends
// canceled.
func TestUpgradePauseResumeCancel(t *testing.T) {
	r := newUpgradeRig(t, plainPlan(ids("r", 10)))
	var afterPause RouterUpgradeProgress
	r.at(5*time.Minute, func() { r.env.SignalWorkflow(SignalUpgradePause, "change freeze") })
	r.at(time.Hour, func() {
		afterPause = r.progress()
		r.env.SignalWorkflow(SignalUpgradeResume, nil)
	})
	r.at(time.Hour+15*time.Minute, func() { r.env.CancelWorkflow() })
	r.run(RouterUpgradeRequest{Parallelism: 2})
	// Paused at 5m with r01, r02 in flight: they finished at 10m, nothing else until 1h.
	require.Equal(t, "paused", afterPause.Status)
	require.Equal(t, "change freeze", afterPause.PauseReason)
	require.Equal(t, 2, afterPause.Counts[UpgradeDone])
	require.WithinDuration(t, r.start.Add(time.Hour), r.started["r03"], 0)
	// Canceled at 1h15m with r05, r06 in flight (started at 1h10m): they finished.
	var canceled *temporal.CanceledError
	require.True(t, errors.As(r.env.GetWorkflowError(), &canceled), "error %v", r.env.GetWorkflowError())
	for _, id := range []string{"r05", "r06"} {
		require.False(t, r.ended[id].IsZero(), "%s in flight at the cancel finished", id)
		require.False(t, r.gated[id].IsZero(), "%s in flight at the cancel was gated", id)
	}
	require.Zero(t, r.children["r07"], "nothing starts after the cancel")
	require.Len(t, r.order, 6)
	require.Equal(t, models.OpCanceled, r.finished[len(r.finished)-1].Status)
}

// TestUpgradeParallelismChange: a signal raises the parallelism while it runs.
func TestUpgradeParallelismChange(t *testing.T) {
	r := newUpgradeRig(t, plainPlan(ids("r", 12)))
	r.at(15*time.Minute, func() { r.env.SignalWorkflow(SignalUpgradeParallelism, 4) })
	var p RouterUpgradeProgress
	r.at(25*time.Minute, func() { p = r.progress() })
	r.run(RouterUpgradeRequest{Parallelism: 2})
	require.NoError(t, r.env.GetWorkflowError())
	require.Equal(t, 4, r.maxFlight)
	require.Equal(t, 4, p.Parallelism)
	require.Equal(t, 4, p.InFlight)
	// Before the change, two at a time: r03 and r04 started at 10m, r05 not before 15m.
	require.WithinDuration(t, r.start.Add(15*time.Minute), r.started["r05"], 0)
}

// TestUpgradeRedundantPair: the BACKUP goes first and its PRIMARY only after the BACKUP passed
// its gate, whatever the parallelism; a BACKUP that fails leaves its PRIMARY untouched.
func TestUpgradeRedundantPair(t *testing.T) {
	plan := activities.UpgradePlan{GroupBy: "zone", Groups: []activities.PlannedGroup{{Key: "z1", Name: "zone-1", Routers: []activities.PlannedRouter{
		{ID: "b1", Name: "r-b1", ZoneID: "z1", RedundantState: models.RedundantBackup},
		{ID: "p1", Name: "r-p1", ZoneID: "z1", RedundantState: models.RedundantPrimary, After: "b1"},
		{ID: "b2", Name: "r-b2", ZoneID: "z1", RedundantState: models.RedundantBackup},
		{ID: "p2", Name: "r-p2", ZoneID: "z1", RedundantState: models.RedundantPrimary, After: "b2"},
		{ID: "s1", Name: "r-s1", ZoneID: "z1"},
	}}}}
	r := newUpgradeRig(t, plan)
	r.gateFail["b2"] = "health gate: gateways_check.py failing"
	r.run(RouterUpgradeRequest{Parallelism: 10, Budget: FailureBudget{Count: 5}})
	require.NoError(t, r.env.GetWorkflowError())
	require.False(t, r.started["p1"].Before(r.gated["b1"]), "p1 started %s before b1 passed its gate %s", r.started["p1"], r.gated["b1"])
	require.WithinDuration(t, r.start, r.started["s1"], 0, "a router without a peer does not wait")
	st := r.states(r.result())
	require.Equal(t, UpgradeDone, st["p1"])
	require.Equal(t, UpgradeFailed, st["b2"])
	require.Equal(t, UpgradeSkipped, st["p2"], "PRIMARY of a failed BACKUP is left up")
	require.Zero(t, r.children["p2"])
}

// TestUpgradeSkipsUpToDate: a router already at the version at its turn is skipped (no
// recreate), as after a restart.
func TestUpgradeSkipsUpToDate(t *testing.T) {
	r := newUpgradeRig(t, plainPlan([]string{"r1", "r2"}))
	r.skip["r2"] = "already at version 4.15.0 (minimum 4.15.0)"
	r.run(RouterUpgradeRequest{})
	require.NoError(t, r.env.GetWorkflowError())
	st := r.states(r.result())
	require.Equal(t, UpgradeSkipped, st["r2"])
	require.Zero(t, r.children["r2"])
	require.Equal(t, 1, r.children["r1"])
}

// TestUpgradeContinueAsNew: a run that started draining before the continue-as-new without
// drain (the default version) still lets its routers in flight finish after RoutersPerRun and
// continues as new carrying the state; the next run answers the progress query from it and
// upgrades only the rest.
func TestUpgradeContinueAsNew(t *testing.T) {
	routers := ids("r", 7)
	r := newUpgradeRig(t, plainPlan(routers))
	r.env.OnGetVersion(continueWithoutDrainChange, workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
	r.run(RouterUpgradeRequest{Parallelism: 2, RoutersPerRun: 3})
	next := r.next()
	done := 0
	for _, x := range next.State.Routers {
		if x.State == UpgradeDone {
			done++
		}
		require.NotEqual(t, UpgradeUpgrading, x.State, "a run drains before it continues")
	}
	require.Equal(t, 4, done, "3 finished, then the 4th in flight drained")
	require.Empty(t, next.State.Carried)
	require.Empty(t, r.finished, "the operation is not finished by a continue-as-new")

	r2 := newUpgradeRig(t, plainPlan(routers))
	var p RouterUpgradeProgress
	r2.at(time.Minute, func() { p = r2.progress() })
	r2.env.ExecuteWorkflow(RouterUpgrade, next)
	require.NoError(t, r2.env.GetWorkflowError())
	require.Equal(t, 2, p.Run)
	require.Equal(t, 4, p.Counts[UpgradeDone], "query in the second run sees the first run's routers")
	require.ElementsMatch(t, routers[4:], r2.order, "only the rest is upgraded")
	require.Equal(t, 7, r2.result().Counts[UpgradeDone])
}

func TestUpgradeWindowNext(t *testing.T) {
	base := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	w := UpgradeWindow{DailyStart: "22:00", DailyEnd: "02:00"}
	open, wait, ended := w.Next(base)
	require.False(t, open)
	require.False(t, ended)
	require.Equal(t, 10*time.Hour, wait)
	open, _, _ = w.Next(base.Add(13 * time.Hour)) // 01:00 next day
	require.True(t, open)
	require.Error(t, UpgradeWindow{DailyStart: "25:00", DailyEnd: "01:00"}.Validate("window"))
	require.ErrorContains(t, UpgradeWindow{TimeZone: "Mars/Olympus", DailyStart: "01:00", DailyEnd: "02:00"}.Validate("window"), "window.timeZone")
}

// redundantPairPlan is a plan of one redundant pair in zone z1: the BACKUP b1, then its
// PRIMARY p1 once b1 passed its gate.
func redundantPairPlan() activities.UpgradePlan {
	return activities.UpgradePlan{GroupBy: "zone", Groups: []activities.PlannedGroup{{Key: "z1", Name: "zone-1", Routers: []activities.PlannedRouter{
		{ID: "b1", Name: "r-b1", ZoneID: "z1", RedundantState: models.RedundantBackup},
		{ID: "p1", Name: "r-p1", ZoneID: "z1", RedundantState: models.RedundantPrimary, After: "b1"},
	}}}}
}

// TestUpgradeEndsWhenTheLastIsSkipped: a RouterUpgrade whose last router in flight is a BACKUP
// that fails its gate skips the PRIMARY and ends, whatever the parallelism (the engine used to
// wait forever there: the skip happened in dispatch, after which nothing changed any more).
func TestUpgradeEndsWhenTheLastIsSkipped(t *testing.T) {
	for _, c := range []struct {
		parallelism int
		why         string
	}{{2, "health gate: gateways_check.py failing"}, {5, "health gate: dhcp.service down"}} {
		t.Run(fmt.Sprintf("parallelism %d", c.parallelism), func(t *testing.T) {
			r := newUpgradeRig(t, redundantPairPlan())
			r.gateFail["b1"] = c.why
			r.run(RouterUpgradeRequest{Parallelism: c.parallelism, Budget: FailureBudget{Count: 1}})
			require.NoError(t, r.env.GetWorkflowError())
			st := r.states(r.result())
			require.Equal(t, UpgradeFailed, st["b1"])
			require.Equal(t, UpgradeSkipped, st["p1"])
			require.Zero(t, r.children["p1"])
			require.Equal(t, models.OpCompleted, r.finished[len(r.finished)-1].Status)
		})
	}
}

// recordAlertsAndFinish mocks the alert and the operation's end of an upgrade rig (either
// kind): each call is appended, under mu, to alerts or finished.
func recordAlertsAndFinish(env *testsuite.TestWorkflowEnvironment, mu *sync.Mutex, alerts *[]activities.UpgradeAlertInput,
	finished *[]activities.FinishInput) {
	env.OnActivity(a.RaiseUpgradeAlert, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.UpgradeAlertInput) error {
			mu.Lock()
			defer mu.Unlock()
			*alerts = append(*alerts, in)
			return nil
		})
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error {
			mu.Lock()
			defer mu.Unlock()
			*finished = append(*finished, in)
			return nil
		})
}

// queryUpgradeProgress answers the progress query of the upgrade running in env.
func queryUpgradeProgress(t *testing.T, env *testsuite.TestWorkflowEnvironment) RouterUpgradeProgress {
	t.Helper()
	v, err := env.QueryWorkflow(QueryProgress)
	require.NoError(t, err)
	var p RouterUpgradeProgress
	require.NoError(t, v.Get(&p))
	return p
}
