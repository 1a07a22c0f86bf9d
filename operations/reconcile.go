package operations

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// clockSkew is how much earlier than its row a run may seem to start (the database's clock
// and Temporal's differ a little).
const clockSkew = 5 * time.Second

// Get returns an operation reconciled with Temporal, with its live progress while it runs.
// An unknown ID is ErrNotFound.
func (e *Engine) Get(ctx context.Context, id string) (Operation, error) {
	row, err := e.load(ctx, id)
	if err != nil {
		return Operation{}, err
	}
	return e.Reconcile(ctx, row), nil
}

func (e *Engine) load(ctx context.Context, id string) (models.Operation, error) {
	var row models.Operation
	err := e.store.DB.WithContext(ctx).Where("id = ?", id).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return row, newError(ErrNotFound, nil, nil, "no operation with id %s", id)
	}
	if err != nil {
		return row, fmt.Errorf("read operation %s: %w", id, err)
	}
	return row, nil
}

// ListQuery filters and pages List; empty fields do not filter.
type ListQuery struct {
	Kind, Status, TargetType, TargetID, ZoneID, RequestedBy string
	// Page counts from 1; PageSize is 50 when 0.
	Page, PageSize int
}

// List returns a page of operations, newest first, and how many match. Running rows whose
// run ID is missing are reconciled (see ReconcileRows).
func (e *Engine) List(ctx context.Context, q ListQuery) ([]Operation, int64, error) {
	db := e.store.DB.WithContext(ctx).Model(&models.Operation{})
	for col, v := range map[string]string{"kind": q.Kind, "status": q.Status, "target_type": q.TargetType,
		"target_id": q.TargetID, "zone_id": q.ZoneID, "requested_by": q.RequestedBy} {
		if v != "" {
			db = db.Where(col+" = ?", v)
		}
	}
	var n int64
	if err := db.Count(&n).Error; err != nil {
		return nil, 0, fmt.Errorf("count operations: %w", err)
	}
	size, page := q.PageSize, max(q.Page, 1)
	if size <= 0 {
		size = 50
	}
	var rows []models.Operation
	if err := db.Order("created_at DESC, id DESC").Limit(size).Offset((page - 1) * size).Find(&rows).Error; err != nil {
		return nil, 0, fmt.Errorf("list operations: %w", err)
	}
	return e.ReconcileRows(ctx, rows), n, nil
}

// ReconcileRows is a listed page of operations: the running ones whose run ID is missing are
// reconciled (their run found by the workflow ID, or failed when it never started); the
// others are shown as the journal has them (no call to Temporal per row).
func (e *Engine) ReconcileRows(ctx context.Context, rows []models.Operation) []Operation {
	out := make([]Operation, 0, len(rows))
	for _, row := range rows {
		if row.Status == models.OpRunning && row.RunID == "" && e.temporal != nil {
			out = append(out, e.reconcile(ctx, row, false))
			continue
		}
		out = append(out, Operation{Operation: row})
	}
	return out
}

// Reconcile brings a running operation's row in line with Temporal and returns it with live
// progress. A missing run ID is filled by describing the workflow ID (its current run, or one
// found by the memo's operationId); a row whose run never started is failed with the reason
// once StartGrace has passed. A closed run gets its final status, result or error recorded;
// a continued-as-new run is followed. Temporal being unreachable is logged and the row is
// returned as it is.
func (e *Engine) Reconcile(ctx context.Context, row models.Operation) Operation {
	return e.reconcile(ctx, row, true)
}

func (e *Engine) reconcile(ctx context.Context, op models.Operation, progress bool) Operation {
	if op.Status != models.OpRunning || e.temporal == nil {
		return Operation{Operation: op}
	}
	tctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	if op.RunID == "" {
		filled, done := e.fillRun(tctx, op)
		if done || filled.RunID == "" {
			return Operation{Operation: filled}
		}
		op = filled
	}
	for range 3 { // a continued-as-new chain is followed a few links at most per call
		desc, err := e.temporal.DescribeWorkflowExecution(tctx, op.WorkflowID, op.RunID)
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			return e.fail(ctx, op, fmt.Sprintf("workflow run %s/%s no longer exists in Temporal (past retention, or the server's data was lost)",
				op.WorkflowID, op.RunID), time.Now())
		}
		if err != nil {
			e.log.Warn("describe workflow of operation", "operation", op.ID, "workflow", op.WorkflowID, "error", err)
			return Operation{Operation: op}
		}
		info := desc.GetWorkflowExecutionInfo()
		closed := time.Now()
		if ct := info.GetCloseTime(); ct != nil {
			closed = ct.AsTime()
		}
		switch info.GetStatus() {
		case enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
			v := Operation{Operation: op, CancelRequested: desc.GetWorkflowExtendedInfo().GetCancelRequested()}
			// A run no worker has picked up cannot answer (the query would wait out its timeout).
			if progress && !e.neverPickedUp(tctx, op) {
				v.Progress = e.queryProgress(ctx, op)
			}
			return v
		case enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED:
			var raw json.RawMessage
			if err := e.temporal.GetWorkflow(tctx, op.WorkflowID, op.RunID).Get(tctx, &raw); err != nil {
				e.log.Warn("read result of operation", "operation", op.ID, "error", err)
				return Operation{Operation: op}
			}
			return e.finish(ctx, op, models.OpCompleted, string(raw), "", closed)
		case enumspb.WORKFLOW_EXECUTION_STATUS_FAILED:
			err := e.temporal.GetWorkflow(tctx, op.WorkflowID, op.RunID).Get(tctx, nil)
			return e.fail(ctx, op, FailureMessage(err), closed)
		case enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED:
			return e.finish(ctx, op, models.OpCanceled, "", "canceled", closed)
		case enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED:
			reason := e.terminationReason(tctx, op)
			if strings.HasPrefix(reason, CancelReasonPrefix) {
				return e.finish(ctx, op, models.OpCanceled, "", reason, closed)
			}
			return e.fail(ctx, op, "terminated in Temporal: "+reason, closed)
		case enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
			return e.fail(ctx, op, "timed out: the run exceeded its Temporal timeout", closed)
		case enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW:
			latest, err := e.temporal.DescribeWorkflowExecution(tctx, op.WorkflowID, "")
			if err != nil {
				e.log.Warn("describe latest run of operation", "operation", op.ID, "error", err)
				return Operation{Operation: op}
			}
			next := latest.GetWorkflowExecutionInfo().GetExecution().GetRunId()
			if next == "" || next == op.RunID {
				return Operation{Operation: op}
			}
			if err := e.store.DB.WithContext(ctx).Model(&models.Operation{}).Where("id = ? AND run_id = ?", op.ID, op.RunID).
				Update("run_id", next).Error; err != nil {
				e.log.Warn("record continued run of operation", "operation", op.ID, "error", err)
			}
			op.RunID = next
			continue
		default:
			return Operation{Operation: op}
		}
	}
	return Operation{Operation: op}
}

// fillRun finds the run of a running row that has no run ID. It returns the row with the run
// ID recorded (done false: go on reconciling that run), or the row as it stands with done
// true: still starting, Temporal unreachable, or failed because its run never started.
func (e *Engine) fillRun(ctx context.Context, op models.Operation) (models.Operation, bool) {
	young := time.Since(op.CreatedAt) < e.startGrace
	m := e.findRun(ctx, op, !young)
	switch {
	case m.ours != "":
		res := e.store.DB.WithContext(ctx).Model(&models.Operation{}).Where("id = ? AND run_id = ?", op.ID, "").
			Update("run_id", m.ours)
		if res.Error != nil {
			e.log.Warn("record found run of operation", "operation", op.ID, "run", m.ours, "error", res.Error)
		} else if res.RowsAffected > 0 {
			e.log.Info("operation's run found by its workflow ID", "operation", op.ID, "workflow", op.WorkflowID, "run", m.ours)
		}
		op.RunID = m.ours
		return op, false
	case m.err != nil:
		e.log.Warn("find run of operation", "operation", op.ID, "workflow", op.WorkflowID, "error", m.err)
		return op, true
	case young:
		return op, true
	}
	reason := fmt.Sprintf("the workflow never started: Temporal holds no run of workflow %s for this operation "+
		"(its starter stopped, or lost Temporal, before the start was confirmed)", op.WorkflowID)
	if m.other != nil {
		reason = fmt.Sprintf("the workflow never started: workflow %s is held by run %s of another operation, and no run of it is this operation's "+
			"(its starter stopped, or lost Temporal, before the start was confirmed)", op.WorkflowID, m.other.GetExecution().GetRunId())
	}
	return e.fail(ctx, op, reason, time.Now()).Operation, true
}

// runMatch is what Temporal holds under a row's workflow ID.
type runMatch struct {
	// ours is the run ID of the row's run, when found.
	ours string
	// other is the current run when it is not the row's, with whether it runs.
	other        *workflowpb.WorkflowExecutionInfo
	otherRunning bool
	// err: Temporal did not answer; nothing is known.
	err error
}

// findRun describes a row's workflow ID and tells whether its current run is the row's: its
// memo's operationId names the row, or (a memo this engine cannot decode) it started after
// the row was written. With search, runs that are no longer current are looked up by the
// memo too (visibility, which lags a little behind).
func (e *Engine) findRun(ctx context.Context, op models.Operation, search bool) runMatch {
	desc, err := e.temporal.DescribeWorkflowExecution(ctx, op.WorkflowID, "")
	var nf *serviceerror.NotFound
	if err != nil && !errors.As(err, &nf) {
		return runMatch{err: err}
	}
	var m runMatch
	if err == nil {
		info := desc.GetWorkflowExecutionInfo()
		if e.isOurs(op, info.GetMemo(), info.GetStartTime().AsTime()) {
			return runMatch{ours: info.GetExecution().GetRunId()}
		}
		m.other, m.otherRunning = info, info.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	}
	if !search {
		return m
	}
	q := fmt.Sprintf("WorkflowId = '%s' AND StartTime >= '%s'", strings.ReplaceAll(op.WorkflowID, "'", "\\'"),
		op.CreatedAt.Add(-clockSkew).UTC().Format(time.RFC3339Nano))
	resp, err := e.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: e.namespace, Query: q, PageSize: 50})
	if err != nil {
		return runMatch{err: err}
	}
	for _, info := range resp.GetExecutions() {
		if e.isOurs(op, info.GetMemo(), info.GetStartTime().AsTime()) {
			return runMatch{ours: info.GetExecution().GetRunId()}
		}
	}
	return m
}

// isOurs reports whether a run with this memo and start time belongs to the row.
func (e *Engine) isOurs(op models.Operation, memo *commonpb.Memo, started time.Time) bool {
	id, err := e.memoOperationID(memo)
	if errors.Is(err, errNoOperationID) {
		return false // started outside the engine
	}
	if err != nil {
		// A memo this engine cannot decode (another data converter): a run that started
		// after the row was written is taken for the row's.
		return !started.Before(op.CreatedAt.Add(-clockSkew))
	}
	return id == op.ID
}

// errNoOperationID: a run's memo names no operation.
var errNoOperationID = errors.New("the memo has no " + MemoOperationID)

// memoOperationID reads the operationId a run's memo names.
func (e *Engine) memoOperationID(memo *commonpb.Memo) (string, error) {
	p := memo.GetFields()[MemoOperationID]
	if p == nil {
		return "", errNoOperationID
	}
	var id string
	if err := e.dc.FromPayload(p, &id); err != nil {
		return "", fmt.Errorf("decode the memo's %s: %w", MemoOperationID, err)
	}
	return id, nil
}

// FailureMessage is the cause of a failed run without the SDK's wrapper text.
func FailureMessage(err error) string {
	if err == nil {
		return "failed"
	}
	var wee *temporal.WorkflowExecutionError
	if errors.As(err, &wee) {
		if cause := errors.Unwrap(wee); cause != nil {
			return cause.Error()
		}
	}
	return err.Error()
}

// terminationReason reads the reason from a terminated run's close event.
func (e *Engine) terminationReason(ctx context.Context, op models.Operation) string {
	it := e.temporal.GetWorkflowHistory(ctx, op.WorkflowID, op.RunID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT)
	for i := 0; i < 10 && it.HasNext(); i++ {
		ev, err := it.Next()
		if err != nil {
			e.log.Warn("read close event of operation", "operation", op.ID, "error", err)
			return "(reason unavailable)"
		}
		if a := ev.GetWorkflowExecutionTerminatedEventAttributes(); a != nil {
			if a.GetReason() == "" {
				return "(no reason given)"
			}
			return a.GetReason()
		}
	}
	return "(reason unavailable)"
}

func (e *Engine) fail(ctx context.Context, op models.Operation, reason string, closed time.Time) Operation {
	return e.finish(ctx, op, models.OpFailed, "", reason, closed)
}

// finish records a run's outcome, unless the row is no longer running (the workflow's own
// last step, or another call, recorded it first), and returns the row as stored.
func (e *Engine) finish(ctx context.Context, op models.Operation, status, result, errMsg string, closed time.Time) Operation {
	closed = closed.UTC().Truncate(time.Microsecond)
	res := e.store.DB.WithContext(ctx).Model(&models.Operation{}).
		Where("id = ? AND status = ?", op.ID, models.OpRunning).
		Updates(map[string]any{"status": status, "result": result, "error": errMsg, "completed_at": &closed})
	if res.Error != nil {
		e.log.Error("record end of operation", "operation", op.ID, "status", status, "error", res.Error)
		return Operation{Operation: op}
	}
	var stored models.Operation
	if err := e.store.DB.WithContext(ctx).Where("id = ?", op.ID).Take(&stored).Error; err != nil {
		e.log.Error("reload operation", "operation", op.ID, "error", err)
		op.Status, op.Result, op.Error, op.CompletedAt = status, result, errMsg, &closed
		return Operation{Operation: op}
	}
	if res.RowsAffected > 0 {
		e.log.Info("operation reconciled with Temporal", "operation", op.ID, "status", status)
	}
	return Operation{Operation: stored}
}

// queryProgress asks a running run for its progress; nil when it cannot answer (no worker has
// picked it up yet, or the worker is busy or down).
func (e *Engine) queryProgress(ctx context.Context, op models.Operation) any {
	qctx, cancel := context.WithTimeout(ctx, ProgressTimeout)
	defer cancel()
	val, err := e.temporal.QueryWorkflow(qctx, op.WorkflowID, op.RunID, workflows.QueryProgress)
	if err != nil {
		e.log.Debug("progress query", "operation", op.ID, "error", err)
		return nil
	}
	var p any
	if err := val.Get(&p); err != nil {
		e.log.Debug("decode progress", "operation", op.ID, "error", err)
		return nil
	}
	return p
}

// neverPickedUp reports whether no worker has started any workflow task of the run: then no
// workflow code (and no activity) has run, and nobody could answer a query. It reads the first
// events of the history only.
func (e *Engine) neverPickedUp(ctx context.Context, op models.Operation) bool {
	resp, err := e.temporal.WorkflowService().GetWorkflowExecutionHistory(ctx, &workflowservice.GetWorkflowExecutionHistoryRequest{
		Namespace: e.namespace, Execution: &commonpb.WorkflowExecution{WorkflowId: op.WorkflowID, RunId: op.RunID},
		MaximumPageSize: 32})
	if err != nil {
		e.log.Debug("read history of operation", "operation", op.ID, "error", err)
		return false
	}
	for _, ev := range resp.GetHistory().GetEvents() {
		switch ev.GetEventType() {
		case enumspb.EVENT_TYPE_WORKFLOW_TASK_STARTED, enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
			enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
			enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
			enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
			enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
			return false
		}
	}
	// A longer history with no task started in its first page is not worth guessing about.
	return len(resp.GetNextPageToken()) == 0
}
