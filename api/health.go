package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// freshCheckTimeout bounds how long POST /routers/{id}/health-checks waits for the checks.
const freshCheckTimeout = 3 * time.Minute

// RouterHealthChecks is the answer of the router health check endpoints, with CloudStack's
// field names (getRouterHealthCheckResults).
type RouterHealthChecks struct {
	RouterID           string                     `json:"routerid"`
	RouterName         string                     `json:"routername"`
	HealthChecksFailed bool                       `json:"healthchecksfailed"`
	Results            []models.HealthCheckResult `json:"healthcheckresults"`
	// Warnings (fresh checks only) say what did not work without stopping the checks.
	Warnings []string `json:"warnings,omitempty"`
}

// mountHealthChecks (called by New) mounts the router health check endpoints and their schema:
//
//	GET  /routers/{id}/health-checks   the last result of each check (read-only role)
//	POST /routers/{id}/health-checks   push the configuration, run every check now, answer
//	                                   with the results; never recreates (operator role)
//
// Both answer 409 when router.health.checks.enabled is false for the router's zone. Listing
// the routers whose checks fail is GET /routers?healthchecksfailed=true.
func (s *Server) mountHealthChecks() error {
	s.AddSchema("RouterHealthChecks", objectSchema("a router's last health check results (getRouterHealthCheckResults)",
		"routerid", "routername", "healthchecksfailed:bool", "healthcheckresults:[]@HealthCheckResult", "warnings?:[]string"))
	for _, r := range s.healthRoutes() {
		if err := s.Handle(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) healthRoutes() []Route {
	disabled := Response{Status: 409, Description: "router health checks are disabled in the router's zone " +
		"(router.health.checks.enabled is false), or (fresh checks) the router is not Running", Schema: "Error"}
	return []Route{
		{Method: http.MethodGet, Path: "/routers/{id}/health-checks", Role: models.RoleReadOnly, Handler: s.getRouterHealthChecks,
			Doc: Doc{OperationID: "getRouterHealthCheckResults", Tag: "Routers",
				Summary: "The last result of each health check of a router",
				Description: "CloudStack's getRouterHealthCheckResults: per check checkname, checktype (basic or advanced), success, " +
					"lastupdated and details. Only the last result of each check is kept. Checks of services the network does not get " +
					"from the router are reported as passed with details starting \"skipped:\". POST runs them afresh.",
				Responses: []Response{{Status: 200, Description: "the last results", Schema: "RouterHealthChecks"}, disabled}}},
		{Method: http.MethodPost, Path: "/routers/{id}/health-checks", Role: models.RoleOperator, Handler: s.freshRouterHealthChecks,
			Doc: Doc{OperationID: "runRouterHealthChecks", Tag: "Routers",
				Summary: "Run a router's health checks now and answer with the results",
				Description: "getRouterHealthCheckResults with performfreshchecks=true: pushes the check configuration to the router, " +
					"runs the basic and advanced checks, stores and returns every last result. Runs as the Temporal workflow " +
					"health-check:<id> (found in the Web UI by RouterId); concurrent calls share one run. An on-demand check never " +
					"recreates a router and does not count towards router.health.checks.failures.before.recreate. A router that " +
					"does not answer is a 200 with connectivity.test failed.",
				Responses: []Response{{Status: 200, Description: "the fresh results", Schema: "RouterHealthChecks"}, disabled,
					{Status: 503, Description: "Temporal is unavailable", Schema: "Error"},
					{Status: 504, Description: "the checks did not finish in time (they go on; see the workflow)", Schema: "Error"}}}},
	}
}

// healthRouter loads a router for the health endpoints: 404 for an unknown ID or a system VM
// that is not a router, 409 when health checks are disabled in its zone.
func (s *Server) healthRouter(c echo.Context) (models.SystemVM, error) {
	vm, err := getRow[models.SystemVM](c, s.store.DB, c.Param("id"), "router")
	if err != nil {
		return vm, err
	}
	if !vm.IsRouter() {
		return vm, NotFound("%s (%s) is a %s, not a router", vm.Name, vm.ID, vm.Type)
	}
	enabled, err := activities.HealthEnabledIn(c.Request().Context(), s.store, vm.ZoneID)
	if err != nil {
		return vm, Internal(err, "read %s", activities.SettingHealthEnabled)
	}
	if !enabled {
		return vm, Conflict("router health checks are disabled in zone %s: %s is false (set it to true to use health checks)",
			vm.ZoneID, activities.SettingHealthEnabled)
	}
	return vm, nil
}

func (s *Server) getRouterHealthChecks(c echo.Context) error {
	vm, err := s.healthRouter(c)
	if err != nil {
		return err
	}
	out := RouterHealthChecks{RouterID: vm.ID, RouterName: vm.Name, Results: []models.HealthCheckResult{}}
	if err := s.store.DB.WithContext(c.Request().Context()).Where("router_id = ?", vm.ID).Order("check_type, check_name").
		Find(&out.Results).Error; err != nil {
		return Internal(err, "read health check results of %s", vm.Name)
	}
	for _, r := range out.Results {
		out.HealthChecksFailed = out.HealthChecksFailed || !r.Success
	}
	return ok(c, out)
}

func (s *Server) freshRouterHealthChecks(c echo.Context) error {
	vm, err := s.healthRouter(c)
	if err != nil {
		return err
	}
	if vm.State != models.StateRunning {
		return Conflict("router %s is %s: health checks run on Running routers only", vm.Name, vm.State)
	}
	if s.temporal == nil {
		return Unavailable(nil, "fresh health checks are unavailable: this server has no Temporal connection")
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), freshCheckTimeout)
	defer cancel()
	target := workflows.RouterTarget(vm.ID, vm.ZoneID, workflows.OperationKindHealthOnDemand)
	target.WorkflowID = workflows.RouterHealthCheckWorkflowID(vm.ID)
	id := target.WorkflowID
	opts := target.StartOptions(nil)
	// Concurrent calls share one run: a second start joins the running one.
	opts.WorkflowIDConflictPolicy = enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING
	opts.WorkflowExecutionErrorWhenAlreadyStarted = false
	opts.WorkflowExecutionTimeout = 15 * time.Minute
	run, err := s.temporal.ExecuteWorkflow(ctx, opts, workflows.RouterHealthCheckWorkflowName, workflows.RouterHealthCheckInput{RouterID: vm.ID})
	if err != nil {
		return Unavailable(err, "cannot run health checks of %s: Temporal did not accept the workflow: %v", vm.Name, err)
	}
	var res activities.FreshResult
	if err := run.Get(ctx, &res); err != nil {
		return s.freshCheckError(ctx, err, vm, id, run.GetRunID())
	}
	return ok(c, RouterHealthChecks{RouterID: res.RouterID, RouterName: res.RouterName,
		HealthChecksFailed: res.HealthChecksFailed, Results: res.Results, Warnings: res.Warnings})
}

// freshCheckError maps the end of a failed on-demand check run to an API error.
func (s *Server) freshCheckError(ctx context.Context, err error, vm models.SystemVM, workflowID, runID string) error {
	if ctx.Err() != nil {
		return &Error{Status: http.StatusGatewayTimeout, Code: CodeUnavailable, Err: err,
			Message: fmt.Sprintf("the health checks of %s did not finish within %s; they go on in workflow %s (run %s)",
				vm.Name, freshCheckTimeout, workflowID, runID)}
	}
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		switch app.Type() {
		case activities.ErrTypeHealthDisabled, activities.ErrTypeNotRunning:
			return Conflict("%s", app.Message())
		case activities.ErrTypeNotFound:
			return NotFound("%s", app.Message())
		}
	}
	return Internal(err, "the health checks of %s failed: %s", vm.Name, operations.FailureMessage(err))
}
