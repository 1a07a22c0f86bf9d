package operations

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/api/serviceerror"

	"github.com/sysvm/sysvm/models"
)

// EventCancel is the event type recorded when an operation's cancellation is requested.
const EventCancel = "OPERATION.CANCEL"

// Cancel requests the cancellation of a running operation on behalf of requestedBy and
// returns it reconciled. The workflow undoes or stops what it does and ends canceled; a run no
// worker has picked up has done nothing, so it is ended at once and recorded canceled. The
// row is reconciled first (a missing run ID is found by the workflow ID). Errors: ErrNotFound,
// ErrNotRunning (Error.Operation shows how it ended), ErrStarting (its start is not confirmed
// yet), ErrUnavailable.
func (e *Engine) Cancel(ctx context.Context, id, requestedBy string) (Operation, error) {
	row, err := e.load(ctx, id)
	if err != nil {
		return Operation{}, err
	}
	if e.temporal == nil {
		return Operation{}, newError(ErrUnavailable, nil, nil, "operations are unavailable: this server has no Temporal connection")
	}
	cur := e.reconcile(ctx, row, false)
	if cur.Status != models.OpRunning {
		return cur, newError(ErrNotRunning, &cur, nil, "operation %s (%s) is not running: it is %s", row.ID, row.Kind, cur.Status)
	}
	if cur.RunID == "" {
		return cur, newError(ErrStarting, &cur, nil, "operation %s is still starting; retry in a moment", row.ID)
	}
	op := cur.Operation
	tctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	if err := e.temporal.CancelWorkflow(tctx, op.WorkflowID, op.RunID); err != nil {
		var nf *serviceerror.NotFound
		if !errors.As(err, &nf) {
			return cur, newError(ErrUnavailable, nil, err, "cannot cancel operation %s: Temporal: %v", op.ID, err)
		}
		// Closed meanwhile: the reconciliation below records how.
	} else if e.neverPickedUp(tctx, op) {
		// No worker has run any of it: nothing to undo, so end it now rather than when a
		// worker comes back (the target's workflow ID would stay taken until then).
		reason := fmt.Sprintf("%s by API key %s before any worker picked the run up", CancelReasonPrefix, requestedBy)
		if err := e.temporal.TerminateWorkflow(tctx, op.WorkflowID, op.RunID, reason); err != nil {
			var nf *serviceerror.NotFound
			if !errors.As(err, &nf) {
				e.log.Warn("end never-started run of canceled operation", "operation", op.ID, "error", err)
			}
		}
	}
	if err := e.store.AddEvent(ctx, models.Event{Type: EventCancel, Level: "INFO", OperationID: op.ID, ZoneID: op.ZoneID,
		ResourceType: op.TargetType, ResourceID: op.TargetID,
		Description: fmt.Sprintf("cancellation of operation %s (%s on %s) requested by API key %s", op.ID, op.Kind, op.TargetID, requestedBy)}); err != nil {
		e.log.Error("record cancel event", "operation", op.ID, "error", err)
	}
	return e.Reconcile(ctx, op), nil
}
