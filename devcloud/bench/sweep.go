package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// sweeper runs and measures sweeps of one zone.
type sweeper struct {
	o           Options
	log         *slog.Logger
	tc          client.Client
	store       *models.Store
	zoneID      string
	workerPID   int
	temporalPID int
}

// cpuReading is the CPU time of the measured processes and of the machine at one instant.
type cpuReading struct {
	worker, temporal, self, machine time.Duration
}

func (b *sweeper) readCPU() (cpuReading, error) {
	var r cpuReading
	var errs [4]error
	r.worker, errs[0] = ProcessCPU(b.workerPID)
	r.temporal, errs[1] = ProcessCPU(b.temporalPID)
	r.self, errs[2] = SelfCPU()
	r.machine, errs[3] = MachineCPU()
	return r, errors.Join(errs[:]...)
}

// progressEvery is how often a running sweep's progress is logged.
const progressEvery = 30 * time.Second

// sweep starts a basic HealthSweep of the zone by workflow name, waits for its result
// (following continue-as-new), and measures and verifies it.
func (b *sweeper) sweep(ctx context.Context, phase string, i int) (Sweep, error) {
	s := Sweep{Phase: phase, WorkflowID: fmt.Sprintf("bench-health-basic-%d-%d-%s", b.o.Routers, i+1, phase)}
	s.LoadAverage, _ = LoadAverage()
	sctx, cancel := context.WithTimeout(ctx, b.o.SweepTimeout+30*time.Second)
	defer cancel()

	// Results are stamped in milliseconds; anything from this sweep is at or after since.
	since := time.Now().UTC().Truncate(time.Millisecond)
	cpu0, err := b.readCPU()
	if err != nil {
		return s, err
	}
	start := time.Now()
	run, err := b.tc.ExecuteWorkflow(sctx, client.StartWorkflowOptions{ID: s.WorkflowID, TaskQueue: workflows.TaskQueue,
		WorkflowExecutionTimeout: b.o.SweepTimeout}, workflows.HealthSweepWorkflowName,
		workflows.SweepInput{ZoneID: b.zoneID, Kind: activities.HealthBasic, BatchSize: b.o.BatchSize})
	if err != nil {
		return s, fmt.Errorf("start sweep: %w", err)
	}
	b.log.Info("sweep started", "phase", phase, "workflow", s.WorkflowID)
	stopProgress := b.logProgress(sctx, s.WorkflowID)
	var out workflows.SweepResult
	err = run.Get(sctx, &out)
	wall := time.Since(start)
	stopProgress()
	if err != nil {
		return s, fmt.Errorf("sweep %s: %w", s.WorkflowID, err)
	}
	cpu1, err := b.readCPU()
	if err != nil {
		return s, err
	}
	s.WallSeconds = wall.Seconds()
	s.RoutersPerSecond = float64(b.o.Routers) / wall.Seconds()
	s.WorkerCPU = (cpu1.worker - cpu0.worker).Seconds()
	s.TemporalCPU = (cpu1.temporal - cpu0.temporal).Seconds()
	s.FleetCPU = (cpu1.self - cpu0.self).Seconds()
	s.OtherCPU = max(0, (cpu1.machine-cpu0.machine).Seconds()-s.WorkerCPU-s.TemporalCPU-s.FleetCPU)
	s.Batches, s.Runs, s.Summary = out.Batches, out.Runs, out.Summary

	hctx, hcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer hcancel()
	events, runs, err := HistoryEvents(hctx, b.tc, s.WorkflowID)
	if err != nil {
		return s, err
	}
	s.HistoryEvents = events
	if runs != out.Runs {
		return s, fmt.Errorf("sweep %s: the result says %d runs, the history has %d", s.WorkflowID, out.Runs, runs)
	}
	vctx, vcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer vcancel()
	s.Checked, err = Verify(vctx, b.store, b.zoneID, b.o.Routers, since, out)
	return s, err
}

// logProgress logs the sweep's progress query every progressEvery until the returned stop.
func (b *sweeper) logProgress(ctx context.Context, workflowID string) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
			v, err := b.tc.QueryWorkflow(qctx, workflowID, "", workflows.QueryProgress)
			var p workflows.Progress
			if err == nil {
				err = v.Get(&p)
			}
			qcancel()
			if err == nil {
				b.log.Info("sweep progress", "workflow", workflowID, "done", p.Done, "total", p.Total, "step", p.Step)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// HistoryEvents counts the history events of every run of a workflow, following a
// continue-as-new chain back from the latest run; it also returns the number of runs.
func HistoryEvents(ctx context.Context, tc client.Client, workflowID string) (events, runs int, err error) {
	runID := ""
	for {
		runs++
		it := tc.GetWorkflowHistory(ctx, workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		prev := ""
		for it.HasNext() {
			e, err := it.Next()
			if err != nil {
				return events, runs, fmt.Errorf("history of %s: %w", workflowID, err)
			}
			events++
			if a := e.GetWorkflowExecutionStartedEventAttributes(); a != nil {
				prev = a.GetContinuedExecutionRunId()
			}
		}
		if prev == "" {
			return events, runs, nil
		}
		runID = prev
	}
}

// Verify checks that a sweep over a zone of n running routers checked every one of them: the
// result's summary counts n routers, all reachable, none failing and no platform error; and in
// the database every router has a passing connectivity.test and basic results from its agent
// stamped at or after since, no stored result fails, and no router has healthchecksfailed set.
// It returns how many routers were found checked; any shortfall is an error, so a sweep that
// checked nothing never passes for a fast one.
func Verify(ctx context.Context, s *models.Store, zoneID string, n int, since time.Time, out workflows.SweepResult) (int, error) {
	sum := out.Summary
	var problems []string
	if out.Disabled {
		problems = append(problems, "the sweep found health checks disabled")
	}
	if sum.Routers != n || sum.Reachable != n {
		problems = append(problems, fmt.Sprintf("the sweep visited %d routers and reached %d, want %d", sum.Routers, sum.Reachable, n))
	}
	if sum.Unreachable+sum.Failing+sum.Errors > 0 {
		problems = append(problems, fmt.Sprintf("%d unreachable, %d failing, %d platform errors (samples: %s)",
			sum.Unreachable, sum.Failing, sum.Errors, strings.Join(sum.ErrorSamples, "; ")))
	}
	var rows []models.HealthCheckResult
	if err := s.DB.WithContext(ctx).Select("router_id", "check_name", "check_type", "success", "last_updated").
		Where("router_id IN (?)", s.DB.Model(&models.SystemVM{}).Select("id").
			Where("zone_id = ? AND type = ? AND state = ?", zoneID, models.TypeRouter, models.StateRunning)).
		Find(&rows).Error; err != nil {
		return 0, fmt.Errorf("read health check results: %w", err)
	}
	conn, agentRun := map[string]bool{}, map[string]bool{}
	failed := 0
	var failedSample []string
	for _, r := range rows {
		if !r.Success {
			failed++
			if len(failedSample) < 5 {
				failedSample = append(failedSample, r.RouterID+" "+r.CheckName)
			}
		}
		if r.LastUpdated.Before(since) || !r.Success {
			continue
		}
		if r.CheckName == activities.CheckConnectivity {
			conn[r.RouterID] = true
		} else if r.CheckType == string(activities.HealthBasic) {
			agentRun[r.RouterID] = true
		}
	}
	checked := 0
	for id := range conn {
		if agentRun[id] {
			checked++
		}
	}
	if checked != n {
		problems = append(problems, fmt.Sprintf("%d of %d routers have a fresh passing connectivity.test and fresh basic results (%d with connectivity.test, %d with agent results)",
			checked, n, len(conn), len(agentRun)))
	}
	if failed > 0 {
		problems = append(problems, fmt.Sprintf("%d stored results fail (e.g. %s)", failed, strings.Join(failedSample, ", ")))
	}
	var flagged int64
	if err := s.DB.WithContext(ctx).Model(&models.SystemVM{}).
		Where("zone_id = ? AND type = ? AND health_checks_failed = ?", zoneID, models.TypeRouter, true).
		Count(&flagged).Error; err != nil {
		return checked, fmt.Errorf("count routers with failing checks: %w", err)
	}
	if flagged > 0 {
		problems = append(problems, fmt.Sprintf("%d routers have healthchecksfailed set", flagged))
	}
	if len(problems) > 0 {
		return checked, fmt.Errorf("the sweep did not check every router: %s", strings.Join(problems, "; "))
	}
	return checked, nil
}
