package api

import (
	"context"
	"errors"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// The command table. Each command translates its parameters to a REST operation's, runs it
// (csCall.restCall) and writes the answer with CloudStack's field names. The commands of the
// later operations (upgradeRouterTemplate, runDiagnostics, getDiagnosticsData, migrateSystemVm,
// scaleSystemVm, uploadCustomCertificate, createConsoleEndpoint, registerTemplate) are one entry
// each in csOperationCommands (cloudstack_ops.go).

func csP(name, typ, desc string) csParamSpec {
	return csParamSpec{Name: name, Type: typ, Description: desc}
}

func csRequired(name, typ, desc string) csParamSpec {
	return csParamSpec{Name: name, Type: typ, Description: desc, Required: true}
}

func csFields(spec ...string) []csFieldSpec {
	out := make([]csFieldSpec, 0, len(spec))
	for _, s := range spec {
		name, typ, _ := strings.Cut(s, ":")
		if typ == "" {
			typ = "string"
		}
		out = append(out, csFieldSpec{Name: name, Type: typ})
	}
	return out
}

var (
	csRouterFields = csFields("id", "name", "zoneid", "zonename", "podid", "podname", "hostid", "hostname", "hypervisor",
		"linklocalip", "linklocalmacaddress", "publicip", "publicmacaddress", "guestnetworkid", "guestnetworkname",
		"templateid", "templatename", "created:date", "state", "account", "domainid", "domain", "serviceofferingid",
		"serviceofferingname", "isredundantrouter:boolean", "redundantstate", "version", "vpcid", "vpcname", "role",
		"requiresupgrade:boolean", "healthchecksfailed:boolean", "healthcheckresults:list", "scriptsversion", "softwareversion")
	csSystemVMFields = csFields("id", "name", "systemvmtype", "zoneid", "zonename", "podid", "podname", "hostid", "hostname",
		"hypervisor", "privateip", "privatemacaddress", "publicip", "publicmacaddress", "linklocalip", "linklocalmacaddress",
		"templateid", "templatename", "created:date", "state", "activeviewersessions:integer", "version",
		"serviceofferingid", "serviceofferingname")
	csJobFields = csFields("jobid", "cmd", "jobstatus:integer", "jobprocstatus:integer", "jobresultcode:integer",
		"jobresulttype", "jobresult:object", "jobinstancetype", "jobinstanceid", "created:date", "completed:date")
)

func csLifecycleCommand(name, desc string, typ string, action workflows.LifecycleAction) *csCommand {
	ps := []csParamSpec{csRequired("id", "uuid", "the ID of the "+map[string]string{TargetRouter: "router", TargetSystemVM: "system VM"}[typ])}
	if action == workflows.ActionStop {
		ps = append(ps, csP("forced", "boolean", "stop without a clean shutdown (default false)"))
	}
	resp := csSystemVMFields
	if typ == TargetRouter {
		resp = csRouterFields
	}
	return &csCommand{Name: name, Description: desc, Async: true, Role: models.RoleOperator, Params: ps, Response: resp,
		Run: func(c *csCall, ctx context.Context) (map[string]any, error) { return c.lifecycle(ctx, typ, action) }}
}

func csCommandTable() []*csCommand {
	listRouterParams := []csParamSpec{csP("id", "uuid", "the ID of the router"), csP("zoneid", "uuid", "the zone"),
		csP("podid", "uuid", "the pod"), csP("clusterid", "uuid", "the cluster"), csP("hostid", "uuid", "the host"),
		csP("networkid", "uuid", "the guest network"), csP("vpcid", "uuid", "the VPC"),
		csP("account", "string", "the account's name (with domainid)"), csP("domainid", "uuid", "the domain"),
		csP("state", "string", "the router's state"), csP("name", "string", "the router's name"),
		csP("keyword", "string", "part of the name"), csP("version", "string", "the template version"),
		csP("hypervisor", "string", "the hypervisor type"),
		csP("requiresupgrade", "boolean", "routers below minreq.sysvmtemplate.version (true) or not (false)"),
		csP("healthchecksfailed", "boolean", "routers whose last result of some health check failed"),
		csP("fetchhealthcheckresults", "boolean", "include healthcheckresults (default false)")}
	return append([]*csCommand{
		{Name: "listRouters", Description: "List virtual routers.", Role: models.RoleReadOnly, Paged: true,
			Params: listRouterParams, Response: csRouterFields, Run: (*csCall).listRouters},
		{Name: "listSystemVms", Description: "List system virtual machines (secondary storage and console proxy VMs).",
			Role: models.RoleReadOnly, Paged: true, Response: csSystemVMFields, Run: (*csCall).listSystemVMs,
			Params: []csParamSpec{csP("id", "uuid", "the ID of the system VM"), csP("systemvmtype", "string", "secondarystoragevm or consoleproxy"),
				csP("zoneid", "uuid", "the zone"), csP("podid", "uuid", "the pod"), csP("hostid", "uuid", "the host"),
				csP("state", "string", "the state"), csP("name", "string", "the name"), csP("keyword", "string", "part of the name")}},
		csLifecycleCommand("startRouter", "Starts a router.", TargetRouter, workflows.ActionStart),
		csLifecycleCommand("stopRouter", "Stops a router.", TargetRouter, workflows.ActionStop),
		csLifecycleCommand("rebootRouter", "Reboots a router.", TargetRouter, workflows.ActionReboot),
		csLifecycleCommand("destroyRouter", "Destroys a router.", TargetRouter, workflows.ActionDestroy),
		csLifecycleCommand("startSystemVm", "Starts a system virtual machine.", TargetSystemVM, workflows.ActionStart),
		csLifecycleCommand("stopSystemVm", "Stops a system VM.", TargetSystemVM, workflows.ActionStop),
		csLifecycleCommand("rebootSystemVm", "Reboots a system VM.", TargetSystemVM, workflows.ActionReboot),
		csLifecycleCommand("destroySystemVm", "Destroys a system virtual machine.", TargetSystemVM, workflows.ActionDestroy),
		{Name: "restartNetwork", Description: "Restarts the network: reboots its routers, or recreates them with cleanup=true.",
			Async: true, Role: models.RoleOperator, Run: (*csCall).restartNetwork, Response: csFields("success:boolean"),
			Params: []csParamSpec{csRequired("id", "uuid", "the ID of the network"),
				csP("cleanup", "boolean", "recreate the routers instead of rebooting them (default false)")}},
		{Name: "getRouterHealthCheckResults", Description: "Returns the last result of each health check of a router.",
			Role: models.RoleReadOnly, Run: (*csCall).routerHealth,
			Response: csFields("routerid", "healthchecks:list"),
			Params: []csParamSpec{csRequired("routerid", "uuid", "the ID of the router"),
				csP("performfreshchecks", "boolean", "run the checks now (needs an operator key; default false)")}},
		{Name: "listConfigurations", Description: "Lists the settings with their values in effect.", Role: models.RoleReadOnly,
			Paged: true, Run: (*csCall).listConfigurations,
			Response: csFields("name", "value", "defaultvalue", "category", "description", "scope", "type", "isdynamic:boolean"),
			Params: []csParamSpec{csP("name", "string", "part of the setting name"), csP("category", "string", "the category"),
				csP("zoneid", "uuid", "values in effect in this zone"), csP("clusterid", "uuid", "values in effect in this cluster"),
				csP("accountid", "uuid", "values in effect for this account")}},
		{Name: "updateConfiguration", Description: "Updates a setting, globally or for a zone, cluster or account.",
			Role: models.RoleAdmin, Run: (*csCall).updateConfiguration,
			Response: csFields("name", "value", "defaultvalue", "category", "description", "scope", "type", "isdynamic:boolean"),
			Params: []csParamSpec{csRequired("name", "string", "the setting"), csRequired("value", "string", "its new value"),
				csP("zoneid", "uuid", "set it for this zone"), csP("clusterid", "uuid", "set it for this cluster"),
				csP("accountid", "uuid", "set it for this account")}},
		{Name: "listZones", Description: "Lists zones.", Role: models.RoleReadOnly, Paged: true, Run: (*csCall).listZones,
			Response: csFields("id", "name", "networktype", "allocationstate", "dns1", "internaldns1"),
			Params: []csParamSpec{csP("id", "uuid", "the zone"), csP("name", "string", "the name"), csP("keyword", "string", "part of the name"),
				csP("networktype", "string", "Advanced or Basic")}},
		{Name: "listPods", Description: "Lists pods.", Role: models.RoleReadOnly, Paged: true, Run: (*csCall).listPods,
			Response: csFields("id", "name", "zoneid", "zonename", "gateway", "netmask", "startip", "endip"),
			Params: []csParamSpec{csP("id", "uuid", "the pod"), csP("zoneid", "uuid", "the zone"), csP("name", "string", "the name"),
				csP("keyword", "string", "part of the name")}},
		{Name: "listClusters", Description: "Lists clusters.", Role: models.RoleReadOnly, Paged: true, Run: (*csCall).listClusters,
			Response: csFields("id", "name", "zoneid", "zonename", "podid", "podname", "hypervisortype", "clustertype", "allocationstate", "managedstate"),
			Params: []csParamSpec{csP("id", "uuid", "the cluster"), csP("zoneid", "uuid", "the zone"), csP("podid", "uuid", "the pod"),
				csP("hypervisor", "string", "the hypervisor type"), csP("allocationstate", "string", "Enabled or Disabled"),
				csP("name", "string", "the name"), csP("keyword", "string", "part of the name")}},
		{Name: "listHosts", Description: "Lists hosts.", Role: models.RoleReadOnly, Paged: true, Run: (*csCall).listHosts,
			Response: csFields("id", "name", "state", "type", "ipaddress", "zoneid", "zonename", "podid", "podname", "clusterid",
				"clustername", "hypervisor", "hypervisorversion", "cpunumber:integer", "cpuspeed:integer", "memorytotal:long", "created:date"),
			Params: []csParamSpec{csP("id", "uuid", "the host"), csP("zoneid", "uuid", "the zone"), csP("podid", "uuid", "the pod"),
				csP("clusterid", "uuid", "the cluster"), csP("hypervisor", "string", "the hypervisor type"), csP("state", "string", "the state"),
				csP("type", "string", "Routing (the only type sysvm has)"), csP("name", "string", "the name"), csP("keyword", "string", "part of the name")}},
		{Name: "listNetworks", Description: "Lists guest networks.", Role: models.RoleReadOnly, Paged: true, Run: (*csCall).listNetworks,
			Response: csFields("id", "name", "zoneid", "zonename", "type", "state", "gateway", "cidr", "domainid", "domain", "account",
				"vpcid", "redundantrouter:boolean", "service:list"),
			Params: []csParamSpec{csP("id", "uuid", "the network"), csP("zoneid", "uuid", "the zone"), csP("vpcid", "uuid", "the VPC"),
				csP("domainid", "uuid", "the domain"), csP("account", "string", "the account's name (with domainid)"),
				csP("type", "string", "Isolated, Shared or VPCTier"), csP("keyword", "string", "part of the name")}},
		{Name: "listEvents", Description: "Lists events, newest first.", Role: models.RoleReadOnly, Paged: true, Run: (*csCall).listEvents,
			Response: csFields("id", "type", "level", "description", "resourceid", "resourcetype", "created:date", "state"),
			Params: []csParamSpec{csP("id", "uuid", "the event"), csP("type", "string", "the event type"), csP("level", "string", "INFO, WARN or ERROR"),
				csP("startdate", "date", "events from this date (yyyy-MM-dd or yyyy-MM-dd HH:mm:ss, UTC)"),
				csP("enddate", "date", "events up to this date (yyyy-MM-dd or yyyy-MM-dd HH:mm:ss, UTC)"),
				csP("resourceid", "string", "events about this resource"), csP("resourcetype", "string", "events about this type of resource"),
				csP("keyword", "string", "part of the description")}},
		{Name: "listAlerts", Description: "Lists alerts, newest first.", Role: models.RoleReadOnly, Paged: true, Run: (*csCall).listAlerts,
			Response: csFields("id", "type", "name", "subject", "description", "sent:date"),
			Params:   []csParamSpec{csP("id", "uuid", "the alert"), csP("type", "string", "the alert type"), csP("keyword", "string", "part of the subject")}},
		{Name: "listTemplates", Description: "Lists templates.", Role: models.RoleReadOnly, Paged: true, Run: (*csCall).listTemplates,
			Response: csFields("id", "name", "displaytext", "format", "templatetype", "hypervisor", "zoneid", "zonename", "isready:boolean",
				"status", "size:long", "checksum", "url", "created:date", "ispublic:boolean", "isfeatured:boolean", "crossZones:boolean"),
			Params: []csParamSpec{csRequired("templatefilter", "string", "featured, self, selfexecutable, sharedexecutable, executable, community or all (sysvm lists every template for each)"),
				csP("id", "uuid", "the template"), csP("name", "string", "the name"), csP("keyword", "string", "part of the name"),
				csP("zoneid", "uuid", "the zone"), csP("hypervisor", "string", "the hypervisor type")}},
		{Name: "queryAsyncJobResult", Description: "Retrieves the current status of an asynchronous job (a sysvm operation).",
			Role: models.RoleReadOnly, Run: (*csCall).queryAsyncJobResult, Response: csJobFields,
			Params: []csParamSpec{csRequired("jobid", "uuid", "the ID of the job (the operation ID)")}},
		{Name: "listAsyncJobs", Description: "Lists asynchronous jobs (sysvm operations), newest first.", Role: models.RoleReadOnly,
			Paged: true, Run: (*csCall).listAsyncJobs, Response: csJobFields,
			Params: []csParamSpec{csP("startdate", "date", "jobs created from this date (yyyy-MM-dd or yyyy-MM-dd HH:mm:ss, UTC)")}},
		{Name: "listApis", Description: "Lists the commands this API serves, with their parameters and response fields.",
			Role: models.RoleReadOnly, Run: (*csCall).listApis, Response: csFields("name", "description", "isasync:boolean", "params:list", "response:list"),
			Params: []csParamSpec{csP("name", "string", "one command")}},
		{Name: "listCapabilities", Description: "Lists capabilities.", Role: models.RoleReadOnly, Run: (*csCall).listCapabilities,
			Response: csFields("capability:object")},
	}, csOperationCommands()...)
}

// Parameter translation helpers.

// query copies the given CloudStack parameters (same names) into REST query parameters.
func (c *csCall) query(names ...string) url.Values {
	q := url.Values{}
	for _, n := range names {
		if v := c.get(n); v != "" {
			q.Set(n, v)
		}
	}
	return q
}

// page adds page and pagesize.
func (c *csCall) page(q url.Values) url.Values {
	for _, n := range []string{"page", "pagesize"} {
		if v := c.get(n); v != "" {
			q.Set(n, v)
		}
	}
	return q
}

// accountID translates account (a name) with domainid into the account's ID.
func (c *csCall) accountID(ctx context.Context, q url.Values) error {
	name := c.get("account")
	if name == "" {
		return nil
	}
	db := c.s.store.DB.WithContext(ctx).Where("name = ?", name)
	if d := c.get("domainid"); d != "" {
		db = db.Where("domain_id = ?", d)
	}
	var accts []models.Account
	if err := db.Find(&accts).Error; err != nil {
		return Internal(err, "read account %s", name)
	}
	switch len(accts) {
	case 0:
		return csParamError("Unable to find account by name %s in domain %s", name, c.get("domainid"))
	case 1:
		q.Set("accountid", accts[0].ID)
		return nil
	}
	return csParamError("account %s exists in %d domains: give domainid too", name, len(accts))
}

// csNamed is what csListOf needs of a REST item.
type csNamed interface{ idName() (string, string) }

// csListOf runs a REST list, or with id the REST get of that one item (an unknown id is a
// 431, as CloudStack answers it); with id and other filters the item is listed only when the
// REST list with those filters holds it.
func csListOf[T csNamed](ctx context.Context, c *csCall, listOp, getOp string, q url.Values) (int64, []T, error) {
	id := c.get("id")
	if id == "" {
		var out ListResponse[T]
		if err := c.restCall(ctx, listOp, nil, c.page(q), nil, &out); err != nil {
			return 0, nil, err
		}
		return out.Count, out.Items, nil
	}
	var one T
	if err := c.restCall(ctx, getOp, map[string]string{"id": id}, nil, nil, &one); err != nil {
		return 0, nil, err
	}
	if len(q) > 0 {
		_, name := one.idName()
		q.Set("name", name)
		q.Set("pagesize", strconv.Itoa(MaxPageSize))
		var out ListResponse[T]
		if err := c.restCall(ctx, listOp, nil, q, nil, &out); err != nil {
			return 0, nil, err
		}
		found := false
		for _, it := range out.Items {
			if iid, _ := it.idName(); iid == id {
				found = true
			}
		}
		if !found {
			return 0, nil, nil
		}
	}
	return 1, []T{one}, nil
}

// names reads the names of rows of model by ID.
func (c *csCall) names(ctx context.Context, model any, ids ...string) map[string]string {
	out := map[string]string{}
	var want []string
	for _, id := range ids {
		if id != "" {
			want = append(want, id)
		}
	}
	if len(want) == 0 {
		return out
	}
	var rows []struct{ ID, Name string }
	if err := c.s.store.DB.WithContext(ctx).Model(model).Select("id, name").Where("id IN ?", want).Find(&rows).Error; err != nil {
		c.s.log.Warn("cloudstack: read names", "error", err)
		return out
	}
	for _, r := range rows {
		out[r.ID] = r.Name
	}
	return out
}

// Routers and system VMs.

func (r routerView) idName() (string, string) { return r.ID, r.Name }

// csHealthCheck is one health check result as CloudStack writes it.
type csHealthCheck struct {
	CheckName   string `json:"checkname"`
	CheckType   string `json:"checktype"`
	Success     bool   `json:"success"`
	LastUpdated string `json:"lastupdated"`
	Details     string `json:"details"`
}

func csHealthChecks(rs []models.HealthCheckResult) []csHealthCheck {
	out := make([]csHealthCheck, 0, len(rs))
	for _, r := range rs {
		out = append(out, csHealthCheck{CheckName: r.CheckName, CheckType: r.CheckType, Success: r.Success,
			LastUpdated: csTime(r.LastUpdated), Details: r.Details})
	}
	return out
}

// csRouter is a router as listRouters answers it (DomainRouterResponse).
type csRouter struct {
	ID                  string          `json:"id"`
	Name                string          `json:"name"`
	ZoneID              string          `json:"zoneid,omitempty"`
	ZoneName            string          `json:"zonename,omitempty"`
	PodID               string          `json:"podid,omitempty"`
	PodName             string          `json:"podname,omitempty"`
	HostID              string          `json:"hostid,omitempty"`
	HostName            string          `json:"hostname,omitempty"`
	Hypervisor          string          `json:"hypervisor,omitempty"`
	LinkLocalIP         string          `json:"linklocalip,omitempty"`
	LinkLocalMAC        string          `json:"linklocalmacaddress,omitempty"`
	PublicIP            string          `json:"publicip,omitempty"`
	PublicMAC           string          `json:"publicmacaddress,omitempty"`
	GuestNetworkID      string          `json:"guestnetworkid,omitempty"`
	GuestNetworkName    string          `json:"guestnetworkname,omitempty"`
	TemplateID          string          `json:"templateid,omitempty"`
	TemplateName        string          `json:"templatename,omitempty"`
	Created             string          `json:"created"`
	State               string          `json:"state"`
	Account             string          `json:"account,omitempty"`
	DomainID            string          `json:"domainid,omitempty"`
	Domain              string          `json:"domain,omitempty"`
	ServiceOfferingID   string          `json:"serviceofferingid,omitempty"`
	ServiceOfferingName string          `json:"serviceofferingname,omitempty"`
	IsRedundant         bool            `json:"isredundantrouter"`
	RedundantState      string          `json:"redundantstate,omitempty"`
	Version             string          `json:"version,omitempty"`
	VPCID               string          `json:"vpcid,omitempty"`
	VPCName             string          `json:"vpcname,omitempty"`
	Role                string          `json:"role"`
	RequiresUpgrade     bool            `json:"requiresupgrade"`
	HealthChecksFailed  bool            `json:"healthchecksfailed"`
	HealthCheckResults  []csHealthCheck `json:"healthcheckresults,omitempty"`
	// ScriptsVersion and SoftwareVersion are set once the router was live-patched
	// (patchSystemVm).
	ScriptsVersion  string `json:"scriptsversion,omitempty"`
	SoftwareVersion string `json:"softwareversion,omitempty"`
}

// csRouters writes REST routers with CloudStack's fields and the names of what they refer to.
func (c *csCall) csRouters(ctx context.Context, rs []routerView, withHealth bool) ([]csRouter, error) {
	var zones, pods, hosts, nets, tpls, accts, doms, offs, vpcs []string
	for _, r := range rs {
		zones, pods, hosts, nets = append(zones, r.ZoneID), append(pods, r.PodID), append(hosts, r.HostID), append(nets, r.NetworkID)
		tpls, accts, doms = append(tpls, r.TemplateID), append(accts, r.AccountID), append(doms, r.DomainID)
		offs, vpcs = append(offs, r.ServiceOfferingID), append(vpcs, r.VPCID)
	}
	zn, pn, hn := c.names(ctx, &models.Zone{}, zones...), c.names(ctx, &models.Pod{}, pods...), c.names(ctx, &models.Host{}, hosts...)
	nn, tn, an := c.names(ctx, &models.Network{}, nets...), c.names(ctx, &models.Template{}, tpls...), c.names(ctx, &models.Account{}, accts...)
	dn, on, vn := c.names(ctx, &models.Domain{}, doms...), c.names(ctx, &models.ServiceOffering{}, offs...), c.names(ctx, &models.VPC{}, vpcs...)
	health := map[string][]models.HealthCheckResult{}
	if withHealth && len(rs) > 0 {
		var ids []string
		for _, r := range rs {
			ids = append(ids, r.ID)
		}
		var res []models.HealthCheckResult
		if err := c.s.store.DB.WithContext(ctx).Where("router_id IN ?", ids).Order("check_type, check_name").Find(&res).Error; err != nil {
			return nil, Internal(err, "read health check results")
		}
		for _, h := range res {
			health[h.RouterID] = append(health[h.RouterID], h)
		}
	}
	out := make([]csRouter, 0, len(rs))
	for _, r := range rs {
		cr := csRouter{ID: r.ID, Name: r.Name, ZoneID: r.ZoneID, ZoneName: zn[r.ZoneID], PodID: r.PodID, PodName: pn[r.PodID],
			HostID: r.HostID, HostName: hn[r.HostID], Hypervisor: r.HypervisorType, LinkLocalIP: r.LinkLocalIP,
			LinkLocalMAC: r.LinkLocalMAC, PublicIP: r.PublicIP, PublicMAC: r.PublicMAC, GuestNetworkID: r.NetworkID,
			GuestNetworkName: nn[r.NetworkID], TemplateID: r.TemplateID, TemplateName: tn[r.TemplateID], Created: csTime(r.CreatedAt),
			State: r.State, Account: an[r.AccountID], DomainID: r.DomainID, Domain: dn[r.DomainID],
			ServiceOfferingID: r.ServiceOfferingID, ServiceOfferingName: on[r.ServiceOfferingID], IsRedundant: r.IsRedundant,
			RedundantState: r.RedundantState, Version: r.Version, VPCID: r.VPCID, VPCName: vn[r.VPCID], Role: "VIRTUAL_ROUTER",
			RequiresUpgrade: r.RequiresUpgrade, HealthChecksFailed: r.HealthChecksFailed,
			ScriptsVersion: r.ScriptsVersion, SoftwareVersion: r.SoftwareVersion}
		if r.IsRedundant && cr.RedundantState == "" {
			cr.RedundantState = models.RedundantUnknown
		}
		if withHealth {
			cr.HealthCheckResults = csHealthChecks(health[r.ID])
		}
		out = append(out, cr)
	}
	return out, nil
}

func (c *csCall) listRouters(ctx context.Context) (map[string]any, error) {
	q := c.query("zoneid", "podid", "clusterid", "hostid", "networkid", "vpcid", "domainid", "state", "name", "keyword",
		"version", "hypervisor", "requiresupgrade", "healthchecksfailed")
	if err := c.accountID(ctx, q); err != nil {
		return nil, err
	}
	withHealth := false
	if v := c.get("fetchhealthcheckresults"); v != "" {
		b, err := parseBool("fetchhealthcheckresults", v)
		if err != nil {
			return nil, err
		}
		withHealth = b
	}
	n, rs, err := csListOf[routerView](ctx, c, "listRouters", "getRouter", q)
	if err != nil {
		return nil, err
	}
	out, err := c.csRouters(ctx, rs, withHealth)
	if err != nil {
		return nil, err
	}
	return csList("router", n, out), nil
}

// csSysVMItem is a system VM as the REST API answers it.
type csSysVMItem struct{ models.SystemVM }

func (v csSysVMItem) idName() (string, string) { return v.ID, v.Name }

// csSystemVM is a system VM as listSystemVms answers it (SystemVmResponse).
type csSystemVM struct {
	ID                  string `json:"id"`
	Name                string `json:"name"`
	SystemVMType        string `json:"systemvmtype"`
	ZoneID              string `json:"zoneid,omitempty"`
	ZoneName            string `json:"zonename,omitempty"`
	PodID               string `json:"podid,omitempty"`
	PodName             string `json:"podname,omitempty"`
	HostID              string `json:"hostid,omitempty"`
	HostName            string `json:"hostname,omitempty"`
	Hypervisor          string `json:"hypervisor,omitempty"`
	PrivateIP           string `json:"privateip,omitempty"`
	PrivateMAC          string `json:"privatemacaddress,omitempty"`
	PublicIP            string `json:"publicip,omitempty"`
	PublicMAC           string `json:"publicmacaddress,omitempty"`
	LinkLocalIP         string `json:"linklocalip,omitempty"`
	LinkLocalMAC        string `json:"linklocalmacaddress,omitempty"`
	TemplateID          string `json:"templateid,omitempty"`
	TemplateName        string `json:"templatename,omitempty"`
	Created             string `json:"created"`
	State               string `json:"state"`
	ActiveViewers       int    `json:"activeviewersessions"`
	Version             string `json:"version,omitempty"`
	ServiceOfferingID   string `json:"serviceofferingid,omitempty"`
	ServiceOfferingName string `json:"serviceofferingname,omitempty"`
}

func (c *csCall) csSystemVMs(ctx context.Context, vs []csSysVMItem) []csSystemVM {
	var zones, pods, hosts, tpls, offs []string
	for _, v := range vs {
		zones, pods, hosts = append(zones, v.ZoneID), append(pods, v.PodID), append(hosts, v.HostID)
		tpls, offs = append(tpls, v.TemplateID), append(offs, v.ServiceOfferingID)
	}
	zn, pn, hn := c.names(ctx, &models.Zone{}, zones...), c.names(ctx, &models.Pod{}, pods...), c.names(ctx, &models.Host{}, hosts...)
	tn, on := c.names(ctx, &models.Template{}, tpls...), c.names(ctx, &models.ServiceOffering{}, offs...)
	out := make([]csSystemVM, 0, len(vs))
	for _, v := range vs {
		out = append(out, csSystemVM{ID: v.ID, Name: v.Name, SystemVMType: v.Type, ZoneID: v.ZoneID, ZoneName: zn[v.ZoneID],
			PodID: v.PodID, PodName: pn[v.PodID], HostID: v.HostID, HostName: hn[v.HostID], Hypervisor: v.HypervisorType,
			PrivateIP: v.PrivateIP, PrivateMAC: v.PrivateMAC, PublicIP: v.PublicIP, PublicMAC: v.PublicMAC,
			LinkLocalIP: v.LinkLocalIP, LinkLocalMAC: v.LinkLocalMAC, TemplateID: v.TemplateID, TemplateName: tn[v.TemplateID],
			Created: csTime(v.CreatedAt), State: v.State, ActiveViewers: v.ActiveViewers, Version: v.Version,
			ServiceOfferingID: v.ServiceOfferingID, ServiceOfferingName: on[v.ServiceOfferingID]})
	}
	return out
}

func (c *csCall) listSystemVMs(ctx context.Context) (map[string]any, error) {
	q := c.query("systemvmtype", "zoneid", "podid", "hostid", "state", "name", "keyword")
	n, vs, err := csListOf[csSysVMItem](ctx, c, "listSystemVMs", "getSystemVM", q)
	if err != nil {
		return nil, err
	}
	return csList("systemvm", n, c.csSystemVMs(ctx, vs)), nil
}

// lifecycle starts a lifecycle operation through the REST operation (startRouter, ...) and
// answers its job.
func (c *csCall) lifecycle(ctx context.Context, typ string, action workflows.LifecycleAction) (map[string]any, error) {
	op := string(action) + "Router"
	if typ == TargetSystemVM {
		op = string(action) + "SystemVM"
	}
	var body any
	if v := c.get("forced"); v != "" {
		b, err := parseBool("forced", v)
		if err != nil {
			return nil, err
		}
		body = map[string]any{"forced": b}
	}
	var out struct {
		Operation OperationView `json:"operation"`
	}
	if err := c.restCall(ctx, op, map[string]string{"id": c.get("id")}, nil, body, &out); err != nil {
		return nil, err
	}
	return map[string]any{"jobid": out.Operation.ID, "id": out.Operation.TargetID}, nil
}

func (c *csCall) restartNetwork(ctx context.Context) (map[string]any, error) {
	var out struct {
		Operation OperationView `json:"operation"`
	}
	if err := c.restCall(ctx, "restartNetwork", map[string]string{"id": c.get("id")}, c.query("cleanup"), nil, &out); err != nil {
		return nil, err
	}
	return map[string]any{"jobid": out.Operation.ID, "id": out.Operation.TargetID}, nil
}

func (c *csCall) routerHealth(ctx context.Context) (map[string]any, error) {
	op := "getRouterHealthCheckResults"
	if v := c.get("performfreshchecks"); v != "" {
		b, err := parseBool("performfreshchecks", v)
		if err != nil {
			return nil, err
		}
		if b {
			op = "runRouterHealthChecks"
		}
	}
	var out RouterHealthChecks
	if err := c.restCall(ctx, op, map[string]string{"id": c.get("routerid")}, nil, nil, &out); err != nil {
		return nil, err
	}
	return map[string]any{"routerhealthchecks": map[string]any{"routerid": out.RouterID, "healthchecks": csHealthChecks(out.Results)}}, nil
}

// Settings.

// csConfiguration is a setting as listConfigurations answers it (ConfigurationResponse).
type csConfiguration struct {
	Name         string `json:"name"`
	Value        string `json:"value"`
	DefaultValue string `json:"defaultvalue"`
	Category     string `json:"category"`
	Description  string `json:"description"`
	Scope        string `json:"scope"`
	Type         string `json:"type"`
	IsDynamic    bool   `json:"isdynamic"`
	DisplayText  string `json:"displaytext"`
}

func csConfig(v models.Value) csConfiguration {
	typ := string(v.Kind)
	switch v.Kind {
	case models.KindBool:
		typ = "Boolean"
	case models.KindInt:
		typ = "Integer"
	case models.KindString, models.KindList:
		typ = "String"
	}
	scope := strings.ToLower(v.Scope)
	if scope == "default" || scope == "" {
		scope = models.ScopeGlobal
	}
	return csConfiguration{Name: v.Name, Value: v.Value, DefaultValue: v.Default, Category: v.Category,
		Description: v.Description, Scope: strings.ToLower(scope), Type: typ, IsDynamic: true, DisplayText: v.Name}
}

func (c *csCall) listConfigurations(ctx context.Context) (map[string]any, error) {
	var out ListResponse[models.Value]
	if err := c.restCall(ctx, "listSettings", nil, c.page(c.query("name", "category", "zoneid", "clusterid", "accountid")), nil, &out); err != nil {
		return nil, err
	}
	items := make([]csConfiguration, 0, len(out.Items))
	for _, v := range out.Items {
		items = append(items, csConfig(v))
	}
	return csList("configuration", out.Count, items), nil
}

func (c *csCall) updateConfiguration(ctx context.Context) (map[string]any, error) {
	body := map[string]any{"value": c.get("value")}
	given := 0
	for _, sc := range []struct{ param, scope string }{{"zoneid", models.ScopeZone}, {"clusterid", models.ScopeCluster}, {"accountid", models.ScopeAccount}} {
		if v := c.get(sc.param); v != "" {
			body["scope"], body["scopeid"] = sc.scope, v
			given++
		}
	}
	if given > 1 {
		return nil, csParamError("give at most one of zoneid, clusterid and accountid")
	}
	var v models.Value
	if err := c.restCall(ctx, "updateSetting", map[string]string{"name": c.get("name")}, nil, body, &v); err != nil {
		return nil, err
	}
	return map[string]any{"configuration": csConfig(v)}, nil
}

// Inventory.

type csZoneItem struct{ models.Zone }

func (z csZoneItem) idName() (string, string) { return z.ID, z.Name }

func (c *csCall) listZones(ctx context.Context) (map[string]any, error) {
	n, zs, err := csListOf[csZoneItem](ctx, c, "listZones", "getZone", c.query("name", "keyword", "networktype"))
	if err != nil {
		return nil, err
	}
	type zone struct {
		ID              string `json:"id"`
		Name            string `json:"name"`
		NetworkType     string `json:"networktype"`
		AllocationState string `json:"allocationstate"`
		DNS1            string `json:"dns1,omitempty"`
		InternalDNS1    string `json:"internaldns1,omitempty"`
	}
	out := make([]zone, 0, len(zs))
	for _, z := range zs {
		out = append(out, zone{ID: z.ID, Name: z.Name, NetworkType: z.NetworkType, AllocationState: z.AllocationState,
			DNS1: z.DNS1, InternalDNS1: z.InternalDNS1})
	}
	return csList("zone", n, out), nil
}

type csPodItem struct{ models.Pod }

func (x csPodItem) idName() (string, string) { return x.ID, x.Name }

func (c *csCall) listPods(ctx context.Context) (map[string]any, error) {
	n, ps, err := csListOf[csPodItem](ctx, c, "listPods", "getPod", c.query("zoneid", "name", "keyword"))
	if err != nil {
		return nil, err
	}
	type pod struct {
		ID       string   `json:"id"`
		Name     string   `json:"name"`
		ZoneID   string   `json:"zoneid"`
		ZoneName string   `json:"zonename,omitempty"`
		Gateway  string   `json:"gateway,omitempty"`
		Netmask  string   `json:"netmask,omitempty"`
		StartIP  []string `json:"startip,omitempty"`
		EndIP    []string `json:"endip,omitempty"`
	}
	var zones []string
	for _, x := range ps {
		zones = append(zones, x.ZoneID)
	}
	zn := c.names(ctx, &models.Zone{}, zones...)
	out := make([]pod, 0, len(ps))
	for _, x := range ps {
		it := pod{ID: x.ID, Name: x.Name, ZoneID: x.ZoneID, ZoneName: zn[x.ZoneID], Gateway: x.Gateway, Netmask: x.Netmask}
		if x.StartIP != "" {
			it.StartIP, it.EndIP = []string{x.StartIP}, []string{x.EndIP}
		}
		out = append(out, it)
	}
	return csList("pod", n, out), nil
}

type csClusterItem struct{ models.Cluster }

func (x csClusterItem) idName() (string, string) { return x.ID, x.Name }

func (c *csCall) listClusters(ctx context.Context) (map[string]any, error) {
	n, cs, err := csListOf[csClusterItem](ctx, c, "listClusters", "getCluster", c.query("zoneid", "podid", "hypervisor", "allocationstate", "name", "keyword"))
	if err != nil {
		return nil, err
	}
	type cluster struct {
		ID              string `json:"id"`
		Name            string `json:"name"`
		ZoneID          string `json:"zoneid"`
		ZoneName        string `json:"zonename,omitempty"`
		PodID           string `json:"podid"`
		PodName         string `json:"podname,omitempty"`
		HypervisorType  string `json:"hypervisortype"`
		ClusterType     string `json:"clustertype"`
		AllocationState string `json:"allocationstate"`
		ManagedState    string `json:"managedstate"`
	}
	var zones, pods []string
	for _, x := range cs {
		zones, pods = append(zones, x.ZoneID), append(pods, x.PodID)
	}
	zn, pn := c.names(ctx, &models.Zone{}, zones...), c.names(ctx, &models.Pod{}, pods...)
	out := make([]cluster, 0, len(cs))
	for _, x := range cs {
		out = append(out, cluster{ID: x.ID, Name: x.Name, ZoneID: x.ZoneID, ZoneName: zn[x.ZoneID], PodID: x.PodID, PodName: pn[x.PodID],
			HypervisorType: x.HypervisorType, ClusterType: "CloudManaged", AllocationState: x.AllocationState, ManagedState: "Managed"})
	}
	return csList("cluster", n, out), nil
}

type csHostItem struct{ models.Host }

func (x csHostItem) idName() (string, string) { return x.ID, x.Name }

func (c *csCall) listHosts(ctx context.Context) (map[string]any, error) {
	if t := c.get("type"); t != "" && !strings.EqualFold(t, "Routing") {
		return map[string]any{}, nil // sysvm's hosts are all hypervisor (Routing) hosts
	}
	n, hs, err := csListOf[csHostItem](ctx, c, "listHosts", "getHost", c.query("zoneid", "podid", "clusterid", "hypervisor", "state", "name", "keyword"))
	if err != nil {
		return nil, err
	}
	type host struct {
		ID                string `json:"id"`
		Name              string `json:"name"`
		State             string `json:"state"`
		Type              string `json:"type"`
		IPAddress         string `json:"ipaddress,omitempty"`
		ZoneID            string `json:"zoneid"`
		ZoneName          string `json:"zonename,omitempty"`
		PodID             string `json:"podid"`
		PodName           string `json:"podname,omitempty"`
		ClusterID         string `json:"clusterid"`
		ClusterName       string `json:"clustername,omitempty"`
		Hypervisor        string `json:"hypervisor"`
		HypervisorVersion string `json:"hypervisorversion,omitempty"`
		CPUNumber         int    `json:"cpunumber"`
		CPUSpeed          int    `json:"cpuspeed"`
		MemoryTotal       int64  `json:"memorytotal"`
		Created           string `json:"created"`
		ResourceState     string `json:"resourcestate"`
	}
	var zones, pods, clusters []string
	for _, x := range hs {
		zones, pods, clusters = append(zones, x.ZoneID), append(pods, x.PodID), append(clusters, x.ClusterID)
	}
	zn, pn, cn := c.names(ctx, &models.Zone{}, zones...), c.names(ctx, &models.Pod{}, pods...), c.names(ctx, &models.Cluster{}, clusters...)
	out := make([]host, 0, len(hs))
	for _, x := range hs {
		out = append(out, host{ID: x.ID, Name: x.Name, State: x.State, Type: "Routing", IPAddress: x.Address, ZoneID: x.ZoneID,
			ZoneName: zn[x.ZoneID], PodID: x.PodID, PodName: pn[x.PodID], ClusterID: x.ClusterID, ClusterName: cn[x.ClusterID],
			Hypervisor: x.HypervisorType, HypervisorVersion: x.Version, CPUNumber: x.CPUs, CPUSpeed: x.CPUMHz,
			MemoryTotal: x.MemoryMB << 20, Created: csTime(x.CreatedAt), ResourceState: "Enabled"})
	}
	return csList("host", n, out), nil
}

type csNetworkItem struct{ models.Network }

func (x csNetworkItem) idName() (string, string) { return x.ID, x.Name }

func (c *csCall) listNetworks(ctx context.Context) (map[string]any, error) {
	q := c.query("zoneid", "vpcid", "domainid", "type", "keyword")
	if err := c.accountID(ctx, q); err != nil {
		return nil, err
	}
	n, ns, err := csListOf[csNetworkItem](ctx, c, "listNetworks", "getNetwork", q)
	if err != nil {
		return nil, err
	}
	type service struct {
		Name string `json:"name"`
	}
	type network struct {
		ID              string    `json:"id"`
		Name            string    `json:"name"`
		DisplayText     string    `json:"displaytext"`
		ZoneID          string    `json:"zoneid"`
		ZoneName        string    `json:"zonename,omitempty"`
		Type            string    `json:"type"`
		State           string    `json:"state"`
		Gateway         string    `json:"gateway,omitempty"`
		CIDR            string    `json:"cidr,omitempty"`
		DomainID        string    `json:"domainid,omitempty"`
		Domain          string    `json:"domain,omitempty"`
		Account         string    `json:"account,omitempty"`
		VPCID           string    `json:"vpcid,omitempty"`
		RedundantRouter bool      `json:"redundantrouter"`
		Service         []service `json:"service,omitempty"`
	}
	var zones, doms, accts []string
	for _, x := range ns {
		zones, doms, accts = append(zones, x.ZoneID), append(doms, x.DomainID), append(accts, x.AccountID)
	}
	zn, dn, an := c.names(ctx, &models.Zone{}, zones...), c.names(ctx, &models.Domain{}, doms...), c.names(ctx, &models.Account{}, accts...)
	out := make([]network, 0, len(ns))
	for _, x := range ns {
		it := network{ID: x.ID, Name: x.Name, DisplayText: x.Name, ZoneID: x.ZoneID, ZoneName: zn[x.ZoneID], Type: x.Type, State: x.State,
			Gateway: x.Gateway, CIDR: x.CIDR, DomainID: x.DomainID, Domain: dn[x.DomainID], Account: an[x.AccountID], VPCID: x.VPCID,
			RedundantRouter: x.Redundant}
		for _, sv := range strings.Split(x.Services, ",") {
			if sv = strings.TrimSpace(sv); sv != "" {
				it.Service = append(it.Service, service{Name: sv})
			}
		}
		out = append(out, it)
	}
	return csList("network", n, out), nil
}

// csDate translates CloudStack's date parameters (yyyy-MM-dd or yyyy-MM-dd HH:mm:ss) into the
// REST API's (a date, or RFC 3339).
func csDate(q url.Values, name, v string) error {
	if v == "" {
		return nil
	}
	if t, err := time.Parse("2006-01-02 15:04:05", v); err == nil {
		q.Set(name, t.UTC().Format(time.RFC3339))
		return nil
	}
	if _, err := time.Parse("2006-01-02", v); err == nil {
		q.Set(name, v)
		return nil
	}
	return csParamError("%s must be yyyy-MM-dd or yyyy-MM-dd HH:mm:ss, got %q", name, v)
}

type csEventItem struct{ models.Event }

func (x csEventItem) idName() (string, string) { return x.ID, x.Type }

func (c *csCall) listEvents(ctx context.Context) (map[string]any, error) {
	q := c.query("type", "level", "resourceid", "resourcetype", "keyword")
	for _, d := range []string{"startdate", "enddate"} {
		if err := csDate(q, d, c.get(d)); err != nil {
			return nil, err
		}
	}
	var n int64
	var es []csEventItem
	if id := c.get("id"); id != "" {
		var e csEventItem
		if err := c.restCall(ctx, "getEvent", map[string]string{"id": id}, nil, nil, &e); err != nil {
			return nil, err
		}
		n, es = 1, []csEventItem{e}
	} else {
		var out ListResponse[csEventItem]
		if err := c.restCall(ctx, "listEvents", nil, c.page(q), nil, &out); err != nil {
			return nil, err
		}
		n, es = out.Count, out.Items
	}
	type event struct {
		ID           string `json:"id"`
		Type         string `json:"type"`
		Level        string `json:"level"`
		Description  string `json:"description"`
		ResourceID   string `json:"resourceid,omitempty"`
		ResourceType string `json:"resourcetype,omitempty"`
		Created      string `json:"created"`
		State        string `json:"state"`
	}
	out := make([]event, 0, len(es))
	for _, e := range es {
		out = append(out, event{ID: e.ID, Type: e.Type, Level: e.Level, Description: e.Description, ResourceID: e.ResourceID,
			ResourceType: e.ResourceType, Created: csTime(e.CreatedAt), State: "Completed"})
	}
	return csList("event", n, out), nil
}

type csAlertItem struct{ models.Alert }

func (x csAlertItem) idName() (string, string) { return x.ID, x.Subject }

func (c *csCall) listAlerts(ctx context.Context) (map[string]any, error) {
	var n int64
	var as []csAlertItem
	if id := c.get("id"); id != "" {
		var a csAlertItem
		if err := c.restCall(ctx, "getAlert", map[string]string{"id": id}, nil, nil, &a); err != nil {
			return nil, err
		}
		n, as = 1, []csAlertItem{a}
	} else {
		var out ListResponse[csAlertItem]
		if err := c.restCall(ctx, "listAlerts", nil, c.page(c.query("type", "keyword")), nil, &out); err != nil {
			return nil, err
		}
		n, as = out.Count, out.Items
	}
	type alert struct {
		ID          string `json:"id"`
		Type        string `json:"type"`
		Name        string `json:"name"`
		Subject     string `json:"subject"`
		Description string `json:"description,omitempty"`
		Sent        string `json:"sent"`
	}
	out := make([]alert, 0, len(as))
	for _, a := range as {
		out = append(out, alert{ID: a.ID, Type: a.Type, Name: a.Type, Subject: a.Subject, Description: a.Description, Sent: csTime(a.CreatedAt)})
	}
	return csList("alert", n, out), nil
}

type csTemplateItem struct{ models.Template }

func (x csTemplateItem) idName() (string, string) { return x.ID, x.Name }

func (c *csCall) listTemplates(ctx context.Context) (map[string]any, error) {
	switch strings.ToLower(c.get("templatefilter")) {
	case "featured", "self", "selfexecutable", "sharedexecutable", "executable", "community", "all":
	default:
		return nil, csParamError("templatefilter must be one of featured, self, selfexecutable, sharedexecutable, executable, community, all; got %q",
			c.get("templatefilter"))
	}
	n, ts, err := csListOf[csTemplateItem](ctx, c, "listTemplates", "getTemplate", c.query("name", "keyword", "zoneid", "hypervisor"))
	if err != nil {
		return nil, err
	}
	return csList("template", n, c.csTemplates(ctx, ts)), nil
}

// csTemplate is a template as listTemplates and registerTemplate answer it (TemplateResponse).
type csTemplate struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	DisplayText  string `json:"displaytext"`
	Format       string `json:"format"`
	TemplateType string `json:"templatetype"`
	Hypervisor   string `json:"hypervisor"`
	ZoneID       string `json:"zoneid,omitempty"`
	ZoneName     string `json:"zonename,omitempty"`
	IsReady      bool   `json:"isready"`
	Status       string `json:"status"`
	Size         int64  `json:"size,omitempty"`
	Checksum     string `json:"checksum,omitempty"`
	URL          string `json:"url,omitempty"`
	Created      string `json:"created"`
	IsPublic     bool   `json:"ispublic"`
	IsFeatured   bool   `json:"isfeatured"`
	CrossZones   bool   `json:"crossZones"`
}

// csTemplates writes REST templates with CloudStack's fields.
func (c *csCall) csTemplates(ctx context.Context, ts []csTemplateItem) []csTemplate {
	var zones []string
	for _, x := range ts {
		zones = append(zones, x.ZoneID)
	}
	zn := c.names(ctx, &models.Zone{}, zones...)
	out := make([]csTemplate, 0, len(ts))
	for _, x := range ts {
		status := x.State
		if x.State == models.TemplateReady {
			status = "Download Complete"
		}
		out = append(out, csTemplate{ID: x.ID, Name: x.Name, DisplayText: x.Name, Format: x.Format, TemplateType: x.Type,
			Hypervisor: x.Hypervisor, ZoneID: x.ZoneID, ZoneName: zn[x.ZoneID], IsReady: x.State == models.TemplateReady,
			Status: status, Size: x.SizeBytes, Checksum: x.Checksum, URL: x.URL, Created: csTime(x.CreatedAt), IsPublic: true,
			CrossZones: x.ZoneID == ""})
	}
	return out
}

// Async jobs: a job is a sysvm operation; its ID is the operation's.

// csJobCommands names the CloudStack command class of each operation kind.
var csJobCommands = map[string]string{
	TargetRouter + "/" + workflows.ActionStart.OperationKind():     "org.apache.cloudstack.api.command.admin.router.StartRouterCmd",
	TargetRouter + "/" + workflows.ActionStop.OperationKind():      "org.apache.cloudstack.api.command.admin.router.StopRouterCmd",
	TargetRouter + "/" + workflows.ActionReboot.OperationKind():    "org.apache.cloudstack.api.command.admin.router.RebootRouterCmd",
	TargetRouter + "/" + workflows.ActionDestroy.OperationKind():   "org.apache.cloudstack.api.command.admin.router.DestroyRouterCmd",
	TargetSystemVM + "/" + workflows.ActionStart.OperationKind():   "org.apache.cloudstack.api.command.admin.systemvm.StartSystemVMCmd",
	TargetSystemVM + "/" + workflows.ActionStop.OperationKind():    "org.apache.cloudstack.api.command.admin.systemvm.StopSystemVmCmd",
	TargetSystemVM + "/" + workflows.ActionReboot.OperationKind():  "org.apache.cloudstack.api.command.admin.systemvm.RebootSystemVmCmd",
	TargetSystemVM + "/" + workflows.ActionDestroy.OperationKind(): "org.apache.cloudstack.api.command.admin.systemvm.DestroySystemVmCmd",
	TargetNetwork + "/" + workflows.NetworkRestartOperationKind:    "org.apache.cloudstack.api.command.user.network.RestartNetworkCmd",
}

// csJob is an operation as queryAsyncJobResult answers it (AsyncJobResponse).
type csJob struct {
	JobID           string         `json:"jobid"`
	Cmd             string         `json:"cmd"`
	JobStatus       int            `json:"jobstatus"`
	JobProcStatus   int            `json:"jobprocstatus"`
	JobResultCode   int            `json:"jobresultcode"`
	JobResultType   string         `json:"jobresulttype,omitempty"`
	JobResult       map[string]any `json:"jobresult,omitempty"`
	JobInstanceType string         `json:"jobinstancetype,omitempty"`
	JobInstanceID   string         `json:"jobinstanceid,omitempty"`
	Created         string         `json:"created"`
	Completed       string         `json:"completed,omitempty"`
}

// csJobOf writes an operation as a job; a completed one carries its target as it is now (a
// router, a system VM, or success for a network restart), a failed one its error.
func (c *csCall) csJobOf(ctx context.Context, op OperationView) csJob {
	j := csJob{JobID: op.ID, Cmd: csJobCommands[op.TargetType+"/"+op.Kind], JobInstanceID: op.TargetID, Created: csTime(op.Created)}
	if j.Cmd == "" {
		j.Cmd = csOperationJobs[op.Kind]
	}
	if j.Cmd == "" {
		j.Cmd = "sysvm." + op.Kind
	}
	switch op.TargetType {
	case TargetRouter:
		j.JobInstanceType = "DomainRouter"
	case TargetSystemVM:
		j.JobInstanceType = "SystemVm"
	case TargetNetwork:
		j.JobInstanceType = "Network"
	}
	if op.Completed != nil {
		j.Completed = csTime(*op.Completed)
	}
	switch op.Status {
	case models.OpRunning:
		return j
	case models.OpCompleted:
		j.JobStatus, j.JobResultType = 1, "object"
		j.JobResult = c.jobTarget(ctx, op)
	default:
		text := op.Error
		if op.Status == models.OpCanceled && text == "" {
			text = "canceled"
		}
		j.JobStatus, j.JobResultCode, j.JobResultType = 2, csErrInternal, "object"
		j.JobResult = map[string]any{"errorcode": csErrInternal, "errortext": text}
	}
	return j
}

// jobTarget is the result of a completed job: its router or system VM as they are now.
func (c *csCall) jobTarget(ctx context.Context, op OperationView) map[string]any {
	if r := c.csOperationResult(ctx, op); r != nil {
		return r
	}
	switch op.TargetType {
	case TargetRouter:
		var r routerView
		if err := c.restCall(ctx, "getRouter", map[string]string{"id": op.TargetID}, nil, nil, &r); err == nil {
			if rs, err := c.csRouters(ctx, []routerView{r}, false); err == nil && len(rs) == 1 {
				return map[string]any{"router": rs[0]}
			}
		}
	case TargetSystemVM:
		var v csSysVMItem
		if err := c.restCall(ctx, "getSystemVM", map[string]string{"id": op.TargetID}, nil, nil, &v); err == nil {
			return map[string]any{"systemvm": c.csSystemVMs(ctx, []csSysVMItem{v})[0]}
		}
	}
	return map[string]any{"success": true}
}

func (c *csCall) queryAsyncJobResult(ctx context.Context) (map[string]any, error) {
	id := c.get("jobid")
	op, err := c.s.ops.Get(ctx, id)
	if err != nil {
		var oe *operations.Error
		if errors.As(err, &oe) && errors.Is(oe.Kind, operations.ErrNotFound) {
			return nil, csParamError("Unable to find job by id %s", id)
		}
		return nil, c.s.operationError(err)
	}
	j := c.csJobOf(ctx, c.s.view(op))
	raw := map[string]any{"jobid": j.JobID, "cmd": j.Cmd, "jobstatus": j.JobStatus, "jobprocstatus": j.JobProcStatus,
		"jobresultcode": j.JobResultCode, "created": j.Created}
	for k, v := range map[string]string{"jobresulttype": j.JobResultType, "jobinstancetype": j.JobInstanceType,
		"jobinstanceid": j.JobInstanceID, "completed": j.Completed} {
		if v != "" {
			raw[k] = v
		}
	}
	if j.JobResult != nil {
		raw["jobresult"] = j.JobResult
	}
	return raw, nil
}

func (c *csCall) listAsyncJobs(ctx context.Context) (map[string]any, error) {
	var out ListResponse[OperationView]
	if err := c.restCall(ctx, "listOperations", nil, c.page(url.Values{}), nil, &out); err != nil {
		return nil, err
	}
	var since time.Time
	if v := c.get("startdate"); v != "" {
		q := url.Values{}
		if err := csDate(q, "startdate", v); err != nil {
			return nil, err
		}
		t, err := parseTime("startdate", q.Get("startdate"))
		if err != nil {
			return nil, err
		}
		since = t
	}
	jobs := make([]csJob, 0, len(out.Items))
	n := out.Count
	for _, op := range out.Items {
		if !since.IsZero() && op.Created.Before(since) {
			n--
			continue
		}
		jobs = append(jobs, c.csJobOf(ctx, op))
	}
	return csList("asyncjobs", n, jobs), nil
}

// listApis and listCapabilities.

func (c *csCall) listApis(ctx context.Context) (map[string]any, error) {
	type param struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Type        string `json:"type"`
		Required    bool   `json:"required"`
		Length      int    `json:"length"`
		Related     string `json:"related"`
		Since       string `json:"since"`
	}
	type field struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Type        string `json:"type"`
	}
	type api struct {
		Name        string  `json:"name"`
		Description string  `json:"description"`
		IsAsync     bool    `json:"isasync"`
		Related     string  `json:"related"`
		Since       string  `json:"since"`
		Params      []param `json:"params"`
		Response    []field `json:"response"`
	}
	table := c.s.csCommands()
	var names []string
	for name := range table {
		if want := c.get("name"); want == "" || want == name {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, csParamError("no API csNamed %s", c.get("name"))
	}
	sort.Strings(names)
	out := make([]api, 0, len(names))
	for _, name := range names {
		cmd := table[name]
		if roleRank(c.key.Role) < roleRank(cmd.Role) {
			continue // CloudStack lists the commands the caller may run
		}
		a := api{Name: cmd.Name, Description: cmd.Description, IsAsync: cmd.Async, Params: []param{}, Response: []field{}}
		for _, ps := range cmd.Params {
			a.Params = append(a.Params, param{Name: ps.Name, Description: ps.Description, Type: ps.Type, Required: ps.Required, Length: 255})
		}
		for _, f := range cmd.Response {
			a.Response = append(a.Response, field{Name: f.Name, Description: f.Description, Type: f.Type})
		}
		out = append(out, a)
	}
	return csList("api", int64(len(out)), out), nil
}

func (c *csCall) listCapabilities(ctx context.Context) (map[string]any, error) {
	return map[string]any{"capability": map[string]any{
		"cloudstackversion":         csVersion,
		"securitygroupsenabled":     false,
		"userpublictemplateenabled": false,
		"supportELB":                "false",
		"projectinviterequired":     false,
		"allowusercreateprojects":   false,
		"kvmsnapshotenabled":        false,
		"dynamicrolesenabled":       false,
		"apilimitinterval":          0,
		"apilimitmax":               0,
		"customdiskofferingminsize": 0,
		"customdiskofferingmaxsize": 0,
		"regionsecondaryenabled":    false,
		"allowuserviewdestroyedvm":  false,
		"allowuserexpungerecovervm": false,
	}}, nil
}
