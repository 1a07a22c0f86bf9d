package workflows

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// handOverRig is a first run that continues as new with routers in flight: r01..r07,
// parallelism 3, RoutersPerRun 3. r01 and r02 take 5 minutes (r04 and r05 take their slots at
// 5m), r03 6 minutes (the third finished router: the run stops starting routers at 6m), r04
// and r05 20 minutes, r05's check 3 minutes: at 6m r04's child runs and r05 is in its check,
// which the run waits for (not the 20 minutes of the routers); at 8m it hands both over.
func handOverRig(t *testing.T) *upgradeRig {
	r := newUpgradeRig(t, plainPlan(ids("r", 7)))
	r.dur["r01"], r.dur["r02"], r.dur["r03"] = 5*time.Minute, 5*time.Minute, 6*time.Minute
	r.dur["r04"], r.dur["r05"] = 20*time.Minute, 20*time.Minute
	r.checkTakes("r05", 3*time.Minute)
	return r
}

var handOverRequest = RouterUpgradeRequest{Parallelism: 3, RoutersPerRun: 3}

// TestUpgradeContinueAsNewWithoutDrain: once RoutersPerRun routers finished, a recreate-mode
// upgrade waits only until its routers in flight are past their check and their child's start
// (not until they end), says "draining" meanwhile, and continues as new carrying them — each
// with its child run's IDs — and the signals it got; the next run counts them in flight
// (progress: upgrading, InFlight), takes their results from AwaitRecreate on that child run and
// gates them, fills the rest of the window at once with routers not started, and starts no
// second recreate child for any router.
func TestUpgradeContinueAsNewWithoutDrain(t *testing.T) {
	r := handOverRig(t)
	var waiting RouterUpgradeProgress
	r.at(7*time.Minute, func() {
		waiting = r.progress()
		r.env.SignalWorkflow(SignalUpgradeParallelism, 4)
	})
	running := r.runningAt(7*time.Minute+59*time.Second, 8*time.Minute+time.Second)
	r.run(handOverRequest)
	next := r.next()
	require.Equal(t, []bool{true, false}, *running,
		"continued as new once r05's child started (8m), not when r04 and r05 ended (25m, 28m)")
	require.Equal(t, "draining", waiting.Status)
	require.Equal(t, 2, waiting.InFlight)
	require.Equal(t, 4, next.State.Parallelism, "the signal during the hand-over is carried")
	require.Equal(t, []UpgradeCarried{
		{Router: 3, Phase: CarriedRecreate, WorkflowID: LifecycleWorkflowID("r04"), RunID: next.State.Carried[0].RunID},
		{Router: 4, Phase: CarriedRecreate, WorkflowID: LifecycleWorkflowID("r05"), RunID: next.State.Carried[1].RunID},
	}, next.State.Carried)
	for _, c := range next.State.Carried {
		require.NotEmpty(t, c.RunID, "the child's run ID is carried")
	}
	states := map[string]string{}
	for _, x := range next.State.Routers {
		states[x.ID] = x.State
	}
	require.Equal(t, map[string]string{"r01": UpgradeDone, "r02": UpgradeDone, "r03": UpgradeDone, "r04": UpgradeUpgrading,
		"r05": UpgradeUpgrading, "r06": UpgradePending, "r07": UpgradePending}, states)
	require.Empty(t, r.finished, "the operation is not finished by a continue-as-new")

	// The next run: r04's child ends 17 minutes in (25m), r05's 20 minutes in (28m).
	r2 := newUpgradeRig(t, plainPlan(ids("r", 7)))
	r2.carriedChild("r04", 17*time.Minute, models.StateRunning, "")
	r2.carriedChild("r05", 20*time.Minute, models.StateRunning, "")
	var first, last RouterUpgradeProgress
	r2.at(time.Minute, func() { first = r2.progress() })
	r2.at(18*time.Minute, func() { last = r2.progress() })
	r2.env.ExecuteWorkflow(RouterUpgrade, next)
	require.NoError(t, r2.env.GetWorkflowError())
	require.Equal(t, 2, first.Run)
	require.Equal(t, "running", first.Status)
	require.Equal(t, 4, first.InFlight, "the carried routers count in flight")
	require.Equal(t, 4, first.Counts[UpgradeUpgrading])
	require.Equal(t, 3, first.Counts[UpgradeDone])
	require.Equal(t, "running", last.Status, "RoutersPerRun reached with nothing left to start: the run just finishes")
	for _, id := range []string{"r06", "r07"} {
		require.WithinDuration(t, r2.start, r2.started[id], 0, "%s fills the window at once", id)
	}
	for i, id := range []string{"r04", "r05"} {
		require.Len(t, r2.awaited[id], 1, "%s awaited once", id)
		require.Equal(t, activities.AwaitRecreateInput{WorkflowID: next.State.Carried[i].WorkflowID, RunID: next.State.Carried[i].RunID,
			RouterID: id}, r2.awaited[id][0])
	}
	require.WithinDuration(t, r2.start.Add(17*time.Minute), r2.gated["r04"], 0, "r04 gated once its child ended")
	require.WithinDuration(t, r2.start.Add(20*time.Minute), r2.gated["r05"], 0)
	res := r2.result()
	require.Equal(t, 7, res.Counts[UpgradeDone], "%+v", res.Counts)
	for _, x := range res.Routers {
		require.Equal(t, 1, r.children[x.ID]+r2.children[x.ID], "recreate children of %s over both runs", x.ID)
	}
	require.Len(t, r2.finished, 1)
	require.Equal(t, models.OpCompleted, r2.finished[0].Status)
}

// TestUpgradeCarriedRoutersEnd: a carried router whose child failed fails with the reason the
// run that started the child would have given it; one whose child left it Stopped fails as a
// direct router would; one carried in its gate gets its gate again in the next run (and no
// await, no child).
func TestUpgradeCarriedRoutersEnd(t *testing.T) {
	// r01's child fails at 5m (the finished router: the hand-over), r02 and r04 are in their
	// children then, r03 in its 10-minute gate since 2m; r05 is not started.
	plan := plainPlan(ids("r", 5))
	r := newUpgradeRig(t, plan)
	r.dur["r01"], r.dur["r02"], r.dur["r03"], r.dur["r04"] = 5*time.Minute, 20*time.Minute, 2*time.Minute, 20*time.Minute
	r.childFail["r01"] = "clone of r-r01: no capacity on host h1"
	r.gateTakes("r03", 10*time.Minute)
	req := RouterUpgradeRequest{Parallelism: 4, RoutersPerRun: 1, Budget: FailureBudget{Count: 5}}
	running := r.runningAt(5*time.Minute-time.Second, 5*time.Minute+time.Second)
	r.run(req)
	next := r.next()
	require.Equal(t, []bool{true, false}, *running, "continued as new at 5m")
	require.Equal(t, []string{CarriedRecreate, CarriedGate, CarriedRecreate}, phases(next.State.Carried))
	require.Equal(t, []int{1, 2, 3}, []int{next.State.Carried[0].Router, next.State.Carried[1].Router, next.State.Carried[2].Router})
	require.Equal(t, UpgradeHealthCheck, next.State.Routers[2].State)
	direct := next.State.Routers[0]
	require.Equal(t, UpgradeFailed, direct.State)
	require.Equal(t, "recreate: clone of r-r01: no capacity on host h1", direct.Reason)

	next.Request.RoutersPerRun = 100 // the next run ends the upgrade
	r2 := newUpgradeRig(t, plan)
	r2.carriedChild("r02", 3*time.Minute, "", "clone of r-r02: no capacity on host h1")
	r2.carriedChild("r04", time.Minute, models.StateStopped, "")
	r2.env.ExecuteWorkflow(RouterUpgrade, next)
	require.NoError(t, r2.env.GetWorkflowError())
	res := r2.result()
	byID := upgradeRouters(res)
	require.Equal(t, UpgradeFailed, byID["r02"].State)
	require.Equal(t, strings.ReplaceAll(direct.Reason, "r01", "r02"), byID["r02"].Reason,
		"a carried child's failure reads as a direct one's")
	require.Equal(t, UpgradeFailed, byID["r04"].State)
	require.Equal(t, "recreate left it Stopped, not Running", byID["r04"].Reason)
	_, gated := r2.gated["r02"]
	require.False(t, gated, "a failed recreate is not gated")
	require.Equal(t, UpgradeDone, byID["r03"].State, "r03's gate ran again in the next run")
	require.WithinDuration(t, r2.start, r2.gated["r03"], 0)
	require.Empty(t, r2.awaited["r03"], "a router carried in its gate is not awaited")
	require.Equal(t, UpgradeDone, byID["r05"].State)
	for _, id := range []string{"r02", "r03", "r04"} {
		require.Zero(t, r2.children[id], "no second child for %s", id)
	}
	require.Equal(t, 1, r2.children["r05"])
}

// TestUpgradeCarriedAgain: a router carried to a run that continues as new before it ends is
// carried again with the same child run (never a second child), and the run after that takes
// its result.
func TestUpgradeCarriedAgain(t *testing.T) {
	plan := plainPlan(ids("r", 5))
	r := newUpgradeRig(t, plan)
	r.dur["r01"], r.dur["r02"] = 5*time.Minute, 30*time.Minute
	r.run(RouterUpgradeRequest{Parallelism: 2, RoutersPerRun: 1})
	next := r.next()
	require.Len(t, next.State.Carried, 1)
	carried := next.State.Carried[0]
	require.Equal(t, UpgradeCarried{Router: 1, Phase: CarriedRecreate, WorkflowID: LifecycleWorkflowID("r02"), RunID: carried.RunID}, carried)

	// Run 2: r03 takes the free slot and finishes at 10m, before r02's child: hand-over again.
	r2 := newUpgradeRig(t, plan)
	r2.carriedChild("r02", 30*time.Minute, models.StateRunning, "")
	running := r2.runningAt(10*time.Minute-time.Second, 10*time.Minute+time.Second)
	r2.env.ExecuteWorkflow(RouterUpgrade, next)
	next2 := r2.next()
	require.Equal(t, []bool{true, false}, *running, "continued as new when r03 finished")
	require.Equal(t, []UpgradeCarried{carried}, next2.State.Carried, "r02 carried again with its child run")
	require.Equal(t, 2, next2.State.Runs, "handed over by the second run")
	require.Zero(t, r2.children["r02"])

	next2.Request.RoutersPerRun = 100
	r3 := newUpgradeRig(t, plan)
	r3.carriedChild("r02", 5*time.Minute, models.StateRunning, "")
	r3.env.ExecuteWorkflow(RouterUpgrade, next2)
	require.NoError(t, r3.env.GetWorkflowError())
	res := r3.result()
	require.Equal(t, 5, res.Counts[UpgradeDone], "%+v", res.Counts)
	require.Equal(t, carried.RunID, r3.awaited["r02"][0].RunID)
	for _, id := range ids("r", 5) {
		require.Equal(t, 1, r.children[id]+r2.children[id]+r3.children[id], "recreate children of %s over three runs", id)
	}
}

// TestUpgradeCanceledAtHandOver: an operator's cancel while the run waits to hand over lets
// every router in flight finish in that run (no continue-as-new) and starts nothing new; a
// cancel right after the hand-over lets the carried routers finish (awaited and gated) with the
// one started since, and starts nothing more.
func TestUpgradeCanceledAtHandOver(t *testing.T) {
	t.Run("while handing over", func(t *testing.T) {
		r := handOverRig(t)
		var canceling RouterUpgradeProgress
		r.at(7*time.Minute, func() { r.env.CancelWorkflow() })
		r.at(9*time.Minute, func() { canceling = r.progress() })
		r.run(handOverRequest)
		var canceled *temporal.CanceledError
		require.True(t, errors.As(r.env.GetWorkflowError(), &canceled), "error %v", r.env.GetWorkflowError())
		require.Equal(t, "canceling", canceling.Status)
		require.Equal(t, 2, canceling.InFlight)
		for _, id := range []string{"r04", "r05"} {
			require.False(t, r.ended[id].IsZero(), "%s in flight at the cancel finished", id)
			require.False(t, r.gated[id].IsZero(), "%s in flight at the cancel was gated", id)
		}
		require.Zero(t, r.children["r06"], "nothing starts after the cancel")
		require.Equal(t, models.OpCanceled, r.finished[len(r.finished)-1].Status)
	})
	t.Run("right after the hand-over", func(t *testing.T) {
		r := handOverRig(t)
		r.run(handOverRequest)
		next := r.next()
		r2 := newUpgradeRig(t, plainPlan(ids("r", 7)))
		r2.carriedChild("r04", 17*time.Minute, models.StateRunning, "")
		r2.carriedChild("r05", 20*time.Minute, models.StateRunning, "")
		r2.at(time.Minute, func() { r2.env.CancelWorkflow() })
		r2.env.ExecuteWorkflow(RouterUpgrade, next)
		var canceled *temporal.CanceledError
		require.True(t, errors.As(r2.env.GetWorkflowError(), &canceled), "error %v", r2.env.GetWorkflowError())
		require.WithinDuration(t, r2.start.Add(17*time.Minute), r2.gated["r04"], 0, "carried r04 finished after the cancel")
		require.WithinDuration(t, r2.start.Add(20*time.Minute), r2.gated["r05"], 0, "carried r05 finished after the cancel")
		require.Equal(t, 1, r2.children["r06"], "r06 took the free slot before the cancel")
		require.False(t, r2.gated["r06"].IsZero())
		require.Zero(t, r2.children["r07"], "nothing starts after the cancel")
		require.Equal(t, models.OpCanceled, r2.finished[len(r2.finished)-1].Status)
	})
}

// TestUpgradePatchModeDrains: a patch-mode upgrade keeps the drain: its routers in flight
// finish before it continues as new, none is carried.
func TestUpgradePatchModeDrains(t *testing.T) {
	r := newPatchRig(t, plainPlan(ids("r", 4)))
	r.run(RouterUpgradeRequest{Parallelism: 2, RoutersPerRun: 1, Mode: UpgradeModePatch})
	next := r.next()
	require.Empty(t, next.State.Carried)
	for _, x := range next.State.Routers {
		require.True(t, x.State == UpgradeDone || x.State == UpgradePending, "%s %s at the continue-as-new", x.ID, x.State)
	}
	require.Equal(t, 2, len(r.patched), "the second router in flight finished first")
}

func phases(cs []UpgradeCarried) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Phase)
	}
	return out
}

func upgradeRouters(res RouterUpgradeResult) map[string]UpgradeRouter {
	m := map[string]UpgradeRouter{}
	for _, x := range res.Routers {
		m[x.ID] = x
	}
	return m
}
