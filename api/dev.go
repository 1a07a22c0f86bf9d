package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/models"
)

// DevFaults lists the faults POST /dev/faults injects into a dev router.
func DevFaults() []string {
	return []string{"service-down", "disk-full", "dns-entry-missing", "dhcp-entry-missing", "portforward-missing",
		"unreachable", "readonly-fs"}
}

// DevFaultServices lists the daemons a service-down fault can stop.
func DevFaultServices() []string { return []string{"dnsmasq", "haproxy", "apache2", "sshd"} }

// devFault is the body of POST /dev/faults.
type devFault struct {
	RouterID string `json:"routerId"`
	Fault    string `json:"fault"`
	Service  string `json:"service,omitempty"`
}

// devConsoles is the dev hooks' view of the simulated console endpoints (devcloud.Routers
// with its consoles followed).
type devConsoles interface {
	ConsoleEndpoints(ctx context.Context) ([]consoles.Endpoint, error)
}

func (s *Server) devRoutes() []Route {
	return []Route{
		{Method: http.MethodGet, Path: "/dev/consoles", Role: models.RoleAdmin, Handler: s.listDevConsoles, Doc: Doc{
			OperationID: "listDevConsoles", Summary: "Dev only: the simulated console endpoints of the SSVMs and CPVMs", Tag: "Dev", DevOnly: true,
			Description: "Mounted only when the server runs in dev mode (404 otherwise). Each running SSVM and CPVM of the dev fleet " +
				"serves real TLS on a loopback port: addr is where (connect there for a console URL's host, e.g. curl --connect-to), " +
				"fingerprint what it serves.",
			Responses: []Response{{Status: 200, Description: "the endpoints, by VM name", Schema: "DevConsoleList"},
				{Status: 404, Description: "the server is not in dev mode or its fleet runs no console endpoints", Schema: "Error"}}}},
		{Method: http.MethodPost, Path: "/dev/faults", Role: models.RoleAdmin, Handler: s.injectFault, Doc: Doc{
			OperationID: "injectFault", Summary: "Dev only: inject a fault into a dev router", Tag: "Dev", DevOnly: true,
			Description: "Mounted only when the server runs in dev mode (404 otherwise). fault is one of " +
				strings.Join(DevFaults(), ", ") + "; service (for service-down) is one of " + strings.Join(DevFaultServices(), ", ") + ".",
			Body: "DevFault", BodyRequired: true,
			Responses: []Response{{Status: 200, Description: "the fault is in place", Schema: "DevFault"},
				{Status: 404, Description: "no such router (or the server is not in dev mode)", Schema: "Error"}}}},
		{Method: http.MethodDelete, Path: "/dev/faults", Role: models.RoleAdmin, Handler: s.clearFaults, Doc: Doc{
			OperationID: "clearFaults", Summary: "Dev only: clear every fault injected into a dev router", Tag: "Dev", DevOnly: true,
			Description: "Mounted only when the server runs in dev mode (404 otherwise).",
			Query:       []Param{{Name: "routerId", Type: "string", Required: true, Description: "the router"}},
			Responses: []Response{{Status: 204, Description: "faults cleared"},
				{Status: 404, Description: "no such router (or the server is not in dev mode)", Schema: "Error"}}}},
	}
}

func (s *Server) listDevConsoles(c echo.Context) error {
	dc, ok := s.dev.(devConsoles)
	if !ok {
		return NotFound("the dev fleet runs no console endpoints")
	}
	eps, err := dc.ConsoleEndpoints(c.Request().Context())
	if err != nil {
		return NotFound("console endpoints: %v", err)
	}
	return c.JSON(http.StatusOK, map[string]any{"items": eps, "count": len(eps)})
}

// devRouter checks the router a dev request names.
func (s *Server) devRouter(c echo.Context, field, id string) (models.SystemVM, error) {
	if id == "" {
		return models.SystemVM{}, BadRequest(field, "%s is required", field)
	}
	vm, err := getRow[models.SystemVM](c, s.store.DB, id, "router")
	if err != nil {
		return vm, err
	}
	if !vm.IsRouter() {
		return vm, NotFound("%s (%s) is a %s, not a router", vm.Name, vm.ID, vm.Type)
	}
	return vm, nil
}

func (s *Server) injectFault(c echo.Context) error {
	var body devFault
	if err := decodeBody(c, &body, false); err != nil {
		return err
	}
	if body.Fault == "" {
		return BadRequest("fault", "fault is required: one of %s", strings.Join(DevFaults(), ", "))
	}
	if !slices.Contains(DevFaults(), body.Fault) {
		return BadRequest("fault", "fault must be one of %s, got %q", strings.Join(DevFaults(), ", "), body.Fault)
	}
	if body.Fault == "service-down" {
		if body.Service == "" {
			return BadRequest("service", "service-down needs service: one of %s", strings.Join(DevFaultServices(), ", "))
		}
		if !slices.Contains(DevFaultServices(), body.Service) {
			return BadRequest("service", "service must be one of %s, got %q", strings.Join(DevFaultServices(), ", "), body.Service)
		}
	} else if body.Service != "" {
		return BadRequest("service", "service applies to service-down only, not to %s", body.Fault)
	}
	vm, err := s.devRouter(c, "routerId", body.RouterID)
	if err != nil {
		return err
	}
	if err := s.dev.InjectFault(c.Request().Context(), vm.ID, body.Fault, body.Service); err != nil {
		return devError(err, fmt.Sprintf("inject %s into %s", body.Fault, vm.Name))
	}
	s.log.Info("dev fault injected", "router", vm.Name, "fault", body.Fault, "service", body.Service)
	return ok(c, body)
}

func (s *Server) clearFaults(c echo.Context) error {
	vm, err := s.devRouter(c, "routerId", c.QueryParam("routerId"))
	if err != nil {
		return err
	}
	if err := s.dev.ClearFaults(c.Request().Context(), vm.ID); err != nil {
		return devError(err, "clear faults of "+vm.Name)
	}
	s.log.Info("dev faults cleared", "router", vm.Name)
	return c.NoContent(http.StatusNoContent)
}

// devError maps a dev hook's error: an unknown router is a 404, anything else a 500 that says
// what failed (dev mode only, so the message may be shown).
func devError(err error, what string) error {
	if errors.Is(err, models.ErrNotFound) {
		return NotFound("%s: %v", what, err)
	}
	e := Internal(err, "%s: %v", what, err)
	return e
}

// DevConsoles is implemented by dev hooks whose simulated CPVMs serve console endpoints on
// loopback (devcloud.Routers with FollowConsoles): GET /dev/consoles/{id} then says where one
// serves, so an operator can open a real session with the token of POST /consoles.
type DevConsoles interface {
	// ConsoleEndpoint is the loopback address of a system VM's simulated console endpoint.
	ConsoleEndpoint(ctx context.Context, vmID string) (string, error)
}

// devConsoleRoutes are the dev console routes, when the dev hooks serve consoles.
func (s *Server) devConsoleRoutes() []Route {
	if _, ok := s.dev.(DevConsoles); !ok {
		return nil
	}
	s.AddSchema("DevConsoleEndpoint", objectSchema("where a simulated CPVM's console endpoint serves TLS", "id", "name", "address"))
	return []Route{{Method: http.MethodGet, Path: "/dev/consoles/{id}", Role: models.RoleOperator, Handler: s.devConsole, Doc: Doc{
		OperationID: "getDevConsoleEndpoint", Summary: "Dev only: where a simulated CPVM serves its console endpoint", Tag: "Dev", DevOnly: true,
		Description: "Mounted only in dev mode. The console URL of POST /consoles names the CPVM's public IP, which the simulated " +
			"fleet does not own; its endpoint serves TLS on this loopback address instead: open " +
			"https://<address>/console?token=<the URL's token> to hold a real session (counted by the capacity scan).",
		Responses: []Response{{Status: 200, Description: "the endpoint", Schema: "DevConsoleEndpoint"},
			{Status: 404, Description: "no such CPVM (or the server is not in dev mode)", Schema: "Error"}}}}}
}

func (s *Server) devConsole(c echo.Context) error {
	vm, err := getRow[models.SystemVM](c, s.store.DB, c.Param("id"), "system VM")
	if err != nil {
		return err
	}
	if vm.Type != models.TypeCPVM || vm.State != models.StateRunning {
		return NotFound("%s is a %s %s, not a Running console proxy", vm.Name, vm.State, vm.Type)
	}
	addr, err := s.dev.(DevConsoles).ConsoleEndpoint(c.Request().Context(), vm.ID)
	if err != nil {
		return NotFound("console endpoint of %s: %v", vm.Name, err)
	}
	return ok(c, map[string]string{"id": vm.ID, "name": vm.Name, "address": addr})
}
