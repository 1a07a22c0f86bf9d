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

// deploySim models the new VM's row and hypervisor side as the mocked deploy activities
// change them: tests assert what compensation left, not only which activities ran.
type deploySim struct {
	mu    sync.Mutex
	calls []string
	// failAt fails that step (non-retryable); blockAt makes it take ten minutes (canceled
	// before); discardFails makes the discard fail (an unreachable hypervisor).
	failAt, blockAt activities.Step
	discardFails    bool
	// rowState is the row's state ("" before allocate); onHypervisor / running the VM.
	rowState              string
	onHypervisor, running bool
	settled               *activities.SettleInput
	events                []string
	finished              activities.FinishInput
}

func (s *deploySim) call(step activities.Step) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, string(step))
	return step == s.failAt
}

func newDeployEnv(t *testing.T, sim *deploySim) *testsuite.TestWorkflowEnvironment {
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(SystemVMDeploy, workflow.RegisterOptions{Name: SystemVMDeployWorkflowName})
	env.RegisterActivity(&activities.Activities{})
	alloc := env.OnActivity(a.AllocateSystemVM, mock.Anything, mock.Anything)
	if sim.blockAt == activities.StepAllocate {
		alloc.After(10 * time.Minute)
	}
	alloc.Return(func(_ context.Context, in activities.DeployRequest) (activities.DeployPlan, error) {
		if sim.call(activities.StepAllocate) {
			return activities.DeployPlan{}, temporal.NewNonRetryableApplicationError("allocate failed: injected", "Injected", nil)
		}
		sim.mu.Lock()
		sim.rowState = models.StateStarting
		sim.mu.Unlock()
		return activities.DeployPlan{VMID: "vm-new", Name: "v-7-VM", Type: in.Type, ZoneID: in.ZoneID, Host: "h1",
			PublicIP: "198.18.1.10", PrivateIP: "10.1.0.10", LinkLocalIP: "169.254.3.4"}, nil
	})
	step := func(_ context.Context, in activities.DeployStepInput) (activities.DeployStepResult, error) {
		if in.Step == activities.StepDeployDiscard {
			sim.call(in.Step)
			sim.mu.Lock()
			defer sim.mu.Unlock()
			if sim.discardFails {
				return activities.DeployStepResult{}, temporal.NewNonRetryableApplicationError("hypervisor unreachable", "Unreachable", nil)
			}
			if sim.rowState == "" {
				return activities.DeployStepResult{Detail: "nothing allocated"}, nil
			}
			sim.onHypervisor, sim.running, sim.rowState = false, false, models.StateDestroyed
			return activities.DeployStepResult{State: models.StateDestroyed}, nil
		}
		if sim.call(in.Step) {
			return activities.DeployStepResult{}, temporal.NewNonRetryableApplicationError(string(in.Step)+" failed: injected", "Injected", nil)
		}
		sim.mu.Lock()
		defer sim.mu.Unlock()
		switch in.Step {
		case activities.StepDeployCreate:
			sim.onHypervisor = true
		case activities.StepDeployStart:
			sim.running = true
		case activities.StepDeployCommit:
			sim.rowState = models.StateRunning
			return activities.DeployStepResult{State: models.StateRunning, Host: "h1"}, nil
		}
		return activities.DeployStepResult{Host: "h1"}, nil
	}
	if sim.blockAt != "" && sim.blockAt != activities.StepAllocate {
		env.OnActivity(a.DeployStep, mock.Anything, mock.MatchedBy(func(in activities.DeployStepInput) bool {
			return in.Step == sim.blockAt
		})).After(10 * time.Minute).Return(step)
	}
	env.OnActivity(a.DeployStep, mock.Anything, mock.Anything).Return(step)
	env.OnActivity(a.SettleVM, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SettleInput) (string, error) {
		sim.mu.Lock()
		defer sim.mu.Unlock()
		sim.calls = append(sim.calls, "settle")
		sim.settled = &in
		sim.rowState = models.StateError
		return models.StateError, nil
	})
	env.OnActivity(a.RecordEvent, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.EventInput) error {
		sim.mu.Lock()
		defer sim.mu.Unlock()
		sim.events = append(sim.events, in.Type)
		return nil
	})
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.FinishInput) error {
		sim.finished = in
		return nil
	})
	return env
}

func deployCalls(upTo activities.Step) []string {
	out := []string{string(activities.StepAllocate)}
	if upTo == activities.StepAllocate {
		return out
	}
	for _, s := range activities.DeploySteps() {
		out = append(out, string(s))
		if s == upTo {
			break
		}
	}
	return out
}

func TestDeployCreatesAndCommitsOneVM(t *testing.T) {
	sim := &deploySim{}
	env := newDeployEnv(t, sim)
	env.ExecuteWorkflow(SystemVMDeploy, DeployInput{OperationID: "op-d", ZoneID: "z-1", Type: models.TypeCPVM, Reason: "capacity"})
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, deployCalls(activities.StepDeployCommit), sim.calls)
	require.True(t, sim.onHypervisor && sim.running)
	require.Equal(t, models.StateRunning, sim.rowState)
	require.Equal(t, []string{"PROXY.CREATE"}, sim.events)
	var res DeployResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, DeployResult{VMID: "vm-new", Name: "v-7-VM", Type: models.TypeCPVM, ZoneID: "z-1", State: models.StateRunning,
		Host: "h1", PublicIP: "198.18.1.10", PrivateIP: "10.1.0.10", LinkLocalIP: "169.254.3.4"}, res)
	require.Equal(t, models.OpCompleted, sim.finished.Status)
}

// TestDeployFailureAtEveryStep fails each step in turn: the discard runs after every failure
// (a failed allocate has nothing to discard), nothing stays on the hypervisor, the row ends
// Destroyed, and the failure is an event and the operation's error.
func TestDeployFailureAtEveryStep(t *testing.T) {
	for _, step := range append([]activities.Step{activities.StepAllocate}, activities.DeploySteps()...) {
		t.Run(string(step), func(t *testing.T) {
			sim := &deploySim{failAt: step}
			env := newDeployEnv(t, sim)
			env.ExecuteWorkflow(SystemVMDeploy, DeployInput{OperationID: "op-f", ZoneID: "z-1", Type: models.TypeSSVM})
			require.True(t, env.IsWorkflowCompleted())
			err := env.GetWorkflowError()
			require.Error(t, err)
			require.Contains(t, err.Error(), string(step)+" failed: injected")
			require.Equal(t, append(deployCalls(step), string(activities.StepDeployDiscard)), sim.calls)
			require.False(t, sim.onHypervisor || sim.running, "nothing left on the hypervisor")
			if step == activities.StepAllocate {
				require.Empty(t, sim.rowState, "no row was made")
			} else {
				require.Equal(t, models.StateDestroyed, sim.rowState)
			}
			require.Nil(t, sim.settled, "the discard confirmed: no settle needed")
			require.Equal(t, []string{"SSVM.CREATE.FAILED"}, sim.events)
			require.Equal(t, models.OpFailed, sim.finished.Status)
			require.Contains(t, sim.finished.Result, `"compensations":["deploy-discard"]`)
		})
	}
}

// TestDeployDiscardFailureSettles: when the hypervisor cannot confirm the discard, the settle
// step writes the row's state (Error with LastError) instead of leaving it Starting.
func TestDeployDiscardFailureSettles(t *testing.T) {
	sim := &deploySim{failAt: activities.StepDeployVerify, discardFails: true}
	env := newDeployEnv(t, sim)
	env.ExecuteWorkflow(SystemVMDeploy, DeployInput{OperationID: "op-u", ZoneID: "z-1", Type: models.TypeCPVM})
	require.Error(t, env.GetWorkflowError())
	require.Equal(t, append(deployCalls(activities.StepDeployVerify), string(activities.StepDeployDiscard), "settle"), sim.calls)
	require.NotNil(t, sim.settled)
	require.True(t, sim.settled.Destroying)
	require.Equal(t, "vm-new", sim.settled.VMID)
	require.Contains(t, sim.settled.Error, "discard failed")
	require.Equal(t, models.StateError, sim.rowState)
	require.Contains(t, sim.finished.Result, `"state":"Error"`)
	require.Contains(t, sim.finished.Result, `"compensations":["deploy-discard","settle"]`)
}

// TestDeployCancelDiscards cancels the run while each step is in flight: the discard still
// runs (disconnected context) and nothing is left behind.
func TestDeployCancelDiscards(t *testing.T) {
	for _, step := range append([]activities.Step{activities.StepAllocate}, activities.DeploySteps()...) {
		t.Run(string(step), func(t *testing.T) {
			sim := &deploySim{blockAt: step}
			env := newDeployEnv(t, sim)
			env.RegisterDelayedCallback(env.CancelWorkflow, time.Minute)
			env.ExecuteWorkflow(SystemVMDeploy, DeployInput{OperationID: "op-c", ZoneID: "z-1", Type: models.TypeCPVM})
			require.True(t, env.IsWorkflowCompleted())
			var canceled *temporal.CanceledError
			require.ErrorAs(t, env.GetWorkflowError(), &canceled)
			require.Contains(t, sim.calls, string(activities.StepDeployDiscard), "the discard ran after the cancel")
			require.Equal(t, string(activities.StepDeployDiscard), sim.calls[len(sim.calls)-1])
			require.False(t, sim.onHypervisor || sim.running)
			require.Equal(t, models.OpCanceled, sim.finished.Status)
			require.Equal(t, []string{"PROXY.CREATE.FAILED"}, sim.events)
		})
	}
}

func TestDeployRefusesBadInput(t *testing.T) {
	for name, in := range map[string]DeployInput{
		"no operation": {ZoneID: "z-1", Type: models.TypeCPVM},
		"router":       {OperationID: "op", ZoneID: "z-1", Type: models.TypeRouter},
		"no zone":      {OperationID: "op", Type: models.TypeSSVM},
	} {
		t.Run(name, func(t *testing.T) {
			sim := &deploySim{}
			env := newDeployEnv(t, sim)
			env.ExecuteWorkflow(SystemVMDeploy, in)
			require.Error(t, env.GetWorkflowError())
			require.NotContains(t, sim.calls, string(activities.StepAllocate), "nothing allocated for a refused input")
		})
	}
}
