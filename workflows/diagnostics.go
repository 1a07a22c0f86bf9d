package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/diagnostics"
	"github.com/sysvm/sysvm/models"
)

// DiagnosticsWorkflowName is the registered workflow type name of SystemVMDiagnostics.
const DiagnosticsWorkflowName = "SystemVMDiagnostics"

// DiagnosticsOperationKind is the operation kind of a diagnostics run.
const DiagnosticsOperationKind = "systemvm.diagnostics"

// DiagnosticsInput starts a SystemVMDiagnostics run (runDiagnostics).
type DiagnosticsInput struct {
	OperationID string `json:"operationId"`
	VMID        string `json:"vmId"`
	// Type is ping, traceroute or arping.
	Type      string `json:"type"`
	IPAddress string `json:"ipAddress"`
	// Params are the operator's extra parameters (letters, digits, '-', '.', spaces).
	Params string `json:"params,omitempty"`
	// TimeoutSeconds is the time limit inside the VM (0: the default).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// SystemVMDiagnostics runs one diagnostics command (ping, traceroute, arping) inside a running
// SSVM, CPVM or router over SSH and ends with its stdout, stderr and exit code, stored as a
// diagnostics result of the VM. It runs under the VM's workflow ID (VMTarget), so it never
// overlaps a lifecycle operation on that VM. It changes nothing on the VM, so a failure has
// nothing to settle.
func SystemVMDiagnostics(ctx workflow.Context, in DiagnosticsInput) (diagnostics.Result, error) {
	progress := Progress{Step: "load", Total: 2}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return progress, nil }); err != nil {
		return diagnostics.Result{}, err
	}
	res, err := runDiagnostics(ctx, in, &progress)
	if err == nil {
		progress.Step, progress.Done, progress.Percent = "done", progress.Total, 100
	}
	return res, finishOperation(ctx, in.OperationID, res, err)
}

func runDiagnostics(ctx workflow.Context, in DiagnosticsInput, progress *Progress) (diagnostics.Result, error) {
	req, err := diagnostics.NewRequest(in.Type, in.IPAddress, in.Params, in.TimeoutSeconds)
	if err != nil {
		return diagnostics.Result{}, temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrTypeNotAllowed, nil)
	}
	var vm activities.VMRecord
	if err := workflow.ExecuteActivity(withShortActivity(ctx), a.LoadVM, in.VMID).Get(ctx, &vm); err != nil {
		return diagnostics.Result{}, err
	}
	if vm.State != models.StateRunning {
		return diagnostics.Result{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s %s is %s: diagnostics run only in a Running system VM", vm.Type, vm.Name, vm.State), activities.ErrTypeNotAllowed, nil)
	}
	progress.advance(string(req.Type))
	opts := workflow.ActivityOptions{
		// The VM's timeout ends the command at the limit; the route lookup and SSH add a little.
		StartToCloseTimeout: req.TimeLimit() + 45*time.Second,
		HeartbeatTimeout:    10 * time.Second,
		// Retries only reach a VM that SSH could not reach: a command that ran is a result.
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: 10 * time.Second, MaximumAttempts: 3},
		Summary: string(req.Type) + " " + req.Address.String() + " in " + vm.Name,
	}
	var res diagnostics.Result
	err = workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), a.RunDiagnostics, activities.DiagnosticsInput{
		OperationID: in.OperationID, VMID: in.VMID, Type: in.Type, IPAddress: in.IPAddress, Params: in.Params,
		TimeoutSeconds: in.TimeoutSeconds}).Get(ctx, &res)
	if err != nil {
		return res, fmt.Errorf("%s %s in %s: %w", req.Type, req.Address, vm.Name, err)
	}
	res.Name = vm.Name
	progress.advance(string(req.Type) + " done")
	return res, nil
}
