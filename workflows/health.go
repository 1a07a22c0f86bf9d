package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
)

// Workflow type names of router health checks.
const (
	// HealthSweepWorkflowName is HealthSweep: one kind of health task over a zone's routers.
	HealthSweepWorkflowName = "HealthSweep"
	// RouterHealthCheckWorkflowName is RouterHealthCheck: the on-demand check of one router.
	RouterHealthCheckWorkflowName = "RouterHealthCheck"
)

// OperationKindHealthOnDemand is the OperationKind search attribute of on-demand checks.
const OperationKindHealthOnDemand = "router.health.ondemand"

// Sweep sizing defaults.
const (
	// DefaultSweepBatchSize is how many routers one batch activity handles.
	DefaultSweepBatchSize = 200
	// sweepMaxParallelPerBatch bounds the routers one batch activity visits at once; the sweep
	// runs ceil(concurrency / this) batches at once, so the routers checked at once stay at
	// router.health.checks.sweep.concurrency, spread over the workers.
	sweepMaxParallelPerBatch = 16
	// sweepMaxHistoryEvents: past this many history events a sweep continues as new.
	sweepMaxHistoryEvents = 8000
	// sweepMaxCandidates bounds the recreation candidates a sweep carries: at most
	// router.health.checks.max.concurrent.recreations of them start per sweep anyway; those
	// left out are candidates again at the next sweep.
	sweepMaxCandidates = 200
)

// HealthScheduleID is the ID of the schedule of one kind of health task in a zone
// ("health-basic:<zoneid>"); the workflows it starts have IDs starting with it.
func HealthScheduleID(kind activities.HealthKind, zoneID string) string {
	return "health-" + string(kind) + ":" + zoneID
}

// RouterHealthCheckWorkflowID is the workflow ID of the on-demand check of a router: one at a
// time per router (a second caller joins the running check).
func RouterHealthCheckWorkflowID(routerID string) string { return "health-check:" + routerID }

// SweepInput starts a HealthSweep.
type SweepInput struct {
	ZoneID string                `json:"zoneId"`
	Kind   activities.HealthKind `json:"kind"`
	// BatchSize is the routers per batch activity (0 = DefaultSweepBatchSize).
	BatchSize int `json:"batchSize,omitempty"`
	// State is carried over continue-as-new; nil on the first run.
	State *SweepState `json:"state,omitempty"`
}

// SweepState is what a sweep carries from one run to the next.
type SweepState struct {
	// Cursor is the last router ID handed to a batch.
	Cursor string `json:"cursor"`
	// At is when the sweep started; it stamps connectivity.test.
	At       time.Time                `json:"at"`
	Settings activities.SweepSettings `json:"settings"`
	Summary  activities.BatchSummary  `json:"summary"`
	Batches  int                      `json:"batches"`
	// Runs is how many runs the sweep took (continue-as-new).
	Runs int `json:"runs"`
}

// StartedRecreation is a recreation a sweep started (or could not).
type StartedRecreation struct {
	activities.PlannedRecreation
	RunID   string `json:"runId,omitempty"`
	Started bool   `json:"started"`
	Error   string `json:"error,omitempty"`
}

// SweepResult is the end of a sweep.
type SweepResult struct {
	ZoneID string                `json:"zoneId"`
	Kind   activities.HealthKind `json:"kind"`
	// Disabled: router.health.checks.enabled is false for the zone; nothing was done.
	Disabled    bool                    `json:"disabled,omitempty"`
	Summary     activities.BatchSummary `json:"summary"`
	Batches     int                     `json:"batches"`
	Runs        int                     `json:"runs"`
	Plan        *activities.PlanResult  `json:"plan,omitempty"`
	Recreations []StartedRecreation     `json:"recreations,omitempty"`
}

// ha names the health activities in workflow code; never called on this nil value.
var ha *activities.Health

// HealthSweep does one kind of health task (basic, advanced, config, fetch) over the running
// routers of a zone. It lists router IDs page by page and hands them to batch activities, as
// many at once as router.health.checks.sweep.concurrency allows; each batch stores its results
// and answers with a compact summary, so the history stays a few events per batch (a few
// hundred events for 10,000 routers) and continues as new past sweepMaxHistoryEvents. Every
// batch carries the sweep's key, so a retried batch counts each failure once. At the end of a
// sweep that produces results it applies the recreation rules (HealthPlanRecreations) and
// starts each allowed recreation as a SystemVMLifecycle child (action recreate, the router's
// lifecycle workflow ID, so a router with a running operation is skipped), abandoned on close
// so the recreation finishes whatever happens to the sweep.
func HealthSweep(ctx workflow.Context, in SweepInput) (SweepResult, error) {
	if _, err := activities.ParseHealthKind(string(in.Kind)); err != nil {
		return SweepResult{}, temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrTypeNotAllowed, nil)
	}
	w := &sweep{in: in, res: SweepResult{ZoneID: in.ZoneID, Kind: in.Kind}}
	if err := w.setup(ctx); err != nil || w.res.Disabled {
		return w.res, err
	}
	err := w.run(ctx)
	return w.res, err
}

// sweep is one run of a HealthSweep (a sweep continued as new is several runs sharing st).
type sweep struct {
	in       SweepInput
	st       *SweepState
	res      SweepResult
	progress Progress
	// id names the sweep across its runs (workflow ID and first run ID), for operation IDs;
	// key is the key its batches count failures under (activities.SweepKey).
	id, key string
	// batchSize routers per batch, perBatch of them at once, inFlightMax batches at once,
	// listed pageSize IDs at a time.
	batchSize, perBatch, inFlightMax, pageSize int
}

// setup answers progress queries, sets the search attributes, reads the settings on the first
// run (a disabled zone ends the sweep: res.Disabled) and sizes the batches.
func (w *sweep) setup(ctx workflow.Context) error {
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return w.progress, nil }); err != nil {
		return err
	}
	if err := upsertSweepAttributes(ctx, w.in); err != nil {
		return err
	}
	info := workflow.GetInfo(ctx)
	w.id = info.WorkflowExecution.ID + "/" + info.FirstRunID
	w.key = activities.SweepKey(info.WorkflowExecution.ID, info.FirstRunID, w.in.Kind)
	w.st = w.in.State
	if w.st == nil {
		short := withShortActivity(ctx)
		var s activities.SweepSettings
		if err := workflow.ExecuteActivity(short, ha.HealthSweepSettings, w.in.ZoneID).Get(ctx, &s); err != nil {
			return err
		}
		if !s.Enabled {
			w.res.Disabled = true
			return nil
		}
		w.st = &SweepState{At: workflow.Now(ctx).UTC(), Settings: s}
	}
	w.st.Runs++
	w.batchSize = w.in.BatchSize
	if w.batchSize <= 0 {
		w.batchSize = DefaultSweepBatchSize
	}
	w.perBatch = min(w.st.Settings.Concurrency, sweepMaxParallelPerBatch)
	w.inFlightMax = (w.st.Settings.Concurrency + w.perBatch - 1) / w.perBatch
	w.pageSize = min(max(1000, 2*w.batchSize*w.inFlightMax), activities.MaxRouterPage)
	return nil
}

// run checks the routers, then applies the recreation rules.
func (w *sweep) run(ctx workflow.Context) error {
	if err := w.check(ctx); err != nil {
		return err
	}
	return w.recreate(ctx)
}

// check lists the routers and runs the batches, inFlightMax at once, until every listed router
// was handed to a batch; past the history bound it continues as new (the returned error) with
// its cursor and summary.
func (w *sweep) check(ctx workflow.Context) error {
	short := withShortActivity(ctx)
	batchCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Hour,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 5 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: time.Minute, MaximumAttempts: 3},
	})
	st := w.st
	var (
		queue      []string
		listCursor = st.Cursor
		listed     bool
		inFlight   int
		stopping   bool
		listErr    error
	)
	sel := workflow.NewSelector(ctx)
	w.progress.Step = "checking " + string(w.in.Kind)
	for {
		for !stopping && inFlight < w.inFlightMax && listErr == nil {
			if len(queue) == 0 {
				if listed {
					break
				}
				var page activities.RouterPage
				listErr = workflow.ExecuteActivity(short, ha.HealthListRouters,
					activities.ListRoutersInput{ZoneID: w.in.ZoneID, After: listCursor, Limit: w.pageSize}).Get(ctx, &page)
				if listErr != nil {
					break
				}
				queue = append(queue, page.IDs...)
				if len(page.IDs) > 0 {
					listCursor = page.IDs[len(page.IDs)-1]
				}
				listed = page.Done
				w.progress.Total += len(page.IDs)
				continue
			}
			n := min(w.batchSize, len(queue))
			ids := queue[:n:n]
			queue = queue[n:]
			st.Cursor = ids[n-1]
			f := workflow.ExecuteActivity(batchCtx, ha.HealthCheckBatch, activities.BatchInput{ZoneID: w.in.ZoneID, Kind: w.in.Kind,
				RouterIDs: ids, Parallel: w.perBatch, At: st.At, Settings: st.Settings, SweepKey: w.key})
			inFlight++
			sel.AddFuture(f, func(f workflow.Future) {
				inFlight--
				st.Batches++
				w.progress.Done += len(ids)
				var sum activities.BatchSummary
				if err := f.Get(ctx, &sum); err != nil {
					sum = activities.BatchSummary{Routers: len(ids), Errors: len(ids),
						ErrorSamples: []string{fmt.Sprintf("batch of %d routers from %s failed: %v", len(ids), ids[0], err)}}
				}
				st.Summary.Add(sum)
				if len(st.Summary.Candidates) > sweepMaxCandidates {
					activities.SortCandidates(st.Summary.Candidates)
					st.Summary.Candidates = st.Summary.Candidates[:sweepMaxCandidates]
				}
			})
		}
		if inFlight == 0 {
			break
		}
		sel.Select(ctx)
		if w.progress.Total > 0 {
			w.progress.Percent = w.progress.Done * 100 / w.progress.Total
		}
		if !stopping && shouldContinueAsNew(ctx) {
			stopping = true
		}
	}
	if listErr != nil {
		return fmt.Errorf("list routers of zone %s: %w", w.in.ZoneID, listErr)
	}
	if stopping && !(listed && len(queue) == 0) {
		next := w.in
		next.State = st
		return workflow.NewContinueAsNewError(ctx, HealthSweepWorkflowName, next)
	}
	w.res.Summary, w.res.Batches, w.res.Runs = st.Summary, st.Batches, st.Runs
	recordSweepEnd(ctx, w.in, st)
	w.progress.Step, w.progress.Percent = "checked", 100
	return nil
}

// recreate ends a sweep that produced results: it applies the recreation rules and starts the
// recreations they allow.
func (w *sweep) recreate(ctx workflow.Context) error {
	st := w.st
	if !w.in.Kind.ProducesResults() {
		w.progress.Step = "done"
		return nil
	}
	if len(st.Settings.RecreateChecks) == 0 {
		// Nothing is recreated, but the rules still run (with no candidates) so a circuit
		// breaker tripped while the list was set is closed once the zone is healthy.
		// Runs recorded before this change ended here.
		if workflow.GetVersion(ctx, "rules-without-recreate-list", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
			w.progress.Step = "done"
			return nil
		}
	}
	w.progress.Step = "recreation rules"
	activities.SortCandidates(st.Summary.Candidates)
	var plan activities.PlanResult
	if err := workflow.ExecuteActivity(withShortActivity(ctx), ha.HealthPlanRecreations, activities.PlanInput{
		ZoneID: w.in.ZoneID, SweepID: w.id, Kind: w.in.Kind,
		Routers: st.Summary.Routers, RecreateFailing: st.Summary.RecreateFailing, Candidates: st.Summary.Candidates,
		Settings: st.Settings, WorkflowIDPrefix: LifecycleWorkflowID(""),
	}).Get(ctx, &plan); err != nil {
		return fmt.Errorf("apply recreation rules in zone %s: %w", w.in.ZoneID, err)
	}
	w.res.Plan = &plan
	w.res.Recreations = startRecreations(ctx, w.in.ZoneID, plan.Recreate)
	w.progress.Step = "done"
	return nil
}

// upsertSweepAttributes sets ZoneId and OperationKind unless the start (a schedule) did.
func upsertSweepAttributes(ctx workflow.Context, in SweepInput) error {
	sa := workflow.GetTypedSearchAttributes(ctx)
	zone, _ := sa.GetKeyword(ZoneIDKey)
	kind, _ := sa.GetKeyword(OperationKindKey)
	if zone == in.ZoneID && kind == in.Kind.OperationKind() {
		return nil
	}
	return workflow.UpsertTypedSearchAttributes(ctx,
		ZoneTarget(workflow.GetInfo(ctx).WorkflowExecution.ID, in.ZoneID, in.Kind.OperationKind()).SearchAttributes()...)
}

func shouldContinueAsNew(ctx workflow.Context) bool {
	info := workflow.GetInfo(ctx)
	return info.GetContinueAsNewSuggested() || info.GetCurrentHistoryLength() > sweepMaxHistoryEvents
}

// startRecreations starts each planned recreation as an abandoned SystemVMLifecycle child and
// waits only for the starts. A router whose lifecycle workflow ID is taken (an operation runs
// on it) is skipped and its plan released.
func startRecreations(ctx workflow.Context, zoneID string, plans []activities.PlannedRecreation) []StartedRecreation {
	short := withShortActivity(ctx)
	out := make([]StartedRecreation, len(plans))
	futures := make([]workflow.ChildWorkflowFuture, len(plans))
	for i, p := range plans {
		out[i].PlannedRecreation = p
		opts := RouterTarget(p.RouterID, zoneID, ActionRecreate.OperationKind()).ChildOptions(
			map[string]any{"operationId": p.OperationID, "target": p.RouterName, "requestedBy": activities.RequestedByHealthChecks})
		opts.WorkflowID = p.WorkflowID // the plan's, LifecycleWorkflowID(router) as the target's
		cctx := workflow.WithChildOptions(ctx, opts)
		futures[i] = workflow.ExecuteChildWorkflow(cctx, LifecycleWorkflowName, LifecycleInput{
			OperationID: p.OperationID, VMID: p.RouterID, Action: ActionRecreate, Reason: p.Reason})
	}
	for i, f := range futures {
		var exec workflow.Execution
		err := f.GetChildWorkflowExecution().Get(ctx, &exec)
		if err != nil {
			out[i].Error = err.Error()
			reason := "the recreation did not start: " + err.Error()
			if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
				reason = "another operation runs on the router (workflow " + out[i].WorkflowID + ")"
			}
			out[i].Error = reason
			if rerr := workflow.ExecuteActivity(short, ha.HealthReleaseRecreation, out[i].OperationID, reason).Get(ctx, nil); rerr != nil {
				workflow.GetLogger(ctx).Error("release recreation plan", "router", out[i].RouterID, "error", rerr)
			}
			continue
		}
		out[i].Started, out[i].RunID = true, exec.RunID
		if err := workflow.ExecuteActivity(short, ha.HealthRecreationStarted, out[i].OperationID, exec.RunID).Get(ctx, nil); err != nil {
			workflow.GetLogger(ctx).Error("record recreation run", "router", out[i].RouterID, "error", err)
		}
	}
	return out
}

// RouterHealthCheckInput starts a RouterHealthCheck.
type RouterHealthCheckInput struct {
	RouterID string `json:"routerId"`
}

// RouterHealthCheck is the on-demand check of one router (getRouterHealthCheckResults with
// performfreshchecks=true): it pushes the configuration, runs every check now and returns the
// results. It runs on the worker, which holds the SSH key, and is found in the Web UI by
// RouterId. It never recreates a router.
func RouterHealthCheck(ctx workflow.Context, in RouterHealthCheckInput) (activities.FreshResult, error) {
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		HeartbeatTimeout:    30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: 10 * time.Second, MaximumAttempts: 2},
	})
	var out activities.FreshResult
	err := workflow.ExecuteActivity(actx, ha.HealthCheckNow, in.RouterID).Get(ctx, &out)
	return out, err
}
