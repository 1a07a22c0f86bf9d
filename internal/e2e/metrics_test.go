package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/api"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/internal/promcheck"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/metrics"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/worker"
)

// telemetryPlatform is the platform of newPlatform (VMware, the simulated router fleet) with
// telemetry wired the way sysvm api and sysvm worker wire it, as two processes would: each has
// its own registry, Temporal client (metrics handler, tracing interceptor) and /metrics
// endpoint — the API's on its port, the worker's on a port of its own. Both export their
// spans to one in-memory exporter, as both would to one collector.
type telemetryPlatform struct {
	*platform
	spans             *tracetest.InMemoryExporter
	apiTel, workerTel *metrics.Telemetry
	// apiCollectors are the API's database collectors (as sysvm api registers them).
	apiCollectors []prometheus.Collector
	workerMetrics *httptest.Server
}

func newTelemetryPlatform(t *testing.T, store *models.Store) *telemetryPlatform {
	t.Helper()
	ctx := context.Background()
	tp := &telemetryPlatform{spans: tracetest.NewInMemoryExporter()}
	var err error
	for _, x := range []struct {
		tel     **metrics.Telemetry
		service string
	}{{&tp.apiTel, "sysvm-api"}, {&tp.workerTel, "sysvm-worker"}} {
		if *x.tel, err = metrics.New(ctx, metrics.Options{Service: x.service, SpanExporter: tp.spans, SyncSpans: true, Logger: logger()}); err != nil {
			t.Fatal(err)
		}
		tel := *x.tel
		t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	}

	sims, stop, err := devcloud.StartVMware(ctx, 1)
	if err != nil {
		t.Fatalf("start vcsim: %v", err)
	}
	t.Cleanup(stop)
	if _, err := devcloud.Seed(ctx, store, devcloud.Clusters{VMware: sims}, devcloud.SeedOptions{Zones: 1}); err != nil {
		t.Fatalf("seed: %v", err)
	}
	var zone models.Zone
	if err := store.DB.First(&zone).Error; err != nil {
		t.Fatalf("seeded zone: %v", err)
	}
	p := &platform{stack: &stack{t: t, store: store, sims: sims}, zoneID: zone.ID}
	pub := platformPublicKey(t, store)
	configs := &activities.Health{Store: store}
	if p.routers, err = devcloud.StartRouters(ctx, store, pub, configs.RouterConfig, logger(), fleet.Options{}); err != nil {
		t.Fatalf("start simulated routers: %v", err)
	}
	t.Cleanup(func() { _ = p.routers.Close() })
	built, err := worker.BuildPlatform(ctx, store, logger(), p.routers.Observe(worker.Drivers()), p.routers.Fleet.DialContext)
	if err != nil {
		t.Fatalf("build platform: %v", err)
	}
	t.Cleanup(built.Close)
	p.acts, p.health = built.Activities, built.Health
	if err := devcloud.Materialize(ctx, store, p.acts.Drivers, logger()); err != nil {
		t.Fatalf("materialize: %v", err)
	}
	p.temporal = testenv.TemporalT(t, false)
	dial := func(tel *metrics.Telemetry) client.Client {
		o := client.Options{HostPort: p.temporal.Address, Namespace: p.temporal.Namespace, Logger: tlog.NewStructuredLogger(logger())}
		tel.ClientOptions(&o)
		c, err := client.Dial(o)
		if err != nil {
			t.Fatalf("dial Temporal: %v", err)
		}
		t.Cleanup(c.Close)
		return c
	}

	// The worker process: its client, the SSH pool collector, /metrics on its own port.
	p.client = dial(tp.workerTel)
	if err := tp.workerTel.Register(metrics.NewSSHCollector(built.Exec)); err != nil {
		t.Fatal(err)
	}
	w := worker.New(worker.Config{Client: p.client, Activities: p.acts, Health: p.health, Logger: logger()})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	tp.workerMetrics = httptest.NewServer(tp.workerTel.Handler())
	t.Cleanup(tp.workerMetrics.Close)

	// The API process: its own client, the fleet collector, /metrics on the API port.
	apiClient := dial(tp.apiTel)
	srv, err := api.New(api.Config{Store: store, Temporal: apiClient, Namespace: "default",
		TemporalUI: "http://localhost:8233", Logger: logger(), DevMode: true, Dev: p.routers})
	if err != nil {
		t.Fatal(err)
	}
	tp.apiCollectors = []prometheus.Collector{metrics.NewFleetCollector(store, logger()), metrics.NewCertificateCollector(store, logger()),
		metrics.NewUpgradeProgressCollector(store, apiClient, logger())}
	if err := tp.apiTel.Register(tp.apiCollectors...); err != nil {
		t.Fatal(err)
	}
	if err := tp.apiTel.InstrumentAPI(srv.Echo(), true); err != nil {
		t.Fatal(err)
	}
	p.api = httptest.NewServer(srv.Handler())
	t.Cleanup(p.api.Close)
	if _, p.key, err = store.CreateAPIKey(ctx, "e2e-admin", models.RoleAdmin, ""); err != nil {
		t.Fatal(err)
	}
	tp.platform = p
	return tp
}

// scrape reads a /metrics endpoint (no API key) and parses the text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + metrics.Path)
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s/metrics = %d: %s", url, resp.StatusCode, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s/metrics: %v", url, err)
	}
	return fams
}

// value is a scraped series' value (a histogram's count), -1 when there is no such series.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			return m.GetUntyped().GetValue()
		}
	}
	return -1
}

func TestMetricsAndTracesOnTheRealStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim and a fleet of SSH routers")
	}
	begin := time.Now()
	tp := newTelemetryPlatform(t, modelstest.MySQL(t))
	p := tp.platform
	var zone models.Zone
	if err := p.store.DB.First(&zone, "id = ?", p.zoneID).Error; err != nil {
		t.Fatal(err)
	}
	apiURL, workerURL := p.api.URL, tp.workerMetrics.URL
	u := p.pickRouter("hypervisor_type = ? AND is_redundant = ? AND network_id <> ?", string(hypervisors.VMware), false, "")
	check := map[string]string{"zone": zone.Name, "check": agent.CheckDHCPService}
	failingRouters := map[string]string{"zone": zone.Name, "health": "failing"}

	t.Run("both endpoints", func(t *testing.T) {
		a, w := scrape(t, apiURL), scrape(t, workerURL)
		for _, name := range []string{"sysvm_routers_health", "sysvm_routers", "sysvm_zone_info", "temporal_request_total", "go_goroutines"} {
			if _, ok := a[name]; !ok {
				t.Errorf("API /metrics lacks %s", name)
			}
		}
		for _, name := range []string{"temporal_num_pollers", "temporal_worker_task_slots_available", "sysvm_ssh_pool_connections", "go_goroutines"} {
			if _, ok := w[name]; !ok {
				t.Errorf("worker /metrics lacks %s", name)
			}
		}
		if _, ok := w["sysvm_routers_health"]; ok {
			t.Error("the worker serves the fleet metrics too (they would be scraped twice)")
		}
	})

	// A healthy sweep, a fault, a failing sweep, the fault cleared, a passing sweep: the
	// failing gauge of dhcp.service in the zone goes 0, 1, 0; sweeps are counted by the worker.
	t.Run("fault moves the failing gauge", func(t *testing.T) {
		if res := p.sweep(activities.HealthBasic); res.Summary.Failing != 0 || res.Summary.Routers == 0 {
			t.Fatalf("healthy sweep: %+v", res.Summary)
		}
		a := scrape(t, apiURL)
		if v := value(a, "sysvm_health_check_failing_routers", check); v != 0 {
			t.Fatalf("failing gauge of %v before the fault = %v, want 0", check, v)
		}
		if v := value(a, "sysvm_routers_health", failingRouters); v != 0 {
			t.Fatalf("failing routers before the fault = %v, want 0", v)
		}
		p.fault(u.ID, fleet.FaultServiceDown, "dnsmasq")
		res := p.sweep(activities.HealthBasic)
		if res.Summary.Failing != 1 {
			t.Fatalf("sweep with dnsmasq down on %s: %+v", u.Name, res.Summary)
		}
		a = scrape(t, apiURL)
		if v := value(a, "sysvm_health_check_failing_routers", check); v != 1 {
			t.Errorf("failing gauge of %v with the fault = %v, want 1", check, v)
		}
		if v := value(a, "sysvm_routers_health", failingRouters); v != 1 {
			t.Errorf("failing routers with the fault = %v, want 1", v)
		}
		if v := value(a, "sysvm_health_check_consecutive_failures_max", check); v != 1 {
			t.Errorf("consecutive failures of %v = %v, want 1", check, v)
		}
		p.clearFaults(u.ID)
		if res := p.sweep(activities.HealthBasic); res.Summary.Failing != 0 {
			t.Fatalf("sweep after clearing the fault: %+v", res.Summary)
		}
		a = scrape(t, apiURL)
		if v := value(a, "sysvm_health_check_failing_routers", check); v != 0 {
			t.Errorf("failing gauge of %v after clearing = %v, want 0", check, v)
		}
		if v := value(a, "sysvm_routers_health", failingRouters); v != 0 {
			t.Errorf("failing routers after clearing = %v, want 0", v)
		}
		w := scrape(t, workerURL)
		sweep := map[string]string{"zone_id": p.zoneID, "kind": string(activities.HealthBasic)}
		if v := value(w, "sysvm_health_sweeps_completed_total", sweep); v != 3 {
			t.Errorf("sweeps completed = %v, want 3", v)
		}
		if v := value(w, "sysvm_health_sweep_duration_seconds", sweep); v != 3 {
			t.Errorf("sweep durations observed = %v, want 3", v)
		}
		if v := value(w, "sysvm_health_sweep_routers", map[string]string{"zone_id": p.zoneID, "result": "visited"}); v != float64(res.Summary.Routers) {
			t.Errorf("routers visited by the last sweep = %v, want %d", v, res.Summary.Routers)
		}
		if v := value(w, "sysvm_health_sweep_last_completed_timestamp_seconds", sweep); v < float64(begin.Unix()) {
			t.Errorf("last completed sweep at %v, want after %d", v, begin.Unix())
		}
	})

	// An operation started through the API moves the operation counters, and its trace runs
	// from the API request through the workflow into an activity.
	t.Run("operation counters and trace", func(t *testing.T) {
		before := scrape(t, apiURL)
		tp.spans.Reset()
		op := p.wait(p.start("/api/v1/routers/"+u.ID+"/reboot"), 2*time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("reboot of %s ended %s: %s", u.Name, op.Status, op.Error)
		}
		after := scrape(t, apiURL)
		kind := map[string]string{"kind": op.Kind}
		done := map[string]string{"kind": op.Kind, "status": models.OpCompleted}
		if b, a := max(value(before, "sysvm_operations_started_total", kind), 0), value(after, "sysvm_operations_started_total", kind); a != b+1 {
			t.Errorf("operations started of %s: %v -> %v, want +1", op.Kind, b, a)
		}
		if b, a := max(value(before, "sysvm_operations_finished_total", done), 0), value(after, "sysvm_operations_finished_total", done); a != b+1 {
			t.Errorf("operations completed of %s: %v -> %v, want +1", op.Kind, b, a)
		}
		if b, a := max(value(before, "sysvm_operation_duration_seconds", done), 0), value(after, "sysvm_operation_duration_seconds", done); a != b+1 {
			t.Errorf("operation durations of %s: %v -> %v, want +1", op.Kind, b, a)
		}
		if v := value(after, "sysvm_operations_running", kind); v != 0 {
			t.Errorf("operations of %s running after it ended = %v", op.Kind, v)
		}
		route := map[string]string{"url": "/api/v1/routers/:id/reboot", "method": "POST", "code": "202"}
		if v := value(after, "sysvm_api_requests_total", route); v != 1 {
			t.Errorf("API requests %v = %v, want 1", route, v)
		}

		spans := tp.spans.GetSpans()
		var req *tracetest.SpanStub
		for i, s := range spans {
			if s.SpanKind == trace.SpanKindServer && strings.Contains(s.Name, "/api/v1/routers/:id/reboot") {
				req = &spans[i]
			}
		}
		if req == nil {
			t.Fatalf("no span of the API request among %s", spanNames(spans))
		}
		service := func(s tracetest.SpanStub) string {
			for _, kv := range s.Resource.Attributes() {
				if kv.Key == "service.name" {
					return kv.Value.AsString()
				}
			}
			return ""
		}
		if service(*req) != "sysvm-api" {
			t.Errorf("the request span comes from %q, want sysvm-api", service(*req))
		}
		var workflow, activity bool
		var inTrace []string
		for _, s := range spans {
			if s.SpanContext.TraceID() != req.SpanContext.TraceID() {
				continue
			}
			inTrace = append(inTrace, service(s)+" "+s.Name)
			switch {
			case strings.HasPrefix(s.Name, "RunWorkflow:") && service(s) == "sysvm-worker":
				workflow = true
			case strings.HasPrefix(s.Name, "RunActivity:") && service(s) == "sysvm-worker":
				activity = true
			}
		}
		t.Logf("trace %s: %d spans: %s", req.SpanContext.TraceID(), len(inTrace), strings.Join(inTrace, "; "))
		if !workflow || !activity {
			t.Errorf("trace %s: workflow span %v, activity span %v; spans: %s", req.SpanContext.TraceID(), workflow, activity, spanNames(spans))
		}
	})

	// Every metric the alert rules and the dashboard name (the Temporal SDK's included) is one
	// the two processes export after this run.
	t.Run("rules and dashboard", func(t *testing.T) {
		exported, err := promcheck.Exported(tp.apiTel.Registry, tp.workerTel.Registry)
		if err != nil {
			t.Fatal(err)
		}
		// The template rollout's and the keystore's metrics carry series only once a template
		// is rolled out or a certificate uploaded, which this run does not do: they count as
		// exported when the API's collectors describe them (metrics/ checks their series).
		for n := range promcheck.Described(tp.apiCollectors...) {
			exported[n] = true
		}
		rules, err := promcheck.RuleExprs("../../docker/prometheus/alerts.yml")
		if err != nil {
			t.Fatal(err)
		}
		dash, err := promcheck.DashboardExprs("../../docker/grafana/sysvm-dashboard.json")
		if err != nil {
			t.Fatal(err)
		}
		unknown, err := promcheck.Unknown(append(rules, dash...), exported)
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(unknown)
		for _, u := range unknown {
			t.Errorf("names a metric the API and worker do not export: %s", u)
		}
	})
	t.Logf("metrics scenario in %s", time.Since(begin).Round(time.Millisecond))
}

func spanNames(spans tracetest.SpanStubs) string {
	var names []string
	for _, s := range spans {
		names = append(names, s.Name+"@"+s.SpanContext.TraceID().String()[:8])
	}
	return strings.Join(names, ", ")
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// waitScrape polls a /metrics endpoint until it answers (bounded).
func waitScrape(t *testing.T, url string, has string) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(url + metrics.Path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				fams := scrape(t, url)
				if _, ok := fams[has]; ok {
					return fams
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/metrics never served %s (last error %v)", url, has, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// The real processes: `sysvm worker` serves /metrics on --metrics-listen, `sysvm api` on its
// API port, without an API key.
func TestProcessesServeMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("builds sysvm and starts Temporal and two sysvm processes")
	}
	bin := buildSysvm(t)
	dsn := modelstest.MySQLDSN(t)
	store, err := models.OpenAndMigrate(context.Background(), dsn, modelstest.TestKey) // as `sysvm migrate` leaves it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	modelstest.Must(t, store.DB.Create(&models.Zone{Name: "zone-p"}).Error, "zone")
	temporal := testenv.TemporalT(t, false)
	workerAddr, apiAddr := freeAddr(t), freeAddr(t)
	key := "sysvm_" + strings.Repeat("ab", 32)
	start := func(args ...string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "SYSVM_DB_DSN="+dsn, "SYSVM_TEMPORAL_ADDRESS="+temporal.Address,
			"SYSVM_SECRET_KEY="+b64(modelstest.TestKey), "SYSVM_API_KEY="+key, "SYSVM_METRICS_ADDR=")
		if os.Getenv("SYSVM_TEST_VERBOSE") != "" {
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	}
	start("worker", "--metrics-listen", workerAddr)
	start("api", "--listen", apiAddr)

	w := waitScrape(t, "http://"+workerAddr, "temporal_num_pollers")
	for _, name := range []string{"sysvm_ssh_pool_connections", "sysvm_ssh_pool_max_connections", "go_goroutines"} {
		if _, ok := w[name]; !ok {
			t.Errorf("sysvm worker /metrics lacks %s", name)
		}
	}
	apiURL := "http://" + apiAddr
	a := waitScrape(t, apiURL, "sysvm_zone_info")
	if v := value(a, "sysvm_zone_info", map[string]string{"zone": "zone-p"}); v != 1 {
		t.Errorf("sysvm api /metrics: zone info of zone-p = %v", v)
	}
	req, _ := http.NewRequest(http.MethodGet, apiURL+"/api/v1/zones", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/zones = %d", resp.StatusCode)
	}
	a = scrape(t, apiURL)
	if v := value(a, "sysvm_api_requests_total", map[string]string{"url": "/api/v1/zones", "code": "200"}); v != 1 {
		t.Errorf("sysvm api counted GET /api/v1/zones %v times, want 1", v)
	}
	if _, ok := a["temporal_request_total"]; !ok {
		t.Error("sysvm api /metrics lacks its Temporal client's metrics")
	}
}

// buildSysvm builds the sysvm command into a temporary directory, for tests that run its real
// processes.
func buildSysvm(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sysvm")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/sysvm")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build sysvm: %v\n%s", err, out)
	}
	return bin
}
