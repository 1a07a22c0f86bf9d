package activities

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

func TestCircuitBreakerThreshold(t *testing.T) {
	for _, c := range []struct {
		routers, failing, percent int
		want                      bool
	}{
		{100, 30, 30, false}, // exactly the share: not more than it
		{100, 31, 30, true},
		{10, 4, 30, true},
		{3, 1, 30, false}, // one router failing is never "many at once"
		{2, 2, 30, true},
		{0, 0, 30, false},
		{1000, 1000, 100, false}, // 100% means never
	} {
		assert.Equal(t, c.want, CircuitBreakerTripped(c.routers, c.failing, c.percent), "%+v", c)
	}
}

type planEnv struct {
	t     *testing.T
	ctx   context.Context
	store *models.Store
	h     *Health
	zone  models.Zone
}

func newPlanEnv(t *testing.T, store *models.Store) *planEnv {
	h, err := NewHealth(context.Background(), store, nil, nil)
	require.NoError(t, err)
	p := &planEnv{t: t, ctx: context.Background(), store: store, h: h, zone: models.Zone{Name: "z-" + models.NewID()[:8]}}
	require.NoError(t, store.DB.Create(&p.zone).Error)
	return p
}

func (p *planEnv) candidate(check string, failures int) Candidate {
	vm := models.SystemVM{Name: "r-" + models.NewID()[:6], Type: models.TypeRouter, State: models.StateRunning, ZoneID: p.zone.ID}
	require.NoError(p.t, p.store.DB.Create(&vm).Error)
	return Candidate{RouterID: vm.ID, RouterName: vm.Name, Check: check, Failures: failures, Details: "details of " + check}
}

func (p *planEnv) plan(sweep string, routers, failing int, s SweepSettings, cs ...Candidate) PlanResult {
	p.t.Helper()
	out, err := p.h.HealthPlanRecreations(p.ctx, PlanInput{ZoneID: p.zone.ID, SweepID: sweep, Kind: HealthBasic,
		Routers: routers, RecreateFailing: failing, Candidates: cs, Settings: s, WorkflowIDPrefix: "systemvm:"})
	require.NoError(p.t, err)
	return out
}

func (p *planEnv) count(model any, where string, args ...any) int64 {
	p.t.Helper()
	var n int64
	require.NoError(p.t, p.store.DB.Model(model).Where(where, args...).Count(&n).Error)
	return n
}

func defaultRules() SweepSettings {
	return SweepSettings{Enabled: true, Concurrency: 64, FailuresBeforeRecreate: 2, RecreateChecks: []string{"dns_check.py"},
		MaxConcurrentRecreations: 2, CircuitBreakerPercent: 30, RecreateLimit: 3, RecreateWindowMinutes: 60}
}

func TestPlanCapsConcurrentRecreationsPerZone(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		p := newPlanEnv(t, store)
		rules := defaultRules()
		cs := []Candidate{p.candidate("dns_check.py", 4), p.candidate("dns_check.py", 3), p.candidate("dns_check.py", 2)}
		out := p.plan("sweep-1", 100, 3, rules, cs...)
		require.Len(t, out.Recreate, 2)
		assert.Equal(t, 1, out.Deferred)
		assert.False(t, out.BreakerTripped)
		r := out.Recreate[0]
		assert.Equal(t, cs[0].RouterID, r.RouterID)
		assert.Equal(t, "systemvm:"+cs[0].RouterID, r.WorkflowID)
		assert.Contains(t, r.Reason, "dns_check.py failed 4 consecutive runs")
		var op models.Operation
		require.NoError(t, store.Get(p.ctx, &op, r.OperationID))
		assert.Equal(t, OperationKindRecreate, op.Kind)
		assert.Equal(t, RequestedByHealthChecks, op.RequestedBy)
		assert.Equal(t, models.OpRunning, op.Status)
		assert.Equal(t, p.zone.ID, op.ZoneID)
		assert.Equal(t, cs[0].RouterID, op.TargetID)
		assert.Equal(t, int64(1), p.count(&models.Event{}, "type = ? AND operation_id = ?", EventRecreate, r.OperationID))

		// The same plan again (a retried activity) gives the same recreations, no new rows.
		again := p.plan("sweep-1", 100, 3, rules, cs...)
		assert.Equal(t, out.Recreate, again.Recreate)
		assert.Equal(t, int64(2), p.count(&models.HealthRecreation{}, "zone_id = ?", p.zone.ID))

		// Another sweep while both still run: no slot, and the two are busy.
		next := p.plan("sweep-2", 100, 3, rules, cs...)
		assert.Empty(t, next.Recreate)
		assert.Equal(t, 2, next.Busy)
		assert.Equal(t, 1, next.Deferred)

		// One finishes: one slot frees.
		require.NoError(t, store.DB.Model(&models.Operation{}).Where("id = ?", out.Recreate[0].OperationID).
			Update("status", models.OpCompleted).Error)
		next = p.plan("sweep-3", 100, 3, rules, cs...)
		require.Len(t, next.Recreate, 1)
		assert.Equal(t, cs[0].RouterID, next.Recreate[0].RouterID, "most failures first")

		// An operation started by someone else on a router makes it busy too.
		other := p.candidate("dns_check.py", 9)
		require.NoError(t, store.DB.Create(&models.Operation{Kind: "systemvm.reboot", TargetID: other.RouterID,
			ZoneID: p.zone.ID, Status: models.OpRunning, RequestedBy: "alice"}).Error)
		next = p.plan("sweep-4", 100, 1, rules, other)
		assert.Empty(t, next.Recreate)
		assert.Equal(t, 1, next.Busy)
	})
}

func TestPlanRefusesPastTheRecreateLimitWithOneAlert(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		p := newPlanEnv(t, store)
		rules := defaultRules()
		rules.RecreateLimit = 2
		c := p.candidate("dns_check.py", 2)
		finish := func(out PlanResult) {
			for _, r := range out.Recreate {
				require.NoError(t, store.DB.Model(&models.Operation{}).Where("id = ?", r.OperationID).
					Update("status", models.OpCompleted).Error)
			}
		}
		for i, sweep := range []string{"a", "b"} {
			out := p.plan(sweep, 100, 1, rules, c)
			require.Len(t, out.Recreate, 1, "recreation %d", i+1)
			finish(out)
		}
		out := p.plan("c", 100, 1, rules, c)
		assert.Empty(t, out.Recreate)
		require.Len(t, out.Refused, 1)
		alerts := []models.Alert{}
		require.NoError(t, store.DB.Where("type = ? AND resource_id = ?", AlertRecreateLimit, c.RouterID).Find(&alerts).Error)
		require.Len(t, alerts, 1)
		assert.Equal(t, "CRITICAL", alerts[0].Severity)
		assert.Contains(t, alerts[0].Subject, "dns_check.py")
		assert.Contains(t, alerts[0].Description, "recreated 2 times within 60 minutes")
		// Still refused on the next sweep, without a second alert.
		out = p.plan("d", 100, 1, rules, c)
		assert.Len(t, out.Refused, 1)
		assert.Equal(t, int64(1), p.count(&models.Alert{}, "type = ? AND resource_id = ?", AlertRecreateLimit, c.RouterID))
		// Another check of the same router is counted on its own.
		other := c
		other.Check = "haproxy_check.py"
		rules.RecreateChecks = append(rules.RecreateChecks, "haproxy_check.py")
		out = p.plan("e", 100, 1, rules, other)
		assert.Len(t, out.Recreate, 1)
		// Once the window has passed, the router is recreated again for the first check.
		finish(out)
		require.NoError(t, store.DB.Model(&models.HealthRecreation{}).Where("router_id = ?", c.RouterID).
			Update("created_at", time.Now().Add(-2*time.Hour)).Error)
		out = p.plan("f", 100, 1, rules, c)
		assert.Len(t, out.Recreate, 1)
	})
}

func TestPlanCircuitBreakerAlertsInsteadOfRecreating(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		p := newPlanEnv(t, store)
		rules := defaultRules()
		c := p.candidate("dns_check.py", 5)
		out := p.plan("s1", 10, 4, rules, c)
		assert.True(t, out.BreakerTripped)
		assert.Empty(t, out.Recreate)
		assert.Zero(t, p.count(&models.Operation{}, "1 = 1"))
		var alerts []models.Alert
		require.NoError(t, store.DB.Where("type = ? AND zone_id = ?", AlertCircuitBreaker, p.zone.ID).Find(&alerts).Error)
		require.Len(t, alerts, 1)
		assert.Equal(t, "CRITICAL", alerts[0].Severity)
		assert.Contains(t, alerts[0].Subject, "4 of 10 routers")
		assert.Contains(t, alerts[0].Description, c.RouterName)
		// Still tripped: no second alert.
		out = p.plan("s2", 10, 5, rules, c)
		assert.True(t, out.BreakerTripped)
		assert.Equal(t, int64(1), p.count(&models.Alert{}, "type = ?", AlertCircuitBreaker))
		// Back under the share: the alert clears and recreation resumes.
		out = p.plan("s3", 10, 2, rules, c)
		assert.False(t, out.BreakerTripped)
		assert.Len(t, out.Recreate, 1)
		require.NoError(t, store.DB.Where("type = ? AND zone_id = ?", AlertCircuitBreaker, p.zone.ID).Find(&alerts).Error)
		assert.NotNil(t, alerts[0].ClearedAt)
	})
}

func TestReleaseForgetsARecreationThatDidNotStart(t *testing.T) {
	p := newPlanEnv(t, modelstest.SQLite(t))
	rules := defaultRules()
	c := p.candidate("dns_check.py", 3)
	out := p.plan("s1", 100, 1, rules, c)
	require.Len(t, out.Recreate, 1)
	id := out.Recreate[0].OperationID
	require.NoError(t, p.h.HealthReleaseRecreation(p.ctx, id, "another operation runs"))
	assert.Zero(t, p.count(&models.Operation{}, "id = ?", id))
	assert.Zero(t, p.count(&models.HealthRecreation{}, "operation_id = ?", id))
	assert.Zero(t, p.count(&models.Event{}, "operation_id = ?", id))
	// Started ones record their run.
	out = p.plan("s2", 100, 1, rules, c)
	require.Len(t, out.Recreate, 1)
	require.NoError(t, p.h.HealthRecreationStarted(p.ctx, out.Recreate[0].OperationID, "run-1"))
	var op models.Operation
	require.NoError(t, p.store.Get(p.ctx, &op, out.Recreate[0].OperationID))
	assert.Equal(t, "run-1", op.RunID)
	assert.NotEqual(t, RecreationOperationID("s1", c.RouterID), RecreationOperationID("s2", c.RouterID))
}

func TestPlanNeverTakesARedundantPairDownTogether(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		p := newPlanEnv(t, store)
		rules := defaultRules()
		netID := models.NewID()
		pair := make([]Candidate, 2)
		for i, state := range []string{models.RedundantPrimary, models.RedundantBackup} {
			vm := models.SystemVM{Name: "r-pair-" + state, Type: models.TypeRouter, State: models.StateRunning, ZoneID: p.zone.ID,
				NetworkID: netID, IsRedundant: true, RedundantState: state}
			require.NoError(t, store.DB.Create(&vm).Error)
			pair[i] = Candidate{RouterID: vm.ID, RouterName: vm.Name, Check: "dns_check.py", Failures: 3 - i}
		}
		out := p.plan("s1", 100, 2, rules, pair...)
		require.Len(t, out.Recreate, 1, "one of the pair at a time, though two slots are free")
		assert.Equal(t, pair[0].RouterID, out.Recreate[0].RouterID)
		assert.Equal(t, 1, out.PeerBusy)
		out = p.plan("s2", 100, 1, rules, pair[1])
		assert.Empty(t, out.Recreate, "its peer is still being recreated")
		assert.Equal(t, 1, out.PeerBusy)
		require.NoError(t, store.DB.Model(&models.Operation{}).Where("target_id = ?", pair[0].RouterID).
			Update("status", models.OpCompleted).Error)
		out = p.plan("s3", 100, 1, rules, pair[1])
		require.Len(t, out.Recreate, 1)
		assert.Equal(t, pair[1].RouterID, out.Recreate[0].RouterID)
	})
}
