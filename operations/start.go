package operations

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/serviceerror"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/models"
)

// journalTimeout bounds the journal writes done after the caller may have gone away.
const journalTimeout = 10 * time.Second

// Start journals an operation and starts its workflow under the target's workflow ID.
//
// It returns the operation, running with its run ID. A run already holding the workflow ID
// makes it an ErrAlreadyRunning naming that run's operation (Temporal refuses the second
// start, so two operations on one target never run at once); a run that has already recorded
// its end is waited for briefly instead. The row is written before the start; it is removed
// only when Temporal definitely refused the start. When the answer leaves the start in doubt
// (a time-out, an unreachable server) the workflow ID is described: a run carrying this
// operation's ID is recorded and the start succeeds; no such run fails the row with the
// reason; no answer leaves the row running for reconciliation and returns ErrUnavailable
// with the operation.
func (e *Engine) Start(ctx context.Context, spec Spec) (Operation, error) {
	if e.temporal == nil {
		return Operation{}, newError(ErrUnavailable, nil, nil, "operations are unavailable: this server has no Temporal connection")
	}
	if spec.Target.WorkflowID == "" || spec.Workflow == "" || spec.Input == nil || spec.Target.Kind == "" {
		return Operation{}, fmt.Errorf("operation spec %s on %s: target workflow ID and kind, workflow and input are required",
			spec.Target.Kind, spec.name())
	}
	name := spec.name()
	row := models.Operation{Base: models.Base{ID: models.NewID()}, Kind: spec.Target.Kind, TargetType: spec.TargetType,
		TargetID: spec.TargetID, ZoneID: spec.Target.ZoneID, WorkflowID: spec.Target.WorkflowID, Status: models.OpRunning,
		RequestedBy: spec.RequestedBy}
	if err := e.store.DB.WithContext(ctx).Create(&row).Error; err != nil {
		return Operation{}, fmt.Errorf("journal %s on %s: %w", row.Kind, name, err)
	}
	memo := map[string]any{}
	for k, v := range spec.Memo {
		memo[k] = v
	}
	memo[MemoOperationID], memo["target"], memo["requestedBy"] = row.ID, name, spec.RequestedBy
	opts := spec.Target.StartOptions(memo)
	tctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	run, err := e.temporal.ExecuteWorkflow(tctx, opts, spec.Workflow, spec.Input(row.ID))
	var busy *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &busy) && e.finishing(tctx, row.WorkflowID, busy.RunId) {
		// The run holding the ID has recorded its end and is only closing: wait for it rather
		// than refuse an operator who started the next operation right after the last one.
		run, err = e.temporal.ExecuteWorkflow(tctx, opts, spec.Workflow, spec.Input(row.ID))
	}
	// From here on the journal must be written even if the caller has gone away.
	jctx, jcancel := context.WithTimeout(context.WithoutCancel(ctx), journalTimeout+e.timeout)
	defer jcancel()
	switch {
	case err == nil:
		row.RunID = run.GetRunID()
		e.recordRun(jctx, row.ID, row.RunID)
		e.log.Info("operation started", "operation", row.ID, "kind", row.Kind, "target", name, "workflow", row.WorkflowID,
			"run", row.RunID, "requested_by", spec.RequestedBy)
		return Operation{Operation: row}, nil
	case errors.As(err, &busy):
		e.forget(jctx, row.ID)
		return Operation{}, e.alreadyRunning(jctx, spec, busy.RunId)
	case ambiguous(err):
		return e.resolveStart(jctx, row, spec, err)
	default:
		e.forget(jctx, row.ID)
		return Operation{}, newError(ErrUnavailable, nil, err, "cannot start %s on %s: Temporal did not accept the workflow: %v",
			row.Kind, name, err)
	}
}

// recordRun stores the run ID of a started operation.
func (e *Engine) recordRun(ctx context.Context, opID, runID string) {
	if err := e.store.DB.WithContext(ctx).Model(&models.Operation{}).Where("id = ?", opID).
		Update("run_id", runID).Error; err != nil {
		// Reconciliation finds the run again by the workflow ID and the memo.
		e.log.Error("record run ID of operation", "operation", opID, "run", runID, "error", err)
	}
}

// forget removes the row of an operation Temporal definitely refused to start.
func (e *Engine) forget(ctx context.Context, opID string) {
	if err := e.store.DB.WithContext(ctx).Where("id = ? AND run_id = ?", opID, "").Delete(&models.Operation{}).Error; err != nil {
		e.log.Error("remove journal row of an operation that did not start", "operation", opID, "error", err)
	}
}

// resolveStart settles a start whose answer left it in doubt by describing the workflow ID.
func (e *Engine) resolveStart(ctx context.Context, row models.Operation, spec Spec, startErr error) (Operation, error) {
	name := spec.name()
	m := e.findRun(ctx, row, false)
	switch {
	case m.ours != "":
		row.RunID = m.ours
		e.recordRun(ctx, row.ID, row.RunID)
		e.log.Warn("operation started although its start answered an error: Temporal has its run", "operation", row.ID,
			"workflow", row.WorkflowID, "run", row.RunID, "start_error", startErr)
		return Operation{Operation: row}, nil
	case m.err != nil:
		e.log.Warn("start of operation unconfirmed: Temporal does not answer", "operation", row.ID, "workflow", row.WorkflowID,
			"start_error", startErr, "describe_error", m.err)
		op := Operation{Operation: row}
		return op, newError(ErrUnavailable, &op, startErr,
			"cannot confirm the start of %s on %s: Temporal did not answer (%v); operation %s is recorded and is reconciled with Temporal once it answers",
			row.Kind, name, startErr, row.ID)
	case m.other != nil && m.otherRunning:
		op := e.fail(ctx, row, fmt.Sprintf("not started: Temporal did not confirm the start (%v) and workflow %s is held by run %s of another operation",
			startErr, row.WorkflowID, m.other.GetExecution().GetRunId()), time.Now())
		e.log.Warn("operation not started: another run holds its workflow ID", "operation", op.ID, "workflow", row.WorkflowID)
		return Operation{}, e.alreadyRunning(ctx, spec, m.other.GetExecution().GetRunId())
	default:
		e.fail(ctx, row, fmt.Sprintf("not started: Temporal did not confirm the start (%v) and holds no run of workflow %s for this operation",
			startErr, row.WorkflowID), time.Now())
		return Operation{}, newError(ErrUnavailable, nil, startErr, "cannot start %s on %s: Temporal did not accept the workflow: %v",
			row.Kind, name, startErr)
	}
}

// finishing reports whether the run holding a workflow ID has already recorded its end in the
// journal, and if so waits (up to 5 s) for Temporal to close it.
func (e *Engine) finishing(ctx context.Context, workflowID, runID string) bool {
	var holder models.Operation
	err := e.store.DB.WithContext(ctx).Where("workflow_id = ? AND run_id = ?", workflowID, runID).Take(&holder).Error
	if err != nil || holder.Status == models.OpRunning {
		return false
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = e.temporal.GetWorkflow(wctx, workflowID, runID).Get(wctx, nil)
	return wctx.Err() == nil
}

// alreadyRunning builds the ErrAlreadyRunning for a workflow ID held by a running run, naming
// its operation. The winner of a race of starts may not have recorded its run ID yet: while
// some other recent start of this workflow ID is still in flight, wait (briefly) for its row
// to name the run.
func (e *Engine) alreadyRunning(ctx context.Context, spec Spec, runID string) error {
	what, name, wid := spec.what(), spec.name(), spec.Target.WorkflowID
	deadline := time.Now().Add(3 * time.Second)
	for {
		var running models.Operation
		err := e.store.DB.WithContext(ctx).Where("workflow_id = ? AND run_id = ?", wid, runID).Take(&running).Error
		if err == nil {
			op := Operation{Operation: running}
			return newError(ErrAlreadyRunning, &op, nil, "%s %s already has a running operation %s (%s)", what, name, running.ID, running.Kind)
		}
		if !errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("find the running operation of %s: %w", name, err)
		}
		var inFlight int64
		if err := e.store.DB.WithContext(ctx).Model(&models.Operation{}).
			Where("workflow_id = ? AND status = ? AND run_id = ? AND created_at >= ?", wid, models.OpRunning, "",
				time.Now().Add(-e.timeout-journalTimeout)).
			Count(&inFlight).Error; err != nil {
			return fmt.Errorf("find the running operation of %s: %w", name, err)
		}
		if inFlight == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("find the running operation of %s: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// Started outside the engine (by a schedule's parent workflow, or by hand in Temporal).
	op := Operation{Operation: models.Operation{Status: models.OpRunning, WorkflowID: wid, RunID: runID}}
	return newError(ErrAlreadyRunning, &op, nil, "%s %s already has a running workflow %s (run %s) that was not started through this API",
		what, name, wid, runID)
}
