package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// routerUpgradeRequest is the body of POST /router-upgrades.
type routerUpgradeRequest struct {
	ID          string `json:"id"`
	ClusterID   string `json:"clusterid"`
	PodID       string `json:"podid"`
	ZoneID      string `json:"zoneid"`
	DomainID    string `json:"domainid"`
	Account     string `json:"account"`
	Force       bool   `json:"force"`
	Parallelism *int   `json:"parallelism"`
	// FailureBudget is a count ("3") or a percent ("10%"); 0 when absent.
	FailureBudget string `json:"failureBudget"`
	GroupBy       string `json:"groupBy"`
	// Window applies to every group without its own in Windows (keyed by group ID).
	Window  *workflows.UpgradeWindow           `json:"window"`
	Windows map[string]workflows.UpgradeWindow `json:"windows"`
	Mode    string                             `json:"mode"`
	// Forced (mode patch) re-installs the bundle on routers that run it already.
	Forced bool `json:"forced"`
	// HealthGateTimeout is a Go duration ("5m"); 5 minutes when absent.
	HealthGateTimeout string `json:"healthGateTimeout"`
}

// upgradeParallelism is the body of POST /router-upgrades/{id}/parallelism.
type upgradeParallelism struct {
	Parallelism *int `json:"parallelism"`
}

// upgradeSchemas are the OpenAPI schemas of the upgrade endpoints.
func upgradeSchemas() map[string]any {
	window := objectSchema("when a group's routers may start: between notBefore and notAfter, and only in the daily window "+
		"dailyStart-dailyEnd (HH:MM, an end before the start crosses midnight) in timeZone (IANA, UTC when absent)",
		"notBefore?:time", "notAfter?:time", "dailyStart?", "dailyEnd?", "timeZone?")
	return map[string]any{
		"UpgradeWindow": window,
		"RouterUpgradeRequest": objectSchema("a batched router upgrade (upgradeRouterTemplate): at most one selector of id, "+
			"clusterid, podid, zoneid or domainid+account (none: every router that requires upgrade)",
			"id?", "clusterid?", "podid?", "zoneid?", "domainid?", "account?", "force?:bool", "parallelism?:int",
			"failureBudget?", "groupBy?:string="+strings.Join(activities.UpgradeGroupings(), "|"), "window?:@UpgradeWindow",
			"windows?:object", "mode?:string=recreate|patch", "forced?:bool", "healthGateTimeout?"),
		"RouterUpgradeParallelism": objectSchema("a new parallelism for a running upgrade", "parallelism:int"),
	}
}

func (s *Server) upgradeRoutes() []Route {
	op := []Response{{Status: 202, Description: "the operation", Schema: "OperationEnvelope"},
		{Status: 404, Description: "no router upgrade with this id", Schema: "Error"},
		{Status: 409, Description: "the upgrade is not running (operation shows how it ended)", Schema: "ConflictError"},
		{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}
	ru := s.upgradeHandlers(workflows.RouterUpgradeOperationKind, "router upgrade")
	return []Route{
		{Method: http.MethodPost, Path: "/router-upgrades", Role: models.RoleOperator, Handler: s.startRouterUpgrade, Doc: Doc{
			OperationID: "upgradeRouterTemplate", Tag: "Routers", Summary: "Upgrade routers in batches (upgradeRouterTemplate)",
			Description: "Starts a " + workflows.RouterUpgradeOperationKind + " operation: the selected routers that require upgrade " +
				"(all of them with force), grouped and ordered by groupBy (zone, pod, cluster or account), each group in its window " +
				"(windows by group ID, or window for all), at most parallelism at a time in a sliding window; each router is " +
				"recreated from the current template as a systemvm:<id> lifecycle run (mode recreate) or, with mode patch, " +
				"live-patched: the platform's agent and scripts bundle goes over SSH to the running VM, which installs it and " +
				"restarts its services without a reboot (forced re-installs a bundle already there); then it must pass its health gate (basic checks " +
				"and services within healthGateTimeout). Redundant pairs go BACKUP first, the PRIMARY only once its BACKUP passed. " +
				"More failures than failureBudget pause the upgrade and raise an alert. Progress per router is in the operation's " +
				"progress (GET /router-upgrades/{id}). One upgrade at a time per selection scope.",
			Body: "RouterUpgradeRequest",
			Responses: []Response{{Status: 202, Description: "the upgrade started", Schema: "OperationEnvelope"},
				{Status: 404, Description: "a selector names nothing", Schema: "Error"},
				{Status: 409, Description: "no router of the selection requires upgrade, or an upgrade of the same scope runs", Schema: "ConflictError"},
				{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}}},
		{Method: http.MethodGet, Path: "/router-upgrades", Role: models.RoleReadOnly, Handler: ru.list, Doc: Doc{
			OperationID: "listRouterUpgrades", Tag: "Routers", Summary: "List router upgrades, newest first", Paged: true,
			Responses: []Response{{Status: 200, Description: "a page of operations", Schema: "OperationList"}}}},
		{Method: http.MethodGet, Path: "/router-upgrades/{id}", Role: models.RoleReadOnly, Handler: ru.get, Doc: Doc{
			OperationID: "getRouterUpgrade", Tag: "Routers", Summary: "Get a router upgrade with its per-router progress",
			Description: "progress has status (running, paused, waiting-window, canceling, draining), counts per router state " +
				"(pending, waiting-window, upgrading, health-check, done, failed, skipped), an ETA, and every router with its state, " +
				"versions, times (Unix ms) and reason.",
			Responses: []Response{{Status: 200, Description: "the operation", Schema: "OperationEnvelope"},
				{Status: 404, Description: "no router upgrade with this id", Schema: "Error"}}}},
		{Method: http.MethodPost, Path: "/router-upgrades/{id}/pause", Role: models.RoleOperator, Handler: ru.signal(workflows.SignalUpgradePause), Doc: Doc{
			OperationID: "pauseRouterUpgrade", Tag: "Routers", Summary: "Pause a router upgrade: routers in flight finish, nothing new starts",
			Responses: op}},
		{Method: http.MethodPost, Path: "/router-upgrades/{id}/resume", Role: models.RoleOperator, Handler: ru.signal(workflows.SignalUpgradeResume), Doc: Doc{
			OperationID: "resumeRouterUpgrade", Tag: "Routers", Summary: "Resume a paused router upgrade (the failure budget counts anew)",
			Responses: op}},
		{Method: http.MethodPost, Path: "/router-upgrades/{id}/cancel", Role: models.RoleOperator, Handler: ru.cancel, Doc: Doc{
			OperationID: "cancelRouterUpgrade", Tag: "Routers", Summary: "Cancel a router upgrade: routers in flight finish, nothing new starts",
			Responses: op}},
		{Method: http.MethodPost, Path: "/router-upgrades/{id}/parallelism", Role: models.RoleOperator, Handler: ru.setParallelism, Doc: Doc{
			OperationID: "setRouterUpgradeParallelism", Tag: "Routers", Summary: "Change the parallelism of a running router upgrade",
			Body: "RouterUpgradeParallelism", BodyRequired: true, Responses: op}},
	}
}

// parseUpgradeRequest validates the body into the workflow's request, naming the bad field.
func parseUpgradeRequest(b routerUpgradeRequest) (workflows.RouterUpgradeRequest, error) {
	sel := activities.UpgradeSelection{RouterID: b.ID, ClusterID: b.ClusterID, PodID: b.PodID, ZoneID: b.ZoneID,
		DomainID: b.DomainID, Account: b.Account, Force: b.Force, GroupBy: b.GroupBy}
	if err := sel.Validate(); err != nil {
		var se *models.SettingError
		if errors.As(err, &se) {
			return workflows.RouterUpgradeRequest{}, BadRequest(se.Field, "%s", se.Message)
		}
		return workflows.RouterUpgradeRequest{}, BadRequest("", "%v", err)
	}
	req := workflows.RouterUpgradeRequest{Selection: sel, Parallelism: workflows.DefaultUpgradeParallelism, Mode: b.Mode}
	if b.Parallelism != nil {
		if *b.Parallelism < 1 || *b.Parallelism > workflows.MaxUpgradeParallelism {
			return req, BadRequest("parallelism", "parallelism must be 1 to %d, got %d", workflows.MaxUpgradeParallelism, *b.Parallelism)
		}
		req.Parallelism = *b.Parallelism
	}
	budget, err := workflows.ParseFailureBudget(b.FailureBudget)
	if err != nil {
		return req, BadRequest("failureBudget", "%v", err)
	}
	req.Budget = budget
	switch b.Mode {
	case "", workflows.UpgradeModeRecreate:
		req.Mode = workflows.UpgradeModeRecreate
	case workflows.UpgradeModePatch:
		req.PatchForce = b.Forced
	default:
		return req, BadRequest("mode", "mode must be recreate or patch, got %q", b.Mode)
	}
	if b.Forced && req.Mode != workflows.UpgradeModePatch {
		return req, BadRequest("forced", "forced re-installs a live patch bundle: it needs mode patch")
	}
	if b.HealthGateTimeout != "" {
		d, err := time.ParseDuration(b.HealthGateTimeout)
		if err != nil || d < 10*time.Second || d > 2*time.Hour {
			return req, BadRequest("healthGateTimeout", "healthGateTimeout must be a duration from 10s to 2h (e.g. 5m), got %q", b.HealthGateTimeout)
		}
		req.GateTimeout = d
	}
	if b.Window != nil {
		if err := b.Window.Validate("window"); err != nil {
			return req, BadRequest("window", "%v", err)
		}
		req.Window = b.Window
	}
	for k, w := range b.Windows {
		if err := w.Validate("windows." + k); err != nil {
			return req, BadRequest("windows", "%v", err)
		}
	}
	req.Windows = b.Windows
	return req, nil
}

func (s *Server) startRouterUpgrade(c echo.Context) error {
	ctx := c.Request().Context()
	var body routerUpgradeRequest
	if err := decodeBody(c, &body, true); err != nil {
		return err
	}
	req, err := parseUpgradeRequest(body)
	if err != nil {
		return err
	}
	// Plan now: a selector naming nothing, or nothing to upgrade, is refused before any run.
	plan, err := activities.PlanRouterUpgrade(ctx, s.store, req.Selection)
	if err != nil {
		return upgradePlanError(err, "router upgrade")
	}
	if err := checkUpgradeWindows(req.Windows, plan, plan.GroupBy+" group", "groups"); err != nil {
		return err
	}
	kind, id := req.Selection.Scope()
	target := workflows.ZoneTarget(workflows.RouterUpgradeWorkflowID(kind, id), req.Selection.ZoneID, workflows.RouterUpgradeOperationKind)
	return s.StartOperation(ctx, c, operations.Spec{
		Target: target, Workflow: workflows.RouterUpgradeWorkflowName,
		TargetType: kind, TargetID: id, TargetName: strings.TrimSpace(kind + " " + id),
		Input: func(opID string) any {
			return workflows.RouterUpgradeInput{OperationID: opID, Request: req}
		},
		Memo: map[string]any{"routers": plan.Count(), "groups": len(plan.Groups), "groupBy": plan.GroupBy,
			"parallelism": req.Parallelism, "failureBudget": req.Budget.String(), "force": req.Selection.Force, "mode": req.Mode},
	})
}

// upgradeHandlers are the list, get and control handlers of one kind of batched upgrade
// (router upgrades, SSVM and CPVM upgrades): the operations of kind, named what in messages.
type upgradeHandlers struct {
	s    *Server
	kind string
	what string
}

// upgradeHandlers returns the handlers of the upgrade operations of kind (named what).
func (s *Server) upgradeHandlers(kind, what string) upgradeHandlers {
	return upgradeHandlers{s: s, kind: kind, what: what}
}

// list lists the upgrades of the kind, newest first.
func (h upgradeHandlers) list(c echo.Context) error {
	ctx := c.Request().Context()
	base := h.s.store.DB.WithContext(ctx).Where("kind = ?", h.kind)
	rows, err := listRows[models.Operation](c, base, nil, "created_at DESC, id DESC")
	if err != nil {
		return err
	}
	out := ListResponse[OperationView]{Count: rows.Count, Page: rows.Page, PageSize: rows.PageSize, Items: make([]OperationView, 0, len(rows.Items))}
	for _, op := range h.s.ops.ReconcileRows(ctx, rows.Items) {
		out.Items = append(out.Items, h.s.view(op))
	}
	return ok(c, out)
}

// load reads (and reconciles) the upgrade operation of the path's id.
func (h upgradeHandlers) load(c echo.Context) (operations.Operation, error) {
	op, err := h.s.ops.Get(c.Request().Context(), c.Param("id"))
	if err != nil {
		return op, h.s.operationError(err)
	}
	if op.Kind != h.kind {
		return op, NotFound("operation %s is a %s, not a %s", op.ID, op.Kind, h.what)
	}
	return op, nil
}

// get answers with the upgrade operation of the path's id.
func (h upgradeHandlers) get(c echo.Context) error {
	op, err := h.load(c)
	if err != nil {
		return err
	}
	return ok(c, map[string]any{"operation": h.s.view(op)})
}

// signal sends a control signal to the upgrade's current run (the latest after
// continue-as-new) and answers with the operation as it is then.
func (h upgradeHandlers) signal(signal string) echo.HandlerFunc {
	return func(c echo.Context) error {
		var arg any
		if signal == workflows.SignalUpgradePause {
			who := "an operator"
			if k, found := Caller(c); found {
				who = k.Name
			}
			arg = "paused by " + who
		}
		return h.send(c, signal, arg)
	}
}

// send sends a control signal to the current run of the upgrade of the path's id.
func (h upgradeHandlers) send(c echo.Context, signal string, arg any) error {
	s := h.s
	op, err := h.load(c)
	if err != nil {
		return err
	}
	if op.Status != models.OpRunning {
		e := Conflict("%s %s is %s, not running", h.what, op.ID, op.Status)
		e.Extra = map[string]any{"operation": s.view(op)}
		return e
	}
	if s.temporal == nil {
		return Unavailable(nil, "%ss cannot be controlled: this server has no Temporal connection", h.what)
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.tTimeout)
	defer cancel()
	if err := s.temporal.SignalWorkflow(ctx, op.WorkflowID, "", signal, arg); err != nil {
		return Unavailable(err, "signal %s to %s %s: %v", signal, h.what, op.ID, err)
	}
	if op, err = h.load(c); err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]any{"operation": s.view(op)})
}

// cancel cancels the upgrade of the path's id.
func (h upgradeHandlers) cancel(c echo.Context) error {
	if _, err := h.load(c); err != nil {
		return err
	}
	return h.s.cancelOperation(c)
}

// setParallelism changes the parallelism of the running upgrade of the path's id.
func (h upgradeHandlers) setParallelism(c echo.Context) error {
	n, err := parseParallelismBody(c)
	if err != nil {
		return err
	}
	return h.send(c, workflows.SignalUpgradeParallelism, n)
}

// upgradePlanError maps the error of planning an upgrade (what names it) to the API's: a
// selector naming nothing is 404, nothing to upgrade 409.
func upgradePlanError(err error, what string) error {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		switch appErr.Type() {
		case activities.ErrTypeNotFound:
			return NotFound("%s", appErr.Message())
		case activities.ErrTypeNothingToUpgrade:
			return Conflict("%s", appErr.Message())
		}
	}
	return Internal(err, "plan the %s", what)
}

// checkUpgradeWindows refuses a windows key that names no group of the plan (noun names the
// groups in the message: "zone", "pod group").
func checkUpgradeWindows(windows map[string]workflows.UpgradeWindow, plan activities.UpgradePlan, noun, nouns string) error {
	keys := make([]string, 0, len(plan.Groups))
	for _, g := range plan.Groups {
		keys = append(keys, g.Key)
	}
	for k := range windows {
		if !slices.Contains(keys, k) {
			return BadRequest("windows", "windows.%s: no %s of this upgrade has that ID (%s: %s)", k, noun, nouns, strings.Join(keys, ", "))
		}
	}
	return nil
}

// parseParallelismBody reads and checks the body of an upgrade's parallelism change.
func parseParallelismBody(c echo.Context) (int, error) {
	var body upgradeParallelism
	if err := decodeBody(c, &body, false); err != nil {
		return 0, err
	}
	if body.Parallelism == nil {
		return 0, BadRequest("parallelism", "parallelism is required")
	}
	if n := *body.Parallelism; n < 1 || n > workflows.MaxUpgradeParallelism {
		return 0, BadRequest("parallelism", "parallelism must be 1 to %d, got %d", workflows.MaxUpgradeParallelism, n)
	}
	return *body.Parallelism, nil
}
