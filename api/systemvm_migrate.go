package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// migrateBody is the body of POST .../migrate (migrateSystemVm).
type migrateBody struct {
	HostID string `json:"hostid"`
}

// scaleBody is the body of POST .../scale (scaleSystemVm).
type scaleBody struct {
	ServiceOfferingID string `json:"serviceofferingid"`
}

// mountMigrate adds the migrate and scale routes and their schemas.
func (s *Server) mountMigrate() error {
	s.AddSchema("MigrateRequest", objectSchema("migrateSystemVm: the target host (absent: sysvm chooses one of the cluster)", "hostid?"))
	s.AddSchema("ScaleRequest", objectSchema("scaleSystemVm: the service offering to scale to", "serviceofferingid"))
	for _, target := range []struct{ path, typ, what, op string }{
		{"/system-vms", TargetSystemVM, "system VM (SSVM or CPVM)", "SystemVM"},
		{"/routers", TargetRouter, "virtual router", "Router"},
	} {
		conflict := Response{Status: 409, Description: "the VM is neither Running nor Stopped, or already has a running operation (named in operation)", Schema: "ConflictError"}
		for _, r := range []Route{
			{Method: http.MethodPost, Path: target.path + "/{id}/migrate", Role: models.RoleOperator, Handler: s.migrateHandler(target.typ),
				Doc: Doc{OperationID: "migrate" + target.op, Tag: "Lifecycle", Summary: "Migrate a " + target.what + " to another host of its cluster",
					Description: "CloudStack's migrateSystemVm. hostid names the target (an Up host of the VM's cluster); without it sysvm " +
						"chooses the Up host of the cluster with the fewest system VMs. Live where the hypervisor migrates running VMs " +
						"(VMware, XenServer), otherwise stop, move, start (KVM); a redundant router is stopped only while its peer is " +
						"Running. One operation at a time per VM (workflow systemvm:<id>); a failure starts a VM it stopped again and " +
						"settles the row to what the hypervisor says.",
					Body: "MigrateRequest",
					Responses: []Response{{Status: 202, Description: "the operation started", Schema: "OperationEnvelope"}, conflict,
						{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}}},
			{Method: http.MethodPost, Path: target.path + "/{id}/scale", Role: models.RoleOperator, Handler: s.scaleHandler(target.typ),
				Doc: Doc{OperationID: "scale" + target.op, Tag: "Lifecycle", Summary: "Scale a " + target.what + " to a service offering",
					Description: "CloudStack's scaleSystemVm: the VM gets the offering's CPUs and memory. Hot where the hypervisor scales " +
						"running VMs, otherwise stop, change, start; a redundant router is stopped only while its peer is Running.",
					Body: "ScaleRequest", BodyRequired: true,
					Responses: []Response{{Status: 202, Description: "the operation started", Schema: "OperationEnvelope"}, conflict,
						{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}}},
		} {
			if err := s.Handle(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// movableVM loads the VM of a migrate or scale: Running or Stopped.
func (s *Server) movableVM(c echo.Context, targetType, kind string) (models.SystemVM, error) {
	vm, err := s.diagnosticsVM(c, targetType)
	if err != nil {
		return vm, err
	}
	if vm.State != models.StateRunning && vm.State != models.StateStopped {
		return vm, Conflict("%s %s is %s: only a Running or Stopped system VM can be %sd", vm.Type, vm.Name, vm.State, kind)
	}
	return vm, nil
}

func (s *Server) migrateHandler(targetType string) echo.HandlerFunc {
	return func(c echo.Context) error {
		var body migrateBody
		if err := decodeBody(c, &body, true); err != nil {
			return err
		}
		vm, err := s.movableVM(c, targetType, "migrate")
		if err != nil {
			return err
		}
		if body.HostID != "" {
			h, err := getRow[models.Host](c, s.store.DB, body.HostID, "host")
			if err != nil {
				return BadRequest("hostid", "no host with id %s", body.HostID)
			}
			switch {
			case h.ID == vm.HostID:
				return BadRequest("hostid", "%s already runs on host %s", vm.Name, h.Name)
			case h.ClusterID != vm.ClusterID:
				return BadRequest("hostid", "host %s is not in the cluster of %s: system VMs migrate within their cluster", h.Name, vm.Name)
			case h.State != models.HostUp:
				return Conflict("host %s is %s, not Up", h.Name, h.State)
			}
		}
		return s.StartOperation(c.Request().Context(), c, operations.Spec{
			Target:     workflows.VMTarget(vm.ID, vm.Type, vm.ZoneID, workflows.MigrateOperationKind),
			Workflow:   workflows.MigrateWorkflowName,
			TargetType: targetType, TargetID: vm.ID, TargetName: vm.Name,
			Input: func(opID string) any {
				return workflows.MigrateInput{OperationID: opID, VMID: vm.ID, HostID: body.HostID}
			},
			Memo: map[string]any{"vmType": vm.Type},
		})
	}
}

func (s *Server) scaleHandler(targetType string) echo.HandlerFunc {
	return func(c echo.Context) error {
		var body scaleBody
		if err := decodeBody(c, &body, false); err != nil {
			return err
		}
		if body.ServiceOfferingID == "" {
			return BadRequest("serviceofferingid", "serviceofferingid is required")
		}
		vm, err := s.movableVM(c, targetType, "scale")
		if err != nil {
			return err
		}
		so, err := getRow[models.ServiceOffering](c, s.store.DB, body.ServiceOfferingID, "service offering")
		if err != nil {
			return BadRequest("serviceofferingid", "no service offering with id %s", body.ServiceOfferingID)
		}
		if so.SystemVMType != "" && so.SystemVMType != vm.Type {
			return BadRequest("serviceofferingid", "service offering %s is for %s, not for %s %s", so.Name, so.SystemVMType, vm.Type, vm.Name)
		}
		return s.StartOperation(c.Request().Context(), c, operations.Spec{
			Target:     workflows.VMTarget(vm.ID, vm.Type, vm.ZoneID, workflows.ScaleOperationKind),
			Workflow:   workflows.ScaleWorkflowName,
			TargetType: targetType, TargetID: vm.ID, TargetName: vm.Name,
			Input: func(opID string) any {
				return workflows.ScaleInput{OperationID: opID, VMID: vm.ID, ServiceOfferingID: so.ID}
			},
			Memo: map[string]any{"vmType": vm.Type},
		})
	}
}
