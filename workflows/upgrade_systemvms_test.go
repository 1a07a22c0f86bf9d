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
	deployErr   map[string]string // old VM -> its deploy fails
	destroyErr  map[string]string // VM -> its destroy fails
	recreating  map[string]bool
	deployed    map[string]string // new VM -> old VM
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
		childIDs: map[string]string{}, checkFail: map[string]string{}, recreateErr: map[string]string{}, gateFail: map[string]string{},
		deployErr: map[string]string{}, destroyErr: map[string]string{}, recreating: map[string]bool{}, deployed: map[string]string{}}
	for _, g := range plan.Groups {
		for _, v := range g.Routers {
			r.vms[v.ID] = v
		}
	}
	env.RegisterWorkflowWithOptions(SystemVMUpgrade, workflow.RegisterOptions{Name: SystemVMUpgradeWorkflowName})
	env.RegisterWorkflowWithOptions(r.fakeLifecycle, workflow.RegisterOptions{Name: LifecycleWorkflowName})
	env.RegisterWorkflowWithOptions(r.fakeDeploy, workflow.RegisterOptions{Name: SystemVMDeployWorkflowName})
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
			key := in.VMID
			if old, ok := r.deployed[in.VMID]; ok {
				key = "new:" + old
			}
			if why, ok := r.gateFail[key]; ok {
				return activities.UpgradeGateResult{}, temporal.NewNonRetryableApplicationError(why, activities.ErrTypeGateFailed, nil)
			}
			if r.recreating[in.VMID] {
				v := r.vms[in.VMID]
				r.down[v.ZoneID+"/"+v.Type]--
				r.inFlight--
				r.recreating[in.VMID] = false
			}
			return activities.UpgradeGateResult{RouterID: in.VMID, Version: "4.15.0", Attempts: 1, Note: "serves TLS"}, nil
		})
	recordAlertsAndFinish(env, &r.mu, &r.alerts, &r.finished)
	return r
}

// fakeLifecycle stands in for the recreate: the VM is down (for the zone's count) from here
// until its gate passes.
func (r *sysvmRig) fakeLifecycle(ctx workflow.Context, in LifecycleInput) (LifecycleResult, error) {
	if in.Action == ActionDestroy {
		r.mu.Lock()
		r.events = append(r.events, "destroy "+in.VMID)
		why, fails := r.destroyErr[in.VMID]
		r.mu.Unlock()
		if err := workflow.Sleep(ctx, time.Minute); err != nil {
			return LifecycleResult{}, err
		}
		if fails {
			return LifecycleResult{}, temporal.NewNonRetryableApplicationError(why, "Test", nil)
		}
		return LifecycleResult{VMID: in.VMID, Action: string(in.Action), State: models.StateDestroyed}, nil
	}
	if in.Action != ActionRecreate {
		return LifecycleResult{}, fmt.Errorf("action %s, want recreate or destroy", in.Action)
	}
	r.mu.Lock()
	v := r.vms[in.VMID]
	slot := v.ZoneID + "/" + v.Type
	r.recreating[in.VMID] = true
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

// fakeDeploy stands in for SystemVMDeploy: 5 virtual minutes, a new Running VM of the ID the
// parent chose (or a failure for deployErr's old VM).
func (r *sysvmRig) fakeDeploy(ctx workflow.Context, in DeployInput) (DeployResult, error) {
	r.mu.Lock()
	old := ""
	for id, v := range r.vms {
		if v.ZoneID == in.ZoneID && v.Type == in.Type && in.Reason != "" && strings.Contains(in.Reason, "replaces "+v.Name) {
			old = id
		}
	}
	r.events = append(r.events, "deploy "+old)
	r.deployed[in.VMID] = old
	why, fails := r.deployErr[old]
	wid := workflow.GetInfo(ctx).WorkflowExecution.ID
	r.mu.Unlock()
	if wid != LifecycleWorkflowID(in.VMID) {
		return DeployResult{}, fmt.Errorf("deploy runs as %s, want the new VM's own ID", wid)
	}
	if err := workflow.Sleep(ctx, 5*time.Minute); err != nil {
		return DeployResult{}, err
	}
	if fails {
		return DeployResult{}, temporal.NewNonRetryableApplicationError(why, "Test", nil)
	}
	return DeployResult{VMID: in.VMID, Name: "new-" + old, Type: in.Type, ZoneID: in.ZoneID, State: models.StateRunning}, nil
}

func (r *sysvmRig) run(req SystemVMUpgradeRequest) {
	r.env.ExecuteWorkflow(SystemVMUpgrade, SystemVMUpgradeInput{OperationID: "op-s", Request: req})
	require.True(r.t, r.env.IsWorkflowCompleted())
}

func (r *sysvmRig) at(d time.Duration, f func()) { r.env.RegisterDelayedCallback(f, d) }

func (r *sysvmRig) progress() RouterUpgradeProgress {
	return queryUpgradeProgress(r.t, r.env)
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
		if id == "v4" {
			require.Zero(t, r.children[id], "the zone's only CPVM is replaced, not recreated")
			continue
		}
		require.Equal(t, 1, r.children[id], "%s recreated once", id)
		require.Equal(t, LifecycleWorkflowID(id), r.childIDs[id])
		require.Equal(t, "4.15.0", by[id].ToVersion)
		require.NotEmpty(t, by[id].Type)
	}
	require.Contains(t, by["v4"].Reason, "the zone's only consoleproxy: new-v4 deployed from the current template")
	require.NotEmpty(t, by["v4"].ReplacedBy)
	require.Contains(t, by["v1"].Reason, "recreated while 1 other consoleproxy served the zone")
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

// TestSystemVMUpgradeSingleVMDeployGateRetire: the zone's only VM of a kind is never taken
// down first: a new one is deployed, gated, and only then the old one destroyed.
func TestSystemVMUpgradeSingleVMDeployGateRetire(t *testing.T) {
	r := newSysvmRig(t, sysvmPlan("z1/consoleproxy/v1", "z1/secondarystoragevm/s1"))
	r.run(SystemVMUpgradeRequest{Parallelism: 1})
	require.NoError(t, r.env.GetWorkflowError())
	newV1 := activities.DeployVMID(SystemVMUpgradeVMOperationID("op-s", "v1/deploy"))
	newS1 := activities.DeployVMID(SystemVMUpgradeVMOperationID("op-s", "s1/deploy"))
	require.Equal(t, []string{"deploy v1", "gate " + newV1, "destroy v1", "deploy s1", "gate " + newS1, "destroy s1"}, r.events)
	require.Zero(t, r.children["v1"]+r.children["s1"], "nothing recreated")
	_, by := r.result()
	require.Equal(t, UpgradeDone, by["s1"].State)
	require.Equal(t, newS1, by["s1"].ReplacedBy)
	require.Equal(t, "4.15.0", by["s1"].ToVersion)
	require.Contains(t, by["s1"].Reason, "the zone's only secondarystoragevm: new-s1 deployed from the current template, passed its gate")
}

// TestSystemVMUpgradeSingleVMFailures: a failed deploy leaves the old VM alone; a new VM that
// fails its gate is destroyed (the old one keeps serving); a failed retire is a failure with
// the new one serving.
func TestSystemVMUpgradeSingleVMFailures(t *testing.T) {
	newV1 := activities.DeployVMID(SystemVMUpgradeVMOperationID("op-s", "v1/deploy"))
	for _, c := range []struct {
		step   string
		set    func(r *sysvmRig)
		events []string
		reason string
	}{
		{"deploy", func(r *sysvmRig) { r.deployErr["v1"] = "no public IP left in the zone's range" },
			[]string{"deploy v1"}, "deploy a new consoleproxy first (the zone's only one): no public IP left in the zone's range; v1-VM keeps serving"},
		{"gate", func(r *sysvmRig) { r.gateFail["new:v1"] = "console endpoint does not serve TLS" },
			[]string{"deploy v1", "gate " + newV1, "destroy " + newV1}, "failed its gate (console endpoint does not serve TLS) and was destroyed; v1-VM keeps serving"},
		{"retire", func(r *sysvmRig) { r.destroyErr["v1"] = "hypervisor unreachable" },
			[]string{"deploy v1", "gate " + newV1, "destroy v1"}, "the new consoleproxy new-v1 serves, but retiring v1-VM failed: hypervisor unreachable"},
	} {
		t.Run(c.step, func(t *testing.T) {
			r := newSysvmRig(t, sysvmPlan("z1/consoleproxy/v1"))
			c.set(r)
			r.run(SystemVMUpgradeRequest{Parallelism: 1, Budget: FailureBudget{Count: 1}})
			require.NoError(t, r.env.GetWorkflowError())
			require.Equal(t, c.events, r.events)
			_, by := r.result()
			require.Equal(t, UpgradeFailed, by["v1"].State)
			require.Contains(t, by["v1"].Reason, c.reason)
			require.Zero(t, r.children["v1"], "the only CPVM was never taken down first")
		})
	}
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
	for _, z := range []string{"z1", "z2", "z3", "z4"} {
		r.serving[z+"/consoleproxy"] = 1
	}
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
	for _, z := range []string{"z1", "z2", "z3", "z4"} {
		r.serving[z+"/consoleproxy"] = 1
	}
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
	serve := func(r *sysvmRig) {
		for _, v := range vms {
			r.serving[strings.Join(strings.Split(v, "/")[:2], "/")] = 1
		}
	}
	r := newSysvmRig(t, sysvmPlan(vms...))
	serve(r)
	r.run(SystemVMUpgradeRequest{Parallelism: 2, VMsPerRun: 2})
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(r.env.GetWorkflowError(), &can), "error %v", r.env.GetWorkflowError())
	require.Equal(t, SystemVMUpgradeWorkflowName, can.WorkflowType.Name)
	var next SystemVMUpgradeInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
	require.NotNil(t, next.State)
	require.Equal(t, "op-s", next.OperationID)
	require.Empty(t, next.State.Carried, "an SSVM and CPVM upgrade drains: nothing is carried")
	require.Empty(t, r.finished)

	r2 := newSysvmRig(t, sysvmPlan(vms...))
	serve(r2)
	var p RouterUpgradeProgress
	r2.at(time.Minute, func() { p = r2.progress() })
	r2.env.ExecuteWorkflow(SystemVMUpgrade, next)
	require.NoError(t, r2.env.GetWorkflowError())
	require.Equal(t, 2, p.Run)
	res, _ := r2.result()
	require.Equal(t, 5, res.Counts[UpgradeDone])
	require.Equal(t, 5, len(r.children)+len(r2.children), "each VM upgraded in one of the runs")
	for id, n := range r2.children {
		require.Zero(t, r.children[id], "%s upgraded in both runs (%d)", id, n)
	}
}
