package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/labstack/echo/v4"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// TargetTemplate is the operation target type of a template rollout.
const TargetTemplate = "Template"

// registerTemplateBody is CloudStack's registerTemplate (SPEC §7) plus version and rollout.
type registerTemplateBody struct {
	Name         string `json:"name"`
	DisplayText  string `json:"displaytext"`
	URL          string `json:"url"`
	Format       string `json:"format"`
	Hypervisor   string `json:"hypervisor"`
	ZoneID       string `json:"zoneid"`
	Checksum     string `json:"checksum"`
	TemplateType string `json:"templatetype"`
	Version      string `json:"version"`
	Bits         int    `json:"bits"`
	// Rollout starts the rollout at once (default true): download, seed, switch.
	Rollout *bool `json:"rollout"`
	// SetMinVersion also sets minreq.sysvmtemplate.version when the rollout switches.
	SetMinVersion bool `json:"setminversion"`
	// RollOn recreates the SSVMs and CPVMs on the new template, one at a time per zone.
	RollOn bool `json:"rollon"`
}

// rolloutBody starts a rollout of registered templates.
type rolloutBody struct {
	TemplateIDs   []string `json:"templateids"`
	SetMinVersion bool     `json:"setminversion"`
	NoSwitch      bool     `json:"noswitch"`
	// RollOn recreates the SSVMs and CPVMs on the new template, one at a time per zone.
	RollOn bool `json:"rollon"`
}

// templateHypervisors are the hypervisors a system template can be registered for, with the
// formats each takes and the file name endings the guide's images have.
var templateHypervisors = []struct {
	name    string
	formats []string
	ends    []string
}{
	{string(hypervisors.KVM), []string{"QCOW2", "RAW"}, []string{".qcow2", ".qcow2.bz2", ".qcow2.gz", ".qcow2.zip", ".img", ".raw", ".img.bz2", ".raw.bz2"}},
	{string(hypervisors.VMware), []string{"OVA"}, []string{".ova"}},
	{string(hypervisors.XenServer), []string{"VHD"}, []string{".vhd", ".vhd.bz2", ".vhd.gz", ".vhd.zip"}},
	{"Hyperv", []string{"VHD", "VHDX"}, []string{".vhd", ".vhdx", ".vhd.zip", ".vhdx.zip", ".vhd.bz2"}},
}

// parseTemplateHypervisor accepts KVM, VMware, XenServer (xen, xcp-ng) and Hyperv (Hyper-V).
func parseTemplateHypervisor(s string) (string, bool) {
	switch strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), "-", "")) {
	case "hyperv":
		return "Hyperv", true
	}
	t, err := hypervisors.ParseType(s)
	if err != nil {
		return "", false
	}
	return string(t), true
}

var versionPattern = regexp.MustCompile(`^[0-9]+(\.[0-9]+){1,3}([-.+][0-9A-Za-z.]+)?$`)

// minSystemMemoryMB is the least memory of a system offering a 64-bit template runs with.
const minSystemMemoryMB = 512

func (s *Server) mountTemplates() error {
	tmpl := []string{"id", "created:time", "name", "hypervisor", "format", "url", "checksum", "templatetype", "version",
		"zoneid?", "size:int", "status", "bits:int", "minversionset:bool"}
	s.AddSchema("Template", objectSchema("a template (a URL's password is never shown)", tmpl...))
	s.AddSchema("TemplatePoolRef", objectSchema("a template's copy in one primary storage pool",
		"id", "created:time", "templateid", "storageid", "state", "downloadpercent:int", "installpath", "zoneid?",
		"storagename?", "checksum?", "size:int", "error?"))
	s.AddSchema("TemplateZoneRef", objectSchema("a template's download into one zone's secondary store and its switch there",
		"id", "created:time", "templateid", "zoneid", "storeid", "ssvm?", "status", "downloadpercent:int", "downloadedbytes:int",
		"totalbytes:int", "installpath?", "checksum?", "switched:bool", "switchedat?:time", "previoustemplate?"))
	s.AddSchema("TemplateDetail", objectSchema("a template with its state per zone (download: \"x% Downloaded\", \"Download Complete\", "+
		"\"Installing\", \"Ready\", \"Failed: <reason>\") and per primary storage pool",
		append(tmpl, "zones:[]@TemplateZoneRef", "storagepools:[]@TemplatePoolRef")...))
	s.AddSchema("RegisterTemplateRequest", objectSchema("CloudStack's registerTemplate for a system VM template, plus version and rollout",
		"name", "displaytext?", "url", "format?", "hypervisor", "zoneid?", "checksum?", "templatetype?:string=SYSTEM|ROUTING",
		"version", "bits?:int", "rollout?:bool", "setminversion?:bool", "rollon?:bool"))
	s.AddSchema("RegisteredTemplate", objectSchema("the registered template and, when its rollout started, the operation",
		"template:@Template", "operation?:@Operation"))
	s.AddSchema("TemplateRolloutRequest", objectSchema("a rollout of registered templates",
		"templateids?:[]string", "setminversion?:bool", "noswitch?:bool", "rollon?:bool"))
	s.AddSchema("TemplateRollback", objectSchema("the settings a rollback set back", "templateid", "restored:[]@TemplateSetting"))
	s.AddSchema("TemplateSetting", objectSchema("a setting changed", "setting", "value", "previous?"))
	started := Response{Status: 202, Description: "the rollout started", Schema: "OperationEnvelope"}
	busy := Response{Status: 409, Description: "a rollout of these templates runs (named in operation)", Schema: "ConflictError"}
	unavailable := Response{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}
	for _, r := range []Route{
		{Method: http.MethodPost, Path: "/templates", Role: models.RoleAdmin, Handler: s.registerTemplate, Doc: Doc{
			OperationID: "registerTemplate", Tag: "Templates", Summary: "Register a system VM template (and roll it out)",
			Description: "CloudStack's registerTemplate: name, url (http or https; the guide's file names systemvmtemplate-4.15.0-kvm.qcow2.bz2, " +
				"-vmware.ova, -xen.vhd.bz2, -hyperv.vhd.zip; compressed images are decompressed), format, hypervisor, zoneid (one zone, or " +
				"-1 / empty for all), checksum ({MD5}hex, {SHA-256}hex or bare hex), templatetype SYSTEM, plus version. A 64-bit template " +
				"(bits, default 64) needs system offerings of at least 512 MB. A password in the URL is kept encrypted and never shown. " +
				"Unless rollout is false the rollout starts at once (202 with the operation).",
			Body: "RegisterTemplateRequest", BodyRequired: true,
			Responses: []Response{{Status: 201, Description: "registered (rollout false)", Schema: "RegisteredTemplate"},
				{Status: 202, Description: "registered and its rollout started", Schema: "RegisteredTemplate"}, unavailable}}},
		{Method: http.MethodPost, Path: "/templates/{id}/rollout", Role: models.RoleAdmin, Handler: s.rolloutTemplate, Doc: Doc{
			OperationID: "rolloutTemplate", Tag: "Templates", Summary: "Roll a template out: download per zone, seed every pool, switch",
			Description: "Starts a template.rollout operation (workflow template:<id>).", Body: "TemplateRolloutRequest",
			Responses: []Response{started, busy, unavailable}}},
		{Method: http.MethodPost, Path: "/templates/rollout", Role: models.RoleAdmin, Handler: s.rolloutTemplates, Doc: Doc{
			OperationID: "rolloutTemplates", Tag: "Templates", Summary: "Roll several templates (one per hypervisor) out in one operation",
			Description: "One template's, zone's or pool's failure never stops the others; the result reports each.",
			Body:        "TemplateRolloutRequest", BodyRequired: true,
			Responses: []Response{started, busy, unavailable}}},
		{Method: http.MethodPost, Path: "/templates/{id}/rollback", Role: models.RoleAdmin, Handler: s.rollbackTemplate, Doc: Doc{
			OperationID: "rollbackTemplate", Tag: "Templates", Summary: "Set router.template.<hypervisor> back to what it was before the template's rollout",
			Description: "Per zone the rollout switched, where the setting still names this template; minreq.sysvmtemplate.version too when " +
				"the rollout set it. New system VMs use the previous template at once.",
			Responses: []Response{{Status: 200, Description: "what was set back", Schema: "TemplateRollback"}}}},
	} {
		if err := s.Handle(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) registerTemplate(c echo.Context) error {
	ctx := c.Request().Context()
	var b registerTemplateBody
	if err := decodeBody(c, &b, false); err != nil {
		return err
	}
	tpl, fullURL, err := s.validateTemplate(ctx, b)
	if err != nil {
		return err
	}
	tpl.ID = models.NewID()
	if fullURL != tpl.URL {
		// The secret first: a row never names a secret that is not there.
		tpl.URLSecretRef = "template-url:" + tpl.ID
		if err := s.store.Secrets.Put(ctx, tpl.URLSecretRef, "template-url", []byte(fullURL)); err != nil {
			return Internal(err, "seal the URL of template %s", tpl.Name)
		}
	}
	if err := s.store.DB.WithContext(ctx).Create(&tpl).Error; err != nil {
		return Internal(err, "register template %s", tpl.Name)
	}
	s.log.Info("template registered", "template", tpl.ID, "name", tpl.Name, "hypervisor", tpl.Hypervisor, "url", tpl.URL)
	if b.Rollout != nil && !*b.Rollout {
		return c.JSON(http.StatusCreated, map[string]any{"template": tpl})
	}
	op, err := s.startRollout(ctx, c, []models.Template{tpl}, rolloutBody{SetMinVersion: b.SetMinVersion, RollOn: b.RollOn})
	if err != nil {
		// The template stays registered: say so, and how to start its rollout again.
		var ae *Error
		if errors.As(err, &ae) {
			ae.Message += fmt.Sprintf(" (template %s is registered; start its rollout with POST /api/v1/templates/%s/rollout)", tpl.ID, tpl.ID)
		}
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]any{"template": tpl, "operation": s.view(op)})
}

// validateTemplate checks every field, naming the first bad one; it returns the row to store
// (URL redacted) and the full URL.
func (s *Server) validateTemplate(ctx context.Context, b registerTemplateBody) (models.Template, string, error) {
	var tpl models.Template
	name := strings.TrimSpace(b.Name)
	switch {
	case name == "":
		return tpl, "", BadRequest("name", "name is required")
	case len(name) > 255:
		return tpl, "", BadRequest("name", "name is longer than 255 characters")
	}
	hv, okHV := parseTemplateHypervisor(b.Hypervisor)
	if !okHV {
		return tpl, "", BadRequest("hypervisor", "hypervisor %q is not one of KVM, VMware, XenServer, Hyperv", b.Hypervisor)
	}
	var spec struct {
		formats, ends []string
	}
	for _, h := range templateHypervisors {
		if h.name == hv {
			spec.formats, spec.ends = h.formats, h.ends
		}
	}
	format := strings.ToUpper(strings.TrimSpace(b.Format))
	if format == "" {
		format = spec.formats[0]
	}
	if !contains(spec.formats, format) {
		return tpl, "", BadRequest("format", "format %q is not one %s takes (%s)", b.Format, hv, strings.Join(spec.formats, ", "))
	}
	raw := strings.TrimSpace(b.URL)
	if raw == "" {
		return tpl, "", BadRequest("url", "url is required")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return tpl, "", BadRequest("url", "url %s is not an http:// or https:// URL with a host", activities.RedactURL(raw))
	}
	file := strings.ToLower(path.Base(u.Path))
	matched := false
	for _, e := range spec.ends {
		if strings.HasSuffix(file, e) {
			matched = true
		}
	}
	if !matched {
		return tpl, "", BadRequest("url", "url %s: a %s template file ends in %s (e.g. systemvmtemplate-4.15.0-%s%s)",
			u.Redacted(), hv, strings.Join(spec.ends, ", "), guideSuffix(hv), spec.ends[0])
	}
	zoneID := strings.TrimSpace(b.ZoneID)
	if zoneID == "-1" {
		zoneID = ""
	}
	if zoneID != "" {
		var n int64
		if err := s.store.DB.WithContext(ctx).Model(&models.Zone{}).Where("id = ?", zoneID).Count(&n).Error; err != nil {
			return tpl, "", Internal(err, "read zones")
		}
		if n == 0 {
			return tpl, "", BadRequest("zoneid", "no zone with id %s (use -1 or leave it empty for every zone)", zoneID)
		}
	}
	sum, err := hypervisors.ParseChecksum(b.Checksum)
	if err != nil {
		return tpl, "", BadRequest("checksum", "%v; use {MD5}hex, {SHA-256}hex or bare hex", err)
	}
	tt := strings.ToUpper(strings.TrimSpace(b.TemplateType))
	if tt == "" {
		tt = "SYSTEM"
	}
	if tt != "SYSTEM" && tt != "ROUTING" {
		return tpl, "", BadRequest("templatetype", "templatetype %q: a system VM template is SYSTEM (or ROUTING)", b.TemplateType)
	}
	version := strings.TrimSpace(b.Version)
	if version == "" {
		return tpl, "", BadRequest("version", "version is required (the release the template carries, e.g. 4.15.0)")
	}
	if !versionPattern.MatchString(version) {
		return tpl, "", BadRequest("version", "version %q is not a release number like 4.15.0", b.Version)
	}
	bits := b.Bits
	if bits == 0 {
		bits = 64
	}
	if bits != 32 && bits != 64 {
		return tpl, "", BadRequest("bits", "bits is 32 or 64, not %d", b.Bits)
	}
	if bits == 64 {
		var small []models.ServiceOffering
		if err := s.store.DB.WithContext(ctx).Where("system_vm_type <> '' AND memory_mb < ?", minSystemMemoryMB).
			Order("name").Find(&small).Error; err != nil {
			return tpl, "", Internal(err, "read service offerings")
		}
		if len(small) > 0 {
			var names []string
			for _, o := range small {
				names = append(names, fmt.Sprintf("%s (%s, %d MB)", o.Name, o.SystemVMType, o.MemoryMB))
			}
			return tpl, "", BadRequest("bits", "a 64-bit system VM template needs system offerings of at least %d MB of memory; "+
				"raise these first: %s", minSystemMemoryMB, strings.Join(names, ", "))
		}
	}
	var dup int64
	if err := s.store.DB.WithContext(ctx).Model(&models.Template{}).Where("name = ? AND hypervisor = ?", name, hv).Count(&dup).Error; err != nil {
		return tpl, "", Internal(err, "read templates")
	}
	if dup > 0 {
		return tpl, "", BadRequest("name", "a %s template named %q is registered already: a new template needs a new name "+
			"(router.template.<hypervisor> names it)", hv, name)
	}
	tpl = models.Template{Name: name, Hypervisor: hv, Format: format, URL: u.Redacted(), Checksum: sum.String(), Type: tt,
		Version: version, ZoneID: zoneID, State: models.TemplateDownloading, Bits: bits}
	if strings.TrimSpace(b.Checksum) == "" {
		tpl.Checksum = ""
	}
	return tpl, raw, nil
}

func guideSuffix(hv string) string {
	switch hv {
	case string(hypervisors.KVM):
		return "kvm"
	case string(hypervisors.VMware):
		return "vmware"
	case string(hypervisors.XenServer):
		return "xen"
	}
	return "hyperv"
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func (s *Server) rolloutTemplate(c echo.Context) error {
	ctx := c.Request().Context()
	var b rolloutBody
	if err := decodeBody(c, &b, true); err != nil {
		return err
	}
	if len(b.TemplateIDs) > 0 {
		return BadRequest("templateids", "templateids belongs to POST /templates/rollout; this path names its template")
	}
	tpl, err := getRow[models.Template](c, s.store.DB, c.Param("id"), "template")
	if err != nil {
		return err
	}
	op, err := s.startRollout(ctx, c, []models.Template{tpl}, b)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]any{"operation": s.view(op)})
}

func (s *Server) rolloutTemplates(c echo.Context) error {
	ctx := c.Request().Context()
	var b rolloutBody
	if err := decodeBody(c, &b, false); err != nil {
		return err
	}
	if len(b.TemplateIDs) == 0 {
		return BadRequest("templateids", "templateids lists the templates to roll out")
	}
	var tpls []models.Template
	seen := map[string]bool{}
	for _, id := range b.TemplateIDs {
		if seen[id] {
			return BadRequest("templateids", "template %s is listed twice", id)
		}
		seen[id] = true
		var t models.Template
		if err := s.store.DB.WithContext(ctx).First(&t, "id = ?", id).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return BadRequest("templateids", "no template with id %s", id)
			}
			return Internal(err, "read template %s", id)
		}
		tpls = append(tpls, t)
	}
	op, err := s.startRollout(ctx, c, tpls, b)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]any{"operation": s.view(op)})
}

// startRollout starts one template.rollout operation through the engine.
func (s *Server) startRollout(ctx context.Context, c echo.Context, tpls []models.Template, b rolloutBody) (operations.Operation, error) {
	ids := make([]string, len(tpls))
	names := make([]string, len(tpls))
	zone := tpls[0].ZoneID
	for i, t := range tpls {
		ids[i], names[i] = t.ID, t.Name
		if t.ZoneID != zone {
			zone = ""
		}
	}
	sort.Strings(ids)
	spec := operations.Spec{
		Target:   workflows.TemplateTarget(ids, zone),
		Workflow: workflows.TemplateRolloutWorkflowName, TargetType: TargetTemplate, TargetID: ids[0],
		TargetName: strings.Join(names, ", "),
		Input: func(opID string) any {
			return workflows.TemplateRolloutInput{OperationID: opID, TemplateIDs: ids, SetMinVersion: b.SetMinVersion,
				NoSwitch: b.NoSwitch, RollOn: b.RollOn}
		},
		Memo: map[string]any{"templateIds": strings.Join(ids, ",")},
	}
	if k, found := Caller(c); found {
		spec.RequestedBy = k.Name
	}
	op, err := s.ops.Start(ctx, spec)
	if err != nil {
		return op, s.operationError(err)
	}
	return op, nil
}

func (s *Server) rollbackTemplate(c echo.Context) error {
	tpl, err := getRow[models.Template](c, s.store.DB, c.Param("id"), "template")
	if err != nil {
		return err
	}
	res, err := activities.RollbackTemplate(c.Request().Context(), s.store, tpl.ID)
	if err != nil {
		return Internal(err, "roll back template %s", tpl.Name)
	}
	return ok(c, res)
}

// templateDetail is a template with its per-zone and per-pool state.
type templateDetail struct {
	models.Template
	Zones        []models.TemplateZoneRef `json:"zones"`
	StoragePools []models.TemplatePoolRef `json:"storagepools"`
}

func (s *Server) getTemplate(c echo.Context) error {
	t, err := getRow[models.Template](c, s.store.DB, c.Param("id"), "template")
	if err != nil {
		return err
	}
	out := templateDetail{Template: t, Zones: []models.TemplateZoneRef{}, StoragePools: []models.TemplatePoolRef{}}
	db := s.store.DB.WithContext(c.Request().Context())
	if err := db.Where("template_id = ?", t.ID).Order("zone_id").Find(&out.Zones).Error; err != nil {
		return Internal(err, "read template %s zones", t.ID)
	}
	if err := db.Where("template_id = ?", t.ID).Order("pool_name, pool_id").Find(&out.StoragePools).Error; err != nil {
		return Internal(err, "read template %s pools", t.ID)
	}
	return ok(c, out)
}
