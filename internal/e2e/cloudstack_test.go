package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/api"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// csClient runs Debian's Python CloudStack client (`cloudstack` from package cs, over python3-cs;
// upstream calls the command cs) against the
// command API with one key pair.
type csClient struct {
	t        *testing.T
	argv     []string
	endpoint string
	key      string
	secret   string
	dir      string
}

// findCS finds the cs command, or the python3-cs module run as the cs command runs it; neither
// skips the test, or fails it under CI=true.
func findCS(t *testing.T) []string {
	t.Helper()
	// Debian installs the command as cloudstack (package cs); pip as cs.
	for _, name := range []string{"cloudstack", "cs"} {
		if p, err := exec.LookPath(name); err == nil {
			return []string{p}
		}
	}
	if py, err := exec.LookPath("python3"); err == nil {
		if exec.Command(py, "-c", "import cs").Run() == nil {
			return []string{py, "-c", "import sys; from cs import main; sys.exit(main())"}
		}
	}
	msg := "the CloudStack client cs is not installed (apt-get install -y --no-install-recommends cs python3-cs)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return nil
}

// run runs cs with args and returns its exit code and the JSON it printed.
func (c *csClient) run(args ...string) (int, map[string]any) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.argv[0], append(append([]string(nil), c.argv[1:]...), args...)...)
	// HOME and the working directory empty of cloudstack.ini: the environment is the whole
	// configuration.
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "HOME="+c.dir, "CLOUDSTACK_ENDPOINT="+c.endpoint, "CLOUDSTACK_KEY="+c.key,
		"CLOUDSTACK_SECRET="+c.secret, "CLOUDSTACK_POLL_INTERVAL=0.2", "CLOUDSTACK_TIMEOUT=30")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, isExit := err.(*exec.ExitError); isExit {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("cs %v: %v (%s)", args, err, stderr.String())
	}
	var out map[string]any
	if s := bytes.TrimSpace(stdout.Bytes()); len(s) > 0 {
		if err := json.Unmarshal(s, &out); err != nil {
			c.t.Fatalf("cs %v printed no JSON: %v\n%s\n%s", args, err, stdout.String(), stderr.String())
		}
	}
	if code != 0 {
		c.t.Logf("cs %v: exit %d: %s", args, code, strings.TrimSpace(stderr.String()))
	}
	return code, out
}

// csPair creates the CloudStack key pair of a sysvm API key through the REST API.
func (s *stack) csPair(clearKey string) (apiKey, secret string) {
	s.t.Helper()
	k, err := s.store.Authenticate(context.Background(), clearKey)
	if err != nil {
		s.t.Fatal(err)
	}
	var out struct{ APIKey, SecretKey string }
	if code := s.do(http.MethodPost, "/api/v1/api-keys/"+k.ID+"/cloudstack-keys", nil, &out); code != http.StatusCreated {
		s.t.Fatalf("create cloudstack keys = %d", code)
	}
	return out.APIKey, out.SecretKey
}

// TestCloudStackClient drives the command API with Debian's cs client on the real platform
// (Temporal, worker, vcsim): lists that agree with the REST API, an async rebootRouter that
// cs polls to completion, signed values with spaces, + and *, POST, and the error paths.
func TestCloudStackClient(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal and vcsim")
	}
	argv := findCS(t)
	s := newStack(t, modelstest.SQLite(t), true)
	ak, sk := s.csPair(s.key)
	cs := &csClient{t: t, argv: argv, endpoint: s.api.URL + api.CloudStackPath, key: ak, secret: sk, dir: t.TempDir()}

	// listRouters: the same routers and facts as GET /api/v1/routers.
	var rest struct {
		Count int64            `json:"count"`
		Items []map[string]any `json:"items"`
	}
	if code := s.do(http.MethodGet, "/api/v1/routers?pagesize=500", nil, &rest); code != http.StatusOK || rest.Count == 0 {
		t.Fatalf("REST listRouters = %d, %d routers", code, rest.Count)
	}
	code, out := cs.run("listRouters", "pagesize=500")
	if code != 0 {
		t.Fatalf("cs listRouters exit %d: %v", code, out)
	}
	routers, _ := out["router"].([]any)
	if int64(out["count"].(float64)) != rest.Count || len(routers) != len(rest.Items) {
		t.Fatalf("cs listRouters: count %v, %d routers; REST %d", out["count"], len(routers), rest.Count)
	}
	byID := map[string]map[string]any{}
	for _, r := range routers {
		byID[r.(map[string]any)["id"].(string)] = r.(map[string]any)
	}
	for _, rr := range rest.Items {
		cr := byID[rr["id"].(string)]
		if cr == nil {
			t.Errorf("router %v is not in cs listRouters", rr["name"])
			continue
		}
		for _, f := range []string{"name", "state", "zoneid", "templateid", "requiresupgrade", "healthchecksfailed", "isredundantrouter"} {
			if cr[f] != rr[f] && (rr[f] != "" || cr[f] != nil) {
				t.Errorf("router %v %s: cs %#v, REST %#v", rr["name"], f, cr[f], rr[f])
			}
		}
		if v, _ := rr["version"].(string); v != "" && cr["version"] != v {
			t.Errorf("router %v version: cs %v, REST %v", rr["name"], cr["version"], v)
		}
		if rr["redundantstate"] != nil && cr["redundantstate"] != rr["redundantstate"] {
			t.Errorf("router %v redundantstate: cs %v, REST %v", rr["name"], cr["redundantstate"], rr["redundantstate"])
		}
	}
	// requiresupgrade=true lists the same routers as the REST filter.
	var restUp struct {
		Count int64 `json:"count"`
	}
	s.do(http.MethodGet, "/api/v1/routers?requiresupgrade=true", nil, &restUp)
	_, up := cs.run("listRouters", "requiresupgrade=true")
	if n, _ := up["count"].(float64); int64(n) != restUp.Count {
		t.Errorf("cs listRouters requiresupgrade=true count %v, REST %d", up["count"], restUp.Count)
	}
	for _, r := range csItems(up["router"]) {
		if r["requiresupgrade"] != true {
			t.Errorf("requiresupgrade=true listed %v with requiresupgrade %v", r["name"], r["requiresupgrade"])
		}
	}
	// A value with spaces, +, * and non-ASCII is signed by cs and verified by sysvm; so is POST.
	if code, out := cs.run("listRouters", "keyword=no such router+* é"); code != 0 || len(out) != 0 {
		t.Errorf("cs listRouters with an edge-case keyword: exit %d %v", code, out)
	}
	if code, out := cs.run("--post", "listZones"); code != 0 || out["count"] != float64(1) {
		t.Errorf("cs --post listZones: exit %d %v", code, out)
	}

	r := s.pickRouter("state = ? AND is_redundant = ?", models.StateRunning, false)
	// getRouterHealthCheckResults answers the stored results in CloudStack's shape.
	if code, out := cs.run("getRouterHealthCheckResults", "routerid="+r.ID); code != 0 ||
		out["routerhealthchecks"].(map[string]any)["routerid"] != r.ID {
		t.Errorf("cs getRouterHealthCheckResults: exit %d %v", code, out)
	}

	// An async rebootRouter, polled by cs with queryAsyncJobResult to its end.
	code, res := cs.run("rebootRouter", "id="+r.ID)
	if code != 0 {
		t.Fatalf("cs rebootRouter exit %d: %v", code, res)
	}
	jr, _ := res["router"].(map[string]any)
	if jr["id"] != r.ID || jr["state"] != models.StateRunning {
		t.Errorf("rebootRouter job result %v, want router %s Running", res, r.ID)
	}
	var ops struct {
		Items []operation `json:"items"`
	}
	s.do(http.MethodGet, "/api/v1/operations?targetid="+url.QueryEscape(r.ID), nil, &ops)
	if len(ops.Items) != 1 || ops.Items[0].Kind != "systemvm.reboot" || ops.Items[0].Status != models.OpCompleted {
		t.Fatalf("operations of %s after cs rebootRouter: %+v", r.Name, ops.Items)
	}
	if info, err := s.hv(r); err != nil || info.State != hypervisors.PowerRunning {
		t.Errorf("vcsim: %s is %v (%v), want running", r.Name, info.State, err)
	}
	// The job is the operation: queryAsyncJobResult and listAsyncJobs show it ended.
	code, j := cs.run("queryAsyncJobResult", "jobid="+ops.Items[0].ID)
	if code != 0 || j["jobstatus"] != float64(1) || j["jobresultcode"] != float64(0) ||
		j["cmd"] != "org.apache.cloudstack.api.command.admin.router.RebootRouterCmd" || j["jobinstanceid"] != r.ID {
		t.Errorf("cs queryAsyncJobResult: exit %d %v", code, j)
	}
	if _, jobs := cs.run("listAsyncJobs"); len(csItems(jobs["asyncjobs"])) != 1 || csItems(jobs["asyncjobs"])[0]["jobstatus"] != float64(1) {
		t.Errorf("cs listAsyncJobs: %v", jobs)
	}

	// A job that fails: destroying the only router of its network is refused by the workflow
	// (the REST API's rule); cs polls the job to jobstatus 2 and exits non-zero.
	code, f := cs.run("destroyRouter", "id="+r.ID)
	fj, _ := f["queryasyncjobresultresponse"].(map[string]any)
	fr, _ := fj["jobresult"].(map[string]any)
	if code == 0 || fj["jobstatus"] != float64(2) || fj["jobresultcode"] != float64(530) || fr["errorcode"] != float64(530) ||
		!strings.Contains(fmt.Sprint(fr["errortext"]), "restartNetwork cleanup=true") {
		t.Errorf("cs destroyRouter of the only router: exit %d %v", code, f)
	}
	if s.vm(r.ID).State != models.StateRunning {
		t.Errorf("the refused destroy left %s %s", r.Name, s.vm(r.ID).State)
	}

	// Error paths: an unknown router (431), a read-only key rebooting (401), a wrong secret.
	code, e := cs.run("rebootRouter", "id=no-such-router")
	if er, _ := e["rebootrouterresponse"].(map[string]any); code == 0 || er["errorcode"] != float64(431) ||
		!strings.Contains(er["errortext"].(string), "no router with id no-such-router") {
		t.Errorf("cs rebootRouter of an unknown router: exit %d %v", code, e)
	}
	_, roKey, err := s.store.CreateAPIKey(context.Background(), "e2e-read-only", models.RoleReadOnly, "")
	if err != nil {
		t.Fatal(err)
	}
	rak, rsk := s.csPair(roKey)
	ro := &csClient{t: t, argv: argv, endpoint: cs.endpoint, key: rak, secret: rsk, dir: cs.dir}
	code, e = ro.run("stopRouter", "id="+r.ID)
	if er, _ := e["stoprouterresponse"].(map[string]any); code == 0 || er["errorcode"] != float64(401) {
		t.Errorf("cs stopRouter with a read-only key: exit %d %v", code, e)
	}
	if s.vm(r.ID).State != models.StateRunning {
		t.Errorf("a refused stopRouter changed %s to %s", r.Name, s.vm(r.ID).State)
	}
	bad := &csClient{t: t, argv: argv, endpoint: cs.endpoint, key: ak, secret: "not-the-secret", dir: cs.dir}
	code, e = bad.run("listRouters")
	if er, _ := e["listroutersresponse"].(map[string]any); code == 0 || er["errorcode"] != float64(401) ||
		er["errortext"] != "unable to verify user credentials and/or request signature" {
		t.Errorf("cs with a wrong secret: exit %d %v", code, e)
	}
}

func csItems(v any) []map[string]any {
	var out []map[string]any
	l, _ := v.([]any)
	for _, it := range l {
		if m, isMap := it.(map[string]any); isMap {
			out = append(out, m)
		}
	}
	return out
}

// TestCloudStackRunDiagnostics runs an async runDiagnostics with Debian's cs client against the
// real platform (Temporal, worker, vcsim, the SSH fleet): cs polls queryAsyncJobResult to the
// end, the job's result is the command's stdout, stderr and exit code in CloudStack's shape, and
// the stored diagnostics result of the router agrees.
func TestCloudStackRunDiagnostics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal and the simulators")
	}
	argv := findCS(t)
	_, err := exec.LookPath("ping")
	testenv.Require(t, "ping (apt-get install iputils-ping)", err)
	net := newDiagNet(t)
	store := modelstest.SQLite(t)
	files := &devcloud.SandboxFiles{}
	p := newPlatform(t, store, platformOptions{vmware: true, fleet: true, commands: devcloud.DiagnosticsCommands(net.vm, files), files: files})
	ak, sk := p.csPair(p.key)
	cs := &csClient{t: t, argv: argv, endpoint: p.api.URL + api.CloudStackPath, key: ak, secret: sk, dir: t.TempDir()}

	var router models.SystemVM
	if err := store.DB.Where("hypervisor_type = ? AND type = ? AND state = ?", "VMware", models.TypeRouter, models.StateRunning).
		Order("name").First(&router).Error; err != nil {
		t.Fatalf("no Running VMware router: %v", err)
	}
	code, res := cs.run("runDiagnostics", "targetid="+router.ID, "type=ping", "ipaddress=127.0.0.1", "params=-c 2 -i 0.2")
	if code != 0 {
		t.Fatalf("cs runDiagnostics exit %d: %v", code, res)
	}
	d, _ := res["diagnostics"].(map[string]any)
	if d["exitcode"] != "0" || !strings.Contains(fmt.Sprint(d["stdout"]), "2 packets transmitted, 2 received") {
		t.Errorf("runDiagnostics job result %v, want ping's output and exitcode \"0\"", res)
	}
	var rows []models.DiagnosticsResult
	modelstest.Must(t, store.DB.Where("system_vm_id = ?", router.ID).Find(&rows).Error, "diagnostics results")
	if len(rows) != 1 || rows[0].ExitCode != 0 || rows[0].Stdout != d["stdout"] {
		t.Errorf("stored diagnostics results of %s: %+v", router.Name, rows)
	}
	var ops []models.Operation
	modelstest.Must(t, store.DB.Where("target_id = ? AND kind = ?", router.ID, "systemvm.diagnostics").Find(&ops).Error, "operations")
	if len(ops) != 1 || ops[0].Status != models.OpCompleted || ops[0].RequestedBy == "" {
		t.Errorf("diagnostics operations of %s: %+v", router.Name, ops)
	}
	// A refusal in the REST operation's words, naming the parameter; cs exits non-zero.
	if code, e := cs.run("runDiagnostics", "targetid="+router.ID, "type=ping", "ipaddress=127.0.0.1", "params=-c 1; reboot"); code == 0 ||
		!strings.Contains(fmt.Sprint(e), "params") {
		t.Errorf("cs runDiagnostics with a shell character: exit %d %v", code, e)
	}
}
