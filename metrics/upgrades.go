package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/converter"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// ProgressQuerier asks a workflow's latest run a query; a Temporal client.Client is one.
type ProgressQuerier interface {
	QueryWorkflow(ctx context.Context, workflowID, runID, queryType string, args ...interface{}) (converter.EncodedValue, error)
}

// UpgradeStatusUnknown is the status of a running upgrade whose progress query got no answer
// (no worker picked it up, or the worker is down or busy).
const UpgradeStatusUnknown = "unknown"

// MaxUpgradesQueried bounds the running upgrades one scrape asks for their progress.
const MaxUpgradesQueried = 50

// UpgradeProgressCollector exports the per-router progress of running router upgrades, which
// lives only in the RouterUpgrade workflow's state: at each scrape it reads the running
// router.upgrade operations from the database and asks each one's latest run the progress query
// (the one GET /api/v1/router-upgrades/{id} shows), in parallel under a short timeout. Serve it
// from the API process, as FleetCollector.
type UpgradeProgressCollector struct {
	store    *models.Store
	temporal ProgressQuerier
	log      *slog.Logger
	timeout  time.Duration

	routers, upgrades, queryErrors *prometheus.Desc
}

// NewUpgradeProgressCollector builds the collector over a store and a Temporal client.
func NewUpgradeProgressCollector(store *models.Store, temporal ProgressQuerier, logger *slog.Logger) *UpgradeProgressCollector {
	if logger == nil {
		logger = slog.Default()
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
	}
	return &UpgradeProgressCollector{store: store, temporal: temporal, log: logger, timeout: 5 * time.Second,
		routers:     d("router_upgrade_routers", "Routers of the running router upgrades by their state in the upgrade (pending, waiting-window, upgrading, health-check, done, failed, skipped), from the workflows' progress; by the zone the upgrade was asked for (zone=\"\" when not one zone); every zone's states are present, 0 while none runs there.", "zone", "state"),
		upgrades:    d("router_upgrades", "Running router upgrades by the status their workflow reports (running, paused, waiting-window, canceling, draining; unknown when it does not answer).", "zone", "status"),
		queryErrors: d("router_upgrade_progress_errors", "Running router upgrades whose progress query failed in this scrape (see the log), or the 1 when reading them from the database did."),
	}
}

// Describe sends the metrics' descriptions.
func (u *UpgradeProgressCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- u.routers
	ch <- u.upgrades
	ch <- u.queryErrors
}

// Collect reads the running upgrades and queries their progress.
func (u *UpgradeProgressCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), u.timeout)
	defer cancel()
	db := u.store.DB.WithContext(ctx)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	var ops []models.Operation
	if err := db.Select("id, zone_id, workflow_id").Where("kind = ? AND status = ?", workflows.RouterUpgradeOperationKind, models.OpRunning).
		Order("created_at").Limit(MaxUpgradesQueried).Find(&ops).Error; err != nil {
		u.log.Warn("upgrade metrics: read running upgrades", "error", err)
		gauge(u.queryErrors, 1)
		return
	}
	var zones []models.Zone
	if err := db.Select("id", "name").Find(&zones).Error; err != nil {
		u.log.Warn("upgrade metrics: read zones", "error", err)
	}
	names := make(map[string]string, len(zones))
	for _, z := range zones {
		names[z.ID] = z.Name
	}
	zone := func(id string) string {
		if n, ok := names[id]; ok {
			return n
		}
		return id
	}

	progress := make([]*workflows.RouterUpgradeProgress, len(ops))
	if u.temporal != nil {
		var wg sync.WaitGroup
		for i, op := range ops {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The latest run: an upgrade continues as new every few hundred routers.
				val, err := u.temporal.QueryWorkflow(ctx, op.WorkflowID, "", workflows.QueryProgress)
				if err != nil {
					u.log.Debug("upgrade metrics: progress query", "operation", op.ID, "error", err)
					return
				}
				var p workflows.RouterUpgradeProgress
				if err := val.Get(&p); err != nil {
					u.log.Warn("upgrade metrics: decode progress", "operation", op.ID, "error", err)
					return
				}
				progress[i] = &p
			}()
		}
		wg.Wait()
	}

	// Every zone's states are sent, 0 while it has no running upgrade.
	counts := map[[2]string]int{}
	for _, z := range zones {
		for _, s := range workflows.UpgradeStates() {
			counts[[2]string{z.Name, s}] = 0
		}
	}
	statuses := map[[2]string]int{}
	failed := 0
	for i, op := range ops {
		z := zone(op.ZoneID)
		p := progress[i]
		if p == nil {
			failed++
			statuses[[2]string{z, UpgradeStatusUnknown}]++
			continue
		}
		statuses[[2]string{z, p.Status}]++
		for _, s := range workflows.UpgradeStates() {
			counts[[2]string{z, s}] += p.Counts[s]
		}
	}
	for k, n := range counts {
		gauge(u.routers, float64(n), k[0], k[1])
	}
	for k, n := range statuses {
		gauge(u.upgrades, float64(n), k[0], k[1])
	}
	gauge(u.queryErrors, float64(failed))
}
