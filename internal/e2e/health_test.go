package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// apiRouter is GET /api/v1/routers/{id}: the router with its last health check results.
type apiRouter struct {
	models.SystemVM
	HealthCheckResults []models.HealthCheckResult `json:"healthcheckresults"`
}

// result returns the last result of a check, failing the test when there is none.
func (r apiRouter) result(t *testing.T, check string) models.HealthCheckResult {
	t.Helper()
	for _, c := range r.HealthCheckResults {
		if c.CheckName == check {
			return c
		}
	}
	t.Fatalf("router %s has no result for %s: %+v", r.Name, check, r.HealthCheckResults)
	return models.HealthCheckResult{}
}

// apiList is a page of a list endpoint.
type apiList[T any] struct {
	Count int64 `json:"count"`
	Items []T   `json:"items"`
}

// apiOperation is an operation as the list endpoint shows it.
type apiOperation struct {
	operation
	TargetID    string `json:"targetid"`
	RequestedBy string `json:"requestedBy"`
}

func (p *platform) router(id string) apiRouter {
	p.t.Helper()
	var r apiRouter
	if code := p.do(http.MethodGet, "/api/v1/routers/"+id, nil, &r); code != http.StatusOK {
		p.t.Fatalf("GET router %s = %d", id, code)
	}
	return r
}

// list reads the first page (up to 500 items) of a list endpoint with query parameters.
func list[T any](p *platform, path string, q url.Values) apiList[T] {
	p.t.Helper()
	q.Set("pagesize", "500")
	var out apiList[T]
	if code := p.do(http.MethodGet, path+"?"+q.Encode(), nil, &out); code != http.StatusOK {
		p.t.Fatalf("GET %s?%s = %d", path, q.Encode(), code)
	}
	return out
}

// healthAlerts are the ROUTER.HEALTH.CHECKS alerts of a router, newest first.
func (p *platform) healthAlerts(routerID string) []models.Alert {
	return list[models.Alert](p, "/api/v1/alerts", url.Values{"resourceid": {routerID}, "type": {activities.AlertHealthChecks}}).Items
}

// healthRecreations are the recreate operations health checks started on a router ("" for
// the whole zone).
func (p *platform) healthRecreations(routerID string) []apiOperation {
	q := url.Values{"zoneid": {p.zoneID}, "kind": {activities.OperationKindRecreate}, "requestedby": {activities.RequestedByHealthChecks}}
	if routerID != "" {
		q.Set("targetid", routerID)
	}
	return list[apiOperation](p, "/api/v1/operations", q).Items
}

// consecutiveFailures reads the consecutive failure count of a check (not in the API).
func (p *platform) consecutiveFailures(routerID, check string) int {
	p.t.Helper()
	var r models.HealthCheckResult
	if err := p.store.DB.Where("router_id = ? AND check_name = ?", routerID, check).Take(&r).Error; err != nil {
		p.t.Fatalf("result %s of %s: %v", check, routerID, err)
	}
	return r.ConsecutiveFailures
}

// TestHealthChecksRecreateAndCircuitBreaker runs router health checks end to end on a zone of
// vcsim and XenServer routers, each a simulated router answering real SSH along its access
// path and running the real agent, with the platform wired as `sysvm dev` wires it. Sweeps are
// started with the Temporal client as their schedules would; faults, settings and every
// observation go through the API.
func TestHealthChecksRecreateAndCircuitBreaker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim, the XAPI simulator and a fleet of SSH routers")
	}
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		begin := time.Now()
		healthScenario(t, store)
		t.Logf("health scenario in %s", time.Since(begin).Round(time.Millisecond))
	})
}

func healthScenario(t *testing.T, store *models.Store) {
	p := newPlatform(t, store, platformOptions{vmware: true, xen: true, fleet: true})
	basic := activities.HealthBasic
	running := list[models.SystemVM](p, "/api/v1/routers", url.Values{"zoneid": {p.zoneID}, "state": {models.StateRunning}}).Items
	if len(running) < 10 {
		t.Fatalf("demo zone has %d running routers", len(running))
	}
	// a: a XenServer router (reached through its host) with a network of its own, for the
	// recreation; u and ro: VMware routers (reached directly) for the other faults.
	a := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND network_id <> ?", string(hypervisors.XenServer), false, "")
	u := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND network_id <> ?", string(hypervisors.VMware), false, "")
	ro := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND id <> ?", string(hypervisors.VMware), false, u.ID)

	// 1. A healthy fleet: every router passes, with a fresh connectivity.test.
	t.Run("healthy", func(t *testing.T) {
		start := time.Now().UTC().Truncate(time.Second)
		res := p.sweep(basic)
		if res.Summary.Routers != len(running) || res.Summary.Reachable != len(running) || res.Summary.Failing != 0 || res.Summary.Errors != 0 {
			t.Fatalf("healthy sweep summary %+v, want all %d routers reachable and passing", res.Summary, len(running))
		}
		for _, vm := range running {
			r := p.router(vm.ID)
			if r.HealthChecksFailed {
				t.Errorf("%s: healthchecksfailed after a healthy sweep: %+v", r.Name, r.HealthCheckResults)
			}
			c := r.result(t, activities.CheckConnectivity)
			if !c.Success || c.LastUpdated.Before(start) || c.CheckType != "basic" {
				t.Errorf("%s: connectivity.test %+v, want a basic pass at or after %s", r.Name, c, start)
			}
			if d := r.result(t, agent.CheckDHCPService); !d.Success {
				t.Errorf("%s: dhcp.service failed on a healthy router: %s", r.Name, d.Details)
			}
			for _, c := range r.HealthCheckResults {
				if !c.Success {
					t.Errorf("%s: %s failed on a healthy router: %s", r.Name, c.CheckName, c.Details)
				}
			}
		}
	})

	// 2. dnsmasq down on one router, dhcp.service listed for recreation: the first failing
	// sweep raises one alert and does not recreate; the second recreates (N = 2); the
	// recreated router passes again.
	t.Run("recreate after two failures", func(t *testing.T) {
		p.setting(activities.SettingHealthRecreateChecks, agent.CheckDHCPService)
		p.fault(a.ID, fleet.FaultServiceDown, "dnsmasq")

		res := p.sweep(basic)
		r := p.router(a.ID)
		if !r.HealthChecksFailed {
			t.Fatalf("%s passes with dnsmasq down: %+v", a.Name, r.HealthCheckResults)
		}
		d := r.result(t, agent.CheckDHCPService)
		if d.Success || !strings.Contains(d.Details, "dnsmasq") {
			t.Errorf("dhcp.service of %s = %+v, want failed naming dnsmasq", a.Name, d)
		}
		alerts := p.healthAlerts(a.ID)
		if len(alerts) != 1 || !strings.Contains(alerts[0].Subject, agent.CheckDHCPService) || alerts[0].ClearedAt != nil {
			t.Fatalf("alerts of %s after one failing sweep: %+v, want one open alert naming %s", a.Name, alerts, agent.CheckDHCPService)
		}
		events := list[models.Event](p, "/api/v1/events", url.Values{"resourceid": {a.ID}, "type": {activities.EventHealthChecks}, "level": {"WARN"}}).Items
		if len(events) != 1 || !strings.Contains(events[0].Description, agent.CheckDHCPService) || !strings.Contains(events[0].Description, "dnsmasq") {
			t.Errorf("WARN health events of %s: %+v, want one naming dhcp.service and dnsmasq", a.Name, events)
		}
		if len(res.Recreations) != 0 || res.Summary.Failing != 1 || res.Summary.RecreateFailing != 1 || len(res.Summary.Candidates) != 0 {
			t.Errorf("first failing sweep: summary %+v recreations %+v, want one failing router and no candidate", res.Summary, res.Recreations)
		}
		if ops := p.healthRecreations(""); len(ops) != 0 {
			t.Fatalf("recreated after one failure: %+v", ops)
		}
		if failing := list[models.SystemVM](p, "/api/v1/routers", url.Values{"zoneid": {p.zoneID}, "healthchecksfailed": {"true"}}); failing.Count != 1 {
			t.Errorf("%d routers failing, want only %s", failing.Count, a.Name)
		}

		res = p.sweep(basic)
		if len(res.Recreations) != 1 || !res.Recreations[0].Started || res.Recreations[0].RouterID != a.ID ||
			res.Recreations[0].Check != agent.CheckDHCPService || res.Recreations[0].Failures != 2 {
			t.Fatalf("second failing sweep started %+v (plan %+v), want the recreation of %s for dhcp.service after 2 failures",
				res.Recreations, res.Plan, a.Name)
		}
		rec := res.Recreations[0]
		op := p.wait(operation{ID: rec.OperationID, Kind: activities.OperationKindRecreate}, 2*time.Minute)
		if op.Status != models.OpCompleted || op.WorkflowID != workflows.LifecycleWorkflowID(a.ID) {
			t.Fatalf("health recreation of %s ended %s (%s) in workflow %s", a.Name, op.Status, op.Error, op.WorkflowID)
		}
		if n := len(p.healthAlerts(a.ID)); n != 1 {
			t.Errorf("%d health alerts of %s after its second failing sweep, want still 1", n, a.Name)
		}
		recEvents := list[models.Event](p, "/api/v1/events", url.Values{"resourceid": {a.ID}, "type": {activities.EventRecreate}}).Items
		if len(recEvents) != 1 || recEvents[0].OperationID != rec.OperationID || !strings.Contains(recEvents[0].Description, agent.CheckDHCPService) {
			t.Errorf("recreate events of %s: %+v, want one for operation %s naming the check", a.Name, recEvents, rec.OperationID)
		}

		// An advanced sweep may come first after a recreation: the basic failure stored
		// before it is stale and must not recreate the new router again.
		if res = p.sweep(activities.HealthAdvanced); len(res.Recreations) != 0 {
			t.Errorf("advanced sweep after the recreation recreated %s again: %+v", a.Name, res.Recreations)
		}
		// So may a fetch: the rebuilt router has no old results files, and the platform dropped
		// the old VM's stored results when it created the new one.
		if res = p.sweep(activities.HealthFetch); len(res.Recreations) != 0 {
			t.Errorf("fetch sweep after the recreation recreated %s again: %+v", a.Name, res.Recreations)
		}
		res = p.sweep(basic)
		r = p.router(a.ID)
		if r.HealthChecksFailed || !r.result(t, agent.CheckDHCPService).Success || len(res.Recreations) != 0 {
			t.Errorf("recreated %s still fails (%+v) or was recreated again (%+v)", a.Name, r.HealthCheckResults, res.Recreations)
		}
		if r.State != models.StateRunning || r.Version != devcloud.CurrentVersion {
			t.Errorf("recreated %s is %s on version %s, want Running on %s", a.Name, r.State, r.Version, devcloud.CurrentVersion)
		}
		alerts = p.healthAlerts(a.ID)
		if len(alerts) != 1 || alerts[0].ClearedAt == nil {
			t.Errorf("alerts of %s once it passes: %+v, want the one alert cleared", a.Name, alerts)
		}
		ops := p.healthRecreations("")
		if len(ops) != 1 || ops[0].ID != rec.OperationID || ops[0].TargetID != a.ID || ops[0].Status != models.OpCompleted ||
			ops[0].RequestedBy != activities.RequestedByHealthChecks {
			t.Errorf("health recreations in the zone: %+v, want exactly the one of %s", ops, a.Name)
		}
	})

	// 3. A substring of a check name in the setting never recreates.
	t.Run("substring never recreates", func(t *testing.T) {
		p.setting(activities.SettingHealthRecreateChecks, "dhcp")
		p.fault(a.ID, fleet.FaultServiceDown, "dnsmasq")
		for i := 0; i < 3; i++ {
			res := p.sweep(basic)
			if len(res.Recreations) != 0 || res.Summary.RecreateFailing != 0 || len(res.Summary.Candidates) != 0 {
				t.Fatalf("sweep %d with %q listed: summary %+v recreations %+v", i+1, "dhcp", res.Summary, res.Recreations)
			}
		}
		if d := p.router(a.ID).result(t, agent.CheckDHCPService); d.Success {
			t.Errorf("dhcp.service of %s passes with dnsmasq down: %+v", a.Name, d)
		}
		if n := p.consecutiveFailures(a.ID, agent.CheckDHCPService); n != 3 {
			t.Errorf("dhcp.service of %s failed %d runs in a row, want 3", a.Name, n)
		}
		if ops := p.healthRecreations(""); len(ops) != 1 {
			t.Errorf("%d health recreations after three failures of an unlisted check, want still 1", len(ops))
		}
		p.clearFaults(a.ID)
	})

	// 4. Every router fails at once: the circuit breaker trips; nothing is recreated.
	t.Run("circuit breaker", func(t *testing.T) {
		p.setting(activities.SettingHealthRecreateChecks, agent.CheckDHCPService)
		for _, vm := range running {
			p.fault(vm.ID, fleet.FaultServiceDown, "dnsmasq")
		}
		for i := 1; i <= 2; i++ {
			res := p.sweep(basic)
			if res.Plan == nil || !res.Plan.BreakerTripped || len(res.Recreations) != 0 || len(res.Plan.Recreate) != 0 {
				t.Fatalf("sweep %d with every router failing: plan %+v recreations %+v, want the breaker tripped and nothing recreated",
					i, res.Plan, res.Recreations)
			}
			if res.Summary.RecreateFailing*100 <= 30*res.Summary.Routers {
				t.Errorf("sweep %d: only %d of %d routers fail dhcp.service", i, res.Summary.RecreateFailing, res.Summary.Routers)
			}
			if i == 2 && len(res.Summary.Candidates) == 0 {
				t.Errorf("second sweep has no candidates: the breaker was not what held recreation back")
			}
		}
		open := list[models.Alert](p, "/api/v1/alerts", url.Values{"zoneid": {p.zoneID}, "type": {activities.AlertCircuitBreaker}, "cleared": {"false"}})
		if open.Count != 1 || open.Items[0].Severity != "CRITICAL" || open.Items[0].ResourceID != p.zoneID {
			t.Fatalf("open circuit breaker alerts: %+v, want exactly one for the zone", open.Items)
		}
		if ops := p.healthRecreations(""); len(ops) != 1 {
			t.Errorf("%d health recreations with the breaker open, want still 1", len(ops))
		}
		// Faults gone, the zone is back under the threshold: the breaker closes.
		for _, vm := range running {
			p.clearFaults(vm.ID)
		}
		res := p.sweep(basic)
		if res.Plan == nil || res.Plan.BreakerTripped || res.Summary.Failing != 0 || len(res.Recreations) != 0 {
			t.Errorf("sweep after the faults are gone: summary %+v plan %+v", res.Summary, res.Plan)
		}
		if n := list[models.Alert](p, "/api/v1/alerts", url.Values{"zoneid": {p.zoneID}, "type": {activities.AlertCircuitBreaker}, "cleared": {"false"}}).Count; n != 0 {
			t.Errorf("%d circuit breaker alerts still open once every router passes", n)
		}
	})

	// 5. An unreachable router fails connectivity.test; a read-only root fails
	// filesystem.writable.test.
	t.Run("unreachable and readonly", func(t *testing.T) {
		p.fault(u.ID, fleet.FaultUnreachable, "")
		p.fault(ro.ID, fleet.FaultReadOnlyFS, "")
		res := p.sweep(basic)
		if res.Summary.Unreachable != 1 || res.Summary.Failing != 2 {
			t.Errorf("sweep summary %+v, want one unreachable and two failing routers", res.Summary)
		}
		c := p.router(u.ID).result(t, activities.CheckConnectivity)
		if c.Success || !strings.Contains(c.Details, "does not answer") {
			t.Errorf("connectivity.test of unreachable %s = %+v", u.Name, c)
		}
		w := p.router(ro.ID).result(t, agent.CheckFilesystemWritable)
		if w.Success {
			t.Errorf("filesystem.writable.test of read-only %s passes: %+v", ro.Name, w)
		}
		for _, x := range []struct {
			vm    models.SystemVM
			check string
		}{{u, activities.CheckConnectivity}, {ro, agent.CheckFilesystemWritable}} {
			open := list[models.Alert](p, "/api/v1/alerts", url.Values{"resourceid": {x.vm.ID},
				"type": {activities.AlertHealthChecks}, "cleared": {"false"}}).Items
			if len(open) != 1 || !strings.Contains(open[0].Subject, x.check) {
				t.Errorf("open alerts of %s: %+v, want one naming %s", x.vm.Name, open, x.check)
			}
		}
	})

	// 6. Fresh checks through the API return real results and never recreate, however often
	// they find a recreate-listed check failing.
	t.Run("fresh checks", func(t *testing.T) {
		p.setting(activities.SettingHealthRecreateChecks, agent.CheckFilesystemWritable+","+activities.CheckConnectivity)
		before := p.consecutiveFailures(ro.ID, agent.CheckFilesystemWritable)
		start := time.Now().UTC().Truncate(time.Second)
		for i := 0; i < 3; i++ {
			var out struct {
				RouterID           string                     `json:"routerid"`
				HealthChecksFailed bool                       `json:"healthchecksfailed"`
				Results            []models.HealthCheckResult `json:"healthcheckresults"`
			}
			if code := p.do(http.MethodPost, "/api/v1/routers/"+ro.ID+"/health-checks", nil, &out); code != http.StatusOK {
				t.Fatalf("fresh checks of %s = %d", ro.Name, code)
			}
			types := map[string]bool{}
			var writable *models.HealthCheckResult
			for i, r := range out.Results {
				types[r.CheckType] = true
				if r.CheckName == agent.CheckFilesystemWritable {
					writable = &out.Results[i]
				}
			}
			if out.RouterID != ro.ID || !out.HealthChecksFailed || !types["basic"] || !types["advanced"] ||
				writable == nil || writable.Success || writable.LastUpdated.Before(start) {
				t.Fatalf("fresh checks of read-only %s: %+v", ro.Name, out)
			}
		}
		if n := p.consecutiveFailures(ro.ID, agent.CheckFilesystemWritable); n != before {
			t.Errorf("fresh checks moved filesystem.writable.test of %s from %d to %d failures in a row", ro.Name, before, n)
		}
		var down struct {
			Results []models.HealthCheckResult `json:"healthcheckresults"`
		}
		if code := p.do(http.MethodPost, "/api/v1/routers/"+u.ID+"/health-checks", nil, &down); code != http.StatusOK {
			t.Fatalf("fresh checks of unreachable %s = %d", u.Name, code)
		}
		if c := (apiRouter{SystemVM: u, HealthCheckResults: down.Results}).result(t, activities.CheckConnectivity); c.Success || c.LastUpdated.Before(start) {
			t.Errorf("fresh connectivity.test of unreachable %s = %+v", u.Name, c)
		}
		var healthy struct {
			HealthChecksFailed bool                       `json:"healthchecksfailed"`
			Results            []models.HealthCheckResult `json:"healthcheckresults"`
		}
		if code := p.do(http.MethodPost, "/api/v1/routers/"+a.ID+"/health-checks", nil, &healthy); code != http.StatusOK {
			t.Fatalf("fresh checks of %s = %d", a.Name, code)
		}
		if healthy.HealthChecksFailed || len(healthy.Results) < 10 {
			t.Errorf("fresh checks of healthy %s: %+v", a.Name, healthy)
		}
		if ops := p.healthRecreations(""); len(ops) != 1 {
			t.Errorf("%d health recreations after fresh checks, want still 1: %+v", len(ops), ops)
		}
		for _, vm := range []models.SystemVM{u, ro} {
			if ops := list[apiOperation](p, "/api/v1/operations", url.Values{"targetid": {vm.ID}}); ops.Count != 0 {
				t.Errorf("fresh checks of %s started operations: %+v", vm.Name, ops.Items)
			}
		}
	})
}
