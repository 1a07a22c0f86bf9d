package api

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// TargetNetwork is the operation target type of network operations.
const TargetNetwork = operations.TargetNetwork

func (s *Server) networkRoutes() []Route {
	return []Route{{Method: http.MethodPost, Path: "/networks/{id}/restart", Role: models.RoleOperator,
		Handler: s.restartNetwork, Doc: Doc{
			OperationID: "restartNetwork", Tag: "Lifecycle",
			Summary: "Restart a network: reboot its routers, or recreate them with cleanup=true (restartNetwork)",
			Description: "Starts a " + workflows.NetworkRestartOperationKind + " operation (a Temporal workflow with ID network:<id>) " +
				"that reboots, or with cleanup=true recreates (stop, destroy, create from the current template, start), every " +
				"router serving the network (a VPC tier's are the VPC's routers), one at a time: BACKUP routers first, and the " +
				"next only once the previous is Running again, so a redundant pair keeps one router up. Each router runs as a " +
				"systemvm:<router id> lifecycle run. The first failure stops the restart; routers not reached are left as they are.",
			Query: []Param{{Name: "cleanup", Type: "boolean",
				Description: "recreate the routers instead of rebooting them (default false)"}},
			Responses: []Response{{Status: 202, Description: "the operation started", Schema: "OperationEnvelope"},
				{Status: 409, Description: "the network has no router, or a restart of it already runs (named in operation)", Schema: "ConflictError"},
				{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}}}}
}

func (s *Server) restartNetwork(c echo.Context) error {
	ctx := c.Request().Context()
	cleanup := false
	if v := c.QueryParam("cleanup"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return BadRequest("cleanup", "cleanup must be true or false, got %q", v)
		}
		cleanup = b
	}
	n, err := getRow[models.Network](c, s.store.DB, c.Param("id"), "network")
	if err != nil {
		return err
	}
	routers, err := activities.RoutersOfNetwork(ctx, s.store.DB, n)
	if err != nil {
		return Internal(err, "read the routers of network %s", n.Name)
	}
	if len(routers) == 0 {
		return Conflict("network %s (%s) has no router to restart", n.Name, n.ID)
	}
	return s.StartOperation(ctx, c, operations.Spec{
		Target:     workflows.NetworkTarget(n.ID, n.ZoneID, workflows.NetworkRestartOperationKind),
		Workflow:   workflows.NetworkRestartWorkflowName,
		TargetType: TargetNetwork, TargetID: n.ID, TargetName: n.Name,
		Input: func(opID string) any {
			return workflows.NetworkRestartInput{OperationID: opID, NetworkID: n.ID, Cleanup: cleanup}
		},
		Memo: map[string]any{"cleanup": cleanup, "routers": len(routers)},
	})
}
