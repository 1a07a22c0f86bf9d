package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"

	"gorm.io/gorm"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/diagnostics"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// The commands of the operations that came after the lifecycle ones: router upgrades,
// diagnostics, migrate and scale, certificates, consoles and templates. Each one translates
// CloudStack's parameters into the body of its REST operation and runs that operation
// (csCall.restCall) through the operation's own parameter check and handler.

// csOperationCommands are the table entries of these commands (csCommandTable appends them).
func csOperationCommands() []*csCommand {
	return []*csCommand{
		{Name: "upgradeRouterTemplate", Description: "Upgrades routers to the current template: one sysvm router upgrade (batched, health-gated) as one job.",
			Role: models.RoleOperator, Run: (*csCall).upgradeRouterTemplate, Response: csFields("jobid"),
			Params: []csParamSpec{csP("id", "uuid", "upgrade this router"), csP("clusterid", "uuid", "upgrade the routers of this cluster"),
				csP("podid", "uuid", "upgrade the routers of this pod"), csP("zoneid", "uuid", "upgrade the routers of this zone"),
				csP("domainid", "uuid", "upgrade the routers of this domain (with account: of that account)"),
				csP("account", "string", "upgrade the routers of this account (with domainid)")}},
		{Name: "patchSystemVm", Description: "Live-patches a virtual router: the platform's agent and scripts bundle goes over SSH to the running router, which installs it and restarts its services without a reboot (then its health gate), as one sysvm router upgrade in mode patch. CPVM and SSVM are not patched by sysvm yet.",
			Async: true, Role: models.RoleOperator, Run: (*csCall).patchSystemVM, Response: csFields("success:boolean", "displaytext"),
			Params: []csParamSpec{csRequired("id", "uuid", "the router to patch"),
				csP("forced", "boolean", "copy the scripts and restart even when the router runs the current bundle already (default false)")}},
		{Name: "runDiagnostics", Description: "Runs ping, traceroute or arping inside a system VM or virtual router.",
			Async: true, Role: models.RoleOperator, Run: (*csCall).runDiagnostics, Response: csFields("stdout", "stderr", "exitcode"),
			Params: []csParamSpec{csRequired("targetid", "uuid", "the system VM or router"),
				csRequired("ipaddress", "string", "the address to diagnose (IPv4 or IPv6)"),
				csRequired("type", "string", "ping, traceroute or arping"),
				csP("params", "string", "extra parameters of the command (letters, digits, '-', '.' and spaces)")}},
		{Name: "getDiagnosticsData", Description: "Collects files and command outputs of a system VM or router into an archive to download.",
			Async: true, Role: models.RoleOperator, Run: (*csCall).getDiagnosticsData, Response: csFields("url"),
			Params: []csParamSpec{csRequired("targetid", "uuid", "the system VM or router"),
				csP("files", "list", "extra files to collect (absolute paths, comma-separated)")}},
		{Name: "migrateSystemVm", Description: "Migrates a system VM or router to another host of its cluster.",
			Async: true, Role: models.RoleOperator, Run: (*csCall).migrateSystemVM, Response: csSystemVMFields,
			Params: []csParamSpec{csRequired("virtualmachineid", "uuid", "the system VM or router"),
				csP("hostid", "uuid", "the destination host (absent: sysvm chooses one of the cluster)")}},
		{Name: "scaleSystemVm", Description: "Scales a system VM or router to a service offering.",
			Async: true, Role: models.RoleOperator, Run: (*csCall).scaleSystemVM, Response: csSystemVMFields,
			Params: []csParamSpec{csRequired("id", "uuid", "the system VM or router"),
				csRequired("serviceofferingid", "uuid", "the service offering to scale to")}},
		{Name: "uploadCustomCertificate", Description: "Uploads a console proxy certificate (server with its key, or a root or intermediate CA). Stored at once; roll it out with POST /api/v1/certificates/rotate.",
			Role: models.RoleAdmin, Run: (*csCall).uploadCustomCertificate, Response: csFields("message"),
			Params: []csParamSpec{csRequired("certificate", "string", "the certificate (PEM)"),
				csP("privatekey", "string", "the server certificate's unencrypted PKCS#8 private key (PEM)"),
				csP("domainsuffix", "string", "the server certificate's domain suffix (*.example.com)"),
				csP("name", "string", "the name of a CA certificate"),
				csP("id", "integer", "the chain position of a CA certificate (1 the root, 2... intermediates)")}},
		{Name: "createConsoleEndpoint", Description: "Creates a console URL (through a console proxy VM of the VM's zone) with a single-use token.",
			Role: models.RoleOperator, Run: (*csCall).createConsoleEndpoint, Response: csFields("success:boolean", "details", "url"),
			Params: []csParamSpec{csRequired("virtualmachineid", "uuid", "the system VM or guest VM")}},
		{Name: "registerTemplate", Description: "Registers a system VM template and starts its rollout (download, seed, switch).",
			Role: models.RoleAdmin, Run: (*csCall).registerTemplate, Response: csTemplateFields,
			Params: []csParamSpec{csRequired("name", "string", "the template's name"), csRequired("url", "string", "where to download it"),
				csRequired("format", "string", "QCOW2, RAW, OVA, VHD or VHDX"), csRequired("hypervisor", "string", "KVM, VMware, XenServer or Hyperv"),
				csP("zoneid", "uuid", "the zone (-1 or absent: every zone)"), csP("checksum", "string", "the image's checksum ({ALGO}hex, or MD5 hex)"),
				csP("templatetype", "string", "SYSTEM or ROUTING"), csP("displaytext", "string", "accepted; sysvm shows the name"),
				csP("bits", "integer", "32 or 64 (default 64)"),
				csP("version", "string", "sysvm: the release the template carries (absent: the first release number in name, then in the file name of url)"),
				csP("ostypeid", "uuid", "accepted, no effect on a system template"), csP("ispublic", "boolean", "accepted, no effect"),
				csP("isfeatured", "boolean", "accepted, no effect"), csP("isextractable", "boolean", "accepted, no effect"),
				csP("passwordenabled", "boolean", "accepted, no effect"), csP("requireshvm", "boolean", "accepted, no effect")}},
	}
}

var csTemplateFields = csFields("id", "name", "displaytext", "format", "templatetype", "hypervisor", "zoneid", "zonename", "isready:boolean",
	"status", "size:long", "checksum", "url", "created:date", "ispublic:boolean", "isfeatured:boolean", "crossZones:boolean")

// csOperationJobs are the command classes of these operations' jobs.
var csOperationJobs = map[string]string{
	workflows.RouterUpgradeOperationKind:   "org.apache.cloudstack.api.command.admin.router.UpgradeRouterTemplateCmd",
	workflows.DiagnosticsOperationKind:     "org.apache.cloudstack.api.command.admin.diagnostics.RunDiagnosticsCmd",
	workflows.DiagnosticsDataOperationKind: "org.apache.cloudstack.api.command.admin.diagnostics.GetDiagnosticsDataCmd",
	workflows.MigrateOperationKind:         "org.apache.cloudstack.api.command.admin.systemvm.MigrateSystemVMCmd",
	workflows.ScaleOperationKind:           "org.apache.cloudstack.api.command.admin.systemvm.ScaleSystemVMCmd",
	workflows.TemplateRolloutOperationKind: "org.apache.cloudstack.api.command.admin.template.RegisterTemplateCmdByAdmin",
}

// started is the operation of a REST answer of 202.
type started struct {
	Operation OperationView `json:"operation"`
}

// csStarted answers an async command: its job and the object it acts on.
func csStarted(op OperationView) map[string]any {
	return map[string]any{"jobid": op.ID, "id": op.TargetID}
}

func (c *csCall) upgradeRouterTemplate(ctx context.Context) (map[string]any, error) {
	body := map[string]any{}
	for _, n := range []string{"id", "clusterid", "podid", "zoneid", "domainid", "account"} {
		if v := c.get(n); v != "" {
			body[n] = v
		}
	}
	if c.get("account") != "" && c.get("domainid") == "" {
		return nil, csParamError("account needs domainid (an account's name is unique only in its domain)")
	}
	var out started
	if err := c.restCall(ctx, "upgradeRouterTemplate", nil, nil, body, &out); err != nil {
		return nil, err
	}
	// CloudStack answers the list of the jobs it started, one per router; sysvm runs the whole
	// upgrade (batched, health-gated) as one operation, so the list holds that one job.
	return csList("asyncjobs", 1, []map[string]string{{"jobid": out.Operation.ID}}), nil
}

// patchSystemVM is patchSystemVm: a router upgrade of that one router in mode patch, taken
// whether or not it requires upgrade (CloudStack patches any Running system VM asked); forced
// re-installs a bundle the router runs already.
func (c *csCall) patchSystemVM(ctx context.Context) (map[string]any, error) {
	id := c.get("id")
	var vm models.SystemVM
	err := c.s.store.DB.WithContext(ctx).Select("id, type").Where("id = ?", id).Take(&vm).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, csParamError("id: no system VM or router with id %s", id)
	}
	if err != nil {
		return nil, Internal(err, "read system VM %s", id)
	}
	if !vm.IsRouter() {
		return nil, csParamError("id: %s is a %s: sysvm live-patches virtual routers only (recreate a CPVM or SSVM to update it)", id, vm.Type)
	}
	body := map[string]any{"id": id, "mode": workflows.UpgradeModePatch, "force": true}
	if v := c.get("forced"); v != "" {
		b, err := parseBool("forced", v)
		if err != nil {
			return nil, err
		}
		body["forced"] = b
	}
	var out started
	if err := c.restCall(ctx, "upgradeRouterTemplate", nil, nil, body, &out); err != nil {
		return nil, err
	}
	return csStarted(out.Operation), nil
}

// csVMPath picks the REST operation of a VM by what it is: op+"Router" for a virtual router,
// op+"SystemVM" for an SSVM or CPVM. An unknown ID is a 431 naming the parameter.
func (c *csCall) csVMPath(ctx context.Context, param, op string) (string, error) {
	id := c.get(param)
	var vm models.SystemVM
	err := c.s.store.DB.WithContext(ctx).Select("id, type").Where("id = ?", id).Take(&vm).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return "", csParamError("%s: no system VM or router with id %s", param, id)
	}
	if err != nil {
		return "", Internal(err, "read system VM %s", id)
	}
	if vm.IsRouter() {
		return op + "Router", nil
	}
	return op + "SystemVM", nil
}

func (c *csCall) runDiagnostics(ctx context.Context) (map[string]any, error) {
	op, err := c.csVMPath(ctx, "targetid", "runDiagnostics")
	if err != nil {
		return nil, err
	}
	body := map[string]any{"type": strings.ToLower(c.get("type")), "ipaddress": c.get("ipaddress"), "params": c.get("params")}
	var out started
	if err := c.restCall(ctx, op, map[string]string{"id": c.get("targetid")}, nil, body, &out); err != nil {
		return nil, err
	}
	return csStarted(out.Operation), nil
}

func (c *csCall) getDiagnosticsData(ctx context.Context) (map[string]any, error) {
	op, err := c.csVMPath(ctx, "targetid", "getDiagnosticsData")
	if err != nil {
		return nil, err
	}
	files := []string{}
	for _, f := range strings.Split(c.get("files"), ",") {
		if f = strings.TrimSpace(f); f != "" {
			files = append(files, f)
		}
	}
	var out started
	if err := c.restCall(ctx, op, map[string]string{"id": c.get("targetid")}, nil, map[string]any{"files": files}, &out); err != nil {
		return nil, err
	}
	return csStarted(out.Operation), nil
}

func (c *csCall) migrateSystemVM(ctx context.Context) (map[string]any, error) {
	op, err := c.csVMPath(ctx, "virtualmachineid", "migrate")
	if err != nil {
		return nil, err
	}
	body := map[string]any{}
	if h := c.get("hostid"); h != "" {
		body["hostid"] = h
	}
	var out started
	if err := c.restCall(ctx, op, map[string]string{"id": c.get("virtualmachineid")}, nil, body, &out); err != nil {
		return nil, err
	}
	return csStarted(out.Operation), nil
}

func (c *csCall) scaleSystemVM(ctx context.Context) (map[string]any, error) {
	op, err := c.csVMPath(ctx, "id", "scale")
	if err != nil {
		return nil, err
	}
	var out started
	if err := c.restCall(ctx, op, map[string]string{"id": c.get("id")}, nil,
		map[string]any{"serviceofferingid": c.get("serviceofferingid")}, &out); err != nil {
		return nil, err
	}
	return csStarted(out.Operation), nil
}

func (c *csCall) uploadCustomCertificate(ctx context.Context) (map[string]any, error) {
	body := map[string]any{"certificate": c.get("certificate"), "privatekey": c.get("privatekey"),
		"domainsuffix": c.get("domainsuffix"), "name": c.get("name")}
	if v := c.get("id"); v != "" {
		n, err := csInt("id", v)
		if err != nil {
			return nil, err
		}
		body["id"] = n
	}
	var out struct {
		Certificate certificateView `json:"certificate"`
		Replaced    string          `json:"replaced"`
		Warnings    []string        `json:"warnings"`
	}
	if err := c.restCall(ctx, "uploadCustomCertificate", nil, nil, body, &out); err != nil {
		return nil, err
	}
	msg := "Certificate " + out.Certificate.Name + " version " + strconv.Itoa(out.Certificate.Version) + " (" + out.Certificate.Kind + ") has been stored; " +
		"no system VM was touched: roll it out with POST /api/v1/certificates/rotate"
	if len(out.Warnings) > 0 {
		msg += " (warnings: " + strings.Join(out.Warnings, "; ") + ")"
	}
	return map[string]any{"customcertificate": map[string]any{"message": msg}}, nil
}

func (c *csCall) createConsoleEndpoint(ctx context.Context) (map[string]any, error) {
	var out consoleAnswer
	if err := c.restCall(ctx, "createConsoleEndpoint", nil, nil, map[string]any{"vmid": c.get("virtualmachineid")}, &out); err != nil {
		return nil, csRenameField(err, "vmid", "virtualmachineid")
	}
	return map[string]any{"consoleendpoint": map[string]any{"success": true, "url": out.URL,
		"details": "through console proxy " + out.Proxy + "; the token is accepted once, until " + csTime(out.Expires)}}, nil
}

// csReleasePattern finds a release number (4.19.0, 4.19.0.1) in a template's name or URL.
var csReleasePattern = regexp.MustCompile(`[0-9]+\.[0-9]+\.[0-9]+(\.[0-9]+)?`)

func (c *csCall) registerTemplate(ctx context.Context) (map[string]any, error) {
	version := c.get("version")
	if version == "" {
		if v := csReleasePattern.FindString(c.get("name")); v != "" {
			version = v
		} else if u, err := url.Parse(c.get("url")); err == nil {
			version = csReleasePattern.FindString(path.Base(u.Path)) // the file's name: never the host's address
		}
	}
	zone := c.get("zoneid")
	if zone == "-1" {
		zone = ""
	}
	body := map[string]any{"name": c.get("name"), "displaytext": c.get("displaytext"), "url": c.get("url"), "format": c.get("format"),
		"hypervisor": c.get("hypervisor"), "zoneid": zone, "checksum": c.get("checksum"), "templatetype": strings.ToUpper(c.get("templatetype")),
		"version": version}
	if v := c.get("bits"); v != "" {
		n, err := csInt("bits", v)
		if err != nil {
			return nil, err
		}
		body["bits"] = n
	}
	var out struct {
		Template  models.Template `json:"template"`
		Operation *OperationView  `json:"operation"`
	}
	if err := c.restCall(ctx, "registerTemplate", nil, nil, body, &out); err != nil {
		return nil, err
	}
	return csList("template", 1, c.csTemplates(ctx, []csTemplateItem{{out.Template}})), nil
}

// csOperationResult is the jobresult of a completed job of these operations, or nil for the
// others (jobTarget answers those).
func (c *csCall) csOperationResult(ctx context.Context, op OperationView) map[string]any {
	switch op.Kind {
	case workflows.DiagnosticsOperationKind:
		var r diagnostics.Result
		if err := json.Unmarshal(op.Result, &r); err != nil {
			return map[string]any{"diagnostics": map[string]any{}}
		}
		return map[string]any{"diagnostics": map[string]any{"stdout": r.Stdout, "stderr": r.Stderr, "exitcode": strconv.Itoa(r.ExitCode)}}
	case workflows.DiagnosticsDataOperationKind:
		var r activities.DiagnosticsArchiveInfo
		if err := json.Unmarshal(op.Result, &r); err != nil || r.ArchiveID == "" {
			return map[string]any{"diagnostics": map[string]any{}}
		}
		var a DiagnosticsArchive
		if err := c.restCall(ctx, "getDiagnosticsArchive", map[string]string{"id": r.ArchiveID}, nil, nil, &a); err != nil {
			return map[string]any{"diagnostics": map[string]any{"details": err.Error()}}
		}
		return map[string]any{"diagnostics": map[string]any{"url": c.origin + a.URL}}
	case workflows.RouterUpgradeOperationKind:
		// A router that failed its upgrade or patch does not fail the operation (the budget
		// decides what happens next): the job says so in success and displaytext.
		var r workflows.RouterUpgradeResult
		var v any
		if len(op.Result) == 0 || json.Unmarshal(op.Result, &r) != nil || json.Unmarshal(op.Result, &v) != nil {
			return map[string]any{"success": true}
		}
		text := make([]string, 0, len(r.Routers))
		for _, x := range r.Routers {
			text = append(text, strings.TrimSpace(x.Name+" "+x.State+": "+x.Reason))
		}
		return map[string]any{"success": r.Counts[workflows.UpgradeFailed] == 0, "displaytext": strings.Join(text, "; "), "result": v}
	case workflows.TemplateRolloutOperationKind:
		var v any
		if len(op.Result) > 0 && json.Unmarshal(op.Result, &v) == nil {
			return map[string]any{"success": true, "result": v}
		}
		return map[string]any{"success": true}
	}
	return nil
}

// csInt parses an integer parameter, naming it when it is not one.
func csInt(name, v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, csParamError("%s must be an integer, got %q", name, v)
	}
	return n, nil
}

// csRenameField gives a REST refusal of field from the parameter's CloudStack name instead.
func csRenameField(err error, field, param string) error {
	var ae *Error
	if errors.As(err, &ae) && ae.Field == field {
		ae.Field = param
		ae.Message = strings.ReplaceAll(ae.Message, field, param)
	}
	return err
}
