package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// devRecorder is a DevHooks that records what the API asked of it; the dev cloud's real fault
// injection lives in its own package and is tested there.
type devRecorder struct {
	mu    sync.Mutex
	calls []string
	fail  error
}

func (d *devRecorder) InjectFault(_ context.Context, routerID, fault, service string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, fmt.Sprintf("inject %s %s %s", routerID, fault, service))
	return d.fail
}

func (d *devRecorder) ClearFaults(_ context.Context, routerID string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, "clear "+routerID)
	return d.fail
}

// echoRoutes lists the server's routes as "METHOD /path/{param}" relative to the prefix.
func echoRoutes(s *Server) []string {
	var out []string
	for _, r := range s.Echo().Routes() {
		if !strings.HasPrefix(r.Path, Prefix+"/") {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(r.Path, Prefix), "/")
		for i, p := range parts {
			if strings.HasPrefix(p, ":") {
				parts[i] = "{" + p[1:] + "}"
			}
		}
		out = append(out, r.Method+" "+strings.Join(parts, "/"))
	}
	sort.Strings(out)
	return out
}

// documented lists the document's operations, dev-only ones apart, with their required role.
func documented(t *testing.T, e *env) (ops, devOps []string, roles map[string]string) {
	t.Helper()
	roles = map[string]string{}
	for path, item := range e.doc.Paths.Map() {
		for method, op := range item.Operations() {
			key := method + " " + path
			if op.Extensions["x-dev-only"] == true {
				devOps = append(devOps, key)
			} else {
				ops = append(ops, key)
			}
			role, _ := op.Extensions["x-required-role"].(string)
			roles[key] = role
			if role != "" {
				for _, status := range []int{401, 403} {
					if op.Responses.Status(status) == nil {
						t.Errorf("%s needs a key but does not document %d", key, status)
					}
				}
				if op.Security == nil || len(*op.Security) == 0 {
					t.Errorf("%s needs a key but has no security requirement", key)
				}
			}
			if strings.Contains(path, "{") && op.Responses.Status(404) == nil {
				t.Errorf("%s has a path parameter but does not document 404", key)
			}
		}
	}
	sort.Strings(ops)
	sort.Strings(devOps)
	return ops, devOps, roles
}

func TestOpenAPIDocumentCoversEveryRoute(t *testing.T) {
	s := modelstest.SQLite(t)
	for _, dev := range []bool{false, true} {
		t.Run(fmt.Sprintf("dev=%v", dev), func(t *testing.T) {
			cfg := Config{DevMode: dev}
			if dev {
				cfg.Dev = &devRecorder{}
			}
			e := newEnv(t, s, cfg)
			routes := echoRoutes(e.srv)
			ops, devOps, roles := documented(t, e)
			if len(devOps) != 3 {
				t.Errorf("dev-only operations documented: %v, want POST and DELETE /dev/faults, GET /dev/consoles", devOps)
			}
			want := ops
			if dev {
				want = append(append([]string(nil), ops...), devOps...)
				sort.Strings(want)
			}
			for _, r := range routes {
				if !slices.Contains(want, r) {
					t.Errorf("route %s is not in the OpenAPI document", r)
				}
			}
			for _, o := range want {
				if !slices.Contains(routes, o) {
					t.Errorf("documented %s is not a route", o)
				}
			}
			if !dev {
				for _, o := range devOps {
					if slices.Contains(routes, o) {
						t.Errorf("dev-only %s is mounted outside dev mode", o)
					}
				}
				e.wantErr(e.do("POST", "/dev/faults", models.RoleAdmin, map[string]any{"routerId": "x", "fault": "disk-full"}),
					404, CodeNotFound, "", "dev endpoint outside dev mode")
			}
			if len(routes) < 44 {
				t.Errorf("only %d routes: %v", len(routes), routes)
			}

			// The role policy: GET is read-only, operations are operator, the rest admin.
			for key, role := range roles {
				method, path, _ := strings.Cut(key, " ")
				var wantRole string
				switch {
				case path == "/healthz" || path == "/openapi.json":
					wantRole = ""
				case path == "/diagnostics-archives/{id}/download":
					wantRole = "" // the signed, expiring link is the credential
				case strings.HasPrefix(path, "/api-keys") || strings.HasPrefix(path, "/dev/"):
					wantRole = models.RoleAdmin
				case method == http.MethodGet:
					wantRole = models.RoleReadOnly
				case strings.HasPrefix(path, "/settings"):
					wantRole = models.RoleAdmin
				case strings.HasPrefix(path, "/templates"):
					// Registering and rolling out a template switches router.template.<hypervisor>:
					// a settings change, which is the admin's.
					wantRole = models.RoleAdmin
				case key == "POST /certificates": // a private key: admin only, as uploadCustomCertificate
					wantRole = models.RoleAdmin
				case method == http.MethodPost:
					wantRole = models.RoleOperator
				default:
					wantRole = "?"
				}
				if role != wantRole {
					t.Errorf("%s requires role %q, want %q", key, role, wantRole)
				}
			}
		})
	}
}

// TestOpenAPIResponses validates the answer of every GET against its schema (the client in
// env does the validating), and that the schemas refuse fields they do not list.
func TestOpenAPIResponses(t *testing.T) {
	s := modelstest.SQLite(t)
	e := newEnv(t, s, Config{})
	f := seed(t, s)
	ro := models.RoleReadOnly
	e.want(e.do("PUT", "/settings/minreq.sysvmtemplate.version", models.RoleAdmin, map[string]any{"value": "4.15"}), 200, "minreq")
	ops, _, _ := documented(t, e)
	admin, err := s.Authenticate(context.Background(), e.keys[models.RoleAdmin])
	modelstest.Must(t, err, "find the admin key")
	e.want(e.do("POST", "/api-keys/"+admin.ID+"/cloudstack-keys", models.RoleAdmin, nil), 201, "cloudstack keys")
	ids := map[string]string{"/api-keys": admin.ID, "/zones": f.zone1, "/pods": f.pod1, "/clusters": f.cluster1, "/hosts": f.host1,
		"/storage-pools": f.pool1, "/networks": f.net1, "/system-vms": f.cpvm1, "/routers": f.r4, "/templates": f.tplKVM, "/service-offerings": f.offeringCPVM,
		"/events": f.events[1], "/alerts": f.alertCleared, "/settings": "router.health.checks.enabled",
		"/certificates": seedCertificate(t, s)}
	archive := models.DiagnosticsArchive{Base: models.Base{ID: models.NewID()}, SystemVMID: f.r4, FileName: "d.tar.gz",
		Data: []byte("x"), ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.DB.Create(&archive).Error; err != nil {
		t.Fatal(err)
	}
	ids["/diagnostics-archives"] = archive.ID
	seen := 0
	for _, op := range ops {
		method, path, _ := strings.Cut(op, " ")
		if method != http.MethodGet || path == "/operations/{id}" || strings.HasPrefix(path, "/router-upgrades") ||
			strings.HasPrefix(path, "/system-vms/upgrades") {
			continue // operations are exercised against Temporal in TestOperations (upgrades in TestRouterUpgradeAPI, TestSystemVMUpgradeAPI)
		}
		if path == "/diagnostics-archives/{id}/download" {
			continue // a tar.gz, not JSON: internal/e2e TestDiagnosticsOnSystemVMs downloads one
		}
		if pre, rest, found := strings.Cut(path, "/{id}/"); found { // a sub-resource such as /routers/{id}/health-checks
			path = pre + "/" + ids[pre] + "/" + rest
		}
		if strings.HasSuffix(path, "/{id}") || strings.HasSuffix(path, "/{name}") {
			base := path[:strings.LastIndex(path, "/")]
			id, found := ids[base]
			if !found {
				t.Errorf("no fixture id for %s", path)
				continue
			}
			path = base + "/" + id
		}
		role := ro
		if strings.HasPrefix(path, "/api-keys") {
			role = models.RoleAdmin
		}
		r := e.want(e.do(method, path, role, nil), 200, op)
		if strings.HasSuffix(op, "s") && r.JSON["items"] != nil && count(r) == 0 && path != "/operations" {
			t.Errorf("%s: empty list, so its item schema was not exercised", op)
		}
		seen++
	}
	if seen < 25 {
		t.Errorf("validated %d GET answers, want all of them", seen)
	}

	// The schemas are strict: a field a model grows without the document fails validation.
	doc := e.doc
	sch := doc.Components.Schemas["Zone"].Value
	good := map[string]any{"id": "z", "created": "2024-01-01T00:00:00Z", "name": "n", "networktype": "Advanced",
		"dns1": "", "internaldns1": "", "allocationstate": "Enabled"}
	if err := sch.VisitJSON(good); err != nil {
		t.Fatalf("a zone as the API writes it fails its schema: %v", err)
	}
	good["newfield"] = 1
	if err := sch.VisitJSON(good); err == nil {
		t.Error("the Zone schema accepts an undocumented field")
	}
	delete(good, "newfield")
	delete(good, "name")
	if err := sch.VisitJSON(good); err == nil {
		t.Error("the Zone schema accepts a zone without its name")
	}
}

func TestDevFaults(t *testing.T) {
	s := modelstest.SQLite(t)
	rec := &devRecorder{}
	e := newEnv(t, s, Config{DevMode: true, Dev: rec})
	f := seed(t, s)
	admin := models.RoleAdmin
	ok := e.want(e.do("POST", "/dev/faults", admin, map[string]any{"routerId": f.r4, "fault": "service-down", "service": "dnsmasq"}), 200, "inject")
	if ok.JSON["fault"] != "service-down" || ok.JSON["service"] != "dnsmasq" {
		t.Errorf("inject answer = %v", ok.JSON)
	}
	e.want(e.do("POST", "/dev/faults", admin, map[string]any{"routerId": f.r5, "fault": "readonly-fs"}), 200, "inject readonly-fs")
	e.want(e.do("DELETE", "/dev/faults?routerId="+f.r4, admin, nil), 204, "clear")
	want := []string{"inject " + f.r4 + " service-down dnsmasq", "inject " + f.r5 + " readonly-fs ", "clear " + f.r4}
	if !slices.Equal(rec.calls, want) {
		t.Errorf("hook calls = %q, want %q", rec.calls, want)
	}
	for _, c := range []struct {
		body   map[string]any
		status int
		field  string
	}{
		{map[string]any{"routerId": f.r4, "fault": "meltdown"}, 400, "fault"},
		{map[string]any{"routerId": f.r4}, 400, "fault"},
		{map[string]any{"routerId": f.r4, "fault": "service-down"}, 400, "service"},
		{map[string]any{"routerId": f.r4, "fault": "service-down", "service": "nginx"}, 400, "service"},
		{map[string]any{"routerId": f.r4, "fault": "disk-full", "service": "sshd"}, 400, "service"},
		{map[string]any{"fault": "disk-full"}, 400, "routerId"},
		{map[string]any{"routerId": f.r4, "fault": "disk-full", "extra": 1}, 400, "extra"},
		{map[string]any{"routerId": "no-such-router", "fault": "disk-full"}, 404, ""},
		{map[string]any{"routerId": f.ssvm1, "fault": "disk-full"}, 404, ""},
	} {
		code := CodeBadRequest
		if c.status == 404 {
			code = CodeNotFound
		}
		e.wantErr(e.do("POST", "/dev/faults", admin, c.body), c.status, code, c.field, fmt.Sprint("inject ", c.body))
	}
	e.wantErr(e.do("DELETE", "/dev/faults", admin, nil), 400, CodeBadRequest, "routerId", "clear without routerId")
	e.wantErr(e.do("POST", "/dev/faults", models.RoleOperator, map[string]any{"routerId": f.r4, "fault": "disk-full"}), 403, CodeForbidden, "", "operator")
	if len(rec.calls) != 3 {
		t.Errorf("refused requests reached the hooks: %q", rec.calls)
	}
	rec.fail = errors.New("virsh: domain r-4-VM not running")
	r := e.do("POST", "/dev/faults", admin, map[string]any{"routerId": f.r4, "fault": "unreachable"})
	e.wantErr(r, 500, CodeInternal, "", "hook failure")
	if _, msg, _ := r.errParts(); !strings.Contains(msg, "not running") {
		t.Errorf("a dev hook's failure should say why: %q", msg)
	}
	rec.fail = fmt.Errorf("router %s: %w", f.r4, models.ErrNotFound)
	e.wantErr(e.do("DELETE", "/dev/faults?routerId="+f.r4, admin, nil), 404, CodeNotFound, "", "hook not found")
}
