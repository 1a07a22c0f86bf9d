package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// ReasonRequested is the recreation reason of a recreation an operator asked for (through the
// API) rather than one health checks started, whose reason is the failing check's name.
const ReasonRequested = "requested"

// OperationDurationBuckets are the boundaries (seconds) of sysvm_operation_duration_seconds.
var OperationDurationBuckets = []float64{1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200}

// FleetCollector reads the fleet's state from the database at scrape time: system VMs and
// routers by state, routers passing or failing health checks, failing checks by name, open
// alerts and circuit breakers, recreations by reason, operations by kind and status with their
// durations, the sweep intervals the staleness alert compares with, console sessions and the
// console proxy pool, the template rollout's downloads and pool seeds, and router upgrades
// (routers requiring upgrade, upgrades running and paused by their failure budget). Nothing on a hot path
// records these; a scrape is a handful of GROUP BY queries.
//
// Serve it from one kind of process (sysvm api does; a worker does not) so that a fleet figure
// is not scraped twice; with several API replicas, aggregate with max by (...).
type FleetCollector struct {
	store   *models.Store
	log     *slog.Logger
	timeout time.Duration

	zoneInfo, systemVMs, routers, routerHealth  *prometheus.Desc
	checkFailing, checkConsecutive              *prometheus.Desc
	alertsOpen, breakerOpen                     *prometheus.Desc
	recreations                                 *prometheus.Desc
	opsStarted, opsRunning, opsFinished, opsDur *prometheus.Desc
	sweepInterval                               *prometheus.Desc
	consoleSessions, consoleProxies             *prometheus.Desc
	capacityTarget, capacityDemand              *prometheus.Desc
	tplZoneState, tplBytes, tplBytesTotal       *prometheus.Desc
	tplSwitched, tplPoolState                   *prometheus.Desc
	requiringUpgrade, upgradesRunning           *prometheus.Desc
	upgradesPaused                              *prometheus.Desc
	scrapeErrors, scrapeDuration                *prometheus.Desc
}

// NewFleetCollector builds the collector over a store; logger receives query errors (a failed
// query leaves its metrics out of that scrape and sets sysvm_fleet_scrape_errors).
func NewFleetCollector(store *models.Store, logger *slog.Logger) *FleetCollector {
	if logger == nil {
		logger = slog.Default()
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
	}
	return &FleetCollector{store: store, log: logger, timeout: 10 * time.Second,
		zoneInfo:         d("zone_info", "One per zone: its name (zone) and ID (zone_id), to join metrics labelled by zone_id.", "zone", "zone_id"),
		systemVMs:        d("system_vms", "System VMs (not removed) by type (domainrouter, secondarystoragevm, consoleproxy) and state.", "zone", "type", "state"),
		routers:          d("routers", "Virtual routers (not removed) by hypervisor and state.", "zone", "hypervisor", "state"),
		routerHealth:     d("routers_health", "Running virtual routers whose health checks all pass (health=passing) or not (health=failing).", "zone", "health"),
		checkFailing:     d("health_check_failing_routers", "Running routers whose last result of the check failed (0 when every router passes it).", "zone", "check"),
		checkConsecutive: d("health_check_consecutive_failures_max", "The most consecutive scheduled runs (sweeps) any running router has failed the check.", "zone", "check"),
		alertsOpen:       d("alerts_open", "Alerts not cleared, by type (ROUTER.HEALTH.CHECKS, ROUTER.HEALTH.CIRCUIT.BREAKER, ...).", "zone", "type"),
		breakerOpen:      d("health_circuit_breaker_open", "1 while the zone's health check circuit breaker is open (too many routers failing at once: nothing is recreated), else 0.", "zone"),
		recreations:      d("router_recreations_total", "Router recreations started, by reason: the health check that failed, or requested (an operator's recreate).", "zone", "reason"),
		opsStarted:       d("operations_started_total", "Operations journaled (started), by kind.", "kind"),
		opsRunning:       d("operations_running", "Operations running now, by kind.", "kind"),
		opsFinished:      d("operations_finished_total", "Operations ended, by kind and status (completed, failed, canceled).", "kind", "status"),
		opsDur:           d("operation_duration_seconds", "How long ended operations ran (journaled to completed), by kind and status.", "kind", "status"),
		sweepInterval:    d("health_sweep_interval_seconds", "The zone's schedule interval of each health sweep kind (absent when health checks are off there or the interval is 0).", "zone", "zone_id", "kind"),
		consoleSessions:  d("console_sessions", "Console viewer sessions open on the zone's running console proxy VMs (the sum of their activeviewersessions).", "zone"),
		consoleProxies:   d("console_proxies", "Console proxy VMs (not removed) of the zone by state: the CPVM pool size.", "zone", "state"),
		capacityTarget:   d("systemvm_capacity_target", "The last capacity scan's target pool size of the zone's CPVMs (type=consoleproxy) or SSVMs (type=secondarystoragevm).", "zone", "type"),
		capacityDemand:   d("systemvm_capacity_demand", "The sessions the last capacity scan measured: CPVM console sessions, SSVM running template transfers.", "zone", "type"),
		tplZoneState:     d("template_zone_state", "Downloads of the template into the zone's secondary store in each state (downloading, downloaded, installing, ready, failed, other): 1 for its state, 0 for the others.", "template", "hypervisor", "zone", "state"),
		tplBytes:         d("template_download_bytes", "Bytes of the template downloaded so far into the zone's secondary store.", "template", "zone"),
		tplBytesTotal:    d("template_download_total_bytes", "Size in bytes of the template's download into the zone (0 while unknown).", "template", "zone"),
		tplSwitched:      d("template_zone_switched", "1 once the zone's router.template.<hypervisor> names the template (the rollout's switch), else 0.", "template", "hypervisor", "zone"),
		tplPoolState:     d("template_pool_state", "Primary storage pools of the zone by the template's seed state there (Installing, Ready, Error, ...).", "template", "hypervisor", "zone", "state"),
		requiringUpgrade: d("routers_requiring_upgrade", "Routers (not removed) whose version is below the zone's minreq.sysvmtemplate.version (requiresupgrade, as the API computes it).", "zone"),
		upgradesRunning:  d("router_upgrades_running", "Router upgrade operations (router.upgrade) running, by the zone they were asked for (zone=\"\" for a fleet-wide one).", "zone"),
		upgradesPaused:   d("router_upgrades_paused_by_budget", "Running router upgrades with an open ROUTER.UPGRADE.FAILURE.BUDGET alert: paused by their failure budget (the operator's resume, or the upgrade's end, resolves the alert).", "zone"),
		scrapeErrors:     d("fleet_scrape_errors", "Queries of this scrape of the fleet metrics that failed (their metrics are missing; see the log)."),
		scrapeDuration:   d("fleet_scrape_duration_seconds", "How long reading the fleet metrics from the database took."),
	}
}

// Describe sends every metric's description.
func (f *FleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{f.zoneInfo, f.systemVMs, f.routers, f.routerHealth, f.checkFailing,
		f.checkConsecutive, f.alertsOpen, f.breakerOpen, f.recreations, f.opsStarted, f.opsRunning, f.opsFinished,
		f.opsDur, f.sweepInterval, f.consoleSessions, f.consoleProxies, f.capacityTarget, f.capacityDemand, f.tplZoneState, f.tplBytes, f.tplBytesTotal,
		f.tplSwitched, f.tplPoolState, f.requiringUpgrade, f.upgradesRunning, f.upgradesPaused, f.scrapeErrors, f.scrapeDuration} {
		ch <- d
	}
}

// Collect reads the database and sends the metrics.
func (f *FleetCollector) Collect(ch chan<- prometheus.Metric) {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	db := f.store.DB.WithContext(ctx)
	errs := 0
	fail := func(what string, err error) {
		errs++
		f.log.Warn("fleet metrics: query failed", "query", what, "error", err)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}

	var zones []models.Zone
	if err := db.Select("id", "name").Order("name").Find(&zones).Error; err != nil {
		fail("zones", err)
	}
	names := make(map[string]string, len(zones))
	for _, z := range zones {
		names[z.ID] = z.Name
		gauge(f.zoneInfo, 1, z.Name, z.ID)
	}
	zone := func(id string) string {
		if n, ok := names[id]; ok {
			return n
		}
		return id
	}

	var vms []struct {
		ZoneID, Type, HypervisorType, State string
		HealthChecksFailed                  bool
		N, Viewers                          int64
	}
	if err := db.Model(&models.SystemVM{}).
		Select("zone_id, type, hypervisor_type, state, health_checks_failed, COUNT(*) AS n, COALESCE(SUM(active_viewers), 0) AS viewers").
		Where("removed_at IS NULL").Group("zone_id, type, hypervisor_type, state, health_checks_failed").
		Scan(&vms).Error; err != nil {
		fail("system_vms", err)
	}
	byType := map[[3]string]int64{}
	byRouter := map[[3]string]int64{}
	health := map[[2]string]int64{}
	sessions := map[string]int64{}
	proxies := map[[2]string]int64{}
	for _, z := range zones {
		health[[2]string{z.ID, "passing"}] += 0
		health[[2]string{z.ID, "failing"}] += 0
		sessions[z.ID] = 0
	}
	for _, v := range vms {
		byType[[3]string{v.ZoneID, v.Type, v.State}] += v.N
		if v.Type == models.TypeCPVM {
			proxies[[2]string{v.ZoneID, v.State}] += v.N
			if v.State == models.StateRunning {
				sessions[v.ZoneID] += v.Viewers
			}
		}
		if v.Type != models.TypeRouter {
			continue
		}
		byRouter[[3]string{v.ZoneID, v.HypervisorType, v.State}] += v.N
		if v.State == models.StateRunning {
			h := "passing"
			if v.HealthChecksFailed {
				h = "failing"
			}
			health[[2]string{v.ZoneID, h}] += v.N
		}
	}
	for k, n := range byType {
		gauge(f.systemVMs, float64(n), zone(k[0]), k[1], k[2])
	}
	for k, n := range byRouter {
		gauge(f.routers, float64(n), zone(k[0]), k[1], k[2])
	}
	for k, n := range health {
		gauge(f.routerHealth, float64(n), zone(k[0]), k[1])
	}
	for id, n := range sessions {
		gauge(f.consoleSessions, float64(n), zone(id))
	}
	for k, n := range proxies {
		gauge(f.consoleProxies, float64(n), zone(k[0]), k[1])
	}

	var checks []struct {
		ZoneID, CheckName string
		Failing, MaxFail  int64
	}
	if err := db.Table("health_check_results AS r").Joins("JOIN system_vms AS v ON v.id = r.router_id").
		Select("v.zone_id AS zone_id, r.check_name AS check_name, "+
			"SUM(CASE WHEN r.success = ? THEN 1 ELSE 0 END) AS failing, "+
			"MAX(CASE WHEN r.success = ? THEN r.consecutive_failures ELSE 0 END) AS max_fail", false, false).
		Where("v.state = ? AND v.type = ? AND v.removed_at IS NULL", models.StateRunning, models.TypeRouter).
		Group("v.zone_id, r.check_name").Scan(&checks).Error; err != nil {
		fail("health_check_results", err)
	}
	for _, c := range checks {
		gauge(f.checkFailing, float64(c.Failing), zone(c.ZoneID), c.CheckName)
		gauge(f.checkConsecutive, float64(c.MaxFail), zone(c.ZoneID), c.CheckName)
	}

	var alerts []struct {
		ZoneID, Type string
		N            int64
	}
	if err := db.Model(&models.Alert{}).Select("zone_id, type, COUNT(*) AS n").Where("cleared_at IS NULL").
		Group("zone_id, type").Scan(&alerts).Error; err != nil {
		fail("alerts", err)
	} else {
		// Health's and upgrades' alert types are sent for every zone, 0 when none is open.
		open := map[[2]string]int64{}
		for _, z := range zones {
			for _, typ := range []string{activities.AlertHealthChecks, activities.AlertCircuitBreaker, activities.AlertRecreateLimit, activities.AlertUpgradeBudget} {
				open[[2]string{z.ID, typ}] = 0
			}
		}
		for _, a := range alerts {
			open[[2]string{a.ZoneID, a.Type}] += a.N
		}
		for k, n := range open {
			gauge(f.alertsOpen, float64(n), zone(k[0]), k[1])
		}
		for _, z := range zones {
			v := 0.0
			if open[[2]string{z.ID, activities.AlertCircuitBreaker}] > 0 {
				v = 1
			}
			gauge(f.breakerOpen, v, z.Name)
		}
	}

	if err := f.collectRecreations(ctx, zones, counter, zone); err != nil {
		fail("recreations", err)
	}
	if err := f.collectOperations(ctx, ch, gauge, counter); err != nil {
		fail("operations", err)
	}
	if err := f.collectIntervals(ctx, zones, gauge); err != nil {
		fail("sweep intervals", err)
	}
	if err := f.collectTemplates(ctx, gauge, zone); err != nil {
		fail("templates", err)
	}
	if err := f.collectUpgrades(ctx, zones, gauge, zone); err != nil {
		fail("upgrades", err)
	}
	var pools []models.CapacityState
	if err := db.Find(&pools).Error; err != nil {
		fail("capacity states", err)
	}
	for _, p := range pools {
		gauge(f.capacityTarget, float64(p.Target), zone(p.ZoneID), p.Type)
		gauge(f.capacityDemand, float64(p.Demand), zone(p.ZoneID), p.Type)
	}
	gauge(f.scrapeErrors, float64(errs))
	gauge(f.scrapeDuration, time.Since(begin).Seconds())
}

// collectRecreations counts recreation operations by reason: the check of the health
// recreation that journaled them (health_recreations), or requested.
func (f *FleetCollector) collectRecreations(ctx context.Context, zones []models.Zone, counter func(*prometheus.Desc, float64, ...string), zone func(string) string) error {
	db := f.store.DB.WithContext(ctx)
	var rows []struct {
		ZoneID, Reason string
		N              int64
	}
	q := db.Table("operations AS o").Where("o.kind = ?", activities.OperationKindRecreate)
	if db.Migrator().HasTable(&models.HealthRecreation{}) {
		q = q.Joins("LEFT JOIN health_recreations AS hr ON hr.operation_id = o.id").
			Select("o.zone_id AS zone_id, COALESCE(hr.check_name, '') AS reason, COUNT(*) AS n").
			Group("o.zone_id, COALESCE(hr.check_name, '')")
	} else {
		q = q.Select("o.zone_id AS zone_id, '' AS reason, COUNT(*) AS n").Group("o.zone_id")
	}
	if err := q.Scan(&rows).Error; err != nil {
		return err
	}
	// requested is sent for every zone, 0 until an operator recreates a router there.
	counts := map[[2]string]int64{}
	for _, z := range zones {
		counts[[2]string{z.ID, ReasonRequested}] = 0
	}
	for _, r := range rows {
		reason := r.Reason
		if reason == "" {
			reason = ReasonRequested
		}
		counts[[2]string{r.ZoneID, reason}] += r.N
	}
	for k, n := range counts {
		counter(f.recreations, float64(n), zone(k[0]), k[1])
	}
	return nil
}

// durationSQL is the SQL expression of an operation's duration in seconds.
func durationSQL(dialect string) string {
	if dialect == "mysql" {
		return "TIMESTAMPDIFF(MICROSECOND, created_at, completed_at) / 1000000.0"
	}
	return "(julianday(completed_at) - julianday(created_at)) * 86400.0"
}

// collectOperations reads operations by kind and status, with a histogram of the durations of
// ended ones (one query, buckets summed in SQL).
func (f *FleetCollector) collectOperations(ctx context.Context, ch chan<- prometheus.Metric,
	gauge, counter func(*prometheus.Desc, float64, ...string)) error {
	dur := durationSQL(f.store.Dialect())
	var sel strings.Builder
	fmt.Fprintf(&sel, "kind, status, COUNT(*) AS n, COALESCE(SUM(CASE WHEN completed_at IS NOT NULL THEN %s ELSE 0 END), 0) AS total", dur)
	for i, b := range OperationDurationBuckets {
		fmt.Fprintf(&sel, ", SUM(CASE WHEN completed_at IS NOT NULL AND %s <= %g THEN 1 ELSE 0 END) AS b%d", dur, b, i)
	}
	rows, err := f.store.DB.WithContext(ctx).Model(&models.Operation{}).Select(sel.String()).Group("kind, status").Rows()
	if err != nil {
		return err
	}
	defer rows.Close()
	started := map[string]int64{}
	running := map[string]int64{}
	for rows.Next() {
		var kind, status string
		var n int64
		var total float64
		bs := make([]int64, len(OperationDurationBuckets))
		dst := []any{&kind, &status, &n, &total}
		for i := range bs {
			dst = append(dst, &bs[i])
		}
		if err := rows.Scan(dst...); err != nil {
			return err
		}
		started[kind] += n
		if status == models.OpRunning {
			running[kind] += n
			continue
		}
		counter(f.opsFinished, float64(n), kind, status)
		buckets := make(map[float64]uint64, len(bs))
		for i, b := range OperationDurationBuckets {
			buckets[b] = uint64(bs[i])
		}
		h, err := prometheus.NewConstHistogram(f.opsDur, uint64(n), total, buckets, kind, status)
		if err != nil {
			return err
		}
		ch <- h
	}
	if err := rows.Err(); err != nil {
		return err
	}
	kinds := make([]string, 0, len(started))
	for k := range started {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		counter(f.opsStarted, float64(started[k]), k)
		gauge(f.opsRunning, float64(running[k]), k)
	}
	return nil
}

// collectIntervals reads each zone's health sweep intervals (minutes in the settings).
func (f *FleetCollector) collectIntervals(ctx context.Context, zones []models.Zone, gauge func(*prometheus.Desc, float64, ...string)) error {
	for _, z := range zones {
		enabled, err := f.store.Settings.Bool(ctx, activities.SettingHealthEnabled, models.Scope{ZoneID: z.ID})
		if err != nil {
			return fmt.Errorf("zone %s: %w", z.Name, err)
		}
		if !enabled {
			continue
		}
		for _, k := range activities.HealthKinds() {
			minutes, err := f.store.Settings.Int(ctx, k.IntervalSetting(), models.Scope{ZoneID: z.ID})
			if err != nil {
				return fmt.Errorf("zone %s: %w", z.Name, err)
			}
			if minutes > 0 {
				gauge(f.sweepInterval, float64(minutes*60), z.Name, z.ID, string(k))
			}
		}
	}
	return nil
}
