package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// testLogger logs warnings and errors to the test's log, shown when it fails or with -v
// (SYSVM_TEST_LOG=debug logs everything).
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("SYSVM_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// env is a server on a real database with a key of each role, and a client that checks every
// request and response against the server's own OpenAPI document.
type env struct {
	t      *testing.T
	store  *models.Store
	srv    *Server
	doc    *openapi3.T
	router routers.Router
	keys   map[string]string // role -> clear key
	fx     fixture
}

func newEnv(t *testing.T, store *models.Store, cfg Config) *env {
	t.Helper()
	cfg.Store = store
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	e := &env{t: t, store: store, srv: srv, keys: map[string]string{}}
	e.doc = loadDoc(t, srv)
	e.router, err = legacy.NewRouter(e.doc)
	if err != nil {
		t.Fatalf("router from the OpenAPI document: %v", err)
	}
	for _, role := range []string{models.RoleAdmin, models.RoleOperator, models.RoleReadOnly} {
		_, clear, err := store.CreateAPIKey(context.Background(), role+"-key", role, "")
		modelstest.Must(t, err, "create %s key", role)
		e.keys[role] = clear
	}
	return e
}

// loadDoc fetches /openapi.json through the server and validates it with kin-openapi.
func loadDoc(t *testing.T, srv *Server) *openapi3.T {
	t.Helper()
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, Prefix+"/openapi.json", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /openapi.json = %d %s", rec.Code, rec.Body)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(rec.Body.Bytes())
	if err != nil {
		t.Fatalf("load OpenAPI document: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("OpenAPI document does not validate: %v", err)
	}
	return doc
}

// resp is a response with its decoded JSON.
type resp struct {
	Status int
	Header http.Header
	Raw    []byte
	JSON   map[string]any
}

// errField returns error.code, error.message and error.field of an error response.
func (r resp) errParts() (code, message, field string) {
	e, _ := r.JSON["error"].(map[string]any)
	code, _ = e["code"].(string)
	message, _ = e["message"].(string)
	field, _ = e["field"].(string)
	return
}

// do sends a request as role ("" for no key) with body (nil, a string of raw JSON, or a value to
// encode). The response is validated against the OpenAPI document (status included), and so
// is the request when the server accepted it.
func (e *env) do(method, path, role string, body any) resp {
	e.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			e.t.Fatalf("encode body: %v", err)
		}
	}
	req := httptest.NewRequest(method, Prefix+path, bytes.NewReader(raw))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if role != "" {
		key, found := e.keys[role]
		if !found {
			key = role // a raw key
		}
		req.Header.Set("Authorization", "Bearer "+key)
	}
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	r := resp{Status: rec.Code, Header: rec.Header(), Raw: rec.Body.Bytes()}
	if len(r.Raw) > 0 {
		if err := json.Unmarshal(r.Raw, &r.JSON); err != nil {
			e.t.Fatalf("%s %s: response is not a JSON object: %v: %s", method, path, err, r.Raw)
		}
	}
	if ct := rec.Header().Get("Content-Type"); len(r.Raw) > 0 && !strings.HasPrefix(ct, "application/json") {
		e.t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	if r.Status >= 400 {
		code, msg, _ := r.errParts()
		if code == "" || msg == "" {
			e.t.Errorf("%s %s: %d without the JSON error envelope: %s", method, path, r.Status, r.Raw)
		}
	}
	e.validate(method, path, raw, r)
	return r
}

// validate checks a request/response pair against the document. Paths the document does not
// have (404 tests) are skipped.
func (e *env) validate(method, path string, body []byte, r resp) {
	e.t.Helper()
	vreq := httptest.NewRequest(method, Prefix+path, bytes.NewReader(body))
	if body != nil {
		vreq.Header.Set("Content-Type", "application/json")
	}
	route, pathParams, err := e.router.FindRoute(vreq)
	if err != nil {
		var re *routers.RouteError
		if errors.As(err, &re) {
			return
		}
		e.t.Fatalf("find %s %s in the document: %v", method, path, err)
	}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true,
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: pathParams, Route: route, Options: opts}
	if r.Status < 400 {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			e.t.Errorf("%s %s: the server accepted a request its document refuses: %v", method, path, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: r.Status, Header: r.Header,
		Body: io.NopCloser(bytes.NewReader(r.Raw)), Options: opts}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		e.t.Errorf("%s %s: %d response does not match the document: %v\n%s", method, path, r.Status, err, r.Raw)
	}
}

// want fails unless the response has the status.
func (e *env) want(r resp, status int, what string) resp {
	e.t.Helper()
	if r.Status != status {
		e.t.Fatalf("%s: status %d, want %d: %s", what, r.Status, status, r.Raw)
	}
	return r
}

// wantErr checks an error response's status, code and field.
func (e *env) wantErr(r resp, status int, code, field, what string) {
	e.t.Helper()
	if r.Status != status {
		e.t.Errorf("%s: status %d, want %d: %s", what, r.Status, status, r.Raw)
		return
	}
	gotCode, msg, gotField := r.errParts()
	if gotCode != code || gotField != field {
		e.t.Errorf("%s: error code=%q field=%q (%s), want code=%q field=%q", what, gotCode, gotField, msg, code, field)
	}
}

// items returns the items of a list response and checks count/page/pagesize are present.
func items(t *testing.T, r resp) []map[string]any {
	t.Helper()
	raw, found := r.JSON["items"].([]any)
	if !found {
		t.Fatalf("list response without items: %s", r.Raw)
	}
	out := make([]map[string]any, 0, len(raw))
	for _, it := range raw {
		out = append(out, it.(map[string]any))
	}
	return out
}

func count(r resp) int { n, _ := r.JSON["count"].(float64); return int(n) }

func names(list []map[string]any) []string {
	var out []string
	for _, it := range list {
		out = append(out, it["name"].(string))
	}
	return out
}

// fixture is a small cloud: two zones, KVM and VMware clusters, SSVMs and a CPVM, routers on an
// isolated network and a redundant VPC pair, templates, events, alerts, health results.
type fixture struct {
	zone1, zone2, pod1, pod2, cluster1, cluster2, host1, host2, pool1, pool2 string
	account, domain, vpc, net1, net2, net3                                   string
	ssvm1, cpvm1, ssvm2, r4, r5, r6, r7                                      string
	tplKVM, tplVMware                                                        string
	offeringRouter, offeringCPVM                                             string
	events                                                                   []string
	alertOpen, alertCleared                                                  string
}

// Secrets seeded into clusters and hosts that no response may contain.
var fixtureSecrets = []string{"qemu+ssh://secret-endpoint.example", "root-user-secret", "cluster/secret-ref", "DC-secret",
	"qemu+tcp://host-secret.example"}

func seed(t *testing.T, s *models.Store) fixture {
	t.Helper()
	db := s.DB
	create := func(v any) {
		t.Helper()
		modelstest.Must(t, db.Create(v).Error, "seed %T", v)
	}
	var f fixture
	z1 := models.Zone{Name: "zone-1", NetworkType: "Advanced", AllocationState: "Enabled", DNS1: "8.8.8.8"}
	z2 := models.Zone{Name: "zone-2", NetworkType: "Basic", AllocationState: "Disabled"}
	create(&z1)
	create(&z2)
	f.zone1, f.zone2 = z1.ID, z2.ID
	p1 := models.Pod{ZoneID: z1.ID, Name: "pod-1", Gateway: "10.1.0.1"}
	p2 := models.Pod{ZoneID: z2.ID, Name: "pod-2"}
	create(&p1)
	create(&p2)
	f.pod1, f.pod2 = p1.ID, p2.ID
	c1 := models.Cluster{ZoneID: z1.ID, PodID: p1.ID, Name: "kvm-cluster", HypervisorType: "KVM", Endpoint: fixtureSecrets[0],
		Username: fixtureSecrets[1], CredentialRef: fixtureSecrets[2], AllocationState: "Enabled"}
	c2 := models.Cluster{ZoneID: z2.ID, PodID: p2.ID, Name: "vmware-cluster", HypervisorType: "VMware", Datacenter: fixtureSecrets[3],
		Insecure: true, AllocationState: "Enabled"}
	create(&c1)
	create(&c2)
	f.cluster1, f.cluster2 = c1.ID, c2.ID
	h1 := models.Host{ZoneID: z1.ID, PodID: p1.ID, ClusterID: c1.ID, Name: "kvm-host-1", HypervisorType: "KVM",
		Endpoint: fixtureSecrets[4], Address: "10.1.0.11", State: models.HostUp, CPUs: 16, MemoryMB: 65536}
	h2 := models.Host{ZoneID: z2.ID, PodID: p2.ID, ClusterID: c2.ID, Name: "esxi-1", HypervisorType: "VMware",
		Address: "10.2.0.11", State: models.HostDisconnected, StateReason: "vCenter unreachable"}
	create(&h1)
	create(&h2)
	f.host1, f.host2 = h1.ID, h2.ID
	sp1 := models.StoragePool{ZoneID: z1.ID, PodID: p1.ID, ClusterID: c1.ID, Name: "nfs-primary", Scope: "CLUSTER", Type: "NetworkFilesystem", State: "Up"}
	sp2 := models.StoragePool{ZoneID: z2.ID, Name: "vsan", Scope: "ZONE", Type: "VMFS", State: "Maintenance"}
	create(&sp1)
	create(&sp2)
	f.pool1, f.pool2 = sp1.ID, sp2.ID
	d := models.Domain{Name: "ROOT", Path: "ROOT"}
	create(&d)
	a := models.Account{DomainID: d.ID, Name: "admin", Type: "Admin"}
	create(&a)
	f.domain, f.account = d.ID, a.ID
	vpc := models.VPC{ZoneID: z1.ID, DomainID: d.ID, AccountID: a.ID, Name: "vpc-1", CIDR: "10.10.0.0/16", Redundant: true, State: "Enabled"}
	create(&vpc)
	f.vpc = vpc.ID
	n1 := models.Network{ZoneID: z1.ID, DomainID: d.ID, AccountID: a.ID, Name: "net_100%", Type: models.NetworkIsolated,
		Gateway: "10.0.1.1", CIDR: "10.0.1.0/24", Services: "Dhcp,Dns,SourceNat", State: "Implemented"}
	n2 := models.Network{ZoneID: z1.ID, DomainID: d.ID, AccountID: a.ID, VPCID: vpc.ID, Name: "tier-web", Type: models.NetworkVPCTier,
		Redundant: true, Gateway: "10.10.1.1", CIDR: "10.10.1.0/24", Services: "Dhcp,Dns,Lb", State: "Implemented"}
	n3 := models.Network{ZoneID: z2.ID, DomainID: d.ID, AccountID: a.ID, Name: "net-1000", Type: models.NetworkShared, State: "Allocated"}
	create(&n1)
	create(&n2)
	create(&n3)
	f.net1, f.net2, f.net3 = n1.ID, n2.ID, n3.ID
	or := models.ServiceOffering{Name: "System Offering For Software Router", CPUs: 1, CPUMHz: 500, MemoryMB: 512, SystemVMType: models.TypeRouter}
	oc := models.ServiceOffering{Name: "System Offering For Console Proxy", CPUs: 2, CPUMHz: 1000, MemoryMB: 1024, SystemVMType: models.TypeCPVM}
	create(&or)
	create(&oc)
	f.offeringRouter, f.offeringCPVM = or.ID, oc.ID
	vm := func(v models.SystemVM) string {
		v.HypervisorType = "KVM"
		if v.ZoneID == z2.ID {
			v.HypervisorType = "VMware"
		}
		create(&v)
		return v.ID
	}
	f.ssvm1 = vm(models.SystemVM{Name: "s-1-VM", Type: models.TypeSSVM, State: models.StateRunning, ZoneID: z1.ID, PodID: p1.ID,
		ClusterID: c1.ID, HostID: h1.ID, Version: "4.15.0", PrivateIP: "10.1.0.50", PublicIP: "192.0.2.10", LinkLocalIP: "169.254.1.10"})
	f.cpvm1 = vm(models.SystemVM{Name: "v-2-VM", Type: models.TypeCPVM, State: models.StateRunning, ZoneID: z1.ID, PodID: p1.ID,
		ClusterID: c1.ID, HostID: h1.ID, Version: "4.15.0", PublicIP: "192.0.2.11", PrivateIP: "10.1.0.51", LinkLocalIP: "169.254.1.11",
		ActiveViewers: 3})
	f.ssvm2 = vm(models.SystemVM{Name: "s-3-VM", Type: models.TypeSSVM, State: models.StateStopped, ZoneID: z2.ID, PodID: p2.ID,
		ClusterID: c2.ID, HostID: h2.ID, Version: "4.14.0", PrivateIP: "10.2.0.50"})
	f.r4 = vm(models.SystemVM{Name: "r-4-VM", Type: models.TypeRouter, State: models.StateRunning, ZoneID: z1.ID, PodID: p1.ID,
		ClusterID: c1.ID, HostID: h1.ID, Version: "4.14.0", NetworkID: n1.ID, DomainID: d.ID, AccountID: a.ID,
		HealthChecksFailed: true, TemplateID: "tpl-old", LinkLocalIP: "169.254.2.4"})
	f.r5 = vm(models.SystemVM{Name: "r-5-VM", Type: models.TypeRouter, State: models.StateRunning, ZoneID: z1.ID, PodID: p1.ID,
		ClusterID: c1.ID, HostID: h1.ID, Version: "4.15.0.1", VPCID: vpc.ID, NetworkID: n2.ID, IsRedundant: true,
		RedundantState: models.RedundantPrimary, DomainID: d.ID, AccountID: a.ID})
	f.r6 = vm(models.SystemVM{Name: "r-6-VM", Type: models.TypeRouter, State: models.StateRunning, ZoneID: z1.ID, PodID: p1.ID,
		ClusterID: c1.ID, HostID: h1.ID, Version: "", VPCID: vpc.ID, NetworkID: n2.ID, IsRedundant: true,
		RedundantState: models.RedundantBackup, DomainID: d.ID, AccountID: a.ID})
	removed := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	f.r7 = vm(models.SystemVM{Name: "r-7-VM", Type: models.TypeRouter, State: models.StateDestroyed, ZoneID: z2.ID, PodID: p2.ID,
		ClusterID: c2.ID, Version: "4.16.0", NetworkID: n3.ID, RemovedAt: &removed})
	tk := models.Template{Name: "systemvm-kvm-4.15.0", Hypervisor: "KVM", Format: "QCOW2", Type: "SYSTEM", Version: "4.15.0",
		URL: "http://download.example/systemvmtemplate-4.15.0-kvm.qcow2.bz2", State: models.TemplateReady, SizeBytes: 1 << 30}
	tv := models.Template{Name: "systemvm-vmware-4.15.0", Hypervisor: "VMware", Format: "OVA", Type: "SYSTEM", Version: "4.15.0",
		ZoneID: z2.ID, State: models.TemplateDownloading}
	create(&tk)
	create(&tv)
	f.tplKVM, f.tplVMware = tk.ID, tv.ID
	create(&models.TemplatePoolRef{TemplateID: tk.ID, PoolID: sp1.ID, State: models.TemplateReady, DownloadPct: 100, InstallPath: "/mnt/tpl/1"})
	base := time.Date(2024, 3, 10, 12, 0, 0, 0, time.UTC)
	for i, e := range []models.Event{
		{Type: "ROUTER.REBOOT", Level: "INFO", Description: "reboot r-4-VM done", ResourceType: "router", ResourceID: f.r4, ZoneID: z1.ID},
		{Type: "ROUTER.HEALTH.CHECKS", Level: "ERROR", Description: "r-4-VM failing: dns_check.py (missing 10.0.1.5)", ResourceType: "router", ResourceID: f.r4, ZoneID: z1.ID},
		{Type: "SSVM.START", Level: "WARN", Description: "s-3-VM slow start", ResourceType: "systemvm", ResourceID: f.ssvm2, ZoneID: z2.ID},
	} {
		e.CreatedAt = base.Add(time.Duration(i) * 24 * time.Hour)
		create(&e)
		f.events = append(f.events, e.ID)
	}
	cleared := base.Add(2 * time.Hour)
	ao := models.Alert{Type: "ROUTER.HEALTH", Severity: "CRITICAL", Subject: "r-4-VM health checks failing", Description: "dns_check.py",
		ResourceType: "router", ResourceID: f.r4, ZoneID: z1.ID}
	ac := models.Alert{Type: "SSVM.DOWN", Severity: "WARN", Subject: "s-3-VM down", ResourceType: "systemvm", ResourceID: f.ssvm2,
		ZoneID: z2.ID, ClearedAt: &cleared}
	create(&ao)
	create(&ac)
	f.alertOpen, f.alertCleared = ao.ID, ac.ID
	for _, h := range []models.HealthCheckResult{
		{RouterID: f.r4, CheckName: "dns_check.py", CheckType: "advanced", Success: false, LastUpdated: base, Details: "10.0.1.5 vm-5 missing from /etc/hosts"},
		{RouterID: f.r4, CheckName: "connectivity.test", CheckType: "basic", Success: true, LastUpdated: base},
		{RouterID: f.r5, CheckName: "connectivity.test", CheckType: "basic", Success: true, LastUpdated: base},
	} {
		create(&h)
	}
	return f
}
