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
	"github.com/sysvm/sysvm/diagnostics"
	"github.com/sysvm/sysvm/models"
)

func newDiagnosticsEnv() *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(SystemVMDiagnostics, workflow.RegisterOptions{Name: DiagnosticsWorkflowName})
	env.RegisterActivity(&activities.Activities{})
	return env
}

func TestDiagnosticsResultIsTheOperationsResult(t *testing.T) {
	env := newDiagnosticsEnv()
	var finished activities.FinishInput
	env.OnActivity(a.LoadVM, mock.Anything, "vm-1").Return(router, nil)
	env.OnActivity(a.RunDiagnostics, mock.Anything, activities.DiagnosticsInput{OperationID: "op-1", VMID: "vm-1",
		Type: "ping", IPAddress: "127.0.0.1", Params: "-c 1"}).Return(
		diagnostics.Result{ID: "d-1", Type: diagnostics.Ping, Stdout: "1 received", ExitCode: 1}, nil)
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error { finished = in; return nil })
	env.ExecuteWorkflow(SystemVMDiagnostics, DiagnosticsInput{OperationID: "op-1", VMID: "vm-1", Type: "ping",
		IPAddress: "127.0.0.1", Params: "-c 1"})
	require.NoError(t, env.GetWorkflowError(), "a non-zero exit code is a result, not a failure")
	var res diagnostics.Result
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, 1, res.ExitCode)
	require.Equal(t, "r-1-VM", res.Name)
	require.Equal(t, models.OpCompleted, finished.Status)
	require.Contains(t, finished.Result, `"exitcode":1`)
}

func TestDiagnosticsRetriesUnreachableThenFails(t *testing.T) {
	env := newDiagnosticsEnv()
	calls := 0
	var finished activities.FinishInput
	env.OnActivity(a.LoadVM, mock.Anything, "vm-1").Return(router, nil)
	env.OnActivity(a.RunDiagnostics, mock.Anything, mock.Anything).Return(
		func(context.Context, activities.DiagnosticsInput) (diagnostics.Result, error) {
			calls++
			return diagnostics.Result{}, errors.New("dial 169.254.0.5:3922: connection refused")
		})
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error { finished = in; return nil })
	env.ExecuteWorkflow(SystemVMDiagnostics, DiagnosticsInput{OperationID: "op-2", VMID: "vm-1", Type: "traceroute", IPAddress: "::1"})
	err := env.GetWorkflowError()
	require.Error(t, err)
	require.Equal(t, 3, calls, "an unreachable VM is tried three times")
	require.Equal(t, models.OpFailed, finished.Status)
	require.Contains(t, finished.Error, "connection refused")
	require.Contains(t, finished.Error, "traceroute ::1 in r-1-VM")
}

func TestDiagnosticsRefusesAStoppedVMAndBadInputWithoutRunning(t *testing.T) {
	stopped := router
	stopped.State = models.StateStopped
	for name, in := range map[string]DiagnosticsInput{
		"stopped":    {OperationID: "op-3", VMID: "vm-1", Type: "ping", IPAddress: "127.0.0.1"},
		"bad params": {OperationID: "op-4", VMID: "vm-1", Type: "ping", IPAddress: "127.0.0.1", Params: "-c 1 | sh"},
	} {
		t.Run(name, func(t *testing.T) {
			env := newDiagnosticsEnv()
			var finished activities.FinishInput
			env.OnActivity(a.LoadVM, mock.Anything, "vm-1").Return(stopped, nil)
			env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
				func(_ context.Context, in activities.FinishInput) error { finished = in; return nil })
			env.ExecuteWorkflow(SystemVMDiagnostics, in)
			err := env.GetWorkflowError()
			require.Error(t, err)
			var app *temporal.ApplicationError
			require.True(t, errors.As(err, &app))
			require.Equal(t, activities.ErrTypeNotAllowed, app.Type())
			require.Equal(t, models.OpFailed, finished.Status)
			env.AssertNotCalled(t, "RunDiagnostics", mock.Anything, mock.Anything)
		})
	}
}

func TestDiagnosticsDataCollectFailureIsRecordedFailed(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(SystemVMDiagnosticsData, workflow.RegisterOptions{Name: DiagnosticsDataWorkflowName})
	env.RegisterActivity(&activities.Activities{})
	var finished activities.FinishInput
	calls := 0
	env.OnActivity(a.LoadVM, mock.Anything, "vm-1").Return(router, nil)
	env.OnActivity(a.CollectDiagnosticsData, mock.Anything, activities.DiagnosticsDataInput{OperationID: "op-5", VMID: "vm-1",
		Files: []string{"/var/log/messages"}}).Return(
		func(context.Context, activities.DiagnosticsDataInput) (activities.DiagnosticsArchiveInfo, error) {
			calls++
			if calls == 1 {
				return activities.DiagnosticsArchiveInfo{}, errors.New("ssh: handshake failed")
			}
			return activities.DiagnosticsArchiveInfo{ArchiveID: "ar-1", SizeBytes: 10}, nil
		})
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error { finished = in; return nil })
	env.ExecuteWorkflow(SystemVMDiagnosticsData, DiagnosticsDataInput{OperationID: "op-5", VMID: "vm-1", Files: []string{"/var/log/messages"}})
	require.NoError(t, env.GetWorkflowError(), "a transient SSH failure is retried")
	require.Equal(t, 2, calls)
	require.Equal(t, models.OpCompleted, finished.Status)
	require.Contains(t, finished.Result, `"archiveId":"ar-1"`)

	env = s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(SystemVMDiagnosticsData, workflow.RegisterOptions{Name: DiagnosticsDataWorkflowName})
	env.RegisterActivity(&activities.Activities{})
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error { finished = in; return nil })
	env.ExecuteWorkflow(SystemVMDiagnosticsData, DiagnosticsDataInput{OperationID: "op-6", VMID: "vm-1", Files: []string{"/etc/../shadow"}})
	require.Error(t, env.GetWorkflowError())
	require.Equal(t, models.OpFailed, finished.Status)
	require.Contains(t, finished.Error, "not a clean path")
	env.AssertNotCalled(t, "LoadVM", mock.Anything, mock.Anything)
}
