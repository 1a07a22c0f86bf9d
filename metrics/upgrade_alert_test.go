package metrics_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/metrics"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// TestUpgradePausedGaugeFollowsTheBudgetAlert: the alert a budget pause raises (the
// RaiseUpgradeAlert activity) counts the upgrade in sysvm_router_upgrades_paused_by_budget and
// sysvm_alerts_open; the resolve the workflow runs at the operator's resume or at the end
// (ResolveUpgradeAlert) takes it out of both, records one INFO event, and is idempotent.
func TestUpgradePausedGaugeFollowsTheBudgetAlert(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		db := s.DB.WithContext(ctx)
		zone := models.Zone{Name: "zone-a"}
		modelstest.Must(t, db.Create(&zone).Error, "zone")
		op := models.Operation{Kind: workflows.RouterUpgradeOperationKind, Status: models.OpRunning, ZoneID: zone.ID}
		modelstest.Must(t, db.Create(&op).Error, "operation")
		a := &activities.Activities{Store: s, Logger: quiet()}
		reg := prometheus.NewRegistry()
		reg.MustRegister(metrics.NewFleetCollector(s, quiet()))
		gauges := func() (paused, open float64) {
			t.Helper()
			return mustSeries(t, reg, "sysvm_router_upgrades_paused_by_budget", map[string]string{"zone": zone.Name}),
				mustSeries(t, reg, "sysvm_alerts_open", map[string]string{"zone": zone.Name, "type": activities.AlertUpgradeBudget})
		}
		if p, o := gauges(); p != 0 || o != 0 {
			t.Fatalf("before the pause: paused %v, open %v, want 0 0", p, o)
		}
		modelstest.Must(t, a.RaiseUpgradeAlert(ctx, activities.UpgradeAlertInput{OperationID: op.ID, Key: "budget.1",
			ZoneID: zone.ID, Subject: "Router upgrade paused", Description: "r-1-VM failed"}), "raise")
		if p, o := gauges(); p != 1 || o != 1 {
			t.Fatalf("paused by the budget: paused %v, open %v, want 1 1", p, o)
		}
		for range 2 { // the second is a retry of the first: nothing more
			modelstest.Must(t, a.ResolveUpgradeAlert(ctx, activities.UpgradeAlertResolveInput{OperationID: op.ID,
				Why: "resumed by an operator"}), "resolve")
		}
		if p, o := gauges(); p != 0 || o != 0 {
			t.Errorf("resumed: paused %v, open %v, want 0 0", p, o)
		}
		var al models.Alert
		modelstest.Must(t, db.Where("type = ? AND resource_id = ?", activities.AlertUpgradeBudget, op.ID).Take(&al).Error, "alert")
		if al.ClearedAt == nil {
			t.Errorf("alert %s not cleared", al.ID)
		}
		var events []models.Event
		modelstest.Must(t, db.Where("type = ? AND resource_id = ? AND level = ?", activities.AlertUpgradeBudget, op.ID, "INFO").
			Find(&events).Error, "events")
		if len(events) != 1 || events[0].ZoneID != zone.ID {
			t.Errorf("INFO events of the resolve: %+v, want one in the zone", events)
		}
		// A second pause raises a new alert (a new key) and counts again.
		modelstest.Must(t, a.RaiseUpgradeAlert(ctx, activities.UpgradeAlertInput{OperationID: op.ID, Key: "budget.2",
			ZoneID: zone.ID, Subject: "Router upgrade paused again", Description: "r-2-VM failed"}), "raise")
		if p, o := gauges(); p != 1 || o != 1 {
			t.Errorf("paused again: paused %v, open %v, want 1 1", p, o)
		}
	})
}
