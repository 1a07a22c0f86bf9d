package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// systemVMUpgradeRequest is the body of POST /system-vms/upgrades.
type systemVMUpgradeRequest struct {
	ID     string `json:"id"`
	ZoneID string `json:"zoneid"`
	// SystemVMType is consoleproxy, secondarystorage or both (the default).
	SystemVMType  string                             `json:"systemvmtype"`
	Force         bool                               `json:"force"`
	Parallelism   *int                               `json:"parallelism"`
	FailureBudget string                             `json:"failureBudget"`
	Window        *workflows.UpgradeWindow           `json:"window"`
	Windows       map[string]workflows.UpgradeWindow `json:"windows"`
	// HealthGateTimeout is a Go duration ("5m"); 5 minutes when absent.
	HealthGateTimeout string `json:"healthGateTimeout"`
}

// systemVMUpgradeSchemas are the OpenAPI schemas of the SSVM and CPVM upgrade endpoints.
func systemVMUpgradeSchemas() map[string]any {
	return map[string]any{
		"SystemVMUpgradeRequest": objectSchema("a batched SSVM and CPVM upgrade: at most one selector of id or zoneid (none: every "+
			"zone), of systemvmtype (both when absent)",
			"id?", "zoneid?", "systemvmtype?:string="+strings.Join(activities.SystemVMKinds(), "|"), "force?:bool", "parallelism?:int",
			"failureBudget?", "window?:@UpgradeWindow", "windows?:object", "healthGateTimeout?"),
	}
}

func (s *Server) systemVMUpgradeRoutes() []Route {
	op := []Response{{Status: 202, Description: "the operation", Schema: "OperationEnvelope"},
		{Status: 404, Description: "no system VM upgrade with this id", Schema: "Error"},
		{Status: 409, Description: "the upgrade is not running (operation shows how it ended)", Schema: "ConflictError"},
		{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}
	const tag = "System VMs"
	su := s.upgradeHandlers(workflows.SystemVMUpgradeOperationKind, "system VM upgrade")
	return []Route{
		{Method: http.MethodPost, Path: "/system-vms/upgrades", Role: models.RoleOperator, Handler: s.startSystemVMUpgrade, Doc: Doc{
			OperationID: "upgradeSystemVms", Tag: tag, Summary: "Upgrade SSVMs and CPVMs in batches",
			Description: "Starts a " + workflows.SystemVMUpgradeOperationKind + " operation on the router upgrade's engine: the selected " +
				"SSVMs and CPVMs that require upgrade (all of them with force), zone by zone (each in its window: windows by zone ID, or " +
				"window for all), at most parallelism at a time in a sliding window. In a zone, the VMs of one kind go one at a time, " +
				"each recreated make-before-break from the current template (a systemvm:<id> lifecycle run) while the others serve, " +
				"and must pass its health gate (agent over SSH at the required version, console or HTTPS upload endpoint serving TLS, " +
				"within healthGateTimeout) before the next of its kind goes; a failure skips the rest of its kind in that zone. The " +
				"zone's only VM of a kind is replaced instead: a new one is deployed, passes its gate, then the old one is destroyed " +
				"(its ID is the VM's replacedby in the progress). More " +
				"failures than failureBudget pause the upgrade and raise an alert. One upgrade at a time per scope (all, zone, VM).",
			Body: "SystemVMUpgradeRequest",
			Responses: []Response{{Status: 202, Description: "the upgrade started", Schema: "OperationEnvelope"},
				{Status: 400, Description: "a field is invalid (named in the error)", Schema: "Error"},
				{Status: 404, Description: "a selector names nothing", Schema: "Error"},
				{Status: 409, Description: "nothing of the selection requires upgrade, or an upgrade of the same scope runs", Schema: "ConflictError"},
				{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}}},
		{Method: http.MethodGet, Path: "/system-vms/upgrades", Role: models.RoleReadOnly, Handler: su.list, Doc: Doc{
			OperationID: "listSystemVmUpgrades", Tag: tag, Summary: "List SSVM and CPVM upgrades, newest first", Paged: true,
			Responses: []Response{{Status: 200, Description: "a page of operations", Schema: "OperationList"}}}},
		{Method: http.MethodGet, Path: "/system-vms/upgrades/{id}", Role: models.RoleReadOnly, Handler: su.get, Doc: Doc{
			OperationID: "getSystemVmUpgrade", Tag: tag, Summary: "Get an SSVM and CPVM upgrade with its per-VM progress",
			Description: "progress is the router upgrade's (status, counts per state, ETA, groups = zones); its routers list holds the " +
				"upgrade's system VMs, each with its type, state, versions, times (Unix ms) and reason.",
			Responses: []Response{{Status: 200, Description: "the operation", Schema: "OperationEnvelope"},
				{Status: 404, Description: "no system VM upgrade with this id", Schema: "Error"}}}},
		{Method: http.MethodPost, Path: "/system-vms/upgrades/{id}/pause", Role: models.RoleOperator,
			Handler: su.signal(workflows.SignalUpgradePause), Doc: Doc{
				OperationID: "pauseSystemVmUpgrade", Tag: tag, Summary: "Pause an SSVM and CPVM upgrade: VMs in flight finish, nothing new starts",
				Responses: op}},
		{Method: http.MethodPost, Path: "/system-vms/upgrades/{id}/resume", Role: models.RoleOperator,
			Handler: su.signal(workflows.SignalUpgradeResume), Doc: Doc{
				OperationID: "resumeSystemVmUpgrade", Tag: tag, Summary: "Resume a paused SSVM and CPVM upgrade (the failure budget counts anew)",
				Responses: op}},
		{Method: http.MethodPost, Path: "/system-vms/upgrades/{id}/cancel", Role: models.RoleOperator, Handler: su.cancel, Doc: Doc{
			OperationID: "cancelSystemVmUpgrade", Tag: tag, Summary: "Cancel an SSVM and CPVM upgrade: VMs in flight finish, nothing new starts",
			Responses: op}},
		{Method: http.MethodPost, Path: "/system-vms/upgrades/{id}/parallelism", Role: models.RoleOperator,
			Handler: su.setParallelism, Doc: Doc{
				OperationID: "setSystemVmUpgradeParallelism", Tag: tag, Summary: "Change the parallelism of a running SSVM and CPVM upgrade",
				Body: "RouterUpgradeParallelism", BodyRequired: true, Responses: op}},
	}
}

// parseSystemVMUpgradeRequest validates the body, with the router upgrade's rules for the
// knobs both share (parallelism, failureBudget, window, windows, healthGateTimeout).
func parseSystemVMUpgradeRequest(b systemVMUpgradeRequest) (workflows.SystemVMUpgradeRequest, error) {
	sel := activities.SystemVMUpgradeSelection{ID: b.ID, ZoneID: b.ZoneID, SystemVMType: b.SystemVMType, Force: b.Force}
	if err := sel.Validate(); err != nil {
		var se *models.SettingError
		if errors.As(err, &se) {
			return workflows.SystemVMUpgradeRequest{}, BadRequest(se.Field, "%s", se.Message)
		}
		return workflows.SystemVMUpgradeRequest{}, BadRequest("", "%v", err)
	}
	shared, err := parseUpgradeRequest(routerUpgradeRequest{Parallelism: b.Parallelism, FailureBudget: b.FailureBudget,
		Window: b.Window, Windows: b.Windows, HealthGateTimeout: b.HealthGateTimeout})
	if err != nil {
		return workflows.SystemVMUpgradeRequest{}, err
	}
	return workflows.SystemVMUpgradeRequest{Selection: sel, Parallelism: shared.Parallelism, Budget: shared.Budget,
		Window: shared.Window, Windows: shared.Windows, GateTimeout: shared.GateTimeout}, nil
}

func (s *Server) startSystemVMUpgrade(c echo.Context) error {
	ctx := c.Request().Context()
	var body systemVMUpgradeRequest
	if err := decodeBody(c, &body, true); err != nil {
		return err
	}
	req, err := parseSystemVMUpgradeRequest(body)
	if err != nil {
		return err
	}
	plan, err := activities.PlanSystemVMUpgrade(ctx, s.store, req.Selection)
	if err != nil {
		return upgradePlanError(err, "system VM upgrade")
	}
	if err := checkUpgradeWindows(req.Windows, plan, "zone", "zones"); err != nil {
		return err
	}
	kind, id := req.Selection.Scope()
	target := workflows.ZoneTarget(workflows.SystemVMUpgradeWorkflowID(kind, id), req.Selection.ZoneID, workflows.SystemVMUpgradeOperationKind)
	return s.StartOperation(ctx, c, operations.Spec{
		Target: target, Workflow: workflows.SystemVMUpgradeWorkflowName,
		TargetType: kind, TargetID: id, TargetName: strings.TrimSpace(kind + " " + id),
		Input: func(opID string) any {
			return workflows.SystemVMUpgradeInput{OperationID: opID, Request: req}
		},
		Memo: map[string]any{"systemvms": plan.Count(), "zones": len(plan.Groups), "systemvmtype": req.Selection.SystemVMType,
			"parallelism": req.Parallelism, "failureBudget": req.Budget.String(), "force": req.Selection.Force},
	})
}

// systemVMView is an SSVM or CPVM as listSystemVms shows it.
type systemVMView struct {
	models.SystemVM
	// RequiresUpgrade is computed from minreq.sysvmtemplate.version, as for routers.
	RequiresUpgrade bool `json:"requiresupgrade"`
}

// listSystemVMs lists SSVMs and CPVMs with requiresupgrade computed at the read (and the
// requiresupgrade filter), as listRouters does for routers.
func (s *Server) listSystemVMs(c echo.Context) error {
	ctx := c.Request().Context()
	minreq := s.minReqVersions()
	fs := systemVMFilters()
	const order = "name, id"
	base := systemVMTypes(s.store.DB.WithContext(ctx))
	view := func(vms []models.SystemVM) ([]systemVMView, error) {
		out := make([]systemVMView, 0, len(vms))
		for _, vm := range vms {
			req, _, err := minreq.RouterRequiresUpgrade(ctx, vm)
			if err != nil {
				return nil, Internal(err, "read minreq.sysvmtemplate.version")
			}
			out = append(out, systemVMView{SystemVM: vm, RequiresUpgrade: req})
		}
		return out, nil
	}
	return listRequiringUpgrade(s, c, base, fs, order, minreq, "system VMs", view)
}

// listRequiringUpgrade answers a page of the VMs of base that match fs, in order, as view shows
// them, with the requiresupgrade filter when the query has one (what names the rows in errors):
// listRouters and listSystemVms.
func listRequiringUpgrade[V any](s *Server, c echo.Context, base *gorm.DB, fs []filter, order string,
	minreq *models.MinReqVersions, what string, view func([]models.SystemVM) ([]V, error)) error {
	ctx := c.Request().Context()
	rv := c.QueryParam("requiresupgrade")
	if rv == "" {
		rows, err := listRows[models.SystemVM](c, base, fs, order)
		if err != nil {
			return err
		}
		items, err := view(rows.Items)
		if err != nil {
			return err
		}
		return ok(c, ListResponse[V]{Count: rows.Count, Page: rows.Page, PageSize: rows.PageSize, Items: items})
	}
	// requiresupgrade compares versions, which SQL cannot: select the candidates' versions,
	// keep those that match, then load the page.
	want, err := parseBool("requiresupgrade", rv)
	if err != nil {
		return err
	}
	p, err := ParsePage(c)
	if err != nil {
		return err
	}
	q, err := applyFilters(c, base.Model(&models.SystemVM{}), fs)
	if err != nil {
		return err
	}
	ids, err := idsRequiringUpgrade(ctx, q, minreq, order, what, want)
	if err != nil {
		return err
	}
	out := ListResponse[V]{Count: int64(len(ids)), Page: p.Page, PageSize: p.PageSize, Items: []V{}}
	if p.Offset() >= len(ids) {
		return ok(c, out)
	}
	ids = ids[p.Offset():min(len(ids), p.Offset()+p.PageSize)]
	var vms []models.SystemVM
	if err := s.store.DB.WithContext(ctx).Where("id IN ?", ids).Find(&vms).Error; err != nil {
		return Internal(err, "load %s", what)
	}
	pos := make(map[string]int, len(ids))
	for i, id := range ids {
		pos[id] = i
	}
	slices.SortFunc(vms, func(a, b models.SystemVM) int { return pos[a.ID] - pos[b.ID] })
	if out.Items, err = view(vms); err != nil {
		return err
	}
	return ok(c, out)
}

// idsRequiringUpgrade selects the candidates' versions (SQL cannot compare them) and keeps the
// IDs whose requiresupgrade is want, in order.
func idsRequiringUpgrade(ctx context.Context, q *gorm.DB, minreq *models.MinReqVersions, order, what string, want bool) ([]string, error) {
	var cands []struct{ ID, Version, SoftwareVersion, ZoneID string }
	if err := q.Select("id, version, software_version, zone_id").Order(order).Find(&cands).Error; err != nil {
		return nil, Internal(err, "list %s", what)
	}
	var ids []string
	for _, r := range cands {
		req, _, err := minreq.RouterRequiresUpgrade(ctx, models.SystemVM{ZoneID: r.ZoneID, Version: r.Version, SoftwareVersion: r.SoftwareVersion})
		if err != nil {
			return nil, Internal(err, "read minreq.sysvmtemplate.version")
		}
		if req == want {
			ids = append(ids, r.ID)
		}
	}
	return ids, nil
}

// getSystemVM is one SSVM or CPVM with requiresupgrade.
func (s *Server) getSystemVM(c echo.Context) error {
	ctx := c.Request().Context()
	vm, err := getRow[models.SystemVM](c, s.store.DB, c.Param("id"), "system VM")
	if err != nil {
		return err
	}
	if vm.IsRouter() {
		return NotFound("%s (%s) is a virtual router: see /api/v1/routers/%s", vm.Name, vm.ID, vm.ID)
	}
	req, _, err := s.minReqVersions().RouterRequiresUpgrade(ctx, vm)
	if err != nil {
		return Internal(err, "read minreq.sysvmtemplate.version")
	}
	return ok(c, systemVMView{SystemVM: vm, RequiresUpgrade: req})
}
