package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// deployBody is the body of POST /zones/{id}/system-vms.
type deployBody struct {
	SystemVMType string `json:"systemvmtype"`
	HostID       string `json:"hostid"`
	Reason       string `json:"reason"`
}

// mountDeploy adds the route that deploys a new CPVM or SSVM into a zone.
func (s *Server) mountDeploy() error {
	s.AddSchema("DeploySystemVMRequest", objectSchema("a new system VM: its type (consoleproxy or secondarystoragevm), optionally its host and why",
		"systemvmtype", "hostid?", "reason?"))
	return s.Handle(Route{Method: http.MethodPost, Path: "/zones/{id}/system-vms", Role: models.RoleOperator, Handler: s.deploySystemVM,
		Doc: Doc{OperationID: "deploySystemVM", Tag: "Lifecycle", Summary: "Deploy a new CPVM or SSVM into a zone",
			Description: "Adds a console proxy or secondary storage VM to the zone (workflow SystemVMDeploy, run under the new VM's " +
				"workflow ID systemvm:<id>): a CloudStack name (v-<n>-VM, s-<n>-VM), a public IP from the zone's public IP range, " +
				"private and control addresses, the Up host with most free memory (or hostid), its cluster's pool and the current " +
				"router.template.<hypervisor> template; created, started and verified over SSH (a CPVM also serving TLS on its " +
				"console endpoint), then Running with a PROXY.CREATE or SSVM.CREATE event. A failure or cancel destroys what was " +
				"built: the row ends Destroyed (or Error with lasterror). Retire a VM with POST /system-vms/{id}/destroy.",
			Body: "DeploySystemVMRequest", BodyRequired: true,
			Responses: []Response{{Status: 202, Description: "the operation started", Schema: "OperationEnvelope"},
				{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}}})
}

func (s *Server) deploySystemVM(c echo.Context) error {
	var body deployBody
	if err := decodeBody(c, &body, false); err != nil {
		return err
	}
	if body.SystemVMType != models.TypeCPVM && body.SystemVMType != models.TypeSSVM {
		return BadRequest("systemvmtype", "systemvmtype must be %s or %s, not %q", models.TypeCPVM, models.TypeSSVM, body.SystemVMType)
	}
	zone, err := getRow[models.Zone](c, s.store.DB, c.Param("id"), "zone")
	if err != nil {
		return err
	}
	if body.HostID != "" {
		h, err := getRow[models.Host](c, s.store.DB, body.HostID, "host")
		if err != nil {
			return BadRequest("hostid", "no host with id %s", body.HostID)
		}
		if h.ZoneID != zone.ID {
			return BadRequest("hostid", "host %s is not in zone %s", h.Name, zone.Name)
		}
		if h.State != models.HostUp {
			return Conflict("host %s is %s, not Up", h.Name, h.State)
		}
	}
	vmID := models.NewID()
	return s.StartOperation(c.Request().Context(), c, operations.Spec{
		Target:     workflows.DeployTarget(vmID, body.SystemVMType, zone.ID),
		Workflow:   workflows.SystemVMDeployWorkflowName,
		TargetType: TargetSystemVM, TargetID: vmID, TargetName: "new " + body.SystemVMType + " in " + zone.Name,
		Input: func(opID string) any {
			return workflows.DeployInput{OperationID: opID, VMID: vmID, ZoneID: zone.ID, Type: body.SystemVMType,
				HostID: body.HostID, Reason: body.Reason}
		},
		Memo: map[string]any{"vmType": body.SystemVMType},
	})
}
