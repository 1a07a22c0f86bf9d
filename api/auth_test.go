package api

import (
	"context"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

func TestAuthAndRoles(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		e := newEnv(t, s, Config{})
		f := seed(t, s)

		// No key, a wrong key, a malformed header: 401 with a JSON error.
		r := e.do("GET", "/zones", "", nil)
		e.wantErr(r, 401, CodeUnauthorized, "", "no key")
		if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without WWW-Authenticate: Bearer: %v", r.Header)
		}
		e.wantErr(e.do("GET", "/zones", "sysvm_0000000000000000000000000000000000", nil), 401, CodeUnauthorized, "", "wrong key")
		req := e.do("GET", "/zones", "", nil) // control: the header helper sets Bearer only with a role
		e.wantErr(req, 401, CodeUnauthorized, "", "no key again")

		// Public endpoints need no key.
		h := e.want(e.do("GET", "/healthz", "", nil), 200, "healthz").JSON
		if h["status"] != "ok" || h["database"] != "ok" {
			t.Errorf("healthz = %v", h)
		}
		e.want(e.do("GET", "/openapi.json", "", nil), 200, "openapi.json")

		// read-only may GET, nothing else.
		ro, op, admin := models.RoleReadOnly, models.RoleOperator, models.RoleAdmin
		e.want(e.do("GET", "/routers", ro, nil), 200, "read-only GET")
		e.want(e.do("GET", "/settings", ro, nil), 200, "read-only GET settings")
		r = e.do("POST", "/routers/"+f.r4+"/reboot", ro, nil)
		e.wantErr(r, 403, CodeForbidden, "", "read-only reboot")
		if _, msg, _ := r.errParts(); !strings.Contains(msg, "read-only") || !strings.Contains(msg, "operator") {
			t.Errorf("403 message should name the key's role and the role needed: %q", msg)
		}
		e.wantErr(e.do("POST", "/system-vms/"+f.ssvm1+"/stop", ro, `{"forced": true}`), 403, CodeForbidden, "", "read-only stop")
		e.wantErr(e.do("POST", "/operations/x/cancel", ro, nil), 403, CodeForbidden, "", "read-only cancel")
		e.wantErr(e.do("PUT", "/settings/router.stats.interval", ro, map[string]any{"value": "60"}), 403, CodeForbidden, "", "read-only setting")
		// operator may start and cancel operations, not change settings or keys.
		e.wantErr(e.do("PUT", "/settings/router.stats.interval", op, map[string]any{"value": "60"}), 403, CodeForbidden, "", "operator setting")
		e.wantErr(e.do("DELETE", "/settings/router.stats.interval", op, nil), 403, CodeForbidden, "", "operator reset")
		e.wantErr(e.do("GET", "/api-keys", op, nil), 403, CodeForbidden, "", "operator lists keys")
		e.wantErr(e.do("POST", "/api-keys", op, map[string]any{"name": "x", "role": "admin"}), 403, CodeForbidden, "", "operator creates a key")
		// Without Temporal an operator's start reaches the handler and says what is missing.
		e.wantErr(e.do("POST", "/routers/"+f.r4+"/reboot", op, nil), 503, CodeUnavailable, "", "operator reboot without Temporal")

		// admin manages keys: the clear key once, hashes never.
		created := e.want(e.do("POST", "/api-keys", admin, map[string]any{"name": "ci-bot", "role": "operator"}), 201, "create key").JSON
		clear, _ := created["key"].(string)
		if !strings.HasPrefix(clear, "sysvm_") || created["role"] != "operator" || created["name"] != "ci-bot" {
			t.Fatalf("created key = %v", created)
		}
		if prefix, _ := created["prefix"].(string); !strings.HasPrefix(clear, prefix) || len(prefix) >= len(clear) {
			t.Errorf("prefix %q is not a short prefix of the key", prefix)
		}
		stored, err := s.Authenticate(context.Background(), clear)
		modelstest.Must(t, err, "the new key authenticates")
		if stored.Hash == clear || stored.Hash != models.HashAPIKey(clear) {
			t.Error("the key is not stored hashed")
		}
		e.keys["ci-bot"] = clear
		e.want(e.do("GET", "/zones", "ci-bot", nil), 200, "new key reads")
		e.wantErr(e.do("PUT", "/settings/router.stats.interval", "ci-bot", map[string]any{"value": "60"}), 403, CodeForbidden, "", "new operator key")

		listed := e.want(e.do("GET", "/api-keys", admin, nil), 200, "list keys")
		if count(listed) != 4 {
			t.Errorf("keys listed = %d, want 4 (3 of the env and ci-bot)", count(listed))
		}
		for _, k := range items(t, listed) {
			for _, secret := range []string{"key", "hash"} {
				if _, found := k[secret]; found {
					t.Errorf("GET /api-keys shows %s: %v", secret, k)
				}
			}
		}
		if strings.Contains(string(listed.Raw), clear) || strings.Contains(string(listed.Raw), models.HashAPIKey(clear)) {
			t.Error("GET /api-keys leaks a key or its hash")
		}
		if got := items(t, e.do("GET", "/api-keys?role=OPERATOR", admin, nil)); len(got) != 2 {
			t.Errorf("operator keys = %v", got)
		}
		e.wantErr(e.do("POST", "/api-keys", admin, map[string]any{"name": "ci-bot", "role": "read-only"}), 409, CodeConflict, "", "duplicate name")
		e.wantErr(e.do("POST", "/api-keys", admin, map[string]any{"name": "x", "role": "root"}), 400, CodeBadRequest, "role", "bad role")
		e.wantErr(e.do("POST", "/api-keys", admin, map[string]any{"name": "  ", "role": "admin"}), 400, CodeBadRequest, "name", "blank name")
		e.wantErr(e.do("POST", "/api-keys", admin, map[string]any{"name": "x"}), 400, CodeBadRequest, "role", "no role")

		e.want(e.do("DELETE", "/api-keys/"+stored.ID, admin, nil), 204, "delete key")
		e.wantErr(e.do("GET", "/zones", "ci-bot", nil), 401, CodeUnauthorized, "", "deleted key")
		e.wantErr(e.do("DELETE", "/api-keys/"+stored.ID, admin, nil), 404, CodeNotFound, "", "delete twice")

		// The last admin key cannot be deleted (nobody could manage keys afterwards).
		adminKey, err := s.Authenticate(context.Background(), e.keys[admin])
		modelstest.Must(t, err, "admin key")
		e.wantErr(e.do("DELETE", "/api-keys/"+adminKey.ID, admin, nil), 409, CodeConflict, "", "last admin key")
		second := e.want(e.do("POST", "/api-keys", admin, map[string]any{"name": "admin-2", "role": "admin"}), 201, "second admin").JSON
		e.want(e.do("DELETE", "/api-keys/"+adminKey.ID, admin, nil), 204, "delete first admin once another exists")
		e.keys["admin-2"] = second["key"].(string)
		e.want(e.do("GET", "/api-keys", "admin-2", nil), 200, "second admin works")

		// Key changes are audited.
		var n int64
		modelstest.Must(t, s.DB.Model(&models.Event{}).Where("type IN ?", []string{"APIKEY.CREATE", "APIKEY.DELETE"}).Count(&n).Error, "count events")
		if n != 4 {
			t.Errorf("API key events = %d, want 4 (2 creates, 2 deletes)", n)
		}
	})
}

func TestErrors(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		e := newEnv(t, s, Config{})
		f := seed(t, s)
		ro, admin := models.RoleReadOnly, models.RoleAdmin
		for _, c := range []struct{ path, field string }{
			{"/zones?page=0", "page"},
			{"/zones?page=abc", "page"},
			{"/zones?pagesize=501", "pagesize"},
			{"/zones?pagesize=-1", "pagesize"},
			{"/zones?zoneId=x", "zoneId"}, // misspelt filter: refused, not ignored
			{"/routers?requiresupgrade=maybe", "requiresupgrade"},
			{"/routers?healthchecksfailed=2", "healthchecksfailed"},
			{"/routers?state=Flying", "state"},
			{"/routers?page=1&page=2", "page"},
			{"/events?startdate=yesterday", "startdate"},
			{"/alerts?cleared=yes-ish", "cleared"},
			{"/operations?status=done", "status"},
			{"/settings?zoneid=no-such-zone", "zoneid"},
			{"/settings/router.stats.interval?clusterid=nope", "clusterid"},
			{"/zones/" + f.zone1 + "?verbose=1", "verbose"},
		} {
			r := e.do("GET", c.path, ro, nil)
			e.wantErr(r, 400, CodeBadRequest, c.field, "GET "+c.path)
			if _, msg, _ := r.errParts(); !strings.Contains(msg, c.field) {
				t.Errorf("GET %s: message %q does not name %s", c.path, msg, c.field)
			}
		}

		// Unknown paths and methods: JSON too.
		e.wantErr(e.do("GET", "/no-such-thing", ro, nil), 404, CodeNotFound, "", "unknown path")
		e.wantErr(e.do("DELETE", "/zones", admin, nil), 405, CodeMethodNotAllowed, "", "wrong method")
		e.want(e.do("GET", "/zones/", ro, nil), 200, "trailing slash")

		// Bodies: bad JSON, unknown fields, wrong types, missing fields; never a 500.
		put := "/settings/router.stats.interval"
		for _, c := range []struct{ body, field string }{
			{`{"value": "60"`, "body"},
			{`not json`, "body"},
			{`{"value": 60}`, "value"},
			{`{"value": "60", "scop": "zone"}`, "scop"},
			{`{"scope": "global"}`, "value"},
			{`[1, 2]`, "body"},
			{``, "body"},
			{`{"value": "60"} {"value": "61"}`, "body"},
		} {
			e.wantErr(e.do("PUT", put, admin, c.body), 400, CodeBadRequest, c.field, "PUT body "+c.body)
		}
		e.wantErr(e.do("POST", "/api-keys", admin, strings.Repeat(" ", 2<<20)+"{}"), 413, CodeTooLarge, "", "2 MB body")
		e.wantErr(e.do("PUT", "/settings/router.template.kvm", admin, map[string]any{"value": strings.Repeat("x", 100000)}),
			400, CodeBadRequest, "value", "100 kB setting value")

		// Odd bytes in paths and filters are a 4xx or an empty answer, never a 500.
		for _, p := range []string{"/zones?name=%ff", "/zones/%ff%fe", "/zones?keyword=%00", "/zones/a%00b", "/settings/%ff",
			"/routers?zoneid=%c3%28", "/events?keyword=%25%5f%21", "/routers/" + strings.Repeat("x", 5000)} {
			if r := e.do("GET", p, ro, nil); r.Status >= 500 {
				t.Errorf("GET %s = %d: %s", p, r.Status, r.Raw)
			}
		}

		// A panic is a 500 JSON error, logged, and the server keeps serving.
		e.srv.Echo().GET(Prefix+"/test-panic", func(c echo.Context) error { panic("boom") })
		r := e.do("GET", "/test-panic", "", nil)
		e.wantErr(r, 500, CodeInternal, "", "panic")
		if strings.Contains(string(r.Raw), "boom") {
			t.Errorf("the panic value leaks to the client: %s", r.Raw)
		}
		e.want(e.do("GET", "/zones", ro, nil), 200, "after the panic")
	})
}
