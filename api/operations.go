package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// progressTimeout bounds the progress query (a busy or absent worker must not stall a GET).
const progressTimeout = 2 * time.Second

// cancelReasonPrefix starts the termination reason of a run canceled before any worker picked
// it up; reconciliation reads it back as "canceled".
const cancelReasonPrefix = "sysvm: canceled"

// OperationSpec describes a long operation to start: what it acts on and the workflow that
// runs it.
type OperationSpec struct {
	// Kind is the operation kind (systemvm.reboot, template.rollout, ...).
	Kind string
	// TargetType is what it acts on (systemvm, router, zone, template, ...).
	TargetType string
	TargetID   string
	// TargetName names the target in messages (r-3-VM); TargetID when empty.
	TargetName string
	ZoneID     string
	// WorkflowID is the run's ID; a running run with the same ID makes the start a 409.
	WorkflowID string
	// WorkflowName is the registered workflow type.
	WorkflowName string
	// SearchAttributes are set on the run so the Web UI finds it by VM, router, zone and kind.
	SearchAttributes []temporal.SearchAttributeUpdate
	// Input builds the workflow's input once the operation's ID is known.
	Input func(operationID string) any
	// Memo is shown in the Web UI beside the run (operationId is added).
	Memo map[string]any
}

// OperationView is an operation as the API shows it.
type OperationView struct {
	ID         string `json:"id"`
	Kind       string `json:"kind"`
	TargetType string `json:"targettype"`
	TargetID   string `json:"targetid"`
	ZoneID     string `json:"zoneid,omitempty"`
	// Status is running, completed, failed or canceled.
	Status string `json:"status"`
	// Progress is the run's answer to the "progress" query, while it runs (GET of one only).
	Progress any `json:"progress,omitempty"`
	// CancelRequested is true while a requested cancellation is under way.
	CancelRequested bool `json:"cancelRequested,omitempty"`
	// Result is the run's result (JSON) once completed.
	Result      json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
	WorkflowID  string          `json:"workflowId"`
	RunID       string          `json:"runId"`
	RequestedBy string          `json:"requestedBy"`
	Created     time.Time       `json:"created"`
	Completed   *time.Time      `json:"completed,omitempty"`
	Links       OperationLinks  `json:"links"`
}

// OperationLinks point at the operation in this API and at its run in the Temporal Web UI.
type OperationLinks struct {
	Self       string `json:"self"`
	TemporalUI string `json:"temporalUi,omitempty"`
}

// TemporalUILink is the Web UI page of a run's history.
func TemporalUILink(base, namespace, workflowID, runID string) string {
	if base == "" || workflowID == "" {
		return ""
	}
	link := strings.TrimRight(base, "/") + "/namespaces/" + url.PathEscape(namespace) + "/workflows/" + url.PathEscape(workflowID)
	if runID != "" {
		link += "/" + url.PathEscape(runID) + "/history"
	}
	return link
}

func (s *Server) view(op models.Operation) OperationView {
	v := OperationView{ID: op.ID, Kind: op.Kind, TargetType: op.TargetType, TargetID: op.TargetID, ZoneID: op.ZoneID,
		Status: op.Status, Error: op.Error, WorkflowID: op.WorkflowID, RunID: op.RunID, RequestedBy: op.RequestedBy,
		Created: op.CreatedAt, Completed: op.CompletedAt,
		Links: OperationLinks{Self: Prefix + "/operations/" + op.ID, TemporalUI: TemporalUILink(s.temporalUI, s.namespace, op.WorkflowID, op.RunID)}}
	if op.Result != "" {
		if json.Valid([]byte(op.Result)) {
			v.Result = json.RawMessage(op.Result)
		} else {
			v.Result, _ = json.Marshal(op.Result)
		}
	}
	return v
}

// StartOperation journals an operation and starts its workflow. It answers 202 with the
// operation, or 409 naming the operation already running under the same workflow ID (Temporal
// refuses the second start, so two operations on one VM never run at once).
func (s *Server) StartOperation(ctx context.Context, c echo.Context, spec OperationSpec) error {
	requestedBy := ""
	if k, found := Caller(c); found {
		requestedBy = k.Name
	}
	v, err := s.startOperation(ctx, spec, requestedBy)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]any{"operation": v})
}

func (s *Server) startOperation(ctx context.Context, spec OperationSpec, requestedBy string) (OperationView, error) {
	if s.temporal == nil {
		return OperationView{}, Unavailable(nil, "operations are unavailable: this server has no Temporal connection")
	}
	if spec.WorkflowID == "" || spec.WorkflowName == "" || spec.Input == nil {
		return OperationView{}, Internal(fmt.Errorf("operation spec %s: workflow ID, name and input are required", spec.Kind), "bad operation definition")
	}
	name := spec.TargetName
	if name == "" {
		name = spec.TargetID
	}
	op := models.Operation{Base: models.Base{ID: models.NewID()}, Kind: spec.Kind, TargetType: spec.TargetType,
		TargetID: spec.TargetID, ZoneID: spec.ZoneID, WorkflowID: spec.WorkflowID, Status: models.OpRunning, RequestedBy: requestedBy}
	if err := s.store.DB.WithContext(ctx).Create(&op).Error; err != nil {
		return OperationView{}, Internal(err, "record operation")
	}
	memo := map[string]any{"operationId": op.ID, "target": name, "requestedBy": requestedBy}
	for k, v := range spec.Memo {
		memo[k] = v
	}
	opts := client.StartWorkflowOptions{
		ID:                                       spec.WorkflowID,
		TaskQueue:                                workflows.TaskQueue,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowIDReusePolicy:                    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		TypedSearchAttributes:                    temporal.NewSearchAttributes(spec.SearchAttributes...),
		Memo:                                     memo,
	}
	tctx, cancel := context.WithTimeout(ctx, s.tTimeout)
	defer cancel()
	run, err := s.temporal.ExecuteWorkflow(tctx, opts, spec.WorkflowName, spec.Input(op.ID))
	var busy *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &busy) && s.finishing(tctx, spec.WorkflowID, busy.RunId) {
		// The run holding the ID has recorded its end and is only closing: wait for it rather
		// than refuse an operator who started the next operation right after the last one.
		run, err = s.temporal.ExecuteWorkflow(tctx, opts, spec.WorkflowName, spec.Input(op.ID))
	}
	// From here on the journal must be written even if the caller has gone away.
	dbctx, dbcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer dbcancel()
	if err != nil {
		if derr := s.store.DB.WithContext(dbctx).Where("id = ?", op.ID).Delete(&models.Operation{}).Error; derr != nil {
			s.log.Error("remove journal row of an operation that did not start", "operation", op.ID, "error", derr)
		}
		var started *serviceerror.WorkflowExecutionAlreadyStarted
		if errors.As(err, &started) {
			return OperationView{}, s.alreadyRunning(dbctx, spec, name, started.RunId)
		}
		return OperationView{}, Unavailable(err, "cannot start %s on %s: Temporal did not accept the workflow: %v", spec.Kind, name, err)
	}
	op.RunID = run.GetRunID()
	if err := s.store.DB.WithContext(dbctx).Model(&models.Operation{}).Where("id = ?", op.ID).
		Update("run_id", op.RunID).Error; err != nil {
		s.log.Error("record run ID of operation", "operation", op.ID, "run", op.RunID, "error", err)
	}
	s.log.Info("operation started", "operation", op.ID, "kind", op.Kind, "target", name, "workflow", op.WorkflowID,
		"run", op.RunID, "requested_by", requestedBy)
	return s.view(op), nil
}

// finishing reports whether the run holding a workflow ID has already recorded its end in the
// journal, and if so waits (up to 5 s) for Temporal to close it.
func (s *Server) finishing(ctx context.Context, workflowID, runID string) bool {
	var holder models.Operation
	err := s.store.DB.WithContext(ctx).Where("workflow_id = ? AND run_id = ?", workflowID, runID).Take(&holder).Error
	if err != nil || holder.Status == models.OpRunning {
		return false
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = s.temporal.GetWorkflow(wctx, workflowID, runID).Get(wctx, nil)
	return wctx.Err() == nil
}

// alreadyRunning builds the 409 for a workflow ID held by a running run, naming its operation.
// The winner of a race of starts may not have recorded its run ID yet: while some other start
// of this workflow ID is still in flight, wait (briefly) for its row to name the run.
func (s *Server) alreadyRunning(ctx context.Context, spec OperationSpec, name, runID string) error {
	what := spec.TargetType
	if what == TargetSystemVM || what == TargetRouter || what == "" {
		what = "system VM"
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		var running models.Operation
		err := s.store.DB.WithContext(ctx).Where("workflow_id = ? AND run_id = ?", spec.WorkflowID, runID).Take(&running).Error
		if err == nil {
			e := Conflict("%s %s already has a running operation %s (%s)", what, name, running.ID, running.Kind)
			e.Extra = map[string]any{"operation": s.view(running)}
			return e
		}
		if !errors.Is(err, gorm.ErrRecordNotFound) {
			return Internal(err, "find the running operation of %s", name)
		}
		var inFlight int64
		if err := s.store.DB.WithContext(ctx).Model(&models.Operation{}).
			Where("workflow_id = ? AND status = ? AND run_id = ?", spec.WorkflowID, models.OpRunning, "").
			Count(&inFlight).Error; err != nil {
			return Internal(err, "find the running operation of %s", name)
		}
		if inFlight == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return Internal(ctx.Err(), "find the running operation of %s", name)
		case <-time.After(20 * time.Millisecond):
		}
	}
	// Started outside this API (by a schedule, or by hand in Temporal).
	v := OperationView{Status: models.OpRunning, WorkflowID: spec.WorkflowID, RunID: runID,
		Links: OperationLinks{TemporalUI: TemporalUILink(s.temporalUI, s.namespace, spec.WorkflowID, runID)}}
	e := Conflict("%s %s already has a running workflow %s (run %s) that was not started through this API", what, name, spec.WorkflowID, runID)
	e.Extra = map[string]any{"operation": v}
	return e
}

func operationFilters() []filter {
	return []filter{
		{name: "kind", column: "kind", kind: exact, desc: "operation kind (systemvm.reboot, ...)"},
		{name: "status", column: "status", kind: enum,
			enum: []string{models.OpRunning, models.OpCompleted, models.OpFailed, models.OpCanceled}, desc: "operation status"},
		{name: "targettype", column: "target_type", kind: fold, desc: "what the operations act on (systemvm, router, ...)"},
		fID("targetid", "target_id", "operations on this target"),
		fID("zoneid", "zone_id", "operations in this zone"),
		{name: "requestedby", column: "requested_by", kind: exact, desc: "operations started by this API key (its name)"},
	}
}

func (s *Server) operationRoutes() []Route {
	return []Route{
		{Method: http.MethodGet, Path: "/operations", Role: models.RoleReadOnly, Handler: s.listOperations, Doc: Doc{
			OperationID: "listOperations", Summary: "List operations, newest first", Tag: "Operations",
			Description: "The journal of long operations. progress is shown by GET /operations/{id} only.",
			Query:       params(operationFilters()), Paged: true,
			Responses: []Response{{Status: 200, Description: "a page of operations", Schema: "OperationList"}}}},
		{Method: http.MethodGet, Path: "/operations/{id}", Role: models.RoleReadOnly, Handler: s.getOperation, Doc: Doc{
			OperationID: "getOperation", Summary: "Get an operation with its live progress", Tag: "Operations",
			Description: "A running operation is checked against Temporal: a run Temporal reports closed gets its final " +
				"status, result or error recorded; a running one answers its progress query.",
			Responses: []Response{{Status: 200, Description: "the operation", Schema: "OperationEnvelope"}}}},
		{Method: http.MethodPost, Path: "/operations/{id}/cancel", Role: models.RoleOperator, Handler: s.cancelOperation, Doc: Doc{
			OperationID: "cancelOperation", Summary: "Cancel a running operation", Tag: "Operations",
			Description: "Requests cancellation of the run; the workflow undoes or stops what it does and ends canceled. " +
				"A run no worker has picked up yet has done nothing: it is ended at once and recorded canceled.",
			Responses: []Response{{Status: 202, Description: "cancellation requested (or done)", Schema: "OperationEnvelope"},
				{Status: 409, Description: "the operation is not running (operation shows how it ended)", Schema: "ConflictError"},
				{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}}},
	}
}

func (s *Server) listOperations(c echo.Context) error {
	rows, err := listRows[models.Operation](c, s.store.DB.WithContext(c.Request().Context()), operationFilters(), "created_at DESC, id DESC")
	if err != nil {
		return err
	}
	out := ListResponse[OperationView]{Count: rows.Count, Page: rows.Page, PageSize: rows.PageSize, Items: make([]OperationView, 0, len(rows.Items))}
	for _, op := range rows.Items {
		out.Items = append(out.Items, s.view(op))
	}
	return ok(c, out)
}

func (s *Server) getOperation(c echo.Context) error {
	op, err := getRow[models.Operation](c, s.store.DB, c.Param("id"), "operation")
	if err != nil {
		return err
	}
	v := s.reconcile(c.Request().Context(), op)
	return ok(c, map[string]any{"operation": v})
}

// reconcile brings a running operation's row in line with Temporal and returns its view with
// live progress. Temporal being unreachable is logged; the row is shown as it is.
func (s *Server) reconcile(ctx context.Context, op models.Operation) OperationView {
	if op.Status != models.OpRunning || s.temporal == nil || op.RunID == "" {
		return s.view(op)
	}
	tctx, cancel := context.WithTimeout(ctx, s.tTimeout)
	defer cancel()
	for range 3 { // a continued-as-new chain is followed a few links at most per request
		desc, err := s.temporal.DescribeWorkflowExecution(tctx, op.WorkflowID, op.RunID)
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			return s.finish(ctx, op, models.OpFailed, "",
				fmt.Sprintf("workflow run %s/%s no longer exists in Temporal (past retention, or the server's data was lost)", op.WorkflowID, op.RunID),
				time.Now())
		}
		if err != nil {
			s.log.Warn("describe workflow of operation", "operation", op.ID, "workflow", op.WorkflowID, "error", err)
			return s.view(op)
		}
		info := desc.GetWorkflowExecutionInfo()
		closed := time.Now()
		if ct := info.GetCloseTime(); ct != nil {
			closed = ct.AsTime()
		}
		switch info.GetStatus() {
		case enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
			v := s.view(op)
			v.CancelRequested = desc.GetWorkflowExtendedInfo().GetCancelRequested()
			// A run no worker has picked up cannot answer (the query would wait out its timeout).
			if !s.neverPickedUp(tctx, op) {
				v.Progress = s.queryProgress(ctx, op)
			}
			return v
		case enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED:
			var raw json.RawMessage
			if err := s.temporal.GetWorkflow(tctx, op.WorkflowID, op.RunID).Get(tctx, &raw); err != nil {
				s.log.Warn("read result of operation", "operation", op.ID, "error", err)
				return s.view(op)
			}
			return s.finish(ctx, op, models.OpCompleted, string(raw), "", closed)
		case enumspb.WORKFLOW_EXECUTION_STATUS_FAILED:
			err := s.temporal.GetWorkflow(tctx, op.WorkflowID, op.RunID).Get(tctx, nil)
			return s.finish(ctx, op, models.OpFailed, "", failureMessage(err), closed)
		case enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED:
			return s.finish(ctx, op, models.OpCanceled, "", "canceled", closed)
		case enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED:
			reason := s.terminationReason(tctx, op)
			if strings.HasPrefix(reason, cancelReasonPrefix) {
				return s.finish(ctx, op, models.OpCanceled, "", reason, closed)
			}
			return s.finish(ctx, op, models.OpFailed, "", "terminated in Temporal: "+reason, closed)
		case enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
			return s.finish(ctx, op, models.OpFailed, "", "timed out: the run exceeded its Temporal timeout", closed)
		case enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW:
			latest, err := s.temporal.DescribeWorkflowExecution(tctx, op.WorkflowID, "")
			if err != nil {
				s.log.Warn("describe latest run of operation", "operation", op.ID, "error", err)
				return s.view(op)
			}
			next := latest.GetWorkflowExecutionInfo().GetExecution().GetRunId()
			if next == "" || next == op.RunID {
				return s.view(op)
			}
			if err := s.store.DB.WithContext(ctx).Model(&models.Operation{}).Where("id = ? AND run_id = ?", op.ID, op.RunID).
				Update("run_id", next).Error; err != nil {
				s.log.Warn("record continued run of operation", "operation", op.ID, "error", err)
			}
			op.RunID = next
			continue
		default:
			return s.view(op)
		}
	}
	return s.view(op)
}

// failureMessage is the cause of a failed run without the SDK's wrapper text.
func failureMessage(err error) string {
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
func (s *Server) terminationReason(ctx context.Context, op models.Operation) string {
	it := s.temporal.GetWorkflowHistory(ctx, op.WorkflowID, op.RunID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT)
	for i := 0; i < 10 && it.HasNext(); i++ {
		ev, err := it.Next()
		if err != nil {
			s.log.Warn("read close event of operation", "operation", op.ID, "error", err)
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

// finish records a closed run's outcome, unless the row is no longer running (the workflow's
// own last step, or another request, recorded it first), and returns the row as stored.
func (s *Server) finish(ctx context.Context, op models.Operation, status, result, errMsg string, closed time.Time) OperationView {
	closed = closed.UTC().Truncate(time.Microsecond)
	res := s.store.DB.WithContext(ctx).Model(&models.Operation{}).
		Where("id = ? AND status = ?", op.ID, models.OpRunning).
		Updates(map[string]any{"status": status, "result": result, "error": errMsg, "completed_at": &closed})
	if res.Error != nil {
		s.log.Error("record end of operation", "operation", op.ID, "status", status, "error", res.Error)
		return s.view(op)
	}
	var stored models.Operation
	if err := s.store.DB.WithContext(ctx).Where("id = ?", op.ID).Take(&stored).Error; err != nil {
		s.log.Error("reload operation", "operation", op.ID, "error", err)
		op.Status, op.Result, op.Error, op.CompletedAt = status, result, errMsg, &closed
		return s.view(op)
	}
	if res.RowsAffected > 0 {
		s.log.Info("operation reconciled with Temporal", "operation", op.ID, "status", status)
	}
	return s.view(stored)
}

// queryProgress asks a running run for its progress; nil when it cannot answer (no worker has
// picked it up yet, or the worker is busy or down).
func (s *Server) queryProgress(ctx context.Context, op models.Operation) any {
	qctx, cancel := context.WithTimeout(ctx, progressTimeout)
	defer cancel()
	val, err := s.temporal.QueryWorkflow(qctx, op.WorkflowID, op.RunID, workflows.QueryProgress)
	if err != nil {
		s.log.Debug("progress query", "operation", op.ID, "error", err)
		return nil
	}
	var p any
	if err := val.Get(&p); err != nil {
		s.log.Debug("decode progress", "operation", op.ID, "error", err)
		return nil
	}
	return p
}

func (s *Server) cancelOperation(c echo.Context) error {
	ctx := c.Request().Context()
	op, err := getRow[models.Operation](c, s.store.DB, c.Param("id"), "operation")
	if err != nil {
		return err
	}
	if s.temporal == nil {
		return Unavailable(nil, "operations are unavailable: this server has no Temporal connection")
	}
	v := s.reconcile(ctx, op)
	if v.Status != models.OpRunning {
		e := Conflict("operation %s (%s) is not running: it is %s", op.ID, op.Kind, v.Status)
		e.Extra = map[string]any{"operation": v}
		return e
	}
	if op.RunID == "" {
		return Conflict("operation %s is still starting; retry in a moment", op.ID)
	}
	tctx, cancel := context.WithTimeout(ctx, s.tTimeout)
	defer cancel()
	caller := ""
	if k, found := Caller(c); found {
		caller = k.Name
	}
	if err := s.temporal.CancelWorkflow(tctx, op.WorkflowID, op.RunID); err != nil {
		var nf *serviceerror.NotFound
		if !errors.As(err, &nf) {
			return Unavailable(err, "cannot cancel operation %s: Temporal: %v", op.ID, err)
		}
		// Closed meanwhile: the reconciliation below records how.
	} else if s.neverPickedUp(tctx, op) {
		// No worker has run any of it: nothing to undo, so end it now rather than when a
		// worker comes back (the VM's workflow ID would stay taken until then).
		reason := fmt.Sprintf("%s by API key %s before any worker picked the run up", cancelReasonPrefix, caller)
		if err := s.temporal.TerminateWorkflow(tctx, op.WorkflowID, op.RunID, reason); err != nil {
			var nf *serviceerror.NotFound
			if !errors.As(err, &nf) {
				s.log.Warn("end never-started run of canceled operation", "operation", op.ID, "error", err)
			}
		}
	}
	if err := s.store.AddEvent(ctx, models.Event{Type: "OPERATION.CANCEL", Level: "INFO", OperationID: op.ID, ZoneID: op.ZoneID,
		ResourceType: op.TargetType, ResourceID: op.TargetID,
		Description: fmt.Sprintf("cancellation of operation %s (%s on %s) requested by API key %s", op.ID, op.Kind, op.TargetID, caller)}); err != nil {
		s.log.Error("record cancel event", "operation", op.ID, "error", err)
	}
	return c.JSON(http.StatusAccepted, map[string]any{"operation": s.reconcile(ctx, op)})
}

// neverPickedUp reports whether no worker has started any workflow task of the run: then no
// workflow code (and no activity) has run, and nobody could answer a query. It reads the first
// events of the history only.
func (s *Server) neverPickedUp(ctx context.Context, op models.Operation) bool {
	resp, err := s.temporal.WorkflowService().GetWorkflowExecutionHistory(ctx, &workflowservice.GetWorkflowExecutionHistoryRequest{
		Namespace: s.namespace, Execution: &commonpb.WorkflowExecution{WorkflowId: op.WorkflowID, RunId: op.RunID},
		MaximumPageSize: 32})
	if err != nil {
		s.log.Debug("read history of operation", "operation", op.ID, "error", err)
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
