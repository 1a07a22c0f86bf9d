package api

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/models"
)

// Common filters.
func fID(name, column, what string) filter {
	return filter{name: name, column: column, kind: exact, desc: "only " + what}
}

func fName() filter {
	return filter{name: "name", column: "name", kind: exact, desc: "exact name"}
}

func fKeyword() filter {
	return filter{name: "keyword", column: "name", kind: like, desc: "part of the name (case-insensitive)"}
}

func fHypervisor(column string) filter {
	return filter{name: "hypervisor", column: column, kind: fold, desc: "hypervisor type: KVM, VMware, XenServer, Hyperv (case-insensitive)"}
}

func vmStates() []string {
	return []string{models.StateStarting, models.StateRunning, models.StateStopping, models.StateStopped,
		models.StateDestroyed, models.StateError}
}

func zoneFilters() []filter {
	return []filter{fName(), fKeyword(),
		{name: "networktype", column: "network_type", kind: enum, enum: []string{"Advanced", "Basic"}, desc: "zone network type"},
		{name: "allocationstate", column: "allocation_state", kind: enum, enum: []string{"Enabled", "Disabled"}, desc: "allocation state"},
	}
}

func podFilters() []filter {
	return []filter{fID("zoneid", "zone_id", "pods of this zone"), fName(), fKeyword()}
}

func clusterFilters() []filter {
	return []filter{fID("zoneid", "zone_id", "clusters of this zone"), fID("podid", "pod_id", "clusters of this pod"),
		fHypervisor("hypervisor_type"),
		{name: "allocationstate", column: "allocation_state", kind: enum, enum: []string{"Enabled", "Disabled"}, desc: "allocation state"},
		fName(), fKeyword()}
}

func hostFilters() []filter {
	return []filter{fID("zoneid", "zone_id", "hosts of this zone"), fID("podid", "pod_id", "hosts of this pod"),
		fID("clusterid", "cluster_id", "hosts of this cluster"), fHypervisor("hypervisor_type"),
		{name: "state", column: "state", kind: fold, desc: "host state (Up, Disconnected, ...)"},
		fName(), fKeyword()}
}

func poolFilters() []filter {
	return []filter{fID("zoneid", "zone_id", "pools of this zone"), fID("podid", "pod_id", "pools of this pod"),
		fID("clusterid", "cluster_id", "pools of this cluster"),
		{name: "scope", column: "scope", kind: enum, enum: []string{"CLUSTER", "ZONE"}, desc: "pool scope"},
		{name: "type", column: "type", kind: fold, desc: "pool type (NetworkFilesystem, VMFS, ...)"},
		{name: "state", column: "state", kind: fold, desc: "pool state (Up, Maintenance, ...)"},
		fName(), fKeyword()}
}

func offeringFilters() []filter {
	return []filter{{name: "systemvmtype", column: "system_vm_type", kind: enum,
		enum: []string{models.TypeRouter, models.TypeCPVM, models.TypeSSVM}, desc: "offerings for this system VM type"},
		fName(), fKeyword()}
}

func networkFilters() []filter {
	return []filter{fID("zoneid", "zone_id", "networks of this zone"), fID("vpcid", "vpc_id", "tiers of this VPC"),
		fID("domainid", "domain_id", "networks of this domain"), fID("accountid", "account_id", "networks of this account"),
		{name: "type", column: "type", kind: enum, enum: []string{models.NetworkIsolated, models.NetworkShared, models.NetworkVPCTier}, desc: "network type"},
		{name: "state", column: "state", kind: fold, desc: "network state (Implemented, Allocated, ...)"},
		fName(), fKeyword()}
}

func systemVMFilters() []filter {
	return []filter{
		{name: "systemvmtype", column: "type", kind: enum, enum: []string{models.TypeSSVM, models.TypeCPVM},
			desc: "secondarystoragevm or consoleproxy (routers are listed under /routers)"},
		fID("zoneid", "zone_id", "VMs of this zone"), fID("podid", "pod_id", "VMs of this pod"),
		fID("clusterid", "cluster_id", "VMs of this cluster"), fID("hostid", "host_id", "VMs on this host"),
		{name: "state", column: "state", kind: enum, enum: vmStates(), desc: "VM state"},
		fHypervisor("hypervisor_type"),
		{name: "version", column: "version", kind: exact, desc: "template version"},
		{name: "requiresupgrade", kind: custom, ptype: "boolean",
			desc: "true: SSVMs and CPVMs whose version is below minreq.sysvmtemplate.version or unknown"},
		fName(), fKeyword()}
}

func routerFilters() []filter {
	return []filter{
		fID("zoneid", "zone_id", "routers of this zone"), fID("podid", "pod_id", "routers of this pod"),
		fID("clusterid", "cluster_id", "routers of this cluster"), fID("hostid", "host_id", "routers on this host"),
		fID("networkid", "network_id", "routers of this guest network"), fID("vpcid", "vpc_id", "routers of this VPC"),
		fID("domainid", "domain_id", "routers of this domain"), fID("accountid", "account_id", "routers of this account"),
		{name: "state", column: "state", kind: enum, enum: vmStates(), desc: "router state"},
		fHypervisor("hypervisor_type"),
		{name: "version", column: "version", kind: exact, desc: "template version"},
		{name: "redundantstate", column: "redundant_state", kind: enum,
			enum: []string{models.RedundantPrimary, models.RedundantBackup, models.RedundantUnknown}, desc: "redundant state"},
		{name: "healthchecksfailed", column: "health_checks_failed", kind: boolean, desc: "true: routers whose last result of some health check failed"},
		{name: "requiresupgrade", kind: custom, ptype: "boolean",
			desc: "true: routers whose version is below minreq.sysvmtemplate.version or unknown"},
		fName(), fKeyword()}
}

func templateFilters() []filter {
	return []filter{fHypervisor("hypervisor"), fID("zoneid", "zone_id", "templates of this zone"),
		{name: "templatetype", column: "type", kind: enum, enum: []string{"SYSTEM", "ROUTING", "USER"}, desc: "template type"},
		{name: "status", column: "state", kind: enum, enum: []string{models.TemplateDownloading, models.TemplateReady, models.TemplateError}, desc: "template status"},
		{name: "version", column: "version", kind: exact, desc: "template version"},
		fName(), fKeyword()}
}

func eventFilters() []filter {
	return []filter{
		{name: "type", column: "type", kind: fold, desc: "event type (ROUTER.REBOOT, CONFIGURATION.VALUE.EDIT, ...)"},
		{name: "level", column: "level", kind: enum, enum: []string{"INFO", "WARN", "ERROR"}, desc: "event level"},
		{name: "resourcetype", column: "resource_type", kind: fold, desc: "type of the resource the event is about"},
		fID("resourceid", "resource_id", "events about this resource"), fID("zoneid", "zone_id", "events of this zone"),
		fID("operationid", "operation_id", "events of this operation"),
		{name: "keyword", column: "description", kind: like, desc: "part of the description (case-insensitive)"},
		{name: "startdate", column: "created_at", kind: since, desc: "events at or after this time (RFC 3339 or YYYY-MM-DD)"},
		{name: "enddate", column: "created_at", kind: until, desc: "events at or before this time (RFC 3339, or YYYY-MM-DD for the whole day)"},
	}
}

func alertFilters() []filter {
	return []filter{
		{name: "type", column: "type", kind: fold, desc: "alert type"},
		{name: "severity", column: "severity", kind: enum, enum: []string{"WARN", "CRITICAL"}, desc: "alert severity"},
		{name: "resourcetype", column: "resource_type", kind: fold, desc: "type of the resource the alert is about"},
		fID("resourceid", "resource_id", "alerts about this resource"), fID("zoneid", "zone_id", "alerts of this zone"),
		{name: "cleared", column: "cleared_at", kind: notNull, desc: "true: cleared alerts only; false: open alerts only"},
		{name: "keyword", column: "subject", kind: like, desc: "part of the subject (case-insensitive)"},
		{name: "startdate", column: "created_at", kind: since, desc: "alerts at or after this time (RFC 3339 or YYYY-MM-DD)"},
		{name: "enddate", column: "created_at", kind: until, desc: "alerts at or before this time (RFC 3339, or YYYY-MM-DD for the whole day)"},
	}
}

// resource describes a read-only inventory collection with its list and get routes.
type resource[T any] struct {
	path    string // /zones
	what    string // zone (for messages)
	op      string // Zone (for operation IDs: listZones, getZone)
	plural  string // Zones
	schema  string // component schema of one item
	filters []filter
	order   string
	// base narrows every query (system VMs exclude routers).
	base func(*gorm.DB) *gorm.DB
	// check refuses a row the path does not serve (a router under /system-vms).
	check func(T) error
	desc  string
}

func (r resource[T]) routes(s *Server) []Route {
	base := r.base
	if base == nil {
		base = func(q *gorm.DB) *gorm.DB { return q }
	}
	list := func(c echo.Context) error {
		out, err := listRows[T](c, base(s.store.DB.WithContext(c.Request().Context())), r.filters, r.order)
		if err != nil {
			return err
		}
		return ok(c, out)
	}
	get := func(c echo.Context) error {
		row, err := getRow[T](c, s.store.DB, c.Param("id"), r.what)
		if err != nil {
			return err
		}
		if r.check != nil {
			if err := r.check(row); err != nil {
				return err
			}
		}
		return ok(c, row)
	}
	return []Route{
		{Method: http.MethodGet, Path: r.path, Role: models.RoleReadOnly, Handler: list, Doc: Doc{
			OperationID: "list" + r.plural, Summary: "List " + r.desc, Tag: "Inventory", Query: params(r.filters), Paged: true,
			Responses: []Response{{Status: 200, Description: "a page of " + r.desc, Schema: r.schema + "List"}}}},
		{Method: http.MethodGet, Path: r.path + "/{id}", Role: models.RoleReadOnly, Handler: get, Doc: Doc{
			OperationID: "get" + r.op, Summary: "Get one " + r.what, Tag: "Inventory",
			Responses: []Response{{Status: 200, Description: "the " + r.what, Schema: r.schema}}}},
	}
}

func systemVMTypes(q *gorm.DB) *gorm.DB {
	return q.Where("type IN ?", []string{models.TypeSSVM, models.TypeCPVM})
}

func inventoryRoutes(s *Server) []Route {
	var out []Route
	out = append(out, resource[models.Zone]{path: "/zones", what: "zone", op: "Zone", plural: "Zones", schema: "Zone",
		filters: zoneFilters(), order: "name, id", desc: "zones"}.routes(s)...)
	out = append(out, resource[models.Pod]{path: "/pods", what: "pod", op: "Pod", plural: "Pods", schema: "Pod",
		filters: podFilters(), order: "name, id", desc: "pods"}.routes(s)...)
	out = append(out, resource[models.Cluster]{path: "/clusters", what: "cluster", op: "Cluster", plural: "Clusters", schema: "Cluster",
		filters: clusterFilters(), order: "name, id", desc: "clusters (credentials are never shown)"}.routes(s)...)
	out = append(out, resource[models.Host]{path: "/hosts", what: "host", op: "Host", plural: "Hosts", schema: "Host",
		filters: hostFilters(), order: "name, id", desc: "hosts (credentials are never shown)"}.routes(s)...)
	out = append(out, resource[models.StoragePool]{path: "/storage-pools", what: "storage pool", op: "StoragePool", plural: "StoragePools",
		schema: "StoragePool", filters: poolFilters(), order: "name, id", desc: "primary storage pools"}.routes(s)...)
	out = append(out, resource[models.Network]{path: "/networks", what: "network", op: "Network", plural: "Networks", schema: "Network",
		filters: networkFilters(), order: "name, id", desc: "guest networks"}.routes(s)...)
	// listServiceOfferings: what scaleSystemVm's serviceofferingid names.
	out = append(out, resource[models.ServiceOffering]{path: "/service-offerings", what: "service offering", op: "ServiceOffering",
		plural: "ServiceOfferings", schema: "ServiceOffering", filters: offeringFilters(), order: "name, id",
		desc: "compute offerings of system VMs (scale a system VM to one: POST /system-vms/{id}/scale)"}.routes(s)...)
	svms := resource[models.SystemVM]{path: "/system-vms", what: "system VM", op: "SystemVM", plural: "SystemVMs",
		schema: "SystemVM", filters: systemVMFilters(), order: "name, id", base: systemVMTypes,
		check: func(vm models.SystemVM) error {
			if vm.IsRouter() {
				return NotFound("%s (%s) is a virtual router: see /api/v1/routers/%s", vm.Name, vm.ID, vm.ID)
			}
			return nil
		},
		desc: "secondary storage VMs and console proxy VMs"}.routes(s)
	// requiresupgrade is computed at the read, as for routers (api/systemvm_upgrades.go).
	svms[0].Handler, svms[1].Handler = s.listSystemVMs, s.getSystemVM
	out = append(out, svms...)
	out = append(out, resource[models.Event]{path: "/events", what: "event", op: "Event", plural: "Events", schema: "Event",
		filters: eventFilters(), order: "created_at DESC, id DESC", desc: "events, newest first"}.routes(s)...)
	out = append(out, resource[models.Alert]{path: "/alerts", what: "alert", op: "Alert", plural: "Alerts", schema: "Alert",
		filters: alertFilters(), order: "created_at DESC, id DESC", desc: "alerts, newest first"}.routes(s)...)

	// Templates: the detail adds where the template is in primary storage.
	tpl := resource[models.Template]{path: "/templates", what: "template", op: "Template", plural: "Templates", schema: "Template",
		filters: templateFilters(), order: "name, id", desc: "templates"}.routes(s)
	tpl[1].Handler = s.getTemplate // api/templates.go: per zone and per pool
	tpl[1].Doc.Responses = []Response{{Status: 200, Description: "the template, its download per zone and its copies in primary storage", Schema: "TemplateDetail"}}
	out = append(out, tpl...)
	out = append(out, s.routerReadRoutes()...)
	return out
}

// routerView is a router as listRouters shows it.
type routerView struct {
	models.SystemVM
	// RequiresUpgrade is computed from minreq.sysvmtemplate.version.
	RequiresUpgrade bool `json:"requiresupgrade"`
}

// routerDetail adds the last result of each health check.
type routerDetail struct {
	routerView
	HealthCheckResults []models.HealthCheckResult `json:"healthcheckresults"`
}

// minReqVersions reads minreq.sysvmtemplate.version per zone (zone scope first) for one
// request: requiresupgrade is computed at every read from the row's version, never stored.
func (s *Server) minReqVersions() *models.MinReqVersions {
	return &models.MinReqVersions{Settings: s.store.Settings}
}

// routerViewOf builds a router as listRouters shows it.
func routerViewOf(ctx context.Context, m *models.MinReqVersions, vm models.SystemVM) (routerView, error) {
	req, _, err := m.RouterRequiresUpgrade(ctx, vm)
	if err != nil {
		return routerView{}, Internal(err, "read minreq.sysvmtemplate.version")
	}
	return routerView{SystemVM: vm, RequiresUpgrade: req}, nil
}

func (s *Server) routerReadRoutes() []Route {
	fs := routerFilters()
	return []Route{
		{Method: http.MethodGet, Path: "/routers", Role: models.RoleReadOnly, Handler: s.listRouters, Doc: Doc{
			OperationID: "listRouters", Summary: "List virtual routers", Tag: "Routers", Query: params(fs), Paged: true,
			Description: "requiresupgrade is true when minreq.sysvmtemplate.version (the router's zone's value first, then the global one) is set and the router's version is below it or unknown, unless the router was live-patched with the platform's current bundle (softwareversion, as in CloudStack); versions compare numerically (4.10.0 equals 4.10.0.0) and it is computed at every read.",
			Responses:   []Response{{Status: 200, Description: "a page of routers", Schema: "RouterList"}}}},
		{Method: http.MethodGet, Path: "/routers/{id}", Role: models.RoleReadOnly, Handler: s.getRouter, Doc: Doc{
			OperationID: "getRouter", Summary: "Get one virtual router with its last health check results", Tag: "Routers",
			Responses: []Response{{Status: 200, Description: "the router", Schema: "RouterDetail"}}}},
	}
}

func (s *Server) listRouters(c echo.Context) error {
	ctx := c.Request().Context()
	minreq := s.minReqVersions()
	fs := routerFilters()
	const order = "name, id"
	base := s.store.DB.WithContext(ctx).Where("type = ?", models.TypeRouter)
	view := func(vms []models.SystemVM) ([]routerView, error) {
		out := make([]routerView, 0, len(vms))
		for _, vm := range vms {
			v, err := routerViewOf(ctx, minreq, vm)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return listRequiringUpgrade(s, c, base, fs, order, minreq, "routers", view)
}

func (s *Server) getRouter(c echo.Context) error {
	ctx := c.Request().Context()
	vm, err := getRow[models.SystemVM](c, s.store.DB, c.Param("id"), "router")
	if err != nil {
		return err
	}
	if !vm.IsRouter() {
		return NotFound("%s (%s) is a %s, not a router: see /api/v1/system-vms/%s", vm.Name, vm.ID, vm.Type, vm.ID)
	}
	rv, err := routerViewOf(ctx, s.minReqVersions(), vm)
	if err != nil {
		return err
	}
	out := routerDetail{routerView: rv, HealthCheckResults: []models.HealthCheckResult{}}
	if err := s.store.DB.WithContext(ctx).Where("router_id = ?", vm.ID).Order("check_type, check_name").
		Find(&out.HealthCheckResults).Error; err != nil {
		return Internal(err, "read health check results of %s", vm.Name)
	}
	return ok(c, out)
}
