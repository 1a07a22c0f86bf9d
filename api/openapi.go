package api

import (
	"context"
	"maps"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/models"
)

// Version is the API version in the OpenAPI document.
const Version = "1.0.0"

// coreRoutes are the routes every server mounts.
func (s *Server) coreRoutes() []Route {
	out := []Route{
		{Method: http.MethodGet, Path: "/healthz", Handler: s.healthz, Doc: Doc{
			OperationID: "healthz", Summary: "Health of the API and its database", Tag: "Meta",
			Description: "No key needed. 503 when the database does not answer; Temporal's state is reported but does not fail the check " +
				"(reads keep working without it).",
			Responses: []Response{{Status: 200, Description: "healthy", Schema: "Health"},
				{Status: 503, Description: "the database does not answer", Schema: "Error"}}}},
		{Method: http.MethodGet, Path: "/openapi.json", Handler: s.openapi, Doc: Doc{
			OperationID: "openapi", Summary: "This API's OpenAPI 3 document", Tag: "Meta",
			Responses: []Response{{Status: 200, Description: "the document", Schema: "OpenAPIDocument"}}}},
	}
	out = append(out, inventoryRoutes(s)...)
	out = append(out, s.settingsRoutes()...)
	out = append(out, s.apiKeyRoutes()...)
	out = append(out, s.operationRoutes()...)
	out = append(out, s.lifecycleRoutes()...)
	out = append(out, s.networkRoutes()...)
	out = append(out, s.upgradeRoutes()...)
	out = append(out, s.systemVMUpgradeRoutes()...)
	out = append(out, s.networkRuleRoutes()...)
	out = append(out, s.accessRoutes()...)
	out = append(out, s.certificateRoutes()...)
	out = append(out, s.consoleRoutes()...)
	return out
}

// health is the answer of /healthz.
type health struct {
	Status   string `json:"status"`
	Database string `json:"database"`
	Temporal string `json:"temporal,omitempty"`
}

func (s *Server) healthz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), min(3*time.Second, s.tTimeout))
	defer cancel()
	sqlDB, err := s.store.DB.DB()
	if err == nil {
		err = sqlDB.PingContext(ctx)
	}
	if err != nil {
		return Unavailable(err, "database does not answer: %v", err)
	}
	h := health{Status: "ok", Database: "ok"}
	if s.temporal != nil {
		if _, err := s.temporal.CheckHealth(ctx, nil); err != nil {
			h.Status, h.Temporal = "degraded", "unavailable: "+err.Error()
		} else {
			h.Temporal = "ok"
		}
	}
	return ok(c, h)
}

func (s *Server) openapi(c echo.Context) error {
	return ok(c, s.Document())
}

// Document is the OpenAPI 3 document of every route (dev-only routes included, marked
// x-dev-only, whether or not they are mounted), as JSON-ready maps.
func (s *Server) Document() map[string]any {
	s.mu.Lock()
	routes := append([]Route(nil), s.routes...)
	schemas := make(map[string]any, len(s.schemas))
	for k, v := range s.schemas {
		schemas[k] = v
	}
	s.mu.Unlock()
	if s.dev == nil {
		routes = append(routes, s.devRoutes()...)
	}
	sort.SliceStable(routes, func(i, j int) bool { return routes[i].Path < routes[j].Path })
	paths := map[string]any{}
	tagSet := map[string]bool{}
	for _, r := range routes {
		item, _ := paths[r.Path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[r.Path] = item
		}
		item[strings.ToLower(r.Method)] = operationDoc(r)
		tagSet[r.Doc.Tag] = true
	}
	var tags []any
	for _, t := range []string{"Meta", "Inventory", "Routers", "Lifecycle", "Operations", "Settings", "API keys", "Dev"} {
		if tagSet[t] {
			tags = append(tags, map[string]any{"name": t})
			delete(tagSet, t)
		}
	}
	var rest []string
	for t := range tagSet {
		rest = append(rest, t)
	}
	sort.Strings(rest)
	for _, t := range rest {
		tags = append(tags, map[string]any{"name": t})
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":   "sysvm API",
			"version": Version,
			"description": "Control plane for CloudStack/Mold system VMs: secondary storage VMs, console proxy VMs and virtual routers. " +
				"Send an API key as Authorization: Bearer <key>; roles are read-only (GET), operator (also starts and cancels " +
				"operations) and admin (also settings, API keys and dev endpoints). Errors are " +
				`{"error": {"code", "message", "field"}}. Lists take page (from 1) and pagesize (1-500, default 50) and answer ` +
				`{"count", "page", "pagesize", "items"}; an unknown query parameter is a 400.`,
		},
		"servers": []any{map[string]any{"url": Prefix}},
		"tags":    tags,
		"paths":   paths,
		"components": map[string]any{
			"schemas": schemas,
			"securitySchemes": map[string]any{
				"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "an API key from POST /api-keys"},
			},
		},
	}
}

func ref(name string) map[string]any { return map[string]any{"$ref": "#/components/schemas/" + name} }

func jsonContent(schema string) map[string]any {
	return map[string]any{"application/json": map[string]any{"schema": ref(schema)}}
}

// operationDoc turns a route into its OpenAPI operation object.
func operationDoc(r Route) map[string]any {
	d := r.Doc
	op := map[string]any{"operationId": d.OperationID, "summary": d.Summary, "tags": []any{d.Tag}}
	if d.Description != "" {
		op["description"] = d.Description
	}
	var ps []any
	for _, seg := range strings.Split(r.Path, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			ps = append(ps, map[string]any{"name": seg[1 : len(seg)-1], "in": "path", "required": true,
				"schema": map[string]any{"type": "string"}})
		}
	}
	for _, p := range d.Query {
		schema := map[string]any{"type": p.Type}
		if p.Type == "" {
			schema["type"] = "string"
		}
		if p.Format != "" {
			schema["format"] = p.Format
		}
		if len(p.Enum) > 0 {
			// Matched without regard to case, so the enum is documented, not enforced by pattern.
			schema["x-enum-case-insensitive"] = p.Enum
		}
		desc := p.Description
		if len(p.Enum) > 0 {
			desc += " (one of: " + strings.Join(p.Enum, ", ") + ")"
		}
		pm := map[string]any{"name": p.Name, "in": "query", "schema": schema, "description": strings.TrimSpace(desc)}
		if p.Required {
			pm["required"] = true
		}
		ps = append(ps, pm)
	}
	if d.Paged {
		ps = append(ps,
			map[string]any{"name": "page", "in": "query", "description": "page number, from 1",
				"schema": map[string]any{"type": "integer", "minimum": 1, "default": 1}},
			map[string]any{"name": "pagesize", "in": "query", "description": "items per page",
				"schema": map[string]any{"type": "integer", "minimum": 1, "maximum": MaxPageSize, "default": DefaultPageSize}})
	}
	if len(ps) > 0 {
		op["parameters"] = ps
	}
	if d.Body != "" {
		op["requestBody"] = map[string]any{"required": d.BodyRequired, "content": jsonContent(d.Body)}
	}
	responses := map[string]any{}
	for _, resp := range d.Responses {
		ro := map[string]any{"description": resp.Description}
		if resp.Schema != "" {
			ro["content"] = jsonContent(resp.Schema)
		}
		responses[statusKey(resp.Status)] = ro
	}
	addErr := func(status int, desc string) {
		if _, exists := responses[statusKey(status)]; !exists {
			responses[statusKey(status)] = map[string]any{"description": desc, "content": jsonContent("Error")}
		}
	}
	if len(ps) > 0 || d.Body != "" {
		addErr(400, "a parameter or body field is invalid (error.field names it)")
	}
	if d.Body != "" {
		addErr(413, "the body is larger than "+maxBody+"B")
	}
	if r.Role != "" {
		addErr(401, "no API key, or an invalid one")
		addErr(403, "the key's role may not do this")
		op["security"] = []any{map[string]any{"bearer": []any{}}}
		op["x-required-role"] = r.Role
	} else {
		op["security"] = []any{}
	}
	if strings.Contains(r.Path, "{") {
		addErr(404, "no such resource")
	}
	addErr(405, "method not allowed on this path")
	addErr(500, "internal error (logged on the server)")
	op["responses"] = responses
	if d.DevOnly {
		op["x-dev-only"] = true
	}
	return op
}

func statusKey(status int) string { return strconv.Itoa(status) }

// Schemas are written as lists of "name:type" properties: type is string, int, number, bool,
// time, any, object, @Component, []type, or string=a|b|c for an enum; a name ending in ? is
// optional (omitted when empty), every other property is always present.
func objectSchema(description string, props ...string) map[string]any {
	properties := map[string]any{}
	var required []any
	for _, p := range props {
		name, typ, _ := strings.Cut(p, ":")
		if strings.HasSuffix(name, "?") {
			name = strings.TrimSuffix(name, "?")
		} else {
			required = append(required, name)
		}
		properties[name] = propSchema(typ)
	}
	o := map[string]any{"type": "object", "properties": properties, "additionalProperties": false}
	if description != "" {
		o["description"] = description
	}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}

func propSchema(typ string) map[string]any {
	switch {
	case strings.HasPrefix(typ, "[]"):
		return map[string]any{"type": "array", "items": propSchema(typ[2:])}
	case strings.HasPrefix(typ, "@"):
		return ref(typ[1:])
	case strings.HasPrefix(typ, "string="):
		var vals []any
		for _, v := range strings.Split(strings.TrimPrefix(typ, "string="), "|") {
			vals = append(vals, v)
		}
		return map[string]any{"type": "string", "enum": vals}
	}
	switch typ {
	case "int":
		return map[string]any{"type": "integer"}
	case "number":
		return map[string]any{"type": "number"}
	case "bool":
		return map[string]any{"type": "boolean"}
	case "time":
		return map[string]any{"type": "string", "format": "date-time"}
	case "any":
		return map[string]any{}
	case "object":
		return map[string]any{"type": "object"}
	}
	return map[string]any{"type": "string"}
}

func listSchema(item string) map[string]any {
	s := objectSchema("a page of "+item+" items", "count:int", "page:int", "pagesize:int", "items:[]@"+item)
	return s
}

// componentSchemas describes every body the API reads or writes. The JSON names are the models'
// json tags (CloudStack's names); the tests validate real responses against them, with
// additionalProperties false, so a field added to a model without its line here fails them.
func componentSchemas() map[string]any {
	base := []string{"id", "created:time"}
	with := func(a []string, b ...string) []string { return append(append([]string(nil), a...), b...) }

	systemVM := with(base, "name", "systemvmtype", "state", "zoneid", "podid", "clusterid", "hostid", "storageid", "hypervisor",
		"templateid", "version", "serviceofferingid", "cpunumber:int", "memory:int", "publicip", "privateip", "linklocalip",
		"publicmacaddress", "privatemacaddress", "linklocalmacaddress", "guestnetworkid?", "vpcid?", "domainid?", "accountid?",
		"isredundantrouter:bool", "redundantstate?", "activeviewersessions:int", "healthchecksfailed:bool", "removed?:time",
		"scriptsversion?", "softwareversion?")
	router := with(systemVM, "requiresupgrade:bool")
	template := with(base, "name", "hypervisor", "format", "url", "checksum", "templatetype", "version", "zoneid?", "size:int", "status")
	apiKey := with(base, "name", "role:string="+strings.Join([]string{models.RoleAdmin, models.RoleOperator, models.RoleReadOnly}, "|"), "prefix")
	setting := []string{"name", "type:string=string|boolean|integer|list", "defaultvalue", "min?:int", "max?:int", "unit?",
		"scopes:[]string", "category", "description", "value", "scope:string=default|global|zone|cluster|account", "scopeid?"}
	opStatus := "string=" + strings.Join([]string{models.OpRunning, models.OpCompleted, models.OpFailed, models.OpCanceled}, "|")

	s := map[string]any{
		"Zone": objectSchema("an availability zone", with(base, "name", "networktype", "dns1", "internaldns1", "allocationstate")...),
		"Pod":  objectSchema("a pod", with(base, "zoneid", "name", "gateway", "netmask", "startip", "endip")...),
		"Cluster": objectSchema("a cluster (its endpoint and credentials are never shown)",
			with(base, "zoneid", "podid", "name", "hypervisortype", "allocationstate")...),
		"Host": objectSchema("a hypervisor host (its credentials are never shown)",
			with(base, "zoneid", "podid", "clusterid", "name", "hypervisor", "ipaddress", "state", "statereason?",
				"cpunumber:int", "cpuspeed:int", "memorytotal:int", "hypervisorversion")...),
		"StoragePool": objectSchema("a primary storage pool",
			with(base, "zoneid", "podid?", "clusterid?", "name", "scope", "type", "path", "disksizetotal:int", "disksizeused:int", "state")...),
		"ServiceOffering": objectSchema("a compute offering of system VMs (listServiceOfferings)",
			with(base, "name", "cpunumber:int", "cpuspeed:int", "memory:int", "systemvmtype")...),
		"Network": objectSchema("a guest network",
			with(base, "zoneid", "domainid", "accountid", "vpcid?", "name", "type", "redundantrouter:bool", "gateway", "cidr", "services", "state")...),
		"SystemVM":          objectSchema("a secondary storage VM or console proxy VM (listSystemVms)", with(systemVM, "requiresupgrade?:bool")...),
		"Router":            objectSchema("a virtual router (listRouters)", router...),
		"RouterDetail":      objectSchema("a virtual router with the last result of each health check", with(router, "healthcheckresults:[]@HealthCheckResult")...),
		"HealthCheckResult": objectSchema("the last result of one health check", "checkname", "checktype", "success:bool", "lastupdated:time", "details"),
		"Template":          objectSchema("a template", template...),
		"TemplateDetail":    objectSchema("a template with its copies in primary storage", with(template, "storagepools:[]@TemplatePoolRef")...),
		"TemplatePoolRef": objectSchema("a template's copy in one primary storage pool",
			with(base, "templateid", "storageid", "state", "downloadpercent:int", "installpath")...),
		"Event":   objectSchema("an event", with(base, "type", "level", "description", "resourcetype?", "resourceid?", "zoneid?", "operationid?")...),
		"Alert":   objectSchema("an alert", with(base, "type", "severity", "subject", "description", "resourcetype?", "resourceid?", "zoneid?", "cleared?:time")...),
		"Setting": objectSchema("a setting's definition and its effective value (scope tells where the value comes from)", setting...),
		"SettingDetail": objectSchema("a setting with every stored override of it",
			with(setting, "overrides:[]@SettingOverride")...),
		"SettingOverride": objectSchema("a stored override", "name", "scope", "scopeid?", "value", "updated:time"),
		"SettingUpdate": objectSchema("a new value for a setting at a scope",
			"value", "scope?:string="+strings.Join(settingScopes(), "|"), "scopeid?"),
		"APIKey":        objectSchema("an API key (never its secret)", apiKey...),
		"APIKeyCreated": objectSchema("a new API key with its clear value, shown only here", with(apiKey, "key")...),
		"APIKeyCreate": objectSchema("a key to create",
			"name", "role:string="+strings.Join([]string{models.RoleAdmin, models.RoleOperator, models.RoleReadOnly}, "|")),
		"Operation": objectSchema("a long operation and the Temporal run that carries it out",
			"id", "kind", "targettype", "targetid", "zoneid?", "status:"+opStatus, "progress?:any", "cancelRequested?:bool",
			"result?:any", "error?", "workflowId", "runId", "requestedBy", "created:time", "completed?:time", "links:@OperationLinks"),
		"OperationLinks":    objectSchema("where to follow the operation", "self", "temporalUi?"),
		"OperationEnvelope": objectSchema("", "operation:@Operation"),
		"LifecycleRequest":  objectSchema("options of a lifecycle operation", "forced?:bool"),
		"Error":             objectSchema("an error", "error:@ErrorBody"),
		"ConflictError": objectSchema("a conflict; operation is the running operation in the way, when there is one; routers and "+
			"requiredVersion name the routers a change was refused for (router requires upgrade)",
			"error:@ErrorBody", "operation?:@Operation", "routers?:[]@OutdatedRouter", "requiredVersion?"),
		"ErrorBody": objectSchema("", "code", "message", "field?"),
		"Health":    objectSchema("health of the API", "status:string=ok|degraded", "database", "temporal?"),
		"DevFault": objectSchema("a fault to inject into a dev router",
			"routerId", "fault:string="+strings.Join(DevFaults(), "|"), "service?:string="+strings.Join(DevFaultServices(), "|")),
		"DevConsole": objectSchema("a simulated console endpoint of a dev SSVM or CPVM: where it serves TLS (empty while it does not) and the SHA-256 fingerprint of the leaf it serves",
			"vmid", "name", "systemvmtype", "zoneid", "instancename", "addr", "fingerprint", "activeviewersessions:int", "restarts:int"),
		"DevConsoleList":  objectSchema("the simulated console endpoints", "items:[]@DevConsole", "count:int"),
		"OpenAPIDocument": map[string]any{"type": "object", "description": "an OpenAPI 3 document"},
	}
	for _, item := range []string{"Zone", "Pod", "Cluster", "Host", "StoragePool", "ServiceOffering", "Network", "SystemVM", "Router", "Template",
		"Event", "Alert", "Setting", "APIKey", "Operation"} {
		s[item+"List"] = listSchema(item)
	}
	maps.Copy(s, upgradeSchemas())
	maps.Copy(s, systemVMUpgradeSchemas())
	maps.Copy(s, networkRuleSchemas())
	return s
}
