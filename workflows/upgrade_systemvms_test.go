package workflows

import (
	"context"
	"errors"
	"fmt"
	"strings"
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

// sysvmRig runs SystemVMUpgrade in the SDK testsuite with a stand-in lifecycle child (10
// virtual minutes per recreate) and mocked plan, check, gate and alert activities. It records
// every VM's recreate and gate, and how many VMs of each zone and kind were down at once: a
// VM is down from its recreate's start until its gate passed (or, failed, forever: the rig
// counts a failed VM as not serving again).
type sysvmRig struct {
	t     *testing.T
	env   *testsuite.TestWorkflowEnvironment
	start time.Time
	vms   map[string]activities.PlannedRouter

	mu          sync.Mutex
	serving     map[string]int // zone/type -> other VMs serving (check's Serving)
	down        map[string]int // zone/type -> VMs between recreate start and gate pass
	maxDown     map[string]int
	inFlight    int
	maxFlight   int
	events      []string // "recreate v1", "gate v1", ...
	started     map[string]time.Time
	children    map[string]int
	childIDs    map[string]string
	checkFail   map[string]string
	recreateErr map[string]string
	gateFail    map[string]string
	alerts      []activities.UpgradeAlertInput
	finished    []activities.FinishInput
}

// sysvmPlan builds a plan as PlanSystemVMUpgrade does: per zone CPVMs then SSVMs, the VMs of
// one zone and kind chained. vms are "zone/type/id".
func sysvmPlan(vms ...string) activities.UpgradePlan {
	p := activities.UpgradePlan{GroupBy: activities.UpgradeGroupZone}
	gi := map[string]int{}
	last := map[string]string{}
	for _, v := range vms {
		parts := strings.Split(v, "/")
		zone, typ, id := parts[0], parts[1], parts[2]
		i, ok := gi[zone]
		if !ok {
			i = len(p.Groups)
			gi[zone] = i
			p.Groups = append(p.Groups, activities.PlannedGroup{Key: zone, Name: "zone-" + zone})
		}
		slot := zone + "/" + typ
		p.Groups[i].Routers = append(p.Groups[i].Routers, activities.PlannedRouter{ID: id, Name: id + "-VM", ZoneID: zone,
			Version: "4.14.0", Type: typ, After: last[slot]})
		last[slot] = id
	}
	return p
}

func newSysvmRig(t *testing.T, plan activities.UpgradePlan) *sysvmRig {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetTestTimeout(30 * time.Second)
	r := &sysvmRig{t: t, env: env, start: env.Now(), vms: map[string]activities.PlannedRouter{}, serving: map[string]int{},
		down: map[string]int{}, maxDown: map[string]int{}, started: map[string]time.Time{}, children: map[string]int{},
		childIDs: map[string]string{}, checkFail: map[string]string{}, recreateErr: map[string]string{}, gateFail: map[string]string{}}
	for _, g := range plan.Groups {
		for _, v := range g.Routers {
			r.vms[v.ID] = v
		}
	}
	env.RegisterWorkflowWithOptions(SystemVMUpgrade, workflow.RegisterOptions{Name: SystemVMUpgradeWorkflowName})
	env.RegisterWorkflowWithOptions(r.fakeLifecycle, workflow.RegisterOptions{Name: LifecycleWorkflowName})
	env.RegisterActivity(&activities.Activities{})
	env.OnActivity(a.PlanSystemVMUpgrade, mock.Anything, mock.Anything).Return(plan, nil)
	env.OnActivity(a.SystemVMUpgradeCheck, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.UpgradeCheckInput) (activities.SystemVMUpgradeCheck, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if why, ok := r.checkFail[in.RouterID]; ok {
				return activities.SystemVMUpgradeCheck{}, temporal.NewNonRetryableApplicationError(why, "Test", nil)
			}
			v := r.vms[in.RouterID]
			return activities.SystemVMUpgradeCheck{UpgradeCheck: activities.UpgradeCheck{Version: "4.14.0", MinReq: "4.15.0"},
				Type: v.Type, Serving: r.serving[v.ZoneID+"/"+v.Type]}, nil
		})
	env.OnActivity(a.SystemVMUpgradeGate, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.SystemVMGateInput) (activities.UpgradeGateResult, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.events = append(r.events, "gate "+in.VMID)
			if why, ok := r.gateFail[in.VMID]; ok {
				return activities.UpgradeGateResult{}, temporal.NewNonRetryableApplicationError(why, activities.ErrTypeGateFailed, nil)
			}
			v := r.vms[in.VMID]
			r.down[v.ZoneID+"/"+v.Type]--
			r.inFlight--
			return activities.UpgradeGateResult{RouterID: in.VMID, Version: "4.15.0", Attempts: 1, Note: "serves TLS"}, nil
		})
	env.OnActivity(a.RaiseUpgradeAlert, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.UpgradeAlertInput) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.alerts = append(r.alerts, in)
			return nil
		})
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.finished = append(r.finished, in)
			return nil
		})
	return r
}

// fakeLifecycle stands in for the recreate: the VM is down (for the zone's count) from here
// until its gate passes.
func (r *sysvmRig) fakeLifecycle(ctx workflow.Context, in LifecycleInput) (LifecycleResult, error) {
	if in.Action != ActionRecreate {
		return LifecycleResult{}, fmt.Errorf("action %s, want recreate", in.Action)
	}
	r.mu.Lock()
	v := r.vms[in.VMID]
	slot := v.ZoneID + "/" + v.Type
	r.events = append(r.events, "recreate "+in.VMID)
	r.started[in.VMID] = workflow.Now(ctx)
	r.children[in.VMID]++
	r.childIDs[in.VMID] = workflow.GetInfo(ctx).WorkflowExecution.ID
	r.down[slot]++
	r.maxDown[slot] = max(r.maxDown[slot], r.down[slot])
	r.inFlight++
	r.maxFlight = max(r.maxFlight, r.inFlight)
	why, fails := r.recreateErr[in.VMID]
	r.mu.Unlock()
	if err := workflow.Sleep(ctx, 10*time.Minute); err != nil {
		return LifecycleResult{}, err
	}
	if fails {
		// A failed recreate compensates: the old VM serves again.
		r.mu.Lock()
		r.down[slot]--
		r.inFlight--
		r.mu.Unlock()
		return LifecycleResult{}, temporal.NewNonRetryableApplicationError(why, "Test", nil)
	}
	return LifecycleResult{VMID: in.VMID, Name: v.Name, Action: string(in.Action), State: models.StateRunning, SwitchGapMillis: 87}, nil
}

func (r *sysvmRig) run(req SystemVMUpgradeRequest) {
	r.env.ExecuteWorkflow(SystemVMUpgrade, SystemVMUpgradeInput{OperationID: "op-s", Request: req})
	require.True(r.t, r.env.IsWorkflowCompleted())
}

func (r *sysvmRig) at(d time.Duration, f func()) { r.env.RegisterDelayedCallback(f, d) }

func (r *sysvmRig) progress() RouterUpgradeProgress {
	v, err := r.env.QueryWorkflow(QueryProgress)
	require.NoError(r.t, err)
	var p RouterUpgradeProgress
	require.NoError(r.t, v.Get(&p))
	return p
}

func (r *sysvmRig) result() (RouterUpgradeResult, map[string]UpgradeRouter) {
	var res RouterUpgradeResult
	require.NoError(r.t, r.env.GetWorkflowResult(&res))
	by := map[string]UpgradeRouter{}
	for _, x := range res.Routers {
		by[x.ID] = x
	}
	return res, by
}

// TestSystemVMUpgradeOnePerZoneKind: with a high parallelism, the VMs of one zone and kind
// still go one at a time (each once the one before it passed its gate), while other kinds and
// zones go at once; each recreate is a child on the VM's own workflow ID.
func TestSystemVMUpgradeOnePerZoneKind(t *testing.T) {
	plan := sysvmPlan("z1/consoleproxy/v1", "z1/consoleproxy/v2", "z1/consoleproxy/v3", "z1/secondarystoragevm/s1",
		"z1/secondarystoragevm/s2", "z2/consoleproxy/v4", "z2/secondarystoragevm/s3", "z2/secondarystoragevm/s4")
	r := newSysvmRig(t, plan)
	for _, slot := range []string{"z1/consoleproxy", "z1/secondarystoragevm", "z2/secondarystoragevm"} {
		r.serving[slot] = 1 // the others of the kind serve meanwhile
	}
	r.serving["z2/consoleproxy"] = 0 // z2's only CPVM
	r.run(SystemVMUpgradeRequest{Parallelism: 10})
	require.NoError(t, r.env.GetWorkflowError())
	res, by := r.result()
	require.Equal(t, 8, res.Counts[UpgradeDone], "%v", res.Counts)
	for slot, n := range r.maxDown {
		require.Equal(t, 1, n, "%s had %d VMs down at once", slot, n)
	}
	// Kinds go at once; zones in order (the next once every VM of the one before it started).
	require.GreaterOrEqual(t, r.maxFlight, 2, "a CPVM and an SSVM at once")
	// In a slot, the next starts only after the one before passed its gate.
	for _, pair := range [][2]string{{"v1", "v2"}, {"v2", "v3"}, {"s1", "s2"}, {"s3", "s4"}} {
		require.Less(t, indexOf(r.events, "gate "+pair[0]), indexOf(r.events, "recreate "+pair[1]), "%v", r.events)
		require.Less(t, by[pair[0]].Ended, by[pair[1]].Started+1)
	}
	for id := range r.vms {
		require.Equal(t, 1, r.children[id], "%s recreated once", id)
		require.Equal(t, LifecycleWorkflowID(id), r.childIDs[id])
		require.Equal(t, "4.15.0", by[id].ToVersion)
		require.NotEmpty(t, by[id].Type)
	}
	require.Contains(t, by["v4"].Reason, "the zone's only consoleproxy: recreated make-before-break")
	require.Contains(t, by["v4"].Reason, "87 ms")
	require.Contains(t, by["v1"].Reason, "1 other consoleproxy served the zone meanwhile")
	require.Equal(t, models.OpCompleted, r.finished[len(r.finished)-1].Status)
}

func indexOf(xs []string, x string) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return 1 << 30
}

// TestSystemVMUpgradeSingleVMRecreateThenGate: the zone's only VM of a kind is recreated
// make-before-break, then gated; nothing else of its kind was down meanwhile.
func TestSystemVMUpgradeSingleVMRecreateThenGate(t *testing.T) {
	r := newSysvmRig(t, sysvmPlan("z1/consoleproxy/v1", "z1/secondarystoragevm/s1"))
	r.run(SystemVMUpgradeRequest{Parallelism: 1})
	require.NoError(t, r.env.GetWorkflowError())
	require.Equal(t, []string{"recreate v1", "gate v1", "recreate s1", "gate s1"}, r.events)
	_, by := r.result()
	require.Equal(t, UpgradeDone, by["s1"].State)
	require.Contains(t, by["s1"].Reason, "the zone's only secondarystoragevm")
}

// TestSystemVMUpgradeFailureAtEachStep: a failed check, recreate or gate fails that VM; the
// next of its zone and kind is then skipped (it keeps serving), other kinds go on.
func TestSystemVMUpgradeFailureAtEachStep(t *testing.T) {
	for _, step := range []string{"check", "recreate", "gate"} {
		t.Run(step, func(t *testing.T) {
			r := newSysvmRig(t, sysvmPlan("z1/consoleproxy/v1", "z1/consoleproxy/v2", "z1/secondarystoragevm/s1"))
			r.serving["z1/consoleproxy"] = 1
			switch step {
			case "check":
				r.checkFail["v1"] = "database gone"
			case "recreate":
				r.recreateErr["v1"] = "create replacement: no capacity"
			case "gate":
				r.gateFail["v1"] = "health gate: console endpoint of v1-VM does not serve TLS"
			}
			r.run(SystemVMUpgradeRequest{Parallelism: 3, Budget: FailureBudget{Count: 5}})
			require.NoError(t, r.env.GetWorkflowError())
			res, by := r.result()
			require.Equal(t, UpgradeFailed, by["v1"].State, by["v1"].Reason)
			require.Equal(t, UpgradeSkipped, by["v2"].State)
			require.Contains(t, by["v2"].Reason, "v1-VM before it in its zone was not upgraded (failed)")
			require.Zero(t, r.children["v2"], "v2 never went down")
			require.Equal(t, UpgradeDone, by["s1"].State)
			require.Equal(t, map[string]int{UpgradePending: 0, UpgradeWaitingWindow: 0, UpgradeUpgrading: 0, UpgradeHealthCheck: 0,
				UpgradeDone: 1, UpgradeFailed: 1, UpgradeSkipped: 1}, res.Counts)
			switch step {
			case "check":
				require.Contains(t, by["v1"].Reason, "check before the upgrade")
				require.Zero(t, r.children["v1"])
			case "recreate":
				require.Contains(t, by["v1"].Reason, "recreate: create replacement: no capacity")
			case "gate":
				require.Contains(t, by["v1"].Reason, "does not serve TLS")
			}
			require.Empty(t, r.alerts, "within the budget")
		})
	}
}

// TestSystemVMUpgradeBudgetPausesAndAlerts: more failures than the budget pause the upgrade,
// raise one SYSTEMVM.UPGRADE.FAILURE.BUDGET alert naming the failed VMs; resume goes on.
func TestSystemVMUpgradeBudgetPausesAndAlerts(t *testing.T) {
	r := newSysvmRig(t, sysvmPlan("z1/consoleproxy/v1", "z2/consoleproxy/v2", "z3/consoleproxy/v3", "z4/consoleproxy/v4"))
	r.gateFail["v1"] = "health gate: agent of v1-VM does not answer over SSH"
	var paused RouterUpgradeProgress
	r.at(2*time.Hour, func() {
		paused = r.progress()
		r.env.SignalWorkflow(SignalUpgradeResume, nil)
	})
	r.run(SystemVMUpgradeRequest{Parallelism: 1})
	require.NoError(t, r.env.GetWorkflowError())
	require.Equal(t, "paused", paused.Status)
	require.Contains(t, paused.PauseReason, "failure budget 0 exceeded")
	require.Equal(t, 3, paused.Counts[UpgradePending], "nothing started after the failure")
	require.Len(t, r.alerts, 1)
	require.Equal(t, AlertSystemVMUpgradeBudget, r.alerts[0].Type)
	require.Equal(t, ResourceSystemVMUpgrade, r.alerts[0].ResourceType)
	require.Contains(t, r.alerts[0].Subject, "System VM upgrade op-s paused")
	require.Contains(t, r.alerts[0].Description, "v1-VM (consoleproxy, v1): health gate: agent of v1-VM does not answer over SSH")
	require.False(t, r.started["v2"].Before(r.start.Add(2*time.Hour)), "v2 started after the resume")
	res, _ := r.result()
	require.Equal(t, 3, res.Counts[UpgradeDone])
}

// TestSystemVMUpgradePauseResumeCancel: pause stops new starts, resume goes on, cancel lets
// the VM in flight finish (recreate and gate) and starts nothing new.
func TestSystemVMUpgradePauseResumeCancel(t *testing.T) {
	r := newSysvmRig(t, sysvmPlan("z1/consoleproxy/v1", "z2/consoleproxy/v2", "z3/consoleproxy/v3", "z4/consoleproxy/v4"))
	var afterPause RouterUpgradeProgress
	r.at(5*time.Minute, func() { r.env.SignalWorkflow(SignalUpgradePause, "freeze") })
	r.at(time.Hour, func() {
		afterPause = r.progress()
		r.env.SignalWorkflow(SignalUpgradeResume, nil)
	})
	r.at(time.Hour+5*time.Minute, func() { r.env.CancelWorkflow() })
	r.run(SystemVMUpgradeRequest{Parallelism: 1})
	require.Equal(t, "paused", afterPause.Status)
	require.Equal(t, 1, afterPause.Counts[UpgradeDone])
	require.WithinDuration(t, r.start.Add(time.Hour), r.started["v2"], 0)
	var canceled *temporal.CanceledError
	require.True(t, errors.As(r.env.GetWorkflowError(), &canceled), "error %v", r.env.GetWorkflowError())
	require.Contains(t, r.events, "gate v2", "the VM in flight at the cancel was gated")
	require.Zero(t, r.children["v3"], "nothing starts after the cancel")
	require.Equal(t, models.OpCanceled, r.finished[len(r.finished)-1].Status)
}

// TestSystemVMUpgradeContinueAsNew: after VMsPerRun VMs the run drains and continues as new
// as a SystemVMUpgrade carrying its state; the next run upgrades only the rest.
func TestSystemVMUpgradeContinueAsNew(t *testing.T) {
	vms := []string{"z1/consoleproxy/v1", "z2/consoleproxy/v2", "z3/consoleproxy/v3", "z4/consoleproxy/v4", "z5/consoleproxy/v5"}
	r := newSysvmRig(t, sysvmPlan(vms...))
	r.run(SystemVMUpgradeRequest{Parallelism: 2, VMsPerRun: 2})
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(r.env.GetWorkflowError(), &can), "error %v", r.env.GetWorkflowError())
	require.Equal(t, SystemVMUpgradeWorkflowName, can.WorkflowType.Name)
	var next SystemVMUpgradeInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
	require.NotNil(t, next.State)
	require.Equal(t, "op-s", next.OperationID)
	require.Empty(t, r.finished)

	r2 := newSysvmRig(t, sysvmPlan(vms...))
	var p RouterUpgradeProgress
	r2.at(time.Minute, func() { p = r2.progress() })
	r2.env.ExecuteWorkflow(SystemVMUpgrade, next)
	require.NoError(t, r2.env.GetWorkflowError())
	require.Equal(t, 2, p.Run)
	res, _ := r2.result()
	require.Equal(t, 5, res.Counts[UpgradeDone])
	for id, n := range r2.children {
		require.Zero(t, r.children[id], "%s upgraded in both runs (%d)", id, n)
	}
}
