package workflows

import (
	"go.temporal.io/sdk/workflow"
)

// Metrics a health sweep records when it has visited every router of its zone, through the
// workflow's metrics handler (the Temporal client's MetricsHandler: sysvm worker exports them
// at /metrics). The handler drops what a replay records, so each sweep counts once; recording
// adds no command to the history.
const (
	// MetricSweepDuration is a timer: from the sweep's start to its last batch, across
	// continue-as-new (exported as the histogram sysvm_health_sweep_duration_seconds).
	MetricSweepDuration = "sysvm_health_sweep_duration"
	// MetricSweepsCompleted counts sweeps that visited their whole zone
	// (sysvm_health_sweeps_completed_total).
	MetricSweepsCompleted = "sysvm_health_sweeps_completed"
	// MetricSweepLastCompleted is the Unix time the last sweep of the zone and kind completed.
	MetricSweepLastCompleted = "sysvm_health_sweep_last_completed_timestamp_seconds"
	// MetricSweepRouters is what the last sweep saw, by result: visited, reachable,
	// unreachable, failing, errors.
	MetricSweepRouters = "sysvm_health_sweep_routers"
)

// recordSweepEnd records a sweep's metrics, tagged by zone_id and kind.
func recordSweepEnd(ctx workflow.Context, in SweepInput, st *SweepState) {
	m := workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"zone_id": in.ZoneID, "kind": string(in.Kind)})
	now := workflow.Now(ctx)
	m.Timer(MetricSweepDuration).Record(now.Sub(st.At))
	m.Counter(MetricSweepsCompleted).Inc(1)
	m.Gauge(MetricSweepLastCompleted).Update(float64(now.UnixMilli()) / 1000)
	s := st.Summary
	for _, r := range []struct {
		result string
		n      int
	}{{"visited", s.Routers}, {"reachable", s.Reachable}, {"unreachable", s.Unreachable},
		{"failing", s.Failing}, {"errors", s.Errors}} {
		m.WithTags(map[string]string{"result": r.result}).Gauge(MetricSweepRouters).Update(float64(r.n))
	}
}
