package workflows

import (
	"context"
	"testing"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

func newMoveEnv() *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(SystemVMMigrate, workflow.RegisterOptions{Name: MigrateWorkflowName})
	env.RegisterWorkflowWithOptions(SystemVMScale, workflow.RegisterOptions{Name: ScaleWorkflowName})
	env.RegisterActivity(&activities.Activities{})
	return env
}

var coldPlan = activities.MovePlan{Kind: activities.MoveMigrate, VMID: "vm-1", Type: models.TypeRouter, Name: "r-1-VM",
	StopFirst: true, FromHost: "h1", ToHostID: "h2-id", ToHost: "h2"}

// steps records the hypervisor steps a run takes, in order.
func recordSteps(env *testsuite.TestWorkflowEnvironment, steps *[]string, fail map[activities.Step]bool) {
	env.OnActivity(a.SetVMState, mock.Anything, "vm-1", mock.Anything).Return(nil)
	env.OnActivity(a.HypervisorStep, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.HypervisorStepInput) (activities.HypervisorStepResult, error) {
			*steps = append(*steps, string(in.Step))
			if fail[in.Step] {
				return activities.HypervisorStepResult{}, temporal.NewNonRetryableApplicationError(string(in.Step)+" refused", "BadState", nil)
			}
			return activities.HypervisorStepResult{State: models.StateRunning, Host: "h2"}, nil
		})
}

func TestColdMigrateStopsMovesStarts(t *testing.T) {
	env := newMoveEnv()
	var steps []string
	var finished activities.FinishInput
	env.OnActivity(a.PlanMove, mock.Anything, mock.Anything).Return(coldPlan, nil)
	recordSteps(env, &steps, nil)
	env.OnActivity(a.MoveVM, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.MoveStepInput) (activities.HypervisorStepResult, error) {
			steps = append(steps, "move")
			return activities.HypervisorStepResult{State: models.StateStopped, Host: "h2"}, nil
		})
	env.OnActivity(a.RecordEvent, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error { finished = in; return nil })
	env.ExecuteWorkflow(SystemVMMigrate, MigrateInput{OperationID: "op-1", VMID: "vm-1"})
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, []string{"stop", "move", "start"}, steps)
	require.Equal(t, models.OpCompleted, finished.Status)
	env.AssertNotCalled(t, "SettleVM", mock.Anything, mock.Anything)
}

func TestMoveFailureAfterStopStartsTheVMAgainAndSettles(t *testing.T) {
	env := newMoveEnv()
	var steps []string
	var finished activities.FinishInput
	var settled activities.SettleInput
	env.OnActivity(a.PlanMove, mock.Anything, mock.Anything).Return(coldPlan, nil)
	recordSteps(env, &steps, nil)
	env.OnActivity(a.MoveVM, mock.Anything, mock.Anything).Return(activities.HypervisorStepResult{},
		temporal.NewNonRetryableApplicationError("migrate r-1-VM: host h2 refused", "BadState", nil))
	env.OnActivity(a.SettleVM, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.SettleInput) (string, error) {
			settled = in
			return models.StateRunning, nil
		})
	env.OnActivity(a.RecordEvent, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error { finished = in; return nil })
	env.ExecuteWorkflow(SystemVMMigrate, MigrateInput{OperationID: "op-2", VMID: "vm-1", HostID: "h2-id"})
	require.Error(t, env.GetWorkflowError())
	require.Equal(t, []string{"stop", "start"}, steps, "the VM it stopped is started again")
	require.Equal(t, "vm-1", settled.VMID)
	require.Contains(t, settled.Error, "host h2 refused")
	require.Equal(t, models.OpFailed, finished.Status)
	require.Contains(t, finished.Result, `"compensations":["start"]`)
	require.Contains(t, finished.Result, `"state":"Running"`)
}

func TestStopFailureSettlesWithoutMoving(t *testing.T) {
	env := newMoveEnv()
	var steps []string
	plan := coldPlan
	plan.Kind, plan.CPUs, plan.MemoryMB = activities.MoveScale, 2, 1024
	env.OnActivity(a.PlanMove, mock.Anything, mock.Anything).Return(plan, nil)
	recordSteps(env, &steps, map[activities.Step]bool{activities.StepStop: true})
	env.OnActivity(a.SettleVM, mock.Anything, mock.Anything).Return(models.StateRunning, nil)
	env.OnActivity(a.RecordEvent, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(nil)
	env.ExecuteWorkflow(SystemVMScale, ScaleInput{OperationID: "op-3", VMID: "vm-1", ServiceOfferingID: "so-2"})
	require.Error(t, env.GetWorkflowError())
	require.Equal(t, []string{"stop"}, steps, "a VM that did not stop is not started")
	env.AssertNotCalled(t, "MoveVM", mock.Anything, mock.Anything)
	env.AssertCalled(t, "SettleVM", mock.Anything, mock.Anything)
}

func TestRefusedPlanChangesNothing(t *testing.T) {
	env := newMoveEnv()
	var finished activities.FinishInput
	env.OnActivity(a.PlanMove, mock.Anything, mock.Anything).Return(activities.MovePlan{},
		temporal.NewNonRetryableApplicationError("redundant router r-1-VM must be stopped to be changed here, and its peer is not Running", activities.ErrTypeNotAllowed, nil))
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error { finished = in; return nil })
	env.ExecuteWorkflow(SystemVMScale, ScaleInput{OperationID: "op-4", VMID: "vm-1", ServiceOfferingID: "so-2"})
	require.Error(t, env.GetWorkflowError())
	require.Contains(t, finished.Error, "peer is not Running")
	env.AssertNotCalled(t, "HypervisorStep", mock.Anything, mock.Anything)
	env.AssertNotCalled(t, "SettleVM", mock.Anything, mock.Anything)
}
