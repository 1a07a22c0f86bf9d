package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/models"
)

// maxSettingValue bounds a setting's value (the longest are comma lists of check names).
const maxSettingValue = 4096

// EventConfigEdit is the event type of a setting change, as CloudStack names it.
const EventConfigEdit = "CONFIGURATION.VALUE.EDIT"

func settingScopes() []string {
	return []string{models.ScopeGlobal, models.ScopeZone, models.ScopeCluster, models.ScopeAccount}
}

func scopeParams() []Param {
	return []Param{
		{Name: "zoneid", Type: "string", Description: "show the effective values in this zone"},
		{Name: "clusterid", Type: "string", Description: "show the effective values in this cluster (its zone's overrides apply too)"},
		{Name: "accountid", Type: "string", Description: "show the effective values for this account"},
	}
}

func (s *Server) settingsRoutes() []Route {
	list := append(scopeParams(),
		Param{Name: "name", Type: "string", Description: "part of the setting name (case-insensitive)"},
		Param{Name: "category", Type: "string", Description: "category (case-insensitive): Templates, Console Proxy, Router Health, ..."})
	return []Route{
		{Method: http.MethodGet, Path: "/settings", Role: models.RoleReadOnly, Handler: s.listSettings, Doc: Doc{
			OperationID: "listSettings", Summary: "List every setting with its effective value", Tag: "Settings",
			Description: "Like listConfigurations: each definition with its default and the value in effect at the given scope " +
				"(account, then cluster, then zone, then global, then the default); scope tells where the value came from.",
			Query: list, Paged: true,
			Responses: []Response{{Status: 200, Description: "a page of settings", Schema: "SettingList"}}}},
		{Method: http.MethodGet, Path: "/settings/{name}", Role: models.RoleReadOnly, Handler: s.getSetting, Doc: Doc{
			OperationID: "getSetting", Summary: "Get one setting with its effective value and every stored override", Tag: "Settings",
			Query:     scopeParams(),
			Responses: []Response{{Status: 200, Description: "the setting", Schema: "SettingDetail"}}}},
		{Method: http.MethodPut, Path: "/settings/{name}", Role: models.RoleAdmin, Handler: s.putSetting, Doc: Doc{
			OperationID: "updateSetting", Summary: "Set a setting globally or for one zone, cluster or account", Tag: "Settings",
			Description: "Like updateConfiguration. The change takes effect at once, without a restart, and is recorded as a " +
				EventConfigEdit + " event.",
			Body: "SettingUpdate", BodyRequired: true,
			Responses: []Response{{Status: 200, Description: "the value now stored at that scope", Schema: "Setting"}}}},
		{Method: http.MethodDelete, Path: "/settings/{name}", Role: models.RoleAdmin, Handler: s.resetSetting, Doc: Doc{
			OperationID: "resetSetting", Summary: "Remove an override so the next wider scope (or the default) applies", Tag: "Settings",
			Query: []Param{
				{Name: "scope", Type: "string", Enum: settingScopes(), Description: "scope of the override (global when absent)"},
				{Name: "scopeid", Type: "string", Description: "zone, cluster or account id of the override"},
			},
			Responses: []Response{{Status: 200, Description: "the value now in effect at that scope", Schema: "Setting"}}}},
	}
}

// readScope reads ?zoneid=&clusterid=&accountid=, checking each names something that exists.
// A cluster brings its zone along, so its zone's overrides apply under the cluster's own.
func (s *Server) readScope(c echo.Context) (models.Scope, error) {
	ctx := c.Request().Context()
	sc := models.Scope{ZoneID: c.QueryParam("zoneid"), ClusterID: c.QueryParam("clusterid"), AccountID: c.QueryParam("accountid")}
	if sc.ZoneID != "" {
		if err := s.mustExist(ctx, &models.Zone{}, sc.ZoneID, "zoneid", "zone"); err != nil {
			return sc, err
		}
	}
	if sc.ClusterID != "" {
		var cl models.Cluster
		if err := s.mustExist(ctx, &cl, sc.ClusterID, "clusterid", "cluster"); err != nil {
			return sc, err
		}
		if sc.ZoneID != "" && sc.ZoneID != cl.ZoneID {
			return sc, BadRequest("clusterid", "cluster %s is in zone %s, not in zone %s", cl.ID, cl.ZoneID, sc.ZoneID)
		}
		sc.ZoneID = cl.ZoneID
	}
	if sc.AccountID != "" {
		if err := s.mustExist(ctx, &models.Account{}, sc.AccountID, "accountid", "account"); err != nil {
			return sc, err
		}
	}
	return sc, nil
}

// mustExist loads dst by id, answering 400 on field when there is no such row.
func (s *Server) mustExist(ctx context.Context, dst any, id, field, what string) error {
	err := s.store.DB.WithContext(ctx).Where("id = ?", id).Take(dst).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return BadRequest(field, "%s: no %s with id %q", field, what, id)
	}
	if err != nil {
		return Internal(err, "read %s %s", what, id)
	}
	return nil
}

func (s *Server) listSettings(c echo.Context) error {
	ctx := c.Request().Context()
	p, err := ParsePage(c)
	if err != nil {
		return err
	}
	sc, err := s.readScope(c)
	if err != nil {
		return err
	}
	name, cat := strings.ToLower(c.QueryParam("name")), c.QueryParam("category")
	var matched []models.Definition
	for _, d := range models.Definitions() {
		if name != "" && !strings.Contains(strings.ToLower(d.Name), name) {
			continue
		}
		if cat != "" && !strings.EqualFold(d.Category, cat) {
			continue
		}
		matched = append(matched, d)
	}
	out := ListResponse[models.Value]{Count: int64(len(matched)), Page: p.Page, PageSize: p.PageSize, Items: []models.Value{}}
	if p.Offset() < len(matched) {
		for _, d := range matched[p.Offset():min(len(matched), p.Offset()+p.PageSize)] {
			v, err := s.store.Settings.Get(ctx, d.Name, sc)
			if err != nil {
				return Internal(err, "read setting %s", d.Name)
			}
			out.Items = append(out.Items, v)
		}
	}
	return ok(c, out)
}

// settingDetail is a setting's effective value with every stored override of it.
type settingDetail struct {
	models.Value
	Overrides []models.Setting `json:"overrides"`
}

func (s *Server) lookupSetting(c echo.Context) (models.Definition, error) {
	name := c.Param("name")
	d, found := models.Lookup(name)
	if !found {
		return d, NotFound("no setting named %q; GET /api/v1/settings lists them", name)
	}
	return d, nil
}

func (s *Server) getSetting(c echo.Context) error {
	ctx := c.Request().Context()
	d, err := s.lookupSetting(c)
	if err != nil {
		return err
	}
	sc, err := s.readScope(c)
	if err != nil {
		return err
	}
	v, err := s.store.Settings.Get(ctx, d.Name, sc)
	if err != nil {
		return Internal(err, "read setting %s", d.Name)
	}
	out := settingDetail{Value: v, Overrides: []models.Setting{}}
	if err := s.store.DB.WithContext(ctx).Where("name = ?", d.Name).Order("scope, scope_id").Find(&out.Overrides).Error; err != nil {
		return Internal(err, "read overrides of %s", d.Name)
	}
	return ok(c, out)
}

// settingUpdate is the body of PUT /settings/{name}.
type settingUpdate struct {
	Value   *string `json:"value"`
	Scope   string  `json:"scope"`
	ScopeID string  `json:"scopeid"`
}

// scopeTarget checks a (scope, scopeid) pair: the scope is known and the id names an existing
// zone, cluster or account. It returns the scope to read effective values with and the zone
// the change concerns (for the event).
func (s *Server) scopeTarget(ctx context.Context, scope, scopeID, scopeField, idField string) (string, models.Scope, string, error) {
	if scope == "" {
		scope = models.ScopeGlobal
	}
	scope, err := canonical(scopeField, scope, settingScopes())
	if err != nil {
		return "", models.Scope{}, "", err
	}
	switch scope {
	case models.ScopeGlobal:
		if scopeID != "" {
			return "", models.Scope{}, "", BadRequest(idField, "global settings take no scope id")
		}
		return scope, models.Scope{}, "", nil
	case models.ScopeZone:
		if scopeID == "" {
			return "", models.Scope{}, "", BadRequest(idField, "a zone-scoped setting needs the zone id")
		}
		if err := s.mustExist(ctx, &models.Zone{}, scopeID, idField, "zone"); err != nil {
			return "", models.Scope{}, "", err
		}
		return scope, models.Scope{ZoneID: scopeID}, scopeID, nil
	case models.ScopeCluster:
		if scopeID == "" {
			return "", models.Scope{}, "", BadRequest(idField, "a cluster-scoped setting needs the cluster id")
		}
		var cl models.Cluster
		if err := s.mustExist(ctx, &cl, scopeID, idField, "cluster"); err != nil {
			return "", models.Scope{}, "", err
		}
		return scope, models.Scope{ZoneID: cl.ZoneID, ClusterID: cl.ID}, cl.ZoneID, nil
	default: // account
		if scopeID == "" {
			return "", models.Scope{}, "", BadRequest(idField, "an account-scoped setting needs the account id")
		}
		if err := s.mustExist(ctx, &models.Account{}, scopeID, idField, "account"); err != nil {
			return "", models.Scope{}, "", err
		}
		return scope, models.Scope{AccountID: scopeID}, "", nil
	}
}

// scopeAllowed refuses a scope the setting's definition does not take (before looking the
// scope id up: that the setting cannot be set there is the more useful answer).
func scopeAllowed(d models.Definition, scope string) error {
	if scope == "" {
		scope = models.ScopeGlobal
	}
	for _, sc := range d.Scopes {
		if strings.EqualFold(sc, scope) {
			return nil
		}
	}
	if _, err := canonical("scope", scope, settingScopes()); err != nil {
		return err
	}
	return BadRequest("scope", "%s cannot be set at %s scope (allowed: %s)", d.Name, strings.ToLower(scope), strings.Join(d.Scopes, ", "))
}

// settingErr maps a models.SettingError to a 400 naming the body field it is about.
func settingErr(d models.Definition, err error) error {
	var se *models.SettingError
	if !errors.As(err, &se) {
		return Internal(err, "store setting %s", d.Name)
	}
	field := se.Field
	if field == d.Name {
		field = "value"
	}
	return BadRequest(field, "%s", se.Error())
}

func describeScope(scope, id string) string {
	if scope == models.ScopeGlobal || id == "" {
		return scope
	}
	return scope + " " + id
}

func (s *Server) putSetting(c echo.Context) error {
	ctx := c.Request().Context()
	d, err := s.lookupSetting(c)
	if err != nil {
		return err
	}
	var body settingUpdate
	if err := decodeBody(c, &body, false); err != nil {
		return err
	}
	if body.Value == nil {
		return BadRequest("value", "value is required (use DELETE to reset a setting)")
	}
	if len(*body.Value) > maxSettingValue {
		return BadRequest("value", "value is %d bytes; a setting takes at most %d", len(*body.Value), maxSettingValue)
	}
	if err := scopeAllowed(d, body.Scope); err != nil {
		return err
	}
	scope, sc, zoneID, err := s.scopeTarget(ctx, body.Scope, body.ScopeID, "scope", "scopeid")
	if err != nil {
		return err
	}
	before, err := s.store.Settings.Get(ctx, d.Name, sc)
	if err != nil {
		return Internal(err, "read setting %s", d.Name)
	}
	v, err := s.store.Settings.Set(ctx, d.Name, scope, body.ScopeID, *body.Value)
	if err != nil {
		return settingErr(d, err)
	}
	s.recordSettingEvent(c, fmt.Sprintf("setting %s set to %q at %s scope (was %q from %s)",
		d.Name, v.Value, describeScope(scope, body.ScopeID), before.Value, describeScope(before.Scope, before.ScopeID)),
		scope, body.ScopeID, zoneID)
	s.settingChanged(ctx, d.Name)
	return ok(c, v)
}

func (s *Server) resetSetting(c echo.Context) error {
	ctx := c.Request().Context()
	d, err := s.lookupSetting(c)
	if err != nil {
		return err
	}
	scopeID := c.QueryParam("scopeid")
	scope, sc, zoneID, err := s.scopeTarget(ctx, c.QueryParam("scope"), scopeID, "scope", "scopeid")
	if err != nil {
		return err
	}
	var row models.Setting
	err = s.store.DB.WithContext(ctx).Where("name = ? AND scope = ? AND scope_id = ?", d.Name, scope, scopeID).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return NotFound("%s has no override at %s scope", d.Name, describeScope(scope, scopeID))
	}
	if err != nil {
		return Internal(err, "read setting %s", d.Name)
	}
	if err := s.store.Settings.Reset(ctx, d.Name, scope, scopeID); err != nil {
		return Internal(err, "reset setting %s", d.Name)
	}
	now, err := s.store.Settings.Get(ctx, d.Name, sc)
	if err != nil {
		return Internal(err, "read setting %s", d.Name)
	}
	s.recordSettingEvent(c, fmt.Sprintf("setting %s override %q at %s scope removed; now %q from %s",
		d.Name, row.Value, describeScope(scope, scopeID), now.Value, describeScope(now.Scope, now.ScopeID)),
		scope, scopeID, zoneID)
	s.settingChanged(ctx, d.Name)
	return ok(c, now)
}

// recordSettingEvent records a CONFIGURATION.VALUE.EDIT event naming the caller. The change is
// already stored, so a failure to record it is logged rather than undoing the change.
func (s *Server) recordSettingEvent(c echo.Context, desc, scope, scopeID, zoneID string) {
	if k, found := Caller(c); found {
		desc += " by API key " + k.Name
	}
	e := models.Event{Type: EventConfigEdit, Level: "INFO", Description: desc, ZoneID: zoneID}
	if scope != models.ScopeGlobal {
		e.ResourceType, e.ResourceID = scope, scopeID
	}
	if err := s.store.AddEvent(c.Request().Context(), e); err != nil {
		s.log.Error("record setting change event", "error", err, "event", desc)
	}
}

// settingChanged tells the configured hook that a setting changed.
func (s *Server) settingChanged(ctx context.Context, name string) {
	if s.onSetting != nil {
		s.onSetting(ctx, name)
	}
}
