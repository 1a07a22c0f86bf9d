package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
)

// cancelReasonPrefix starts the termination reason of a run canceled before any worker picked
// it up (operations.CancelReasonPrefix).
const cancelReasonPrefix = operations.CancelReasonPrefix

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

func (s *Server) view(o operations.Operation) OperationView {
	op := o.Operation
	v := OperationView{ID: op.ID, Kind: op.Kind, TargetType: op.TargetType, TargetID: op.TargetID, ZoneID: op.ZoneID,
		Status: op.Status, Progress: o.Progress, CancelRequested: o.CancelRequested, Error: op.Error, WorkflowID: op.WorkflowID, RunID: op.RunID, RequestedBy: op.RequestedBy,
		Created: op.CreatedAt, Completed: op.CompletedAt,
		Links: OperationLinks{TemporalUI: TemporalUILink(s.temporalUI, s.namespace, op.WorkflowID, op.RunID)}}
	if op.ID != "" { // a run started outside the engine has no row
		v.Links.Self = Prefix + "/operations/" + op.ID
	}
	if op.Result != "" {
		if json.Valid([]byte(op.Result)) {
			v.Result = json.RawMessage(op.Result)
		} else {
			v.Result, _ = json.Marshal(op.Result)
		}
	}
	return v
}

// StartOperation starts a long operation through the engine on behalf of the caller. It
// answers 202 with the operation, or 409 naming the operation already running under the same
// workflow ID (Temporal refuses the second start, so two operations on one VM never run at
// once).
func (s *Server) StartOperation(ctx context.Context, c echo.Context, spec operations.Spec) error {
	if k, found := Caller(c); found {
		spec.RequestedBy = k.Name
	}
	op, err := s.ops.Start(ctx, spec)
	if err != nil {
		return s.operationError(err)
	}
	return c.JSON(http.StatusAccepted, map[string]any{"operation": s.view(op)})
}

// operationError maps an engine error to the API's: 409 with the operation in the way or as
// it ended, 503 when Temporal does not answer, 404 for an unknown operation.
func (s *Server) operationError(err error) error {
	var oe *operations.Error
	if !errors.As(err, &oe) {
		return Internal(err, "the operation could not be journaled, started or read (see the server log)")
	}
	switch {
	case errors.Is(oe.Kind, operations.ErrAlreadyRunning), errors.Is(oe.Kind, operations.ErrNotRunning),
		errors.Is(oe.Kind, operations.ErrStarting):
		e := Conflict("%s", oe.Message)
		if oe.Operation != nil {
			e.Extra = map[string]any{"operation": s.view(*oe.Operation)}
		}
		return e
	case errors.Is(oe.Kind, operations.ErrNotFound):
		return NotFound("%s", oe.Message)
	case errors.Is(oe.Kind, operations.ErrUnavailable):
		return Unavailable(oe.Err, "%s", oe.Message)
	}
	return Internal(err, "%s", oe.Message)
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
			Description: "The journal of long operations. progress is shown by GET /operations/{id} only. A running " +
				"operation whose run ID is not recorded yet is looked up in Temporal by its workflow ID (see docs/operations.md).",
			Query: params(operationFilters()), Paged: true,
			Responses: []Response{{Status: 200, Description: "a page of operations", Schema: "OperationList"}}}},
		{Method: http.MethodGet, Path: "/operations/{id}", Role: models.RoleReadOnly, Handler: s.getOperation, Doc: Doc{
			OperationID: "getOperation", Summary: "Get an operation with its live progress", Tag: "Operations",
			Description: "A running operation is checked against Temporal: a run Temporal reports closed gets its final " +
				"status, result or error recorded; a running one answers its progress query. A run ID not recorded yet is " +
				"found by the workflow ID and the run's operationId memo; an operation whose workflow never started ends failed " +
				"with the reason.",
			Responses: []Response{{Status: 200, Description: "the operation", Schema: "OperationEnvelope"}}}},
		{Method: http.MethodPost, Path: "/operations/{id}/cancel", Role: models.RoleOperator, Handler: s.cancelOperation, Doc: Doc{
			OperationID: "cancelOperation", Summary: "Cancel a running operation", Tag: "Operations",
			Description: "Requests cancellation of the run; the workflow undoes or stops what it does and ends canceled. " +
				"A run no worker has picked up yet has done nothing: it is ended at once and recorded canceled.",
			Responses: []Response{{Status: 202, Description: "cancellation requested (or done)", Schema: "OperationEnvelope"},
				{Status: 409, Description: "the operation is not running (operation shows how it ended), or its start is not " +
					"confirmed yet (retry in a moment)", Schema: "ConflictError"},
				{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}}},
	}
}

func (s *Server) listOperations(c echo.Context) error {
	ctx := c.Request().Context()
	rows, err := listRows[models.Operation](c, s.store.DB.WithContext(ctx), operationFilters(), "created_at DESC, id DESC")
	if err != nil {
		return err
	}
	out := ListResponse[OperationView]{Count: rows.Count, Page: rows.Page, PageSize: rows.PageSize, Items: make([]OperationView, 0, len(rows.Items))}
	for _, op := range s.ops.ReconcileRows(ctx, rows.Items) {
		out.Items = append(out.Items, s.view(op))
	}
	return ok(c, out)
}

func (s *Server) getOperation(c echo.Context) error {
	op, err := s.ops.Get(c.Request().Context(), c.Param("id"))
	if err != nil {
		return s.operationError(err)
	}
	return ok(c, map[string]any{"operation": s.view(op)})
}

func (s *Server) cancelOperation(c echo.Context) error {
	caller := ""
	if k, found := Caller(c); found {
		caller = k.Name
	}
	op, err := s.ops.Cancel(c.Request().Context(), c.Param("id"), caller)
	if err != nil {
		return s.operationError(err)
	}
	return c.JSON(http.StatusAccepted, map[string]any{"operation": s.view(op)})
}
