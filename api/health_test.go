package api

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/routers/legacy"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// hcCloud is a zone whose routers are simulated routers of a real fleet, checked by a real
// worker on a real Temporal dev server, behind an API server with the health endpoints.
type hcCloud struct {
	e     *env
	fleet *fleet.Fleet
	tc    client.Client
	zone  models.Zone
	host  models.Host
	net   models.Network
	n     int
}

func newHCCloud(t *testing.T, withTemporal bool) *hcCloud {
	t.Helper()
	ctx := context.Background()
	store := modelstest.SQLite(t)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	modelstest.Must(t, err, "key")
	signer, err := ssh.NewSignerFromKey(priv)
	modelstest.Must(t, err, "signer")
	f, err := fleet.New(fleet.Options{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, NoSampleCheck: true})
	modelstest.Must(t, err, "fleet")
	t.Cleanup(func() { _ = f.Close() })
	hc := &hcCloud{fleet: f}
	cfg := Config{}
	if withTemporal {
		tsrv := testenv.TemporalT(t, false)
		hc.tc, err = tsrv.Client()
		modelstest.Must(t, err, "temporal client")
		t.Cleanup(hc.tc.Close)
		exec, err := sshexec.New(sshexec.Config{Signer: signer, HostKeys: store.Secrets, Dialer: f.DialContext,
			Logger: slog.New(slog.DiscardHandler)})
		modelstest.Must(t, err, "executor")
		t.Cleanup(func() { _ = exec.Close() })
		h, err := activities.NewHealth(ctx, store, exec, slog.New(slog.DiscardHandler))
		modelstest.Must(t, err, "health activities")
		w := sdkworker.New(hc.tc, workflows.TaskQueue, sdkworker.Options{})
		w.RegisterWorkflowWithOptions(workflows.RouterHealthCheck, workflow.RegisterOptions{Name: workflows.RouterHealthCheckWorkflowName})
		w.RegisterActivity(h)
		modelstest.Must(t, w.Start(), "start worker")
		t.Cleanup(w.Stop)
		cfg = Config{Temporal: hc.tc, Namespace: tsrv.Namespace}
	}
	hc.e = newEnv(t, store, cfg)
	// The document now has the health routes: validate against it.
	hc.e.doc = loadDoc(t, hc.e.srv)
	hc.e.router, err = legacy.NewRouter(hc.e.doc)
	modelstest.Must(t, err, "router")

	hc.zone = models.Zone{Name: "zone-hc"}
	hc.create(t, &hc.zone)
	cl := models.Cluster{ZoneID: hc.zone.ID, Name: "kvm", HypervisorType: "KVM"}
	hc.create(t, &cl)
	addr, err := f.AddHost("kvm-1")
	modelstest.Must(t, err, "host")
	hc.host = models.Host{ZoneID: hc.zone.ID, ClusterID: cl.ID, Name: "kvm-1", HypervisorType: "KVM", Address: addr, State: models.HostUp}
	hc.create(t, &hc.host)
	hc.net = models.Network{ZoneID: hc.zone.ID, Name: "net-1", Type: models.NetworkIsolated, Gateway: "10.100.0.1",
		CIDR: "10.100.0.0/24", Services: "Dhcp,Dns", State: "Implemented"}
	hc.create(t, &hc.net)
	return hc
}

func (hc *hcCloud) create(t *testing.T, v any) {
	t.Helper()
	modelstest.Must(t, hc.e.store.DB.Create(v).Error, "create %T", v)
}

func (hc *hcCloud) router(t *testing.T, state string) models.SystemVM {
	t.Helper()
	hc.n++
	vm := models.SystemVM{Name: fmt.Sprintf("r-%d-VM", hc.n), Type: models.TypeRouter, State: state, ZoneID: hc.zone.ID,
		ClusterID: hc.host.ClusterID, HostID: hc.host.ID, HypervisorType: "KVM", Version: "4.15.0", NetworkID: hc.net.ID,
		LinkLocalIP: fmt.Sprintf("169.254.0.%d", hc.n+1), PrivateIP: fmt.Sprintf("10.0.0.%d", hc.n+1)}
	hc.create(t, &vm)
	modelstest.Must(t, hc.fleet.Add(fleet.RouterSpec{ID: vm.ID, Name: vm.Name, HostName: hc.host.Name, LinkLocalIP: vm.LinkLocalIP,
		PrivateIP: vm.PrivateIP, TemplateVersion: "4.15.0", Services: agent.Services{DHCP: true, DNS: true},
		Gateways: []string{hc.net.Gateway}}), "fleet router")
	return vm
}

// checks indexes the healthcheckresults of a response by check name.
func checks(t *testing.T, r resp) map[string]map[string]any {
	t.Helper()
	raw, ok := r.JSON["healthcheckresults"].([]any)
	if !ok {
		t.Fatalf("no healthcheckresults: %s", r.Raw)
	}
	out := map[string]map[string]any{}
	for _, it := range raw {
		m := it.(map[string]any)
		out[m["checkname"].(string)] = m
	}
	return out
}

func TestRouterHealthCheckEndpoints(t *testing.T) {
	hc := newHCCloud(t, true)
	e := hc.e
	good := hc.router(t, models.StateRunning)
	bad := hc.router(t, models.StateRunning)
	gone := hc.router(t, models.StateRunning)
	stopped := hc.router(t, models.StateStopped)
	modelstest.Must(t, hc.fleet.Inject(bad.ID, fleet.Fault{Name: fleet.FaultDiskFull}), "inject")
	modelstest.Must(t, hc.fleet.Inject(gone.ID, fleet.Fault{Name: fleet.FaultUnreachable}), "inject")
	// Recreation is configured to the hilt: a fresh check still never recreates.
	for name, v := range map[string]string{activities.SettingHealthRecreateChecks: agent.CheckDisk + "," + activities.CheckConnectivity,
		activities.SettingHealthFailuresBefore: "1"} {
		_, err := e.store.Settings.Set(context.Background(), name, models.ScopeGlobal, "", v)
		modelstest.Must(t, err, "set %s", name)
	}

	// Before any check: no results.
	r := e.want(e.do("GET", "/routers/"+good.ID+"/health-checks", models.RoleReadOnly, nil), 200, "last results before any check")
	if len(checks(t, r)) != 0 || r.JSON["healthchecksfailed"] != false {
		t.Errorf("results before any check: %s", r.Raw)
	}

	// Fresh checks of a healthy router: every basic and advanced check and connectivity.test pass.
	r = e.want(e.do("POST", "/routers/"+good.ID+"/health-checks", models.RoleOperator, nil), 200, "fresh checks")
	got := checks(t, r)
	for _, name := range append(append(agent.BuiltinChecks(agent.Basic), agent.BuiltinChecks(agent.Advanced)...), activities.CheckConnectivity) {
		c, ok := got[name]
		if !ok {
			t.Errorf("fresh results lack %s", name)
			continue
		}
		if c["success"] != true {
			t.Errorf("%s failed on a healthy router: %v", name, c["details"])
		}
		for _, field := range []string{"checkname", "checktype", "success", "lastupdated", "details"} {
			if _, ok := c[field]; !ok {
				t.Errorf("%s has no %s", name, field)
			}
		}
	}
	if r.JSON["healthchecksfailed"] != false || r.JSON["routerid"] != good.ID || r.JSON["routername"] != good.Name {
		t.Errorf("fresh result header: %s", r.Raw)
	}
	if got[agent.CheckHaproxy]["success"] != true || !strings.HasPrefix(got[agent.CheckHaproxy]["details"].(string), "skipped:") {
		t.Errorf("haproxy_check.py on a network without LB: %v", got[agent.CheckHaproxy])
	}

	// A router with a full disk: 200, the failure named with its details.
	r = e.want(e.do("POST", "/routers/"+bad.ID+"/health-checks", models.RoleOperator, nil), 200, "fresh checks of a failing router")
	got = checks(t, r)
	if r.JSON["healthchecksfailed"] != true || got[agent.CheckDisk]["success"] != false ||
		!strings.Contains(got[agent.CheckDisk]["details"].(string), "below the threshold") {
		t.Errorf("disk-full router: %s", r.Raw)
	}
	// The same results are the last results now.
	last := checks(t, e.want(e.do("GET", "/routers/"+bad.ID+"/health-checks", models.RoleReadOnly, nil), 200, "last results"))
	if len(last) != len(got) || last[agent.CheckDisk]["lastupdated"] != got[agent.CheckDisk]["lastupdated"] {
		t.Errorf("GET after POST: %d results, disk %v; POST gave %d, disk %v", len(last), last[agent.CheckDisk], len(got), got[agent.CheckDisk])
	}

	// A router that does not answer: 200 with connectivity.test failed.
	r = e.want(e.do("POST", "/routers/"+gone.ID+"/health-checks", models.RoleOperator, nil), 200, "fresh checks of an unreachable router")
	got = checks(t, r)
	if got[activities.CheckConnectivity]["success"] != false || !strings.Contains(got[activities.CheckConnectivity]["details"].(string), "does not answer") {
		t.Errorf("unreachable router: %s", r.Raw)
	}

	// listRouters?healthchecksfailed=true finds exactly the failing ones.
	list := items(t, e.want(e.do("GET", "/routers?healthchecksfailed=true&zoneid="+hc.zone.ID, models.RoleReadOnly, nil), 200, "failing routers"))
	if n := names(list); len(n) != 2 || !(n[0] == bad.Name && n[1] == gone.Name || n[0] == gone.Name && n[1] == bad.Name) {
		t.Errorf("healthchecksfailed=true lists %v, want %s and %s", n, bad.Name, gone.Name)
	}
	list = items(t, e.want(e.do("GET", "/routers?healthchecksfailed=false&zoneid="+hc.zone.ID, models.RoleReadOnly, nil), 200, "passing routers"))
	if n := names(list); len(n) != 2 {
		t.Errorf("healthchecksfailed=false lists %v, want %s and the never-checked %s", n, good.Name, stopped.Name)
	}

	// Fresh checks never recreate.
	var ops int64
	modelstest.Must(t, e.store.DB.Model(&models.Operation{}).Count(&ops).Error, "count operations")
	if ops != 0 {
		t.Errorf("fresh checks journaled %d operations", ops)
	}

	// Every run is found in Temporal by RouterId.
	query := fmt.Sprintf("RouterId = '%s' AND OperationKind = '%s'", bad.ID, workflows.OperationKindHealthOnDemand)
	found := false
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && !found; time.Sleep(200 * time.Millisecond) {
		resp, err := hc.tc.ListWorkflow(context.Background(), &workflowservice.ListWorkflowExecutionsRequest{Query: query})
		found = err == nil && len(resp.Executions) == 1 &&
			resp.Executions[0].GetExecution().GetWorkflowId() == workflows.RouterHealthCheckWorkflowID(bad.ID)
	}
	if !found {
		t.Errorf("the fresh check of %s is not found by %s", bad.Name, query)
	}

	// Refusals.
	e.wantErr(e.do("POST", "/routers/"+stopped.ID+"/health-checks", models.RoleOperator, nil), 409, CodeConflict, "", "stopped router")
	e.wantErr(e.do("POST", "/routers/"+models.NewID()+"/health-checks", models.RoleOperator, nil), 404, CodeNotFound, "", "unknown router")
	e.wantErr(e.do("GET", "/routers/"+models.NewID()+"/health-checks", models.RoleReadOnly, nil), 404, CodeNotFound, "", "unknown router")
	ssvm := models.SystemVM{Name: "s-9-VM", Type: models.TypeSSVM, State: models.StateRunning, ZoneID: hc.zone.ID}
	hc.create(t, &ssvm)
	e.wantErr(e.do("POST", "/routers/"+ssvm.ID+"/health-checks", models.RoleOperator, nil), 404, CodeNotFound, "", "an SSVM")
	e.wantErr(e.do("POST", "/routers/"+good.ID+"/health-checks", models.RoleReadOnly, nil), 403, CodeForbidden, "", "read-only key")
	e.wantErr(e.do("POST", "/routers/"+good.ID+"/health-checks?performfreshchecks=true", models.RoleOperator, nil), 400, CodeBadRequest,
		"performfreshchecks", "undocumented parameter")

	// Disabled in the zone: both endpoints answer 409 and say which setting.
	_, err := e.store.Settings.Set(context.Background(), activities.SettingHealthEnabled, models.ScopeZone, hc.zone.ID, "false")
	modelstest.Must(t, err, "disable")
	for _, m := range []string{"GET", "POST"} {
		r := e.do(m, "/routers/"+good.ID+"/health-checks", models.RoleOperator, nil)
		e.wantErr(r, 409, CodeConflict, "", m+" with health checks disabled")
		if _, msg, _ := r.errParts(); !strings.Contains(msg, "router.health.checks.enabled is false") {
			t.Errorf("%s disabled: message %q does not name the setting", m, msg)
		}
	}
}

func TestFreshHealthChecksWithoutTemporal(t *testing.T) {
	hc := newHCCloud(t, false)
	vm := hc.router(t, models.StateRunning)
	hc.e.wantErr(hc.e.do("POST", "/routers/"+vm.ID+"/health-checks", models.RoleOperator, nil), 503, CodeUnavailable, "", "no Temporal")
	hc.e.want(hc.e.do("GET", "/routers/"+vm.ID+"/health-checks", models.RoleReadOnly, nil), 200, "reads need no Temporal")
}
