package workflows

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
	steps    []activities.Step
	// version is the command sequence this run follows (see makeBeforeBreakChange).
	version workflow.Version
	// touched: a step may have changed the VM, so a failure settles it.
	touched       bool
	compensations []string
	// takeover: this recreate switches with address takeover (addressTakeoverChange).
	takeover bool
	// local: the short database steps run as local activities (localStepsChange).
	local bool
	// localRecreate: the recreate's short hypervisor steps run as local activities
	// (localRecreateStepsChange).
	localRecreate bool
}

// makeBeforeBreakChange versions the lifecycle workflow: runs started before it
// (workflow.DefaultVersion) recreate destroy-first and end without a settle step, as their
// recorded histories say; runs from version 1 recreate make-before-break, take the destroy
// lock and settle the VM after a failure or cancel.
const (
	makeBeforeBreakChange  = "make-before-break"
	versionMakeBeforeBreak = workflow.Version(1)
)

// addressTakeoverChange versions the make-before-break recreate: runs from version 1 switch
// in two steps, stop-old then take-over (the service addresses pushed to the replacement
// over SSH), and a rollback after stop-old releases the replacement's addresses before the
// old VM starts again; runs before it (recorded histories) switch in one step.
const (
	addressTakeoverChange  = "address-takeover"
	versionAddressTakeover = workflow.Version(1)
)

// localStepsChange versions the lifecycle's short steps: runs from version 1 run LoadVM,
// PrepareRecreate, RecordEvent and FinishOperation as local activities, in the worker that
// runs the workflow task, each recorded as one marker; runs before it (recorded histories)
// schedule them as activities. Each of those steps takes milliseconds, but as an activity it
// is two trips through the Temporal server (an activity task, then the workflow task its
// result schedules), each waiting in the task queue: at 50 routers upgrading at once on a
// loaded server those waits were most of the time a router took beyond its own.
const (
	localStepsChange  = "lifecycle-local-steps"
	versionLocalSteps = workflow.Version(1)
)

// localRecreateStepsChange versions the make-before-break recreate with address takeover: runs
// from version 1 run its short steps (seed, verify-replacement, stop-old, take-over, destroy-old,
// commit: IsLocalRecreateStep) as local activities, each recorded as one marker; the replacement's
// clone and boot, which take tens of seconds on a real pool, and the compensations stay
// activities with heartbeats. Runs before it (recorded histories) schedule every step as an
// activity. Each step is journaled under the operation ID and idempotent, so a local activity
// run again after a worker crash (its workflow task is retried) returns the journaled result
// instead of doing the step twice. Two things improve: the steps after the boot run in one
// workflow task, so stop-old and take-over are no longer a trip through the server apart (the
// network's time without a router is the steps' own time), and a recreate is 3 workflow tasks
// instead of 9, the server load that made 50 routers upgrading at once each wait for their tasks.
const (
	localRecreateStepsChange  = "recreate-local-steps"
	versionLocalRecreateSteps = workflow.Version(1)
)

// IsLocalRecreateStep tells the recreate steps run as local activities from
// versionLocalRecreateSteps.
func IsLocalRecreateStep(step activities.Step) bool {
	switch step {
	case activities.StepSeed, activities.StepVerifyReplacement, activities.StepStopOld, activities.StepTakeOver,
		activities.StepDestroyOld, activities.StepCommit:
		return true
	}
	return false
}

// SystemVMLifecycle starts, stops, reboots, destroys or recreates an SSVM, CPVM or router.
// Recreate is make-before-break: the replacement is built under a new instance name and
// control address from the current router.template.<hypervisor> template, started and
// verified while the old VM serves, holding only its control address; then the old one is
// stopped, the replacement takes the service addresses over (pushed over SSH, confirmed
// served) and the old one is destroyed. A failure or cancel before the switch destroys the
// replacement; after it, the replacement releases the addresses, the old VM is started again
// and the replacement destroyed. Every
// failure, timeout or cancel ends with a settle step that writes the state the hypervisor
// confirms (Running, Stopped or Error with LastError).
func SystemVMLifecycle(ctx workflow.Context, in LifecycleInput) (LifecycleResult, error) {
	w := &lifecycle{in: in}
	w.version = workflow.GetVersion(ctx, makeBeforeBreakChange, workflow.DefaultVersion, versionMakeBeforeBreak)
	w.local = workflow.GetVersion(ctx, localStepsChange, workflow.DefaultVersion, versionLocalSteps) >= versionLocalSteps
	if err := w.setup(ctx); err != nil {
		return LifecycleResult{}, w.finish(ctx, LifecycleResult{}, err)
	}
	var res LifecycleResult
	var err error
	switch {
	case w.version == workflow.DefaultVersion:
		res, err = w.runSteps(ctx)
	case w.in.Action == ActionRecreate:
		res, err = w.recreate(ctx)
	default:
		res, err = w.runSteps(ctx)
	}
	if err == nil {
		err = w.recordDone(ctx)
	}
	return res, w.finish(ctx, res, err)
}

// stepsFor lists the hypervisor steps of an action (a recreate's are those of the
// destroy-first recreate of runs before make-before-break).
func stepsFor(action LifecycleAction, force bool) ([]activities.Step, error) {
	stop := activities.StepStop
	if force {
		stop = activities.StepForceStop
	}
	switch action {
	case ActionStart:
		return []activities.Step{activities.StepStart}, nil
	case ActionStop:
		return []activities.Step{stop}, nil
	case ActionReboot:
		return []activities.Step{activities.StepReboot}, nil
	case ActionDestroy:
		return []activities.Step{activities.StepForceStop, activities.StepDestroy}, nil
	case ActionRecreate:
		return []activities.Step{stop, activities.StepDestroy, activities.StepCreate, activities.StepStart}, nil
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
	total := len(steps) + 1
	if w.version >= versionMakeBeforeBreak && w.in.Action == ActionRecreate {
		total = len(activities.RecreateSteps()) + 2 // load, prepare, the steps
	}
	w.progress = Progress{Step: "load", Total: total}
	var load workflow.Future
	if w.local {
		load = workflow.ExecuteLocalActivity(withShortLocalActivity(ctx), a.LoadVM, w.in.VMID)
	} else {
		load = workflow.ExecuteActivity(withShortActivity(ctx), a.LoadVM, w.in.VMID)
	}
	if err := load.Get(ctx, &w.vm); err != nil {
		return err
	}
	ctx = withShortActivity(ctx)
	t := VMTarget(w.vm.ID, w.vm.Type, w.vm.ZoneID, w.in.Action.OperationKind())
	if err := workflow.UpsertTypedSearchAttributes(ctx, t.SearchAttributes()...); err != nil {
		return err
	}
	if w.vm.State == models.StateDestroyed {
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("system VM %s is destroyed", w.vm.Name), activities.ErrTypeNotAllowed, nil)
	}
	if w.in.Action == ActionDestroy {
		if w.version == workflow.DefaultVersion {
			err = workflow.ExecuteActivity(ctx, a.CheckDestroyAllowed, w.vm.ID).Get(ctx, nil)
		} else {
			err = workflow.ExecuteActivity(ctx, a.AdmitDestroy, activities.AdmitDestroyInput{
				OperationID: w.in.OperationID, VMID: w.vm.ID}).Get(ctx, nil)
			// From here a failure settles the VM, which gives up the destroy mark.
			w.touched = err == nil
		}
		if err != nil {
			return err
		}
	}
	w.progress.advance("loaded")
	return nil
}

// runSteps runs the hypervisor steps of the action one after the other.
func (w *lifecycle) runSteps(ctx workflow.Context) (LifecycleResult, error) {
	res := LifecycleResult{VMID: w.vm.ID, Name: w.vm.Name, Action: string(w.in.Action), InstanceName: w.vm.InstanceName}
	short := withShortActivity(ctx)
	long := withHypervisorActivity(ctx)
	for _, step := range w.steps {
		w.progress.Step = string(step)
		w.touched = true
		if transitional := transitionalState(step); transitional != "" {
			if err := workflow.ExecuteActivity(short, a.SetVMState, w.vm.ID, transitional).Get(ctx, nil); err != nil {
				return res, err
			}
		}
		var out activities.HypervisorStepResult
		// The Web UI shows the step and the VM on the activity, not just "HypervisorStep".
		opts := workflow.GetActivityOptions(long)
		opts.Summary = string(step) + " " + w.vm.Name
		err := workflow.ExecuteActivity(workflow.WithActivityOptions(long, opts), a.HypervisorStep, activities.HypervisorStepInput{
			OperationID: w.in.OperationID, VMID: w.vm.ID, Step: step}).Get(ctx, &out)
		if err != nil {
			return res, fmt.Errorf("%s %s: %w", step, w.vm.Name, err)
		}
		res.State, res.Host = out.State, out.Host
		w.progress.advance(string(step) + " done")
	}
	return res, nil
}

// recreate is the make-before-break recreate (see SystemVMLifecycle).
func (w *lifecycle) recreate(ctx workflow.Context) (LifecycleResult, error) {
	res := LifecycleResult{VMID: w.vm.ID, Name: w.vm.Name, Action: string(w.in.Action), OldInstanceName: w.vm.InstanceName}
	w.progress.Step = string(activities.StepPrepare)
	w.touched = true
	var plan activities.RecreatePlan
	prepare := activities.RecreateInput{OperationID: w.in.OperationID, VMID: w.vm.ID, Step: activities.StepPrepare}
	var f workflow.Future
	if w.local {
		// Journaled and idempotent: a retry (local or after a crash) returns the same plan.
		f = workflow.ExecuteLocalActivity(withPrepareLocalActivity(ctx), a.PrepareRecreate, prepare)
	} else {
		f = workflow.ExecuteActivity(withStepActivity(ctx, activities.StepPrepare, w.vm.Name), a.PrepareRecreate, prepare)
	}
	if err := f.Get(ctx, &plan); err != nil {
		return res, fmt.Errorf("%s %s: %w", activities.StepPrepare, w.vm.Name, err)
	}
	res.OldInstanceName, res.InstanceName, res.ControlIP = plan.OldInstanceName, plan.InstanceName, plan.ControlIP
	w.progress.advance(string(activities.StepPrepare) + " done")
	steps := activities.RecreateSteps()
	w.takeover = workflow.GetVersion(ctx, addressTakeoverChange, workflow.DefaultVersion, versionAddressTakeover) >= versionAddressTakeover
	if w.takeover {
		steps = activities.RecreateTakeoverSteps()
		w.progress.Total = len(steps) + 2
		w.localRecreate = workflow.GetVersion(ctx, localRecreateStepsChange, workflow.DefaultVersion, versionLocalRecreateSteps) >= versionLocalRecreateSteps
	}
	stopped := false // the switch may have stopped the old VM
	for _, step := range steps {
		w.progress.Step = string(step)
		if step == activities.StepSwitch || step == activities.StepStopOld {
			stopped = true
		}
		var out activities.RecreateResult
		err := w.recreateStep(ctx, activities.RecreateInput{
			OperationID: w.in.OperationID, VMID: w.vm.ID, Step: step, Plan: plan}).Get(ctx, &out)
		if err != nil {
			err = fmt.Errorf("%s %s (replacement %s): %w", step, w.vm.Name, plan.InstanceName, err)
			if step == activities.StepCommit {
				// The old VM is gone and the replacement serves: keep it; the settle step
				// records the row's state and the error.
				return res, err
			}
			return res, w.compensate(ctx, plan, stopped, err)
		}
		switch step {
		case activities.StepSwitch:
			stoppedAt, servingAt := out.OldStoppedAt, out.ServingAt
			res.OldStoppedAt, res.ServingAt = &stoppedAt, &servingAt
			res.SwitchGapMillis = servingAt.Sub(stoppedAt).Milliseconds()
			recordSwitchGap(ctx, w.vm.ZoneID, w.vm.Type, servingAt.Sub(stoppedAt))
		case activities.StepStopOld:
			stoppedAt := out.OldStoppedAt
			res.OldStoppedAt = &stoppedAt
		case activities.StepTakeOver:
			// The gap: old VM stopped (stop-old's clock) -> replacement confirmed serving
			// its addresses (take-over's), both measured by the activities.
			servingAt := out.ServingAt
			res.ServingAt, res.Addresses = &servingAt, out.Addresses
			if res.OldStoppedAt != nil {
				res.SwitchGapMillis = servingAt.Sub(*res.OldStoppedAt).Milliseconds()
				recordSwitchGap(ctx, w.vm.ZoneID, w.vm.Type, servingAt.Sub(*res.OldStoppedAt))
			}
		case activities.StepCommit:
			res.State, res.Host = out.State, out.Host
		}
		w.progress.advance(string(step) + " done")
	}
	return res, nil
}

// recreateStep runs one step of the recreate: a local activity when localRecreate and the step
// is short (IsLocalRecreateStep), else an activity.
func (w *lifecycle) recreateStep(ctx workflow.Context, in activities.RecreateInput) workflow.Future {
	if w.localRecreate && IsLocalRecreateStep(in.Step) {
		return workflow.ExecuteLocalActivity(withStepLocalActivity(ctx, in.Step, w.vm.Name), a.RecreateStep, in)
	}
	return workflow.ExecuteActivity(withStepActivity(ctx, in.Step, w.vm.Name), a.RecreateStep, in)
}

// compensate undoes a recreate that failed or was canceled: after the switch it starts the
// old VM again, then it destroys the replacement, both on a disconnected context so a cancel
// does not stop them. runErr is returned with what compensation could not do.
func (w *lifecycle) compensate(ctx workflow.Context, plan activities.RecreatePlan, oldStopped bool, runErr error) error {
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	steps := []activities.Step{activities.StepDestroyReplacement}
	switch {
	case oldStopped && w.takeover:
		// The replacement gives the addresses up before the old VM takes them again.
		steps = []activities.Step{activities.StepReleaseAddresses, activities.StepStartOld, activities.StepDestroyReplacement}
	case oldStopped:
		steps = []activities.Step{activities.StepStartOld, activities.StepDestroyReplacement}
	}
	var failed []string
	for _, step := range steps {
		w.progress.Step = "compensate: " + string(step)
		w.compensations = append(w.compensations, string(step))
		err := workflow.ExecuteActivity(withStepActivity(dctx, step, w.vm.Name), a.RecreateStep, activities.RecreateInput{
			OperationID: w.in.OperationID, VMID: w.vm.ID, Step: step, Plan: plan}).Get(dctx, nil)
		if err != nil {
			workflow.GetLogger(ctx).Error("recreate compensation failed", "step", step, "vm", w.vm.Name, "error", err)
			failed = append(failed, fmt.Sprintf("%s: %v", step, err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w; compensation incomplete: %s", runErr, strings.Join(failed, "; "))
	}
	return runErr
}

// recordDone records the success event.
func (w *lifecycle) recordDone(ctx workflow.Context) error {
	desc := fmt.Sprintf("%s %s (%s) done", w.in.Action, w.vm.Name, w.vm.Type)
	if w.in.Reason != "" {
		desc += ": " + w.in.Reason
	}
	return w.recordEvent(ctx, activities.EventInput{
		Type: eventType(w.vm.Type, w.in.Action), Level: "INFO", Description: desc,
		VMID: w.vm.ID, ZoneID: w.vm.ZoneID, OperationID: w.in.OperationID}).Get(ctx, nil)
}

// recordEvent runs RecordEvent: a local activity from versionLocalSteps, else an activity
// (withShortActivity).
func (w *lifecycle) recordEvent(ctx workflow.Context, in activities.EventInput) workflow.Future {
	if w.local {
		return workflow.ExecuteLocalActivity(withShortLocalActivity(ctx), a.RecordEvent, in)
	}
	return workflow.ExecuteActivity(withShortActivity(ctx), a.RecordEvent, in)
}

// finish settles the VM after a failure (from version 1) and records the operation's end in
// its journal row, also when the run was canceled.
func (w *lifecycle) finish(ctx workflow.Context, res LifecycleResult, runErr error) error {
	if runErr != nil && w.vm.ID != "" {
		dctx, cancel := workflow.NewDisconnectedContext(ctx)
		defer cancel()
		if w.version >= versionMakeBeforeBreak && w.touched {
			// Never leave Starting/Stopping behind: write what the hypervisor says.
			var state string
			if err := workflow.ExecuteActivity(withStepActivity(dctx, "settle", w.vm.Name), a.SettleVM, activities.SettleInput{
				OperationID: w.in.OperationID, VMID: w.vm.ID, Error: runErr.Error(),
				Destroying: w.in.Action == ActionDestroy}).Get(dctx, &state); err != nil {
				workflow.GetLogger(ctx).Error("settle after failure", "vm", w.vm.Name, "error", err)
			} else {
				res.State = state
			}
		}
		if len(w.compensations) > 0 {
			res.Compensations = w.compensations
		}
		// Record the failure as an event an operator can find next to the VM.
		_ = w.recordEvent(dctx, activities.EventInput{
			Type: eventType(w.vm.Type, w.in.Action) + ".FAILED", Level: "ERROR",
			Description: fmt.Sprintf("%s %s failed: %v", w.in.Action, w.vm.Name, runErr),
			VMID:        w.vm.ID, ZoneID: w.vm.ZoneID, OperationID: w.in.OperationID}).Get(dctx, nil)
	}
	if runErr == nil {
		w.progress.Step, w.progress.Done, w.progress.Percent = "done", w.progress.Total, 100
	}
	return endOperation(ctx, w.local, w.in.OperationID, res, runErr)
}

// finishOperation records an operation's end in its journal row with the FinishOperation
// activity: completed or failed (canceled) with runErr, with res as its JSON result. It runs on
// a disconnected context, so a canceled run still records its end, and returns runErr.
func finishOperation(ctx workflow.Context, operationID string, res any, runErr error) error {
	return endOperation(ctx, false, operationID, res, runErr)
}

// endOperation is finishOperation, with FinishOperation run as a local activity when local.
func endOperation(ctx workflow.Context, local bool, operationID string, res any, runErr error) error {
	in := activities.FinishInput{OperationID: operationID, Status: models.OpCompleted}
	// A failed run's result says what it left behind (the settled state, compensations).
	b, _ := json.Marshal(res)
	in.Result = string(b)
	if runErr != nil {
		in.Status, in.Error = models.OpFailed, runErr.Error()
		var canceled *temporal.CanceledError
		if errors.As(runErr, &canceled) {
			in.Status = models.OpCanceled
		}
	}
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	var f workflow.Future
	if local {
		f = workflow.ExecuteLocalActivity(withShortLocalActivity(dctx), a.FinishOperation, in)
	} else {
		f = workflow.ExecuteActivity(withShortActivity(dctx), a.FinishOperation, in)
	}
	if err := f.Get(dctx, nil); err != nil {
		workflow.GetLogger(ctx).Error("record operation end", "error", err)
	}
	return runErr
}

func transitionalState(step activities.Step) string {
	switch step {
	case activities.StepStart, activities.StepCreate:
		return models.StateStarting
	case activities.StepStop, activities.StepForceStop, activities.StepDestroy:
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

// withShortLocalActivity is withShortActivity for a local activity.
func withShortLocalActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2,
			MaximumInterval: 30 * time.Second, MaximumAttempts: 10},
	})
}

// withPrepareLocalActivity is for PrepareRecreate as a local activity: one hypervisor look-up
// and a journal write, retried as withStepActivity retries the prepare step.
func withPrepareLocalActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 2 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: time.Minute, MaximumAttempts: 8},
	})
}

// withStepActivity is for one step of a make-before-break recreate (and the settle step):
// hypervisor calls that heartbeat, with a retry policy fit for the step. Verifying the
// replacement retries for about twenty seconds while it boots; the switch, with the old VM
// already stopped, retries little before the run rolls back.
func withStepActivity(ctx workflow.Context, step activities.Step, vmName string) workflow.Context {
	return workflow.WithActivityOptions(ctx, stepActivityOptions(step, vmName))
}

// withStepLocalActivity is withStepActivity for a step run as a local activity: the same
// timeout, retries and summary (a local activity has no heartbeat; the SDK keeps its workflow
// task alive while it runs).
func withStepLocalActivity(ctx workflow.Context, step activities.Step, vmName string) workflow.Context {
	opts := stepActivityOptions(step, vmName)
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: opts.StartToCloseTimeout, RetryPolicy: opts.RetryPolicy, Summary: opts.Summary})
}

// stepActivityOptions are the options of one recreate step (see withStepActivity).
func stepActivityOptions(step activities.Step, vmName string) workflow.ActivityOptions {
	opts := workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Minute,
		HeartbeatTimeout:    10 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: time.Minute, MaximumAttempts: 8},
		Summary: string(step) + " " + vmName,
	}
	switch step {
	case activities.StepVerifyReplacement:
		opts.StartToCloseTimeout = time.Minute
		opts.RetryPolicy = &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2,
			MaximumInterval: 5 * time.Second, MaximumAttempts: 6}
	case activities.StepSwitch, activities.StepStopOld, activities.StepTakeOver, activities.StepReleaseAddresses:
		// The network is without a router from stop-old on: retry little, then roll back.
		opts.StartToCloseTimeout = 2 * time.Minute
		opts.RetryPolicy = &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2,
			MaximumInterval: 5 * time.Second, MaximumAttempts: 3}
	}
	return opts
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
