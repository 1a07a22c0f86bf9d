package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// cpvmSSVMName matches the CloudStack names of CPVMs and SSVMs (v-12-VM, s-121-VM) and their
// recreate replacements' instance names.
var cpvmSSVMName = regexp.MustCompile(`^[vs]-\d+-VM(-[0-9a-f]{8})?$`)

// systemVMCounts counts the zone's CPVMs and SSVMs on the hypervisors (every cluster's VMs
// with such a name) and in the database (rows not Destroyed).
func (p *platform) systemVMCounts() (onHypervisors, inDB int) {
	p.t.Helper()
	var clusters []models.Cluster
	modelstest.Must(p.t, p.store.DB.Where("zone_id = ?", p.zoneID).Find(&clusters).Error, "clusters")
	for _, c := range clusters {
		d, err := p.acts.Drivers.For(context.Background(), c.ID)
		if err != nil {
			continue // a cluster whose hypervisor does not run here (KVM without libvirtd)
		}
		all, err := d.ListVMs(context.Background())
		if err != nil {
			p.t.Fatalf("list VMs of %s: %v", c.Name, err)
		}
		for _, vm := range all {
			if cpvmSSVMName.MatchString(vm.Name) {
				onHypervisors++
			}
		}
	}
	var n int64
	modelstest.Must(p.t, p.store.DB.Model(&models.SystemVM{}).Where("zone_id = ? AND type IN ? AND state <> ?",
		p.zoneID, []string{models.TypeCPVM, models.TypeSSVM}, models.StateDestroyed).Count(&n).Error, "count rows")
	return onHypervisors, int(n)
}

// deploy deploys a new system VM of the type into the platform's zone through the API and
// returns the finished operation and its result.
func (p *platform) deploy(typ string) (operation, workflows.DeployResult) {
	p.t.Helper()
	var out struct {
		Operation operation `json:"operation"`
		Error     any       `json:"error"`
	}
	if code := p.do(http.MethodPost, "/api/v1/zones/"+p.zoneID+"/system-vms", map[string]any{"systemvmtype": typ, "reason": "e2e"}, &out); code != http.StatusAccepted {
		p.t.Fatalf("deploy %s = %d (%v)", typ, code, out.Error)
	}
	op := p.wait(out.Operation, 3*time.Minute)
	var res workflows.DeployResult
	if len(op.Result) > 0 {
		if err := json.Unmarshal(op.Result, &res); err != nil {
			p.t.Fatalf("deploy result %s: %v", op.Result, err)
		}
	}
	return op, res
}

// consoleSession is one open console session on a simulated CPVM.
type consoleSession struct {
	resp *http.Response
}

// Close ends the session.
func (c *consoleSession) Close() { _ = c.resp.Body.Close() }

// openConsoleOn opens a console session on a CPVM's simulated endpoint with a token for that
// proxy, as a browser following the URL of POST /api/v1/consoles would, and waits for the
// proxy's first line.
func (p *platform) openConsoleOn(proxy models.SystemVM, token string) (*consoleSession, error) {
	st, err := p.consoles.Status(proxy.HypervisorName())
	if err != nil {
		return nil, err
	}
	if st.Addr == "" {
		return nil, fmt.Errorf("console endpoint of %s does not serve", proxy.Name)
	}
	return openConsoleAt(st.Addr, proxy.Name, token)
}

// openConsoleAt opens a console session on the endpoint at addr.
func openConsoleAt(addr, proxyName, token string) (*consoleSession, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // the dev certificate
	cl := &http.Client{Transport: tr}
	resp, err := cl.Get("https://" + addr + "/console?token=" + url.QueryEscape(token))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("console session on %s: %s", proxyName, resp.Status)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "console of ") {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("console session on %s: first line %q: %v", proxyName, line, err)
	}
	return &consoleSession{resp: resp}, nil
}

// signedToken is a console token for a session through that proxy (signed with the API's key).
func (p *platform) signedToken(proxy models.SystemVM, vmID string) string {
	p.t.Helper()
	key, err := consoles.TokenKey(modelstest.TestKey)
	modelstest.Must(p.t, err, "token key")
	tok, err := consoles.Sign(key, consoles.Claims{VMID: vmID, ProxyID: proxy.HypervisorName(), Expires: time.Now().Add(time.Hour).Unix()})
	modelstest.Must(p.t, err, "sign token")
	return tok
}

// TestSystemVMDeployAndRetire deploys a CPVM and an SSVM into the demo zone through the API
// on the real stack (Temporal, the worker, vcsim and the XAPI simulator, the SSH fleet with
// its console endpoints), then destroys the CPVM with the lifecycle destroy: after each step
// the hypervisors and the database hold the same CPVMs and SSVMs, the new CPVM serves TLS and
// counts its console sessions as the seeded one does, and its endpoint goes with it.
func TestSystemVMDeployAndRetire(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim, the XAPI simulator and the SSH fleet")
	}
	store := modelstest.SQLite(t)
	p := newPlatform(t, store, platformOptions{vmware: true, xen: true, fleet: true, consoles: true})
	hv0, db0 := p.systemVMCounts()
	if hv0 != db0 || db0 < 2 {
		t.Fatalf("before: %d CPVMs/SSVMs on the hypervisors, %d in the database", hv0, db0)
	}

	begin := time.Now()
	op, cpvmRes := p.deploy(models.TypeCPVM)
	if op.Status != models.OpCompleted {
		t.Fatalf("CPVM deploy ended %s: %s", op.Status, op.Error)
	}
	t.Logf("CPVM %s deployed in %s: %+v", cpvmRes.Name, time.Since(begin).Round(time.Millisecond), cpvmRes)
	cpvm := p.vm(cpvmRes.VMID)
	if cpvm.State != models.StateRunning || cpvm.Type != models.TypeCPVM || !regexp.MustCompile(`^v-\d+-VM$`).MatchString(cpvm.Name) {
		t.Fatalf("new CPVM row %+v", cpvm)
	}
	if !strings.HasPrefix(cpvm.PublicIP, "198.18.") || cpvm.PrivateIP == "" || cpvm.HostID == "" || cpvm.TemplateID == "" {
		t.Errorf("new CPVM addresses/placement: public %q private %q host %q template %q", cpvm.PublicIP, cpvm.PrivateIP, cpvm.HostID, cpvm.TemplateID)
	}
	if op.WorkflowID != workflows.LifecycleWorkflowID(cpvm.ID) {
		t.Errorf("deploy ran as %s, want the VM's workflow ID %s", op.WorkflowID, workflows.LifecycleWorkflowID(cpvm.ID))
	}
	if info, err := p.hv(cpvm); err != nil || info.State != "Running" {
		t.Fatalf("new CPVM on its hypervisor: %+v %v", info, err)
	}
	if cpvmRes.ConsoleAddr == "" {
		t.Errorf("the deploy verified no console endpoint: %+v", cpvmRes)
	}
	if hv, db := p.systemVMCounts(); hv != db0+1 || db != db0+1 {
		t.Fatalf("after the CPVM deploy: %d on the hypervisors, %d in the database, want %d", hv, db, db0+1)
	}

	// The new CPVM counts its sessions as the seeded one does.
	var seeded models.SystemVM
	modelstest.Must(t, store.DB.Where("type = ? AND zone_id = ? AND id <> ?", models.TypeCPVM, p.zoneID, cpvm.ID).First(&seeded).Error, "seeded CPVM")
	if _, err := p.consoles.Start(seeded.HypervisorName()); err != nil {
		t.Fatal(err)
	}
	var open []*consoleSession
	for i, proxy := range []models.SystemVM{cpvm, cpvm, seeded} {
		s, err := p.openConsoleOn(proxy, p.signedToken(proxy, fmt.Sprintf("guest-%d", i)))
		if err != nil {
			t.Fatalf("session %d on %s: %v", i, proxy.Name, err)
		}
		open = append(open, s)
	}
	for proxy, want := range map[models.SystemVM]int{cpvm: 2, seeded: 1} {
		if st, err := p.consoles.Status(proxy.HypervisorName()); err != nil || st.Sessions != want {
			t.Errorf("%s: %+v %v, want %d sessions", proxy.Name, st, err, want)
		}
	}
	// A token for the seeded proxy is refused by the new one.
	if _, err := p.openConsoleOn(cpvm, p.signedToken(seeded, "guest-x")); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("a token of %s on %s: %v, want 403", seeded.Name, cpvm.Name, err)
	}

	op, ssvmRes := p.deploy(models.TypeSSVM)
	if op.Status != models.OpCompleted {
		t.Fatalf("SSVM deploy ended %s: %s", op.Status, op.Error)
	}
	ssvm := p.vm(ssvmRes.VMID)
	if ssvm.State != models.StateRunning || !regexp.MustCompile(`^s-\d+-VM$`).MatchString(ssvm.Name) || ssvm.Name == cpvm.Name ||
		ssvm.PublicIP == cpvm.PublicIP || ssvm.PrivateIP == cpvm.PrivateIP {
		t.Fatalf("new SSVM row %+v (CPVM %s %s %s)", ssvm, cpvm.Name, cpvm.PublicIP, cpvm.PrivateIP)
	}
	if hv, db := p.systemVMCounts(); hv != db0+2 || db != db0+2 {
		t.Fatalf("after the SSVM deploy: %d on the hypervisors, %d in the database, want %d", hv, db, db0+2)
	}

	// Retire the CPVM: the lifecycle destroy.
	op = p.wait(p.start("/api/v1/system-vms/"+cpvm.ID+"/destroy"), 2*time.Minute)
	if op.Status != models.OpCompleted {
		t.Fatalf("destroy of %s ended %s: %s", cpvm.Name, op.Status, op.Error)
	}
	if got := p.vm(cpvm.ID); got.State != models.StateDestroyed || got.RemovedAt == nil {
		t.Errorf("destroyed CPVM row: %s removed %v", got.State, got.RemovedAt)
	}
	if _, err := p.hv(cpvm); err == nil {
		t.Errorf("%s still on its hypervisor after its destroy", cpvm.Name)
	}
	if hv, db := p.systemVMCounts(); hv != db0+1 || db != db0+1 {
		t.Fatalf("after the destroy: %d on the hypervisors, %d in the database, want %d", hv, db, db0+1)
	}
	if _, err := p.consoles.Status(cpvm.HypervisorName()); err == nil {
		t.Errorf("the destroyed CPVM's console endpoint still serves")
	}
	if st, err := p.consoles.Status(seeded.HypervisorName()); err != nil || st.Sessions != 1 {
		t.Errorf("seeded CPVM after the destroy of the new one: %+v %v, want its 1 session", st, err)
	}
	for _, s := range open {
		s.Close()
	}
	var events []models.Event
	modelstest.Must(t, store.DB.Where("resource_id IN ?", []string{cpvm.ID, ssvm.ID}).Order("created_at").Find(&events).Error, "events")
	var types []string
	for _, e := range events {
		types = append(types, e.Type)
	}
	for _, want := range []string{"PROXY.CREATE", "SSVM.CREATE", "PROXY.DESTROY"} {
		if !strings.Contains(strings.Join(types, ","), want) {
			t.Errorf("events %v: no %s", types, want)
		}
	}
}

// TestSystemVMDeployFailureDiscards: on the real stack, a CPVM whose console agent does not
// answer (a fleet without console endpoints) fails its verify step after its retries; the
// deploy destroys it on its hypervisor and the row ends Destroyed with the reason, so the
// hypervisors and the database still hold the same VMs, and the failure is an event.
func TestSystemVMDeployFailureDiscards(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim, the XAPI simulator and the SSH fleet")
	}
	store := modelstest.SQLite(t)
	p := newPlatform(t, store, platformOptions{vmware: true, xen: true, fleet: true}) // no console endpoints
	hv0, db0 := p.systemVMCounts()
	begin := time.Now()
	op, res := p.deploy(models.TypeCPVM)
	t.Logf("failed deploy ended in %s: %s", time.Since(begin).Round(time.Millisecond), op.Error)
	if op.Status != models.OpFailed || !strings.Contains(op.Error, "deploy-verify") || !strings.Contains(op.Error, "console") {
		t.Fatalf("deploy without a console agent ended %s: %s", op.Status, op.Error)
	}
	if res.State != models.StateDestroyed || len(res.Compensations) != 1 || res.Compensations[0] != "deploy-discard" {
		t.Errorf("result %+v, want Destroyed after deploy-discard", res)
	}
	vm := p.vm(res.VMID)
	if vm.State != models.StateDestroyed || vm.RemovedAt == nil || !strings.Contains(vm.LastError, "deploy-verify") {
		t.Errorf("row after the failed deploy: %s removed %v lasterror %q", vm.State, vm.RemovedAt, vm.LastError)
	}
	if _, err := p.hv(vm); err == nil {
		t.Errorf("%s is still on its hypervisor", vm.Name)
	}
	if hv, db := p.systemVMCounts(); hv != hv0 || db != db0 {
		t.Errorf("after the failed deploy: %d on hypervisors, %d rows, want %d and %d", hv, db, hv0, db0)
	}
	if p.eventCount("PROXY.CREATE.FAILED") != 1 || p.eventCount("PROXY.CREATE") != 0 {
		t.Errorf("events: %d PROXY.CREATE.FAILED, %d PROXY.CREATE", p.eventCount("PROXY.CREATE.FAILED"), p.eventCount("PROXY.CREATE"))
	}
	// An SSVM (no console endpoint to check) deploys on the same platform.
	if op, res := p.deploy(models.TypeSSVM); op.Status != models.OpCompleted || res.Name == vm.Name {
		t.Errorf("SSVM deploy after the failure: %s %s (%+v)", op.Status, op.Error, res)
	}
}
