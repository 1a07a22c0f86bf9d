package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/api"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/internal/certtest"
	"github.com/sysvm/sysvm/internal/promcheck"
	"github.com/sysvm/sysvm/metrics"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// series finds the value of the series of a family whose labels include want; ok is false
// when there is none.
func series(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) (float64, bool) {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func mustSeries(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	v, ok := series(t, g, name, want)
	if !ok {
		t.Fatalf("no series %s%v", name, want)
	}
	return v
}

// fleetFixture is a zone with four routers (two running and failing checks, one running and
// passing, one stopped), a secondary storage VM, an open circuit breaker, and operations.
func fleetFixture(t *testing.T, s *models.Store) models.Zone {
	t.Helper()
	ctx := context.Background()
	db := s.DB.WithContext(ctx)
	zone := models.Zone{Name: "zone-a"}
	other := models.Zone{Name: "zone-b"}
	modelstest.Must(t, db.Create(&zone).Error, "zone")
	modelstest.Must(t, db.Create(&other).Error, "zone")
	modelstest.Must(t, db.Create(&models.CapacityState{ZoneID: zone.ID, Type: models.TypeCPVM, Demand: 7, Target: 4, Running: 2}).Error, "capacity")
	vm := func(name, typ, state, hv string, failed bool) models.SystemVM {
		v := models.SystemVM{Name: name, Type: typ, State: state, ZoneID: zone.ID, HypervisorType: hv, HealthChecksFailed: failed}
		modelstest.Must(t, db.Create(&v).Error, "vm %s", name)
		return v
	}
	r1 := vm("r-1-VM", models.TypeRouter, models.StateRunning, "KVM", true)
	r2 := vm("r-2-VM", models.TypeRouter, models.StateRunning, "VMware", true)
	r3 := vm("r-3-VM", models.TypeRouter, models.StateRunning, "KVM", false)
	r4 := vm("r-4-VM", models.TypeRouter, models.StateStopped, "KVM", true)
	vm("s-5-VM", models.TypeSSVM, models.StateRunning, "KVM", false)
	now := time.Now().UTC()
	res := func(r models.SystemVM, check string, ok bool, fails int) {
		modelstest.Must(t, db.Create(&models.HealthCheckResult{RouterID: r.ID, CheckName: check, CheckType: "basic",
			Success: ok, LastUpdated: now, ConsecutiveFailures: fails}).Error, "result")
	}
	res(r1, "dns_check.py", false, 4)
	res(r1, activities.CheckConnectivity, true, 0)
	res(r2, "dns_check.py", false, 2)
	res(r2, "gateways_check.py", false, 1)
	res(r3, "dns_check.py", true, 0)
	res(r4, "dns_check.py", false, 9) // stopped: not counted
	modelstest.Must(t, db.Create(&models.Alert{Type: activities.AlertCircuitBreaker, Severity: "CRITICAL", ZoneID: zone.ID}).Error, "alert")
	cleared := now
	modelstest.Must(t, db.Create(&models.Alert{Type: activities.AlertCircuitBreaker, ZoneID: other.ID, ClearedAt: &cleared}).Error, "alert")
	op := func(kind, status string, age, took time.Duration, zoneID string) models.Operation {
		o := models.Operation{Kind: kind, Status: status, ZoneID: zoneID, TargetID: r1.ID}
		o.CreatedAt = now.Add(-age)
		if status != models.OpRunning {
			done := o.CreatedAt.Add(took)
			o.CompletedAt = &done
		}
		modelstest.Must(t, db.Create(&o).Error, "operation")
		return o
	}
	op("systemvm.start", models.OpCompleted, time.Hour, 3*time.Second, zone.ID)
	op("systemvm.start", models.OpCompleted, time.Hour, 400*time.Second, zone.ID)
	op("systemvm.start", models.OpFailed, time.Hour, 20*time.Second, zone.ID)
	op("systemvm.start", models.OpRunning, time.Minute, 0, zone.ID)
	op(activities.OperationKindRecreate, models.OpCompleted, time.Hour, 90*time.Second, zone.ID) // requested
	hr := op(activities.OperationKindRecreate, models.OpRunning, time.Minute, 0, zone.ID)
	rolloutFixture(t, s, zone, other, r1, r2, r4, op)
	if _, err := activities.NewHealth(ctx, s, nil, quiet()); err != nil {
		t.Fatal(err)
	}
	modelstest.Must(t, db.Create(&models.HealthRecreation{OperationID: hr.ID, RouterID: r1.ID, CheckName: "dns_check.py",
		ZoneID: zone.ID, Failures: 4}).Error, "recreation")
	return zone
}

// rolloutFixture adds the features that landed after health checks: console proxies with
// viewer sessions, a template rollout's zone downloads and pool seeds, router versions under
// minreq.sysvmtemplate.version (global, with a zone override in zone-b), and router upgrades
// (one running and paused by its failure budget, one ended whose alert stays open).
func rolloutFixture(t *testing.T, s *models.Store, zone, other models.Zone, r1, r2, r4 models.SystemVM,
	op func(kind, status string, age, took time.Duration, zoneID string) models.Operation) {
	t.Helper()
	ctx := context.Background()
	db := s.DB.WithContext(ctx)
	cpvm := func(name, state string, viewers int) {
		modelstest.Must(t, db.Create(&models.SystemVM{Name: name, Type: models.TypeCPVM, State: state, ZoneID: zone.ID,
			HypervisorType: "KVM", ActiveViewers: viewers}).Error, "cpvm %s", name)
	}
	cpvm("v-7-VM", models.StateRunning, 3)
	cpvm("v-8-VM", models.StateRunning, 2)
	cpvm("v-9-VM", models.StateStopped, 5) // stopped: its stale count is not a session

	// Versions: zone-a requires 4.20.0 (global): r2 (4.19.0) and r3 (unknown) require
	// upgrade, r1 and the stopped r4 do not. zone-b requires only 4.18.0 (zone scope).
	for id, v := range map[string]string{r1.ID: "4.20.0", r2.ID: "4.19.0", r4.ID: "4.20.1"} {
		modelstest.Must(t, db.Model(&models.SystemVM{}).Where("id = ?", id).Update("version", v).Error, "version")
	}
	modelstest.Must(t, db.Create(&models.SystemVM{Name: "r-6-VM", Type: models.TypeRouter, State: models.StateStopped,
		ZoneID: other.ID, HypervisorType: "KVM", Version: "4.18.0"}).Error, "router")
	if _, err := s.Settings.Set(ctx, models.SettingMinReqVersion, models.ScopeGlobal, "", "4.20.0"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Settings.Set(ctx, models.SettingMinReqVersion, models.ScopeZone, other.ID, "4.18.0"); err != nil {
		t.Fatal(err)
	}

	kvm := models.Template{Name: "systemvm-kvm-4.20.0", Hypervisor: "KVM", Type: "SYSTEM", Version: "4.20.0", State: models.TemplateReady}
	vmw := models.Template{Name: "systemvm-vmware-4.20.0", Hypervisor: "VMware", Type: "SYSTEM", Version: "4.20.0", State: models.TemplateReady}
	modelstest.Must(t, db.Create(&kvm).Error, "template")
	modelstest.Must(t, db.Create(&vmw).Error, "template")
	zref := func(tpl models.Template, z models.Zone, status string, done, total int64, switched bool) {
		modelstest.Must(t, db.Create(&models.TemplateZoneRef{TemplateID: tpl.ID, ZoneID: z.ID, Status: status,
			BytesDone: done, BytesTotal: total, Switched: switched}).Error, "zone ref")
	}
	zref(kvm, zone, "42% Downloaded", 420_000_000, 1_000_000_000, false)
	zref(kvm, other, "Failed: checksum mismatch", 1_000_000_000, 1_000_000_000, false)
	zref(vmw, zone, models.TemplateReady, 800_000_000, 800_000_000, true)
	// The same name registered again (another row): its download shares the name's series.
	again := models.Template{Name: kvm.Name, Hypervisor: "KVM", Type: "SYSTEM", Version: "4.20.0", State: models.TemplateReady}
	modelstest.Must(t, db.Create(&again).Error, "template")
	zref(again, zone, models.TemplateReady, 0, 0, false)
	pref := func(tpl models.Template, pool, state string) {
		modelstest.Must(t, db.Create(&models.TemplatePoolRef{TemplateID: tpl.ID, PoolID: pool, ZoneID: zone.ID,
			PoolName: pool, State: state}).Error, "pool ref")
	}
	pref(vmw, "pool-1", models.TemplateReady)
	pref(vmw, "pool-2", models.TemplateReady)
	pref(vmw, "pool-3", models.TemplateInstalling)

	paused := op(workflows.RouterUpgradeOperationKind, models.OpRunning, time.Minute, 0, zone.ID)
	ended := op(workflows.RouterUpgradeOperationKind, models.OpCanceled, time.Hour, time.Minute, zone.ID)
	for _, o := range []models.Operation{paused, ended} {
		modelstest.Must(t, db.Create(&models.Alert{Type: activities.AlertUpgradeBudget, Severity: "CRITICAL",
			ResourceType: activities.ResourceUpgrade, ResourceID: o.ID, ZoneID: zone.ID}).Error, "alert")
	}
}

func TestTemplateZoneState(t *testing.T) {
	for status, want := range map[string]string{"0% Downloaded": metrics.TemplateZoneDownloading, "100% Downloaded": metrics.TemplateZoneDownloading,
		models.TemplateDownloadComplete: metrics.TemplateZoneDownloaded, models.TemplateInstalling: metrics.TemplateZoneInstalling,
		models.TemplateReady: metrics.TemplateZoneReady, "Failed: no route to host": metrics.TemplateZoneFailed, "": metrics.TemplateZoneOther} {
		if got := metrics.TemplateZoneState(status); got != want {
			t.Errorf("TemplateZoneState(%q) = %q, want %q", status, got, want)
		}
	}
}

func TestFleetCollectorReadsTheDatabase(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		fleetFixture(t, s)
		reg := prometheus.NewRegistry()
		reg.MustRegister(metrics.NewFleetCollector(s, quiet()))
		z := "zone-a"
		checks := []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"sysvm_routers_health", map[string]string{"zone": z, "health": "failing"}, 2},
			{"sysvm_routers_health", map[string]string{"zone": z, "health": "passing"}, 1},
			{"sysvm_routers_health", map[string]string{"zone": "zone-b", "health": "failing"}, 0},
			{"sysvm_routers", map[string]string{"zone": z, "hypervisor": "KVM", "state": models.StateRunning}, 2},
			{"sysvm_routers", map[string]string{"zone": z, "hypervisor": "KVM", "state": models.StateStopped}, 1},
			{"sysvm_system_vms", map[string]string{"zone": z, "type": models.TypeSSVM, "state": models.StateRunning}, 1},
			{"sysvm_system_vms", map[string]string{"zone": z, "type": models.TypeRouter, "state": models.StateRunning}, 3},
			{"sysvm_health_check_failing_routers", map[string]string{"zone": z, "check": "dns_check.py"}, 2},
			{"sysvm_health_check_failing_routers", map[string]string{"zone": z, "check": "gateways_check.py"}, 1},
			{"sysvm_health_check_failing_routers", map[string]string{"zone": z, "check": activities.CheckConnectivity}, 0},
			{"sysvm_health_check_consecutive_failures_max", map[string]string{"zone": z, "check": "dns_check.py"}, 4},
			{"sysvm_health_circuit_breaker_open", map[string]string{"zone": z}, 1},
			{"sysvm_health_circuit_breaker_open", map[string]string{"zone": "zone-b"}, 0},
			{"sysvm_alerts_open", map[string]string{"zone": z, "type": activities.AlertCircuitBreaker}, 1},
			{"sysvm_router_recreations_total", map[string]string{"zone": z, "reason": "dns_check.py"}, 1},
			{"sysvm_router_recreations_total", map[string]string{"zone": z, "reason": metrics.ReasonRequested}, 1},
			{"sysvm_operations_started_total", map[string]string{"kind": "systemvm.start"}, 4},
			{"sysvm_operations_running", map[string]string{"kind": "systemvm.start"}, 1},
			{"sysvm_operations_finished_total", map[string]string{"kind": "systemvm.start", "status": models.OpCompleted}, 2},
			{"sysvm_operations_finished_total", map[string]string{"kind": "systemvm.start", "status": models.OpFailed}, 1},
			{"sysvm_operation_duration_seconds", map[string]string{"kind": "systemvm.start", "status": models.OpCompleted}, 2},
			{"sysvm_health_sweep_interval_seconds", map[string]string{"zone": z, "kind": "basic"}, 180},
			{"sysvm_zone_info", map[string]string{"zone": z}, 1},
			{"sysvm_console_sessions", map[string]string{"zone": z}, 5},
			{"sysvm_systemvm_capacity_target", map[string]string{"zone": z, "type": models.TypeCPVM}, 4},
			{"sysvm_systemvm_capacity_demand", map[string]string{"zone": z, "type": models.TypeCPVM}, 7},
			{"sysvm_console_sessions", map[string]string{"zone": "zone-b"}, 0},
			{"sysvm_console_proxies", map[string]string{"zone": z, "state": models.StateRunning}, 2},
			{"sysvm_console_proxies", map[string]string{"zone": z, "state": models.StateStopped}, 1},
			{"sysvm_template_zone_state", map[string]string{"template": "systemvm-kvm-4.20.0", "hypervisor": "KVM", "zone": z, "state": metrics.TemplateZoneDownloading}, 1},
			{"sysvm_template_zone_state", map[string]string{"template": "systemvm-kvm-4.20.0", "hypervisor": "KVM", "zone": z, "state": metrics.TemplateZoneReady}, 1}, // the re-registered one
			{"sysvm_template_zone_state", map[string]string{"template": "systemvm-kvm-4.20.0", "zone": "zone-b", "state": metrics.TemplateZoneFailed}, 1},
			{"sysvm_template_zone_state", map[string]string{"template": "systemvm-vmware-4.20.0", "hypervisor": "VMware", "zone": z, "state": metrics.TemplateZoneReady}, 1},
			{"sysvm_template_download_bytes", map[string]string{"template": "systemvm-kvm-4.20.0", "zone": z}, 420_000_000},
			{"sysvm_template_download_total_bytes", map[string]string{"template": "systemvm-kvm-4.20.0", "zone": z}, 1_000_000_000},
			{"sysvm_template_zone_switched", map[string]string{"template": "systemvm-vmware-4.20.0", "zone": z}, 1},
			{"sysvm_template_zone_switched", map[string]string{"template": "systemvm-kvm-4.20.0", "zone": z}, 0},
			{"sysvm_template_pool_state", map[string]string{"template": "systemvm-vmware-4.20.0", "hypervisor": "VMware", "zone": z, "state": models.TemplateReady}, 2},
			{"sysvm_template_pool_state", map[string]string{"template": "systemvm-vmware-4.20.0", "zone": z, "state": models.TemplateInstalling}, 1},
			{"sysvm_routers_requiring_upgrade", map[string]string{"zone": z}, 2},
			{"sysvm_routers_requiring_upgrade", map[string]string{"zone": "zone-b"}, 0},
			{"sysvm_router_upgrades_running", map[string]string{"zone": z}, 1},
			{"sysvm_router_upgrades_running", map[string]string{"zone": "zone-b"}, 0},
			{"sysvm_router_upgrades_paused_by_budget", map[string]string{"zone": z}, 1},
			{"sysvm_router_upgrades_paused_by_budget", map[string]string{"zone": "zone-b"}, 0},
			{"sysvm_alerts_open", map[string]string{"zone": z, "type": activities.AlertUpgradeBudget}, 2},
			{"sysvm_alerts_open", map[string]string{"zone": "zone-b", "type": activities.AlertUpgradeBudget}, 0},
			{"sysvm_operations_running", map[string]string{"kind": workflows.RouterUpgradeOperationKind}, 1},
			{"sysvm_fleet_scrape_errors", nil, 0},
		}
		for _, c := range checks {
			if got := mustSeries(t, reg, c.name, c.labels); got != c.want {
				t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
			}
		}
		// The durations: 3 s and 400 s land in their buckets, and the sum is theirs.
		fams, _ := reg.Gather()
		for _, f := range fams {
			if f.GetName() != "sysvm_operation_duration_seconds" {
				continue
			}
			for _, m := range f.GetMetric() {
				if labelOf(m, "kind") != "systemvm.start" || labelOf(m, "status") != models.OpCompleted {
					continue
				}
				h := m.GetHistogram()
				if sum := h.GetSampleSum(); sum < 402 || sum > 404 {
					t.Errorf("duration sum = %v, want 403", sum)
				}
				for _, b := range h.GetBucket() {
					want := uint64(0)
					switch {
					case b.GetUpperBound() >= 400:
						want = 2
					case b.GetUpperBound() >= 3:
						want = 1
					}
					if b.GetCumulativeCount() != want {
						t.Errorf("bucket le=%v = %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
					}
				}
			}
		}
		// No label anywhere carries a router ID or name.
		for _, f := range fams {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if strings.Contains(l.GetValue(), "-VM") {
						t.Errorf("%s has a router in label %s=%q", f.GetName(), l.GetName(), l.GetValue())
					}
				}
			}
		}
	})
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// telemetryFixture is a registry populated the way a running API and worker populate theirs:
// the fleet collector over the fixture, the SSH collector after a failed connection, API
// requests through the instrumented echo, and a sweep's metrics recorded through the
// Temporal metrics handler under the names the workflow uses.
func telemetryFixture(t *testing.T) (*metrics.Telemetry, *httptest.Server, string) {
	t.Helper()
	ctx := context.Background()
	s := modelstest.SQLite(t)
	zone := fleetFixture(t, s)
	tel, err := metrics.New(ctx, metrics.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(ctx) })

	kp, err := activities.SystemVMKeyPair(ctx, s.Secrets)
	if err != nil {
		t.Fatal(err)
	}
	exec, err := sshexec.New(sshexec.Config{Key: kp, HostKeys: s.Secrets, Logger: quiet(), ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close() // nothing listens there now: the dial is refused
	_, err = exec.Run(ctx, sshexec.Target{VMName: "r-9-VM", Hypervisor: hypervisors.VMware, PrivateIP: "127.0.0.1", Port: port}, []string{"true"}, nil)
	if err == nil {
		t.Fatal("SSH to a closed port succeeded")
	}
	self := certtest.Issue(certtest.Options{CN: "metrics", DNSNames: []string{"*.metrics.example.com"}, NotAfter: time.Now().Add(10 * 24 * time.Hour)}, nil)
	if _, err := s.UploadCertificate(ctx, models.CertificateUpload{Certificate: self.CertPEM(), PrivateKey: self.KeyPEM(),
		DomainSuffix: "*.metrics.example.com"}, "t", time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	if err := tel.Register(metrics.NewFleetCollector(s, quiet()), metrics.NewSSHCollector(exec), metrics.NewCertificateCollector(s, quiet()),
		metrics.NewUpgradeProgressCollector(s, nil, quiet())); err != nil {
		t.Fatal(err)
	}

	srv, err := api.New(api.Config{Store: s, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := tel.InstrumentAPI(srv.Echo(), true); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	_, key, err := s.CreateAPIKey(ctx, "t", models.RoleAdmin, "")
	if err != nil {
		t.Fatal(err)
	}
	var vms []models.SystemVM
	modelstest.Must(t, s.DB.Where("type = ?", models.TypeRouter).Order("name").Find(&vms).Error, "routers")
	for _, p := range []string{"/api/v1/routers/" + vms[0].ID, "/api/v1/routers/" + vms[1].ID, "/api/v1/routers/no-such-id", "/no/such/path"} {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+p, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get(hs.URL + "/api/v1/routers") // no key: 401
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	m := tel.TemporalMetrics.WithTags(map[string]string{"zone_id": zone.ID, "kind": "basic"})
	m.Timer(workflows.MetricSweepDuration).Record(12 * time.Second)
	m.Counter(workflows.MetricSweepsCompleted).Inc(1)
	m.Gauge(workflows.MetricSweepLastCompleted).Update(float64(time.Now().Unix()))
	m.WithTags(map[string]string{"result": "visited"}).Gauge(workflows.MetricSweepRouters).Update(3)
	return tel, hs, zone.ID
}

func TestAPIAndSSHAndSweepMetrics(t *testing.T) {
	tel, hs, _ := telemetryFixture(t)
	reg := tel.Registry
	// Requests are counted by route template, never by raw path or ID.
	if got := mustSeries(t, reg, "sysvm_api_requests_total", map[string]string{"url": "/api/v1/routers/:id", "code": "200", "method": "GET"}); got != 2 {
		t.Errorf("GET /api/v1/routers/:id 200 = %v, want 2", got)
	}
	if got := mustSeries(t, reg, "sysvm_api_requests_total", map[string]string{"url": "/api/v1/routers/:id", "code": "404"}); got != 1 {
		t.Errorf("GET /api/v1/routers/:id 404 = %v, want 1", got)
	}
	if got := mustSeries(t, reg, "sysvm_api_requests_total", map[string]string{"url": "/api/v1/routers", "code": "401"}); got != 1 {
		t.Errorf("GET /api/v1/routers 401 = %v, want 1", got)
	}
	fams, _ := reg.Gather()
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			if u := labelOf(m, "url"); strings.Contains(u, "/no/such") || strings.Contains(u, "no-such-id") {
				t.Errorf("%s labelled with a raw path %q", f.GetName(), u)
			}
			if h := labelOf(m, "host"); h != "" {
				t.Errorf("%s labelled with host %q", f.GetName(), h)
			}
		}
	}
	if got := mustSeries(t, reg, "sysvm_ssh_connect_errors_total", map[string]string{"hop": "vm", "stage": "dial", "reason": sshexec.ReasonUnreachable}); got != 1 {
		t.Errorf("SSH dial errors = %v, want 1", got)
	}
	if got := mustSeries(t, reg, "sysvm_ssh_pool_connections", map[string]string{"state": "open"}); got != 0 {
		t.Errorf("open SSH clients = %v, want 0", got)
	}
	if got := mustSeries(t, reg, "sysvm_health_sweep_duration_seconds", map[string]string{"kind": "basic"}); got != 1 {
		t.Errorf("sweep duration observations = %v, want 1", got)
	}
	for _, name := range []string{"sysvm_health_sweeps_completed_total", "sysvm_health_sweep_last_completed_timestamp_seconds", "sysvm_health_sweep_routers"} {
		mustSeries(t, reg, name, map[string]string{"kind": "basic"})
	}

	// /metrics on the API port: the Prometheus text format, unauthenticated.
	resp, err := http.Get(hs.URL + metrics.Path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"# TYPE sysvm_routers_health gauge", `sysvm_health_circuit_breaker_open{zone="zone-a"} 1`, "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestRulesAndDashboardNameExportedMetrics parses the alert rules with Prometheus's rule
// parser and every rule and dashboard expression with its PromQL parser, and checks that each
// metric they name is in the registry of a populated process. The dashboard's Temporal SDK
// panels (temporal_*) need a running worker: internal/e2e checks them on the real stack.
func TestRulesAndDashboardNameExportedMetrics(t *testing.T) {
	tel, _, _ := telemetryFixture(t)
	exported, err := promcheck.Exported(tel.Registry)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := promcheck.RuleExprs("../docker/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) < 5 {
		t.Errorf("%d alert rules, want the five of docs/metrics.md at least", len(rules))
	}
	dash, err := promcheck.DashboardExprs("../docker/grafana/sysvm-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var sdk []promcheck.Expr
	for _, e := range dash {
		if strings.Contains(e.Query, "temporal_") {
			sdk = append(sdk, e)
		} else {
			rules = append(rules, e)
		}
	}
	unknown, err := promcheck.Unknown(rules, exported)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(unknown)
	for _, u := range unknown {
		t.Errorf("names a metric sysvm does not export: %s", u)
	}
	if len(sdk) == 0 {
		t.Error("the dashboard has no Temporal SDK panel")
	}
	if _, err := promcheck.Unknown(sdk, exported); err != nil {
		t.Fatal(err)
	}

	// Described names what collectors define, series or not.
	described := promcheck.Described(metrics.NewCertificateCollector(nil, quiet()), metrics.NewUpgradeProgressCollector(nil, nil, quiet()))
	for _, n := range []string{"sysvm_certificate_expiry_days", "sysvm_router_upgrade_routers", "sysvm_router_upgrades"} {
		if !described[n] {
			t.Errorf("Described lacks %s: %v", n, described)
		}
	}
	if len(described) != 6 {
		t.Errorf("Described = %v, want the 6 metrics of the two collectors", described)
	}

	// The checker itself fails on what it must refuse.
	if u, _ := promcheck.Unknown([]promcheck.Expr{{Where: "x", Query: "rate(sysvm_no_such_metric_total[5m])"}}, exported); len(u) != 1 {
		t.Errorf("an unknown metric was not reported: %v", u)
	}
	if _, err := promcheck.Unknown([]promcheck.Expr{{Where: "x", Query: "sum by (zone ("}}, exported); err == nil {
		t.Error("a broken expression parsed")
	}
}
