package workflows

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// a is the activity receiver used to name activities in workflow code; its methods are never
// called on this nil value, only referenced.
var a *activities.Activities

// lifecycle is one lifecycle operation on one system VM.
type lifecycle struct {
	in       LifecycleInput
	vm       activities.VMRecord
	progress Progress
	steps    []string
}

// SystemVMLifecycle starts, stops, reboots, destroys or recreates an SSVM, CPVM or router.
// Recreate is stop, destroy, create from the current router.template.<hypervisor> template,
// start. Every hypervisor step writes the hypervisor's view back to the database.
func SystemVMLifecycle(ctx workflow.Context, in LifecycleInput) (LifecycleResult, error) {
	w := &lifecycle{in: in}
	if err := w.setup(ctx); err != nil {
		return LifecycleResult{}, w.finish(ctx, LifecycleResult{}, err)
	}
	res, err := w.run(ctx)
	return res, w.finish(ctx, res, err)
}

// stepsFor lists the hypervisor steps of an action.
func stepsFor(action LifecycleAction, force bool) ([]string, error) {
	stop := "stop"
	if force {
		stop = "forcestop"
	}
	switch action {
	case ActionStart:
		return []string{"start"}, nil
	case ActionStop:
		return []string{stop}, nil
	case ActionReboot:
		return []string{"reboot"}, nil
	case ActionDestroy:
		return []string{"forcestop", "destroy"}, nil
	case ActionRecreate:
		return []string{stop, "destroy", "create", "start"}, nil
	}
	return nil, fmt.Errorf("unknown action %q", action)
}

func (w *lifecycle) setup(ctx workflow.Context) error {
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return w.progress, nil }); err != nil {
		return err
	}
	steps, err := stepsFor(w.in.Action, w.in.Force)
	if err != nil {
		return temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrTypeNotAllowed, nil)
	}
	w.steps = steps
	w.progress = Progress{Step: "load", Total: len(steps) + 1}
	ctx = withShortActivity(ctx)
	if err := workflow.ExecuteActivity(ctx, a.LoadVM, w.in.VMID).Get(ctx, &w.vm); err != nil {
		return err
	}
	sa := []temporal.SearchAttributeUpdate{SystemVMIDKey.ValueSet(w.vm.ID), ZoneIDKey.ValueSet(w.vm.ZoneID),
		OperationKindKey.ValueSet(w.in.Action.OperationKind())}
	if w.vm.Type == models.TypeRouter {
		sa = append(sa, RouterIDKey.ValueSet(w.vm.ID))
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, sa...); err != nil {
		return err
	}
	if w.vm.State == models.StateDestroyed {
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("system VM %s is destroyed", w.vm.Name), activities.ErrTypeNotAllowed, nil)
	}
	if w.in.Action == ActionDestroy {
		if err := workflow.ExecuteActivity(ctx, a.CheckDestroyAllowed, w.vm.ID).Get(ctx, nil); err != nil {
			return err
		}
	}
	w.progress.advance("loaded")
	return nil
}

func (w *lifecycle) run(ctx workflow.Context) (LifecycleResult, error) {
	res := LifecycleResult{VMID: w.vm.ID, Name: w.vm.Name, Action: string(w.in.Action)}
	short := withShortActivity(ctx)
	long := withHypervisorActivity(ctx)
	for _, step := range w.steps {
		w.progress.Step = step
		if transitional := transitionalState(step); transitional != "" {
			if err := workflow.ExecuteActivity(short, a.SetVMState, w.vm.ID, transitional).Get(ctx, nil); err != nil {
				return res, err
			}
		}
		var out activities.HypervisorStepResult
		// The Web UI shows the step and the VM on the activity, not just "HypervisorStep".
		opts := workflow.GetActivityOptions(long)
		opts.Summary = step + " " + w.vm.Name
		err := workflow.ExecuteActivity(workflow.WithActivityOptions(long, opts), a.HypervisorStep, activities.HypervisorStepInput{
			OperationID: w.in.OperationID, VMID: w.vm.ID, Step: step}).Get(ctx, &out)
		if err != nil {
			return res, fmt.Errorf("%s %s: %w", step, w.vm.Name, err)
		}
		res.State, res.Host = out.State, out.Host
		w.progress.advance(step + " done")
	}
	desc := fmt.Sprintf("%s %s (%s) done", w.in.Action, w.vm.Name, w.vm.Type)
	if w.in.Reason != "" {
		desc += ": " + w.in.Reason
	}
	err := workflow.ExecuteActivity(short, a.RecordEvent, activities.EventInput{
		Type: eventType(w.vm.Type, w.in.Action), Level: "INFO", Description: desc,
		VMID: w.vm.ID, ZoneID: w.vm.ZoneID, OperationID: w.in.OperationID}).Get(ctx, nil)
	return res, err
}

// finish records the operation's end in its journal row, also when the run was canceled.
func (w *lifecycle) finish(ctx workflow.Context, res LifecycleResult, runErr error) error {
	if runErr != nil && w.vm.ID != "" {
		// Record the failure as an event an operator can find next to the VM.
		dctx, cancel := workflow.NewDisconnectedContext(ctx)
		defer cancel()
		_ = workflow.ExecuteActivity(withShortActivity(dctx), a.RecordEvent, activities.EventInput{
			Type: eventType(w.vm.Type, w.in.Action) + ".FAILED", Level: "ERROR",
			Description: fmt.Sprintf("%s %s failed: %v", w.in.Action, w.vm.Name, runErr),
			VMID:        w.vm.ID, ZoneID: w.vm.ZoneID, OperationID: w.in.OperationID}).Get(dctx, nil)
	}
	if runErr == nil {
		w.progress.Step, w.progress.Done, w.progress.Percent = "done", w.progress.Total, 100
	}
	return finishOperation(ctx, w.in.OperationID, res, runErr)
}

// finishOperation records an operation's end in its journal row with the FinishOperation
// activity: completed with res as its JSON result, or failed (canceled) with runErr. It runs on
// a disconnected context, so a canceled run still records its end, and returns runErr.
func finishOperation(ctx workflow.Context, operationID string, res any, runErr error) error {
	in := activities.FinishInput{OperationID: operationID, Status: models.OpCompleted}
	if runErr != nil {
		in.Status, in.Error = models.OpFailed, runErr.Error()
		var canceled *temporal.CanceledError
		if errors.As(runErr, &canceled) {
			in.Status = models.OpCanceled
		}
	} else {
		b, _ := json.Marshal(res)
		in.Result = string(b)
	}
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	if err := workflow.ExecuteActivity(withShortActivity(dctx), a.FinishOperation, in).Get(dctx, nil); err != nil {
		workflow.GetLogger(ctx).Error("record operation end", "error", err)
	}
	return runErr
}

func transitionalState(step string) string {
	switch step {
	case "start", "create":
		return models.StateStarting
	case "stop", "forcestop", "destroy":
		return models.StateStopping
	}
	return ""
}

// eventType names events as CloudStack does: SSVM.START, PROXY.STOP, ROUTER.REBOOT, ...
func eventType(vmType string, action LifecycleAction) string {
	prefix := map[string]string{models.TypeSSVM: "SSVM", models.TypeCPVM: "PROXY", models.TypeRouter: "ROUTER"}[vmType]
	if prefix == "" {
		prefix = "SYSTEMVM"
	}
	return prefix + "." + map[LifecycleAction]string{ActionStart: "START", ActionStop: "STOP",
		ActionReboot: "REBOOT", ActionDestroy: "DESTROY", ActionRecreate: "RECREATE"}[action]
}

// withShortActivity is for database steps.
func withShortActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2,
			MaximumInterval: 30 * time.Second, MaximumAttempts: 10},
	})
}

// withHypervisorActivity is for hypervisor calls: they heartbeat, so a dead worker is noticed
// in seconds, and they retry transient (unreachable) failures with backoff.
func withHypervisorActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Minute,
		HeartbeatTimeout:    10 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: time.Minute, MaximumAttempts: 8},
	})
}
