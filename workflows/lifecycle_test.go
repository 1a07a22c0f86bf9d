package workflows

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

func newEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(SystemVMLifecycle, workflow.RegisterOptions{Name: LifecycleWorkflowName})
	env.RegisterActivity(&activities.Activities{})
	return env
}

var router = activities.VMRecord{ID: "vm-1", Name: "r-1-VM", Type: models.TypeRouter, State: models.StateRunning,
	ZoneID: "z-1", ClusterID: "c-1", NetworkID: "n-1"}

func TestTransientHypervisorFailureIsRetried(t *testing.T) {
	env := newEnv(t)
	calls := 0
	env.OnActivity(a.LoadVM, mock.Anything, "vm-1").Return(router, nil)
	env.OnActivity(a.SetVMState, mock.Anything, "vm-1", mock.Anything).Return(nil)
	env.OnActivity(a.HypervisorStep, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.HypervisorStepInput) (activities.HypervisorStepResult, error) {
			calls++
			if calls < 3 {
				return activities.HypervisorStepResult{}, errors.New("dial tcp: connection refused")
			}
			return activities.HypervisorStepResult{State: models.StateRunning}, nil
		})
	env.OnActivity(a.RecordEvent, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(nil)
	env.ExecuteWorkflow(SystemVMLifecycle, LifecycleInput{OperationID: "op-2", VMID: "vm-1", Action: ActionStart})
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, 3, calls, "two transient failures then success")
}

func TestFinalFailureStopsAndRecordsFailed(t *testing.T) {
	env := newEnv(t)
	calls := 0
	var finished activities.FinishInput
	env.OnActivity(a.LoadVM, mock.Anything, "vm-1").Return(router, nil)
	env.OnActivity(a.SetVMState, mock.Anything, "vm-1", mock.Anything).Return(nil)
	env.OnActivity(a.HypervisorStep, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.HypervisorStepInput) (activities.HypervisorStepResult, error) {
			calls++
			return activities.HypervisorStepResult{}, temporal.NewNonRetryableApplicationError("reboot r-1-VM: bad state", "BadState", nil)
		})
	var settled activities.SettleInput
	env.OnActivity(a.SettleVM, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.SettleInput) (string, error) {
			settled = in
			return models.StateStopped, nil
		})
	env.OnActivity(a.RecordEvent, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error { finished = in; return nil })
	env.ExecuteWorkflow(SystemVMLifecycle, LifecycleInput{OperationID: "op-3", VMID: "vm-1", Action: ActionReboot})
	err := env.GetWorkflowError()
	require.Error(t, err)
	require.Contains(t, err.Error(), "bad state")
	require.Equal(t, 1, calls, "a final error is not retried")
	require.Equal(t, models.OpFailed, finished.Status)
	require.Contains(t, finished.Error, "bad state")
	require.Equal(t, "vm-1", settled.VMID, "a failed operation settles the VM")
	require.Contains(t, settled.Error, "bad state", "the settle step records the reason as LastError")
}

func TestDestroyOfOnlyRouterIsRefusedBeforeAnyHypervisorStep(t *testing.T) {
	env := newEnv(t)
	var finished activities.FinishInput
	env.OnActivity(a.LoadVM, mock.Anything, "vm-1").Return(router, nil)
	env.OnActivity(a.AdmitDestroy, mock.Anything, activities.AdmitDestroyInput{OperationID: "op-4", VMID: "vm-1"}).Return(
		temporal.NewNonRetryableApplicationError("router r-1-VM is the only router of network n-1; use restartNetwork cleanup=true", activities.ErrTypeNotAllowed, nil))
	env.OnActivity(a.RecordEvent, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error { finished = in; return nil })
	env.ExecuteWorkflow(SystemVMLifecycle, LifecycleInput{OperationID: "op-4", VMID: "vm-1", Action: ActionDestroy})
	require.Error(t, env.GetWorkflowError())
	require.Equal(t, models.OpFailed, finished.Status)
	require.Contains(t, finished.Error, "restartNetwork cleanup=true")
	env.AssertNotCalled(t, "HypervisorStep", mock.Anything, mock.Anything)
	env.AssertNotCalled(t, "SettleVM", mock.Anything, mock.Anything)
}

func TestProgressQuery(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(a.LoadVM, mock.Anything, "vm-1").Return(router, nil)
	env.OnActivity(a.SetVMState, mock.Anything, "vm-1", mock.Anything).Return(nil)
	env.OnActivity(a.HypervisorStep, mock.Anything, mock.Anything).Return(activities.HypervisorStepResult{State: models.StateStopped}, nil)
	env.OnActivity(a.RecordEvent, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(nil)
	env.ExecuteWorkflow(SystemVMLifecycle, LifecycleInput{OperationID: "op-5", VMID: "vm-1", Action: ActionStop})
	v, err := env.QueryWorkflow(QueryProgress)
	require.NoError(t, err)
	var p Progress
	require.NoError(t, v.Get(&p))
	require.Equal(t, 100, p.Percent)
	require.Equal(t, p.Total, p.Done)
}
