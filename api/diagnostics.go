package api

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/diagnostics"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// diagnosticsBody is the body of POST .../diagnostics (runDiagnostics).
type diagnosticsBody struct {
	Type      string `json:"type"`
	IPAddress string `json:"ipaddress"`
	Params    string `json:"params"`
	// Timeout is the time limit in seconds inside the VM (0 or absent: the default).
	Timeout int `json:"timeout"`
}

// maxDiagnosticsListed bounds GET .../diagnostics.
const maxDiagnosticsListed = 50

// mountDiagnostics (called by New) mounts the diagnostics endpoints and their schemas:
//
//	POST /system-vms/{id}/diagnostics, /routers/{id}/diagnostics   run ping, traceroute or
//	     arping in the VM (an operation whose result is stdout, stderr, exitcode)
//	GET  the same paths                                           the VM's last results
func (s *Server) mountDiagnostics() error {
	s.AddSchema("DiagnosticsRequest", objectSchema("runDiagnostics: a command to run inside the system VM",
		"type:string=ping|traceroute|arping", "ipaddress", "params?", "timeout?:int"))
	s.AddSchema("DiagnosticsResult", objectSchema("one diagnostics command that ran inside a system VM",
		"id", "systemvmid", "operationid", "type", "ipaddress", "params", "command", "stdout", "stderr",
		"exitcode:int", "timedout:bool", "durationms:int", "ranat:time", "created:time"))
	s.AddSchema("DiagnosticsResults", objectSchema("a system VM's last diagnostics results, newest first",
		"diagnostics:[]@DiagnosticsResult"))
	for _, r := range s.diagnosticsRoutes() {
		if err := s.Handle(r); err != nil {
			return err
		}
	}
	if err := s.mountDiagnosticsData(); err != nil {
		return err
	}
	if err := s.mountMigrate(); err != nil {
		return err
	}
	if err := s.mountDeploy(); err != nil {
		return err
	}
	return s.mountCapacity()
}

func (s *Server) diagnosticsRoutes() []Route {
	var out []Route
	for _, target := range []struct{ path, typ, what, op string }{
		{"/system-vms", TargetSystemVM, "system VM (SSVM or CPVM)", "SystemVM"},
		{"/routers", TargetRouter, "virtual router", "Router"},
	} {
		out = append(out, Route{Method: http.MethodPost, Path: target.path + "/{id}/diagnostics", Role: models.RoleOperator,
			Handler: s.runDiagnostics(target.typ), Doc: Doc{
				OperationID: "runDiagnostics" + target.op, Tag: "Diagnostics",
				Summary: "Run ping, traceroute or arping inside a " + target.what,
				Description: "CloudStack's runDiagnostics. type is ping, traceroute or arping; ipaddress an IPv4 or IPv6 address; " +
					"params the extra parameters as typed (letters, digits, '-', '.' and spaces only: any other character is refused " +
					"naming it and its position). Without params a VR's defaults apply: ping -c 4, traceroute -m 20, arping -c 4 " +
					"-I <the VM's interface towards the address>. The command runs inside the VM over SSH on port 3922 as an " +
					"argument vector (never through a shell) within timeout seconds (default 30, at most 50); the operation's " +
					"result holds stdout, stderr and exitcode (124: the time limit ended it), also stored as a result of the VM.",
				Body: "DiagnosticsRequest",
				Responses: []Response{{Status: 202, Description: "the operation started", Schema: "OperationEnvelope"},
					{Status: 409, Description: "the VM is not Running, or already has a running operation (named in operation)", Schema: "ConflictError"},
					{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}}},
			Route{Method: http.MethodGet, Path: target.path + "/{id}/diagnostics", Role: models.RoleReadOnly,
				Handler: s.listDiagnostics(target.typ), Doc: Doc{
					OperationID: "listDiagnostics" + target.op, Tag: "Diagnostics",
					Summary:     "The last diagnostics results of a " + target.what,
					Description: "The last 50 diagnostics commands run in the VM, newest first.",
					Responses:   []Response{{Status: 200, Description: "the results", Schema: "DiagnosticsResults"}}}})
	}
	return out
}

// diagnosticsVM loads the VM of a diagnostics endpoint: 404 for an unknown ID or a VM of the
// other path (a router under /system-vms, an SSVM under /routers).
func (s *Server) diagnosticsVM(c echo.Context, targetType string) (models.SystemVM, error) {
	what := "system VM"
	if targetType == TargetRouter {
		what = "router"
	}
	vm, err := getRow[models.SystemVM](c, s.store.DB, c.Param("id"), what)
	if err != nil {
		return vm, err
	}
	if targetType == TargetRouter && !vm.IsRouter() {
		return vm, NotFound("%s (%s) is a %s, not a router: use /api/v1/system-vms/%s/diagnostics", vm.Name, vm.ID, vm.Type, vm.ID)
	}
	if targetType == TargetSystemVM && vm.IsRouter() {
		return vm, NotFound("%s (%s) is a virtual router: use /api/v1/routers/%s/diagnostics", vm.Name, vm.ID, vm.ID)
	}
	return vm, nil
}

func (s *Server) runDiagnostics(targetType string) echo.HandlerFunc {
	return func(c echo.Context) error {
		var body diagnosticsBody
		if err := decodeBody(c, &body, false); err != nil {
			return err
		}
		// Refuse bad input at once, before anything is journaled or started.
		if _, err := diagnostics.NewRequest(body.Type, body.IPAddress, body.Params, body.Timeout); err != nil {
			var de *diagnostics.Error
			if errors.As(err, &de) {
				return BadRequest(de.Field, "%s", de.Message)
			}
			return BadRequest("body", "%v", err)
		}
		vm, err := s.diagnosticsVM(c, targetType)
		if err != nil {
			return err
		}
		if vm.State != models.StateRunning {
			return Conflict("%s %s is %s: diagnostics run only in a Running system VM", vm.Type, vm.Name, vm.State)
		}
		return s.StartOperation(c.Request().Context(), c, operations.Spec{
			Target:     workflows.VMTarget(vm.ID, vm.Type, vm.ZoneID, workflows.DiagnosticsOperationKind),
			Workflow:   workflows.DiagnosticsWorkflowName,
			TargetType: targetType, TargetID: vm.ID, TargetName: vm.Name,
			Input: func(opID string) any {
				return workflows.DiagnosticsInput{OperationID: opID, VMID: vm.ID, Type: body.Type, IPAddress: body.IPAddress,
					Params: body.Params, TimeoutSeconds: body.Timeout}
			},
			Memo: map[string]any{"vmType": vm.Type},
		})
	}
}

func (s *Server) listDiagnostics(targetType string) echo.HandlerFunc {
	return func(c echo.Context) error {
		vm, err := s.diagnosticsVM(c, targetType)
		if err != nil {
			return err
		}
		out := struct {
			Diagnostics []models.DiagnosticsResult `json:"diagnostics"`
		}{Diagnostics: []models.DiagnosticsResult{}}
		if err := s.store.DB.WithContext(c.Request().Context()).Where("system_vm_id = ?", vm.ID).
			Order("ran_at DESC").Limit(maxDiagnosticsListed).Find(&out.Diagnostics).Error; err != nil {
			return Internal(err, "read diagnostics results of %s", vm.Name)
		}
		return ok(c, out)
	}
}
