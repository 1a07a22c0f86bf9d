package api

import (
	"context"
	"strings"
	"testing"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

func TestSettings(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		e := newEnv(t, s, Config{})
		f := seed(t, s)
		ro, admin := models.RoleReadOnly, models.RoleAdmin
		ctx := context.Background()
		const name = "router.health.checks.basic.interval"

		// Every definition, with its default in effect.
		all := e.want(e.do("GET", "/settings?pagesize=500", ro, nil), 200, "settings")
		if count(all) != len(models.Definitions()) || len(items(t, all)) != count(all) {
			t.Fatalf("settings count %d, items %d, want %d", count(all), len(items(t, all)), len(models.Definitions()))
		}
		byName := map[string]map[string]any{}
		for _, it := range items(t, all) {
			byName[it["name"].(string)] = it
		}
		if v := byName["router.health.checks.enabled"]; v["value"] != "true" || v["scope"] != "default" || v["defaultvalue"] != "true" || v["type"] != "boolean" {
			t.Errorf("router.health.checks.enabled = %v", v)
		}
		if v := byName["consoleproxy.session.max"]; v["value"] != "50" || v["category"] != "Console Proxy" {
			t.Errorf("consoleproxy.session.max = %v", v)
		}
		health := e.want(e.do("GET", "/settings?category=router%20health&name=THRESHOLD", ro, nil), 200, "filtered")
		if got := names(items(t, health)); len(got) != 3 || !strings.Contains(strings.Join(got, ","), "free.disk.space.threshold") {
			t.Errorf("Router Health thresholds = %v", got)
		}
		pg := e.want(e.do("GET", "/settings?pagesize=5&page=2", ro, nil), 200, "settings page 2")
		if got := names(items(t, pg)); len(got) != 5 || got[0] != names(items(t, all))[5] {
			t.Errorf("settings page 2 = %v", got)
		}

		// Set globally, then for zone-1: effective values by scope.
		v := e.want(e.do("PUT", "/settings/"+name, admin, map[string]any{"value": " 5 "}), 200, "set global").JSON
		if v["value"] != "5" || v["scope"] != "global" {
			t.Errorf("PUT global = %v", v)
		}
		v = e.want(e.do("PUT", "/settings/"+name, admin, map[string]any{"value": "7", "scope": "zone", "scopeid": f.zone1}), 200, "set zone").JSON
		if v["value"] != "7" || v["scope"] != "zone" || v["scopeid"] != f.zone1 {
			t.Errorf("PUT zone = %v", v)
		}
		if n, _ := s.Settings.Int(ctx, name, models.Scope{ZoneID: f.zone1}); n != 7 {
			t.Errorf("the change is not in effect at once: zone value %d", n)
		}
		get := func(query string) map[string]any {
			t.Helper()
			return e.want(e.do("GET", "/settings/"+name+query, ro, nil), 200, "get "+query).JSON
		}
		if g := get(""); g["value"] != "5" || g["scope"] != "global" || len(g["overrides"].([]any)) != 2 {
			t.Errorf("global view = %v", g)
		}
		if g := get("?zoneid=" + f.zone1); g["value"] != "7" || g["scope"] != "zone" || g["scopeid"] != f.zone1 {
			t.Errorf("zone-1 view = %v", g)
		}
		if g := get("?zoneid=" + f.zone2); g["value"] != "5" || g["scope"] != "global" {
			t.Errorf("zone-2 view = %v", g)
		}
		// A cluster sees its zone's value until it has its own.
		if g := get("?clusterid=" + f.cluster1); g["value"] != "7" || g["scope"] != "zone" {
			t.Errorf("cluster in zone-1 view = %v", g)
		}
		// No setting takes cluster or account overrides today; the definition says so.
		e.wantErr(e.do("PUT", "/settings/"+name, admin, map[string]any{"value": "9", "scope": "CLUSTER", "scopeid": f.cluster1}),
			400, CodeBadRequest, "scope", "cluster scope for a zone setting")
		e.wantErr(e.do("GET", "/settings/"+name+"?clusterid="+f.cluster1+"&zoneid="+f.zone2, ro, nil), 400, CodeBadRequest, "clusterid", "cluster outside the zone")
		if g := e.want(e.do("GET", "/settings?name=router.stats.interval&accountid="+f.account+"&zoneid="+f.zone1, ro, nil), 200, "account view"); items(t, g)[0]["value"] != "300" {
			t.Errorf("account view = %s", g.Raw)
		}
		e.wantErr(e.do("GET", "/settings?accountid=nobody", ro, nil), 400, CodeBadRequest, "accountid", "unknown account")

		// Refusals, each naming the field.
		for _, c := range []struct {
			name  string
			body  map[string]any
			field string
		}{
			{name, map[string]any{"value": "abc"}, "value"},
			{name, map[string]any{"value": "1441"}, "value"},
			{"router.health.checks.max.cpu.usage.threshold", map[string]any{"value": "101"}, "value"},
			{"router.version.check", map[string]any{"value": "maybe"}, "value"},
			{"router.health.checks.to.exclude", map[string]any{"value": "dns check.py"}, "value"},
			{name, map[string]any{"value": "5", "scope": "pod", "scopeid": f.pod1}, "scope"},
			{"minreq.sysvmtemplate.version", map[string]any{"value": "4.15.0", "scope": "cluster", "scopeid": f.cluster1}, "scope"},
			{name, map[string]any{"value": "5", "scope": "zone"}, "scopeid"},
			{name, map[string]any{"value": "5", "scope": "zone", "scopeid": "00000000-0000-0000-0000-000000000000"}, "scopeid"},
			{name, map[string]any{"value": "5", "scope": "account", "scopeid": f.account}, "scope"},
			{name, map[string]any{"value": "5", "scopeid": f.zone1}, "scopeid"},
		} {
			r := e.do("PUT", "/settings/"+c.name, admin, c.body)
			e.wantErr(r, 400, CodeBadRequest, c.field, "PUT "+c.name)
		}
		e.wantErr(e.do("PUT", "/settings/no.such.setting", admin, map[string]any{"value": "1"}), 404, CodeNotFound, "", "unknown setting")
		e.wantErr(e.do("GET", "/settings/no.such.setting", ro, nil), 404, CodeNotFound, "", "unknown setting GET")
		if n, _ := s.Settings.Int(ctx, name, models.Scope{}); n != 5 {
			t.Errorf("a refused PUT changed the value: %d", n)
		}

		// Reset the zone override: zone-1 falls back to global.
		r := e.want(e.do("DELETE", "/settings/"+name+"?scope=zone&scopeid="+f.zone1, admin, nil), 200, "reset zone").JSON
		if r["value"] != "5" || r["scope"] != "global" {
			t.Errorf("after reset zone-1 = %v", r)
		}
		e.wantErr(e.do("DELETE", "/settings/"+name+"?scope=zone&scopeid="+f.zone1, admin, nil), 404, CodeNotFound, "", "reset twice")
		e.wantErr(e.do("DELETE", "/settings/"+name+"?scope=zone&scopeid=nope", admin, nil), 400, CodeBadRequest, "scopeid", "reset unknown zone")
		e.wantErr(e.do("DELETE", "/settings/"+name+"?scope=rack", admin, nil), 400, CodeBadRequest, "scope", "reset bad scope")
		r = e.want(e.do("DELETE", "/settings/"+name, admin, nil), 200, "reset global").JSON
		if r["value"] != "3" || r["scope"] != "default" {
			t.Errorf("after global reset = %v", r)
		}

		// Every change is an event naming the setting, the scope and the key.
		var events []models.Event
		modelstest.Must(t, s.DB.Where("type = ?", EventConfigEdit).Order("created_at, id").Find(&events).Error, "events")
		if len(events) != 4 {
			t.Fatalf("%d %s events, want 4 (2 sets, 2 resets): %+v", len(events), EventConfigEdit, events)
		}
		var zoneEvent *models.Event
		for i := range events {
			if !strings.Contains(events[i].Description, "by API key admin-key") {
				t.Errorf("event does not name the key: %q", events[i].Description)
			}
			if strings.Contains(events[i].Description, `set to "7" at zone `+f.zone1) {
				zoneEvent = &events[i]
			}
		}
		if zoneEvent == nil || zoneEvent.ZoneID != f.zone1 || zoneEvent.ResourceID != f.zone1 || !strings.Contains(zoneEvent.Description, name) ||
			!strings.Contains(zoneEvent.Description, `was "5" from global`) {
			t.Errorf("zone change event = %+v", zoneEvent)
		}
		listed := e.want(e.do("GET", "/events?type="+EventConfigEdit, ro, nil), 200, "events via API")
		if count(listed) != 4 {
			t.Errorf("GET /events?type=%s count = %d", EventConfigEdit, count(listed))
		}
	})
}
