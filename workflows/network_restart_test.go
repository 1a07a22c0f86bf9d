package workflows

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// restartRecorder runs the real SystemVMLifecycle children over mocked activities and records
// the hypervisor steps in the order they happen, with the operation ID each is journaled under.
type restartRecorder struct {
	mu       sync.Mutex
	steps    []string // "<vm> <step>"
	opIDs    map[string]string
	inFlight map[string]bool // routers between their first and last step
	maxDown  int
	failVM   string
	stuckVM  string // reports Stopped after every step
	// slowStep takes ten minutes of workflow time (so a test can cancel during it).
	slowStep activities.Step
	finished []activities.FinishInput
}

func newRestartEnv(t *testing.T, routers []string, rec *restartRecorder) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(SystemVMLifecycle, workflow.RegisterOptions{Name: LifecycleWorkflowName})
	env.RegisterWorkflowWithOptions(NetworkRestart, workflow.RegisterOptions{Name: NetworkRestartWorkflowName})
	env.RegisterActivity(&activities.Activities{})
	rec.opIDs, rec.inFlight = map[string]string{}, map[string]bool{}
	env.OnActivity(a.NetworkRouters, mock.Anything, "n-1").Return(
		activities.NetworkRoutersResult{NetworkID: "n-1", ZoneID: "z-1", RouterIDs: routers}, nil)
	env.OnActivity(a.LoadVM, mock.Anything, mock.Anything).Return(
		func(_ context.Context, id string) (activities.VMRecord, error) {
			return activities.VMRecord{ID: id, Name: "r-" + id, Type: models.TypeRouter, State: models.StateRunning,
				ZoneID: "z-1", NetworkID: "n-1"}, nil
		})
	env.OnActivity(a.SetVMState, mock.Anything, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.HypervisorStep, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.HypervisorStepInput) (activities.HypervisorStepResult, error) {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			rec.steps = append(rec.steps, in.VMID+" "+string(in.Step))
			if prev, ok := rec.opIDs[in.VMID]; ok {
				require.Equal(t, prev, in.OperationID, "one operation ID per router")
			}
			rec.opIDs[in.VMID] = in.OperationID
			if in.VMID == rec.failVM {
				return activities.HypervisorStepResult{}, temporal.NewNonRetryableApplicationError(
					string(in.Step)+" r-"+in.VMID+": host gone", "BadState", nil)
			}
			switch in.Step {
			case "stop", "forcestop", "reboot":
				rec.inFlight[in.VMID] = true
			}
			if len(rec.inFlight) > rec.maxDown {
				rec.maxDown = len(rec.inFlight)
			}
			if in.Step == "start" || in.Step == "reboot" {
				delete(rec.inFlight, in.VMID)
			}
			state := models.StateRunning
			if in.Step == "stop" || in.Step == "destroy" || in.VMID == rec.stuckVM {
				state = models.StateStopped
			}
			return activities.HypervisorStepResult{State: state}, nil
		})
	env.OnActivity(a.PrepareRecreate, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.RecreateInput) (activities.RecreatePlan, error) {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			rec.steps = append(rec.steps, in.VMID+" "+string(in.Step))
			rec.opIDs[in.VMID] = in.OperationID
			return activities.RecreatePlan{InstanceName: "r-" + in.VMID + "-new", OldInstanceName: "r-" + in.VMID,
				ControlIP: "169.254.9.9", LinkLocal: true, OldExists: true, OldRunning: true}, nil
		})
	recreateStep := func(_ context.Context, in activities.RecreateInput) (activities.RecreateResult, error) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.steps = append(rec.steps, in.VMID+" "+string(in.Step))
		require.Equal(t, rec.opIDs[in.VMID], in.OperationID, "one operation ID per router")
		if in.VMID == rec.failVM && in.Step == activities.StepCreateReplacement {
			return activities.RecreateResult{}, temporal.NewNonRetryableApplicationError(
				string(in.Step)+" r-"+in.VMID+": host gone", "BadState", nil)
		}
		// A router is down from its switch (old stopped) until it is committed.
		switch in.Step {
		case activities.StepSwitch, activities.StepStopOld:
			rec.inFlight[in.VMID] = true
			if len(rec.inFlight) > rec.maxDown {
				rec.maxDown = len(rec.inFlight)
			}
		case activities.StepCommit:
			delete(rec.inFlight, in.VMID)
			state := models.StateRunning
			if in.VMID == rec.stuckVM {
				state = models.StateStopped
			}
			return activities.RecreateResult{State: state}, nil
		}
		return activities.RecreateResult{}, nil
	}
	if rec.slowStep != "" {
		env.OnActivity(a.RecreateStep, mock.Anything, mock.MatchedBy(func(in activities.RecreateInput) bool {
			return in.Step == rec.slowStep
		})).After(10 * time.Minute).Return(recreateStep)
	}
	env.OnActivity(a.RecreateStep, mock.Anything, mock.Anything).Return(recreateStep)
	env.OnActivity(a.SettleVM, mock.Anything, mock.Anything).Return(models.StateRunning, nil)
	env.OnActivity(a.RecordEvent, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			rec.finished = append(rec.finished, in)
			return nil
		})
	return env
}

// finishOf returns the recorded end of an operation.
func (r *restartRecorder) finishOf(t *testing.T, opID string) activities.FinishInput {
	t.Helper()
	for _, f := range r.finished {
		if f.OperationID == opID {
			return f
		}
	}
	t.Fatalf("operation %s recorded no end (ends: %+v)", opID, r.finished)
	return activities.FinishInput{}
}

func TestNetworkRestartCleanupRecreatesOneRouterAtATimeInOrder(t *testing.T) {
	rec := &restartRecorder{}
	// NetworkRouters orders BACKUP first; the workflow must keep that order.
	env := newRestartEnv(t, []string{"backup", "primary"}, rec)
	env.ExecuteWorkflow(NetworkRestart, NetworkRestartInput{OperationID: "op-n1", NetworkID: "n-1", Cleanup: true})
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var want []string
	for _, r := range []string{"backup", "primary"} {
		want = append(want, r+" prepare")
		for _, st := range activities.RecreateTakeoverSteps() {
			want = append(want, r+" "+string(st))
		}
	}
	require.Equal(t, want, rec.steps, "BACKUP first, each router make-before-break")
	require.Equal(t, 1, rec.maxDown, "never two routers down at once")
	require.NotEqual(t, rec.opIDs["backup"], rec.opIDs["primary"], "each router's steps are journaled apart")
	require.Equal(t, NetworkRestartRouterOperationID("op-n1", "backup"), rec.opIDs["backup"])
	require.Len(t, rec.opIDs["backup"], 36, "fits the operation ID column")

	var res NetworkRestartResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, "recreate", res.Action)
	require.Len(t, res.Routers, 2)
	require.Equal(t, "r-backup", res.Routers[0].Name)
	require.Equal(t, models.StateRunning, res.Routers[1].State)
	end := rec.finishOf(t, "op-n1")
	require.Equal(t, models.OpCompleted, end.Status)
	require.Contains(t, end.Result, `"action":"recreate"`)
	require.Equal(t, models.OpCompleted, rec.finishOf(t, rec.opIDs["primary"]).Status, "each child records its own end")

	v, err := env.QueryWorkflow(QueryProgress)
	require.NoError(t, err)
	var p Progress
	require.NoError(t, v.Get(&p))
	require.Equal(t, Progress{Step: "done", Done: 2, Total: 2, Percent: 100}, p)
}

func TestNetworkRestartWithoutCleanupReboots(t *testing.T) {
	rec := &restartRecorder{}
	env := newRestartEnv(t, []string{"only"}, rec)
	env.ExecuteWorkflow(NetworkRestart, NetworkRestartInput{OperationID: "op-n2", NetworkID: "n-1"})
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, []string{"only reboot"}, rec.steps)
	var res NetworkRestartResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, "reboot", res.Action)
}

func TestNetworkRestartStopsAtFirstFailure(t *testing.T) {
	rec := &restartRecorder{failVM: "backup"}
	env := newRestartEnv(t, []string{"backup", "primary"}, rec)
	env.ExecuteWorkflow(NetworkRestart, NetworkRestartInput{OperationID: "op-n3", NetworkID: "n-1", Cleanup: true})
	err := env.GetWorkflowError()
	require.Error(t, err)
	require.Contains(t, err.Error(), "recreate router backup")
	require.Contains(t, err.Error(), "host gone")
	require.Equal(t, []string{"backup prepare", "backup seed", "backup create-replacement", "backup destroy-replacement"}, rec.steps,
		"the BACKUP's replacement is destroyed and the PRIMARY is not touched after the BACKUP failed")
	end := rec.finishOf(t, "op-n3")
	require.Equal(t, models.OpFailed, end.Status)
	require.Contains(t, end.Error, "recreate router backup")
}

func TestNetworkRestartStopsWhenARouterDoesNotComeBackRunning(t *testing.T) {
	// The reboot "succeeds" but the hypervisor reports the VM stopped afterwards.
	rec := &restartRecorder{stuckVM: "backup"}
	env := newRestartEnv(t, []string{"backup", "primary"}, rec)
	env.ExecuteWorkflow(NetworkRestart, NetworkRestartInput{OperationID: "op-n4", NetworkID: "n-1"})
	err := env.GetWorkflowError()
	require.Error(t, err)
	require.Contains(t, err.Error(), "not Running")
	require.Equal(t, []string{"backup reboot"}, rec.steps)
}

// TestNetworkRestartCancelDoesNotCancelTheRouterMidRecreate cancels a restartNetwork while the
// BACKUP's replacement is being created: the BACKUP's recreate runs to its end (its child run
// is on a disconnected context), nothing is compensated, and the restart ends canceled
// without touching the PRIMARY.
func TestNetworkRestartCancelDoesNotCancelTheRouterMidRecreate(t *testing.T) {
	rec := &restartRecorder{slowStep: activities.StepCreateReplacement}
	env := newRestartEnv(t, []string{"backup", "primary"}, rec)
	env.RegisterDelayedCallback(env.CancelWorkflow, time.Minute)
	env.ExecuteWorkflow(NetworkRestart, NetworkRestartInput{OperationID: "op-n5", NetworkID: "n-1", Cleanup: true})
	require.True(t, env.IsWorkflowCompleted())
	var canceled *temporal.CanceledError
	require.ErrorAs(t, env.GetWorkflowError(), &canceled)
	want := []string{"backup prepare"}
	for _, st := range activities.RecreateTakeoverSteps() {
		want = append(want, "backup "+string(st))
	}
	require.Equal(t, want, rec.steps, "the BACKUP's recreate finished; the PRIMARY was not touched")
	require.Equal(t, models.OpCompleted, rec.finishOf(t, rec.opIDs["backup"]).Status, "the child completed")
	require.Equal(t, models.OpCanceled, rec.finishOf(t, "op-n5").Status)
}
