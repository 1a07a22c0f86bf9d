package metrics_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/metrics"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// upgradeStandIn answers the progress query as a RouterUpgrade run does, with the progress it
// was started with, until it is signalled to end. The collector reads the query's contract
// (workflows.QueryProgress, workflows.RouterUpgradeProgress), not the upgrade's internals.
func upgradeStandIn(ctx workflow.Context, p workflows.RouterUpgradeProgress) error {
	if err := workflow.SetQueryHandler(ctx, workflows.QueryProgress, func() (workflows.RouterUpgradeProgress, error) { return p, nil }); err != nil {
		return err
	}
	workflow.GetSignalChannel(ctx, "end").Receive(ctx, nil)
	return nil
}

// The collector asks each running router.upgrade operation's workflow on a real dev server for
// its progress and sums the routers by state per zone; an operation whose workflow does not
// answer counts as unknown and as a query error; an ended operation is not asked.
func TestUpgradeProgressCollectorQueriesRunningUpgrades(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Temporal dev server")
	}
	srv := testenv.TemporalT(t, false)
	tc, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	const queue = "metrics-upgrades"
	w := worker.New(tc, queue, worker.Options{})
	w.RegisterWorkflow(upgradeStandIn)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := modelstest.SQLite(t)
	db := s.DB.WithContext(ctx)
	za, zb := models.Zone{Name: "zone-a"}, models.Zone{Name: "zone-b"}
	modelstest.Must(t, db.Create(&za).Error, "zone")
	modelstest.Must(t, db.Create(&zb).Error, "zone")
	start := func(id string, p workflows.RouterUpgradeProgress) {
		run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: queue}, upgradeStandIn, p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tc.SignalWorkflow(context.Background(), run.GetID(), "", "end", nil) })
	}
	start("router-upgrade:zone:a1", workflows.RouterUpgradeProgress{Status: "running",
		Counts: map[string]int{workflows.UpgradePending: 5, workflows.UpgradeUpgrading: 2, workflows.UpgradeDone: 10, workflows.UpgradeFailed: 1}})
	start("router-upgrade:zone:a2", workflows.RouterUpgradeProgress{Status: "paused", PauseReason: "failure budget 1 exceeded",
		Counts: map[string]int{workflows.UpgradePending: 3, workflows.UpgradeFailed: 2}})
	start("router-upgrade:ended", workflows.RouterUpgradeProgress{Status: "running", Counts: map[string]int{workflows.UpgradeDone: 100}})
	op := func(wid, zoneID, status string) {
		o := models.Operation{Kind: workflows.RouterUpgradeOperationKind, Status: status, ZoneID: zoneID, WorkflowID: wid}
		modelstest.Must(t, db.Create(&o).Error, "operation")
	}
	op("router-upgrade:zone:a1", za.ID, models.OpRunning)
	op("router-upgrade:zone:a2", za.ID, models.OpRunning)
	op("router-upgrade:zone:gone", zb.ID, models.OpRunning) // no such workflow: no answer
	op("router-upgrade:ended", zb.ID, models.OpCompleted)   // ended: not asked, not counted

	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewUpgradeProgressCollector(s, tc, quiet()))
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"sysvm_router_upgrade_routers", map[string]string{"zone": "zone-a", "state": workflows.UpgradePending}, 8},
		{"sysvm_router_upgrade_routers", map[string]string{"zone": "zone-a", "state": workflows.UpgradeUpgrading}, 2},
		{"sysvm_router_upgrade_routers", map[string]string{"zone": "zone-a", "state": workflows.UpgradeDone}, 10},
		{"sysvm_router_upgrade_routers", map[string]string{"zone": "zone-a", "state": workflows.UpgradeFailed}, 3},
		{"sysvm_router_upgrade_routers", map[string]string{"zone": "zone-a", "state": workflows.UpgradeSkipped}, 0},
		{"sysvm_router_upgrades", map[string]string{"zone": "zone-a", "status": "running"}, 1},
		{"sysvm_router_upgrades", map[string]string{"zone": "zone-a", "status": "paused"}, 1},
		{"sysvm_router_upgrades", map[string]string{"zone": "zone-b", "status": metrics.UpgradeStatusUnknown}, 1},
		{"sysvm_router_upgrade_routers", map[string]string{"zone": "zone-b", "state": workflows.UpgradePending}, 0},
		{"sysvm_router_upgrade_progress_errors", nil, 1},
	} {
		if got := mustSeries(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := mustSeries(t, reg, "sysvm_router_upgrade_routers", map[string]string{"zone": "zone-b", "state": workflows.UpgradeDone}); got != 0 {
		t.Errorf("zone-b done = %v: the ended upgrade's or the unanswered one's routers are counted", got)
	}
}
