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

// DiagnosticsDataWorkflowName is the registered workflow type name of SystemVMDiagnosticsData.
const DiagnosticsDataWorkflowName = "SystemVMDiagnosticsData"

// DiagnosticsDataOperationKind is the operation kind of a getDiagnosticsData run.
const DiagnosticsDataOperationKind = "systemvm.diagnostics.data"

// DiagnosticsDataInput starts a SystemVMDiagnosticsData run.
type DiagnosticsDataInput struct {
	OperationID string `json:"operationId"`
	VMID        string `json:"vmId"`
	// Files are named extra files beyond the defaults.
	Files []string `json:"files,omitempty"`
}

// SystemVMDiagnosticsData (getDiagnosticsData) collects the default files and command outputs
// and the named extra files of a running system VM into an archive the API serves through an
// expiring link. It runs under the VM's workflow ID and changes nothing on the VM.
func SystemVMDiagnosticsData(ctx workflow.Context, in DiagnosticsDataInput) (activities.DiagnosticsArchiveInfo, error) {
	progress := Progress{Step: "load", Total: 2}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return progress, nil }); err != nil {
		return activities.DiagnosticsArchiveInfo{}, err
	}
	res, err := collectDiagnosticsData(ctx, in, &progress)
	if err == nil {
		progress.Step, progress.Done, progress.Percent = "done", progress.Total, 100
	}
	return res, finishOperation(ctx, in.OperationID, res, err)
}

func collectDiagnosticsData(ctx workflow.Context, in DiagnosticsDataInput, progress *Progress) (activities.DiagnosticsArchiveInfo, error) {
	if err := diagnostics.ValidateFiles(in.Files); err != nil {
		return activities.DiagnosticsArchiveInfo{}, temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrTypeNotAllowed, nil)
	}
	var vm activities.VMRecord
	if err := workflow.ExecuteActivity(withShortActivity(ctx), a.LoadVM, in.VMID).Get(ctx, &vm); err != nil {
		return activities.DiagnosticsArchiveInfo{}, err
	}
	if vm.State != models.StateRunning {
		return activities.DiagnosticsArchiveInfo{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s %s is %s: diagnostics data is collected only from a Running system VM", vm.Type, vm.Name, vm.State),
			activities.ErrTypeNotAllowed, nil)
	}
	progress.advance("collect")
	opts := workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Minute,
		HeartbeatTimeout:    10 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: 10 * time.Second, MaximumAttempts: 3},
		Summary: "collect diagnostics data of " + vm.Name,
	}
	var res activities.DiagnosticsArchiveInfo
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), a.CollectDiagnosticsData, activities.DiagnosticsDataInput{
		OperationID: in.OperationID, VMID: in.VMID, Files: in.Files}).Get(ctx, &res); err != nil {
		return res, fmt.Errorf("collect diagnostics data of %s: %w", vm.Name, err)
	}
	res.Name = vm.Name
	progress.advance("collected")
	return res, nil
}
