package api

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// Operation target types.
const (
	TargetSystemVM = operations.TargetSystemVM
	TargetRouter   = operations.TargetRouter
)

func lifecycleActions() []workflows.LifecycleAction {
	return []workflows.LifecycleAction{workflows.ActionStart, workflows.ActionStop, workflows.ActionReboot,
		workflows.ActionDestroy, workflows.ActionRecreate}
}

// lifecycleBody is the optional body of a lifecycle POST.
type lifecycleBody struct {
	// Forced stops without a clean shutdown (stop, and the stop step of recreate).
	Forced *bool `json:"forced"`
}

func lifecycleSummary(a workflows.LifecycleAction, what string) string {
	switch a {
	case workflows.ActionStart:
		return "Start a " + what
	case workflows.ActionStop:
		return "Stop a " + what
	case workflows.ActionReboot:
		return "Reboot a " + what
	case workflows.ActionDestroy:
		return "Destroy a " + what
	}
	return "Recreate a " + what + " (stop, destroy, create from the current template, start)"
}

func (s *Server) lifecycleRoutes() []Route {
	var out []Route
	for _, target := range []struct{ path, typ, what, op string }{
		{"/system-vms", TargetSystemVM, "system VM (SSVM or CPVM)", "SystemVM"},
		{"/routers", TargetRouter, "virtual router", "Router"},
	} {
		for _, a := range lifecycleActions() {
			desc := "Starts a " + a.OperationKind() + " operation (a Temporal workflow with ID systemvm:<id>); " +
				"one operation at a time runs on a VM, so a second one answers 409 naming the running operation."
			if a == workflows.ActionStop || a == workflows.ActionRecreate {
				desc += " forced stops without a clean shutdown."
			}
			out = append(out, Route{Method: http.MethodPost, Path: target.path + "/{id}/" + string(a), Role: models.RoleOperator,
				Handler: s.lifecycleHandler(target.typ, a), Doc: Doc{
					OperationID: string(a) + target.op, Summary: lifecycleSummary(a, target.what), Tag: "Lifecycle",
					Description: desc, Body: "LifecycleRequest",
					Responses: []Response{{Status: 202, Description: "the operation started", Schema: "OperationEnvelope"},
						{Status: 409, Description: "the VM is destroyed, or already has a running operation (named in operation)", Schema: "ConflictError"},
						{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}}})
		}
	}
	return out
}

func (s *Server) lifecycleHandler(targetType string, action workflows.LifecycleAction) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx := c.Request().Context()
		var body lifecycleBody
		if err := decodeBody(c, &body, true); err != nil {
			return err
		}
		force := body.Forced != nil && *body.Forced
		if body.Forced != nil && action != workflows.ActionStop && action != workflows.ActionRecreate {
			return BadRequest("forced", "forced applies to stop and recreate only, not to %s", action)
		}
		what := "system VM"
		if targetType == TargetRouter {
			what = "router"
		}
		vm, err := getRow[models.SystemVM](c, s.store.DB, c.Param("id"), what)
		if err != nil {
			return err
		}
		if targetType == TargetRouter && !vm.IsRouter() {
			return NotFound("%s (%s) is a %s, not a router: use /api/v1/system-vms/%s/%s", vm.Name, vm.ID, vm.Type, vm.ID, action)
		}
		if targetType == TargetSystemVM && vm.IsRouter() {
			return NotFound("%s (%s) is a virtual router: use /api/v1/routers/%s/%s", vm.Name, vm.ID, vm.ID, action)
		}
		if vm.State == models.StateDestroyed {
			return Conflict("%s %s is destroyed; it cannot be %s", what, vm.Name, pastParticiple(action))
		}
		return s.StartOperation(ctx, c, operations.Spec{
			Target:     workflows.VMTarget(vm.ID, vm.Type, vm.ZoneID, action.OperationKind()),
			Workflow:   workflows.LifecycleWorkflowName,
			TargetType: targetType, TargetID: vm.ID, TargetName: vm.Name,
			Input: func(opID string) any {
				return workflows.LifecycleInput{OperationID: opID, VMID: vm.ID, Action: action, Force: force}
			},
			Memo: map[string]any{"vmType": vm.Type},
		})
	}
}

func pastParticiple(a workflows.LifecycleAction) string {
	switch a {
	case workflows.ActionStop:
		return "stopped"
	case workflows.ActionStart:
		return "started"
	}
	return strings.TrimSuffix(string(a), "e") + "ed"
}
