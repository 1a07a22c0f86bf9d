package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
)

// systemVMAccess is the answer of GET /system-vms/{id}/access: how a person reaches the VM's
// SSH daemon on port 3922 along CloudStack's access path (never the key itself).
type systemVMAccess struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Hypervisor  string `json:"hypervisor"`
	LinkLocalIP string `json:"linklocalip,omitempty"`
	PrivateIP   string `json:"privateip,omitempty"`
	sshexec.AccessInfo
}

func (s *Server) accessRoutes() []Route {
	s.AddSchema("SystemVMAccess", objectSchema("the manual SSH access path to a system VM (port 3922)",
		"id", "name", "hypervisor", "linklocalip?", "privateip?", "path:string=host-linklocal|direct-private",
		"description", "via?", "address", "port:int", "command", "steps:[]string"))
	var out []Route
	for _, target := range []struct{ path, typ, op string }{
		{"/system-vms", TargetSystemVM, "SystemVM"}, {"/routers", TargetRouter, "Router"}} {
		out = append(out, Route{Method: http.MethodGet, Path: target.path + "/{id}/access", Role: models.RoleReadOnly,
			Handler: s.accessHandler(target.typ), Doc: Doc{OperationID: "get" + target.op + "Access", Tag: "Lifecycle",
				Summary: "How to log in to the VM by hand (SSH on port 3922)",
				Description: "KVM and XenServer: from the host the VM runs on to its link-local IP with /root/.ssh/id_rsa.cloud; " +
					"VMware: from the management server straight to its private IP with " +
					"/var/lib/cloudstack/management/.ssh/id_rsa. The key itself is never returned.",
				Responses: []Response{{Status: 200, Description: "the access path", Schema: "SystemVMAccess"},
					{Status: 409, Description: "the VM is destroyed or has no address on its path", Schema: "Error"}}}})
	}
	return out
}

func (s *Server) accessHandler(targetType string) echo.HandlerFunc {
	return func(c echo.Context) error {
		what := "system VM"
		if targetType == TargetRouter {
			what = "router"
		}
		vm, err := getRow[models.SystemVM](c, s.store.DB, c.Param("id"), what)
		if err != nil {
			return err
		}
		if targetType == TargetRouter && !vm.IsRouter() {
			return NotFound("%s (%s) is a %s, not a router: use /api/v1/system-vms/%s/access", vm.Name, vm.ID, vm.Type, vm.ID)
		}
		if targetType == TargetSystemVM && vm.IsRouter() {
			return NotFound("%s (%s) is a virtual router: use /api/v1/routers/%s/access", vm.Name, vm.ID, vm.ID)
		}
		if vm.State == models.StateDestroyed {
			return Conflict("%s %s is destroyed; there is nothing to log in to", what, vm.Name)
		}
		t, err := activities.StoreTargets{Store: s.store}.TargetFor(c.Request().Context(), vm)
		if err != nil {
			return Conflict("%v", err)
		}
		return ok(c, systemVMAccess{ID: vm.ID, Name: vm.Name, Hypervisor: vm.HypervisorType,
			LinkLocalIP: vm.LinkLocalIP, PrivateIP: vm.PrivateIP, AccessInfo: sshexec.Access(t, "")})
	}
}
