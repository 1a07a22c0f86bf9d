package workflows

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	_ "time/tzdata" // daily windows resolve time zones the same on every worker (determinism)

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// upgrade is one run of a RouterUpgrade (an upgrade continued as new is several runs sharing
// its state).
type upgrade struct {
	in  RouterUpgradeInput
	st  *RouterUpgradeState
	req RouterUpgradeRequest
	// inFlight counts routers between start and end in this run; events is bumped by every
	// change the main loop must look at (a router finished, a signal).
	inFlight, events, finished int
	draining                   bool
	canceling                  bool
	waitingWindow              bool
	// detach: this run hands its routers in flight over to the next one instead of draining
	// (a recreate-mode RouterUpgrade at the upgrade-continue-without-drain version), decided
	// when it starts draining.
	detach bool
	// live is where each router in flight in this run is: a phase to carry over once it is
	// detachable (its recreate child started, or in its gate), Phase "" before (its check, its
	// child's start not confirmed yet).
	live map[int]UpgradeCarried
	// kind is what another upgrade on this engine does differently (SystemVMUpgrade); nil
	// for RouterUpgrade.
	kind *upgradeKind
}

// upgradeKind is what an upgrade other than RouterUpgrade plugs into the engine: how one VM is
// upgraded, how it continues as new, its budget alert and why a chained VM is skipped when the
// one before it was not upgraded. The engine's commands are RouterUpgrade's when kind is nil.
type upgradeKind struct {
	item          func(ctx workflow.Context, i int) (state, reason string)
	continueAsNew func(ctx workflow.Context) error
	alert         func(ctx workflow.Context)
	peerSkip      func(peer UpgradeRouter) string
}

// RouterUpgrade upgrades routers in batches (SPEC §4.4): the plan's groups in order, each in
// its window (a group outside it waits on a durable timer), with a sliding window of at most
// Parallelism routers in flight — a router finishing lets the next one start at once, there is
// no batch barrier. Each router is a SystemVMLifecycle child run (recreate, make-before-break)
// on the router's own workflow ID, started on a disconnected context so that canceling the
// upgrade lets the routers in flight finish; then its health gate (basic checks and services
// pass within the gate timeout) before it counts as done. Redundant peers are chained: the
// BACKUP first, the PRIMARY only once its BACKUP passed its gate (a BACKUP that failed leaves
// its PRIMARY untouched, skipped). More failures than the budget pause the upgrade and raise an
// alert naming the failed routers and why; signals pause, resume and change the parallelism;
// cancel (the operation's) lets in-flight routers finish and starts nothing new. A router
// already at the required version at its turn is skipped, so an upgrade never upgrades a router
// twice. After RoutersPerRun routers the run continues as new with its state, so history stays
// bounded at any fleet size; the progress query answers from the carried state in every run.
// In recreate mode it does not drain: it stops starting routers, waits only until each router
// in flight is past its check and its recreate child's start (a workflow task or two), and
// hands them over in the state (UpgradeCarried); the next run waits for their children
// (Activities.AwaitRecreate) and gates them before it starts others, so the window stays full.
// In patch mode, and in runs that started draining before this change, the run drains (lets its
// routers in flight finish) first.
func RouterUpgrade(ctx workflow.Context, in RouterUpgradeInput) (RouterUpgradeResult, error) {
	w := &upgrade{in: in, req: in.Request, st: in.State}
	return w.execute(ctx, w.setup, func(ctx workflow.Context, res RouterUpgradeResult) {
		w.resolveBudgetAlert(ctx, "the upgrade ended: "+countsText(res.Counts))
	})
}

// execute is the life of a run of either kind of upgrade: the progress query, setup, the
// signals and the engine; then, unless the run continues as new, ended (when not nil) with
// the result and the operation's end.
func (w *upgrade) execute(ctx workflow.Context, setup func(workflow.Context) error,
	ended func(workflow.Context, RouterUpgradeResult)) (RouterUpgradeResult, error) {
	w.live = map[int]UpgradeCarried{}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (RouterUpgradeProgress, error) {
		return w.progress(workflow.Now(ctx)), nil
	}); err != nil {
		return RouterUpgradeResult{}, err
	}
	err := setup(ctx)
	if err == nil {
		w.listen(ctx)
		err = w.run(ctx)
	}
	if workflow.IsContinueAsNewError(err) {
		return RouterUpgradeResult{}, err
	}
	res := w.result()
	if err != nil && ctx.Err() != nil {
		err = temporal.NewCanceledError(fmt.Sprintf("upgrade canceled: %s", countsText(res.Counts)))
	}
	if ended != nil {
		ended(ctx, res)
	}
	return res, finishOperation(ctx, w.in.OperationID, res, err)
}

func (w *upgrade) setup(ctx workflow.Context) error {
	w.applyDefaults()
	if w.req.Mode == "" {
		w.req.Mode = UpgradeModeRecreate
	}
	if w.req.Mode != UpgradeModeRecreate && w.req.Mode != UpgradeModePatch {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("mode %q is not supported (recreate or patch)", w.req.Mode),
			activities.ErrTypeNotAllowed, nil)
	}
	if err := w.upsertSearchAttributes(ctx, RouterUpgradeOperationKind); err != nil {
		return err
	}
	if w.st != nil {
		w.st.Runs++
		// Routers in flight when the last run drained are all ended; those it handed over
		// without draining are in Carried.
		w.takeOver(ctx)
		return nil
	}
	var plan activities.UpgradePlan
	if err := workflow.ExecuteActivity(withShortActivity(ctx), a.PlanRouterUpgrade, w.req.Selection).Get(ctx, &plan); err != nil {
		return fmt.Errorf("plan the upgrade: %w", err)
	}
	w.st = w.newState(ctx, plan)
	return nil
}

// applyDefaults fills the knobs of the request left at 0 (both kinds of upgrade).
func (w *upgrade) applyDefaults() {
	if w.req.Parallelism <= 0 {
		w.req.Parallelism = DefaultUpgradeParallelism
	}
	if w.req.RoutersPerRun <= 0 {
		w.req.RoutersPerRun = DefaultUpgradeRoutersPerRun
	}
	if w.req.GateTimeout <= 0 {
		w.req.GateTimeout = DefaultGateTimeout
	}
}

// upsertSearchAttributes sets the run's operation kind (and zone, when the selection has one).
func (w *upgrade) upsertSearchAttributes(ctx workflow.Context, kind string) error {
	sa := []temporal.SearchAttributeUpdate{OperationKindKey.ValueSet(kind)}
	if z := w.req.Selection.ZoneID; z != "" {
		sa = append(sa, ZoneIDKey.ValueSet(z))
	}
	return workflow.UpsertTypedSearchAttributes(ctx, sa...)
}

// newState is the first run's state from the plan: its groups with their windows, its VMs
// pending in order, each chained to the one it waits for (After, 1-based).
func (w *upgrade) newState(ctx workflow.Context, plan activities.UpgradePlan) *RouterUpgradeState {
	st := &RouterUpgradeState{GroupBy: plan.GroupBy, Parallelism: w.req.Parallelism, Runs: 1,
		Started: workflow.Now(ctx).UnixMilli()}
	index := map[string]int{}
	for gi, g := range plan.Groups {
		ug := UpgradeGroup{Key: g.Key, Name: g.Name}
		if win, ok := w.req.Windows[g.Key]; ok {
			ug.Window = &win
		} else if w.req.Window != nil && !w.req.Window.IsZero() {
			win := *w.req.Window
			ug.Window = &win
		}
		st.Groups = append(st.Groups, ug)
		for _, r := range g.Routers {
			index[r.ID] = len(st.Routers)
			st.Routers = append(st.Routers, UpgradeRouter{ID: r.ID, Name: r.Name, ZoneID: r.ZoneID, Group: gi,
				RedundantState: r.RedundantState, Type: r.Type, State: UpgradePending, FromVersion: r.Version})
		}
	}
	for _, g := range plan.Groups {
		for _, r := range g.Routers {
			if r.After != "" {
				if i, ok := index[r.After]; ok {
					st.Routers[index[r.ID]].After = i + 1
				}
			}
		}
	}
	return st
}

// listen handles the control signals for the life of the run.
func (w *upgrade) listen(ctx workflow.Context) {
	pause := workflow.GetSignalChannel(ctx, SignalUpgradePause)
	resume := workflow.GetSignalChannel(ctx, SignalUpgradeResume)
	par := workflow.GetSignalChannel(ctx, SignalUpgradeParallelism)
	workflow.Go(ctx, func(ctx workflow.Context) {
		for {
			sel := workflow.NewSelector(ctx)
			sel.AddReceive(pause, func(c workflow.ReceiveChannel, _ bool) {
				var reason string
				c.Receive(ctx, &reason)
				w.pause(cmp.Or(reason, "paused by an operator"))
			})
			sel.AddReceive(resume, func(c workflow.ReceiveChannel, _ bool) {
				c.Receive(ctx, nil)
				w.resume()
			})
			sel.AddReceive(par, func(c workflow.ReceiveChannel, _ bool) {
				var n int
				c.Receive(ctx, &n)
				w.setParallelism(n)
			})
			sel.Select(ctx)
			if ctx.Err() != nil {
				return
			}
		}
	})
}

// drainSignals applies signals not received yet, before continuing as new.
func (w *upgrade) drainSignals(ctx workflow.Context) {
	for {
		var reason string
		if !workflow.GetSignalChannel(ctx, SignalUpgradePause).ReceiveAsync(&reason) {
			break
		}
		w.pause(cmp.Or(reason, "paused by an operator"))
	}
	for workflow.GetSignalChannel(ctx, SignalUpgradeResume).ReceiveAsync(nil) {
		w.resume()
	}
	for {
		var n int
		if !workflow.GetSignalChannel(ctx, SignalUpgradeParallelism).ReceiveAsync(&n) {
			break
		}
		w.setParallelism(n)
	}
}

func (w *upgrade) pause(reason string) {
	if !w.st.Paused {
		w.st.Paused, w.st.PauseReason = true, reason
	}
	w.events++
}

func (w *upgrade) resume() {
	if w.st.Paused {
		w.st.Paused, w.st.PauseReason = false, ""
		w.st.FailedAtResume = w.count(UpgradeFailed)
	}
	w.events++
}

func (w *upgrade) setParallelism(n int) {
	if n >= 1 && n <= MaxUpgradeParallelism {
		w.st.Parallelism = n
	}
	w.events++
}

func (w *upgrade) count(state string) int {
	n := 0
	for _, r := range w.st.Routers {
		if r.State == state {
			n++
		}
	}
	return n
}

func terminal(state string) bool {
	return state == UpgradeDone || state == UpgradeFailed || state == UpgradeSkipped
}

// run is the dispatch loop: start what may start, then wait for something to change.
func (w *upgrade) run(ctx workflow.Context) error {
	budgetAlerted := w.st.Pauses
	var waitCtx workflow.Context
	for {
		if w.allEnded() {
			return nil
		}
		if ctx.Err() != nil {
			w.canceling = true
		}
		if w.finished >= w.req.RoutersPerRun && !w.canceling {
			if !w.draining {
				w.detach = w.kind == nil && w.req.Mode == UpgradeModeRecreate &&
					workflow.GetVersion(ctx, continueWithoutDrainChange, workflow.DefaultVersion, 1) == 1
			}
			w.draining = true
		}
		before := w.events
		if w.st.Pauses > budgetAlerted {
			budgetAlerted = w.st.Pauses
			w.raiseBudgetAlert(ctx)
		}
		if !w.st.Paused {
			w.resolveBudgetAlert(ctx, "resumed by an operator")
		}
		if w.events != before && budgetAlertVersion(ctx) > workflow.DefaultVersion {
			// Routers ended or signals came while an alert activity ran: look again (the
			// wait below would miss them, and an upgrade whose last routers ended then
			// would never end).
			continue
		}
		if (w.canceling || w.draining) && w.inFlight == 0 || w.draining && !w.canceling && w.detach && w.handOver() {
			if w.canceling {
				return temporal.NewCanceledError("canceled")
			}
			w.drainSignals(ctx)
			if w.kind != nil {
				return w.kind.continueAsNew(ctx)
			}
			in := w.in
			in.Request = w.req
			in.State = w.st
			in.State.Carried = w.carried()
			return workflow.NewContinueAsNewError(ctx, RouterUpgradeWorkflowName, in)
		}
		wait := w.dispatch(ctx)
		if w.allEnded() && workflow.GetVersion(ctx, "upgrade-dispatch-ends-last", workflow.DefaultVersion, 1) == 1 {
			// dispatch skipped the last routers (the PRIMARY of a failed BACKUP, a window that
			// ended) with none in flight: nothing else would wake the wait below.
			continue
		}
		seen := w.events
		cond := func() bool { return w.events != seen }
		actx := ctx
		if w.canceling {
			// Canceled: wait for the routers in flight on a context that is not.
			if waitCtx == nil {
				waitCtx, _ = workflow.NewDisconnectedContext(ctx)
			}
			actx = waitCtx
		}
		var err error
		if wait > 0 {
			_, err = workflow.AwaitWithTimeout(actx, wait, cond)
		} else {
			err = workflow.Await(actx, cond)
		}
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
}

func (w *upgrade) allEnded() bool {
	for _, r := range w.st.Routers {
		if !terminal(r.State) {
			return false
		}
	}
	return w.inFlight == 0
}

// dispatch starts routers while there is room, the upgrade is not paused, canceled or
// draining, and the current group's window is open. It returns how long until the current
// group's window opens when it is closed (0 otherwise).
func (w *upgrade) dispatch(ctx workflow.Context) time.Duration {
	now := workflow.Now(ctx)
	w.waitingWindow = false
	for gi := range w.st.Groups {
		g := &w.st.Groups[gi]
		pending := w.pendingIn(gi)
		if len(pending) == 0 {
			continue // all started: the next group may fill the free slots
		}
		if g.Window != nil {
			open, wait, ended := g.Window.Next(now)
			switch {
			case ended:
				for _, i := range pending {
					w.end(i, UpgradeSkipped, "the group's upgrade window has ended", now)
				}
				continue
			case !open:
				g.WaitingUntil = now.Add(wait).UnixMilli()
				for _, i := range pending {
					w.st.Routers[i].State = UpgradeWaitingWindow
				}
				w.waitingWindow = true
				return wait
			}
			g.WaitingUntil = 0
		}
		for _, i := range pending {
			if w.st.Routers[i].State == UpgradeWaitingWindow {
				w.st.Routers[i].State = UpgradePending
			}
		}
		if w.st.Paused || w.canceling || w.draining {
			return 0
		}
		for _, i := range pending {
			if w.inFlight >= w.st.Parallelism {
				return 0
			}
			r := &w.st.Routers[i]
			if r.After > 0 {
				peer := w.st.Routers[r.After-1]
				switch peer.State {
				case UpgradeDone:
				case UpgradeFailed, UpgradeSkipped:
					if w.kind != nil {
						w.end(i, UpgradeSkipped, w.kind.peerSkip(peer), now)
						continue
					}
					w.end(i, UpgradeSkipped, fmt.Sprintf("its redundant peer %s was not upgraded (%s): it stays as it is so the pair keeps a router up",
						peer.Name, peer.State), now)
					continue
				default:
					continue // waits for its peer's gate
				}
			}
			w.start(ctx, i)
		}
		// Routers of this group wait for their peers: later groups wait for this one.
		return 0
	}
	return 0
}

// pendingIn lists the routers of group gi not started yet, in order.
func (w *upgrade) pendingIn(gi int) []int {
	var out []int
	for i, r := range w.st.Routers {
		if r.Group == gi && (r.State == UpgradePending || r.State == UpgradeWaitingWindow) {
			out = append(out, i)
		}
	}
	return out
}

func (w *upgrade) end(i int, state, reason string, now time.Time) {
	r := &w.st.Routers[i]
	r.State, r.Reason, r.Ended = state, reason, now.UnixMilli()
	w.events++
	if state == UpgradeFailed && !w.st.Paused {
		allowed := w.req.Budget.Allowed(len(w.st.Routers))
		if w.count(UpgradeFailed)-w.st.FailedAtResume > allowed {
			w.st.Paused = true
			w.st.Pauses++
			w.st.PauseReason = fmt.Sprintf("failure budget %s exceeded: %d routers failed", w.req.Budget, w.count(UpgradeFailed))
		}
	}
}

// start runs one router: the check at its turn, its recreate as a child run on its own
// workflow ID, its health gate.
func (w *upgrade) start(ctx workflow.Context, i int) {
	r := &w.st.Routers[i]
	r.State, r.Started, r.Reason = UpgradeUpgrading, workflow.Now(ctx).UnixMilli(), ""
	w.fly(ctx, i, UpgradeCarried{Router: i}, func(ctx workflow.Context) (string, string) {
		if w.kind != nil {
			return w.kind.item(ctx, i)
		}
		return w.upgradeRouter(ctx, i)
	})
}

// fly counts router i in flight, at where, and runs f (its upgrade, or what is left of it) on
// a disconnected context: once started, a router finishes whatever happens to the upgrade. f's
// state and reason end it.
func (w *upgrade) fly(ctx workflow.Context, i int, where UpgradeCarried, f func(workflow.Context) (state, reason string)) {
	w.inFlight++
	w.st.MaxInFlight = max(w.st.MaxInFlight, w.inFlight)
	w.live[i] = where
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	workflow.Go(dctx, func(ctx workflow.Context) {
		state, reason := f(ctx)
		w.inFlight--
		w.finished++
		delete(w.live, i)
		w.end(i, state, reason, workflow.Now(ctx))
	})
}

// continueWithoutDrainChange versions the continue-as-new that hands the routers in flight over
// instead of draining (runs that started draining before it drain).
const continueWithoutDrainChange = "upgrade-continue-without-drain"

// reached records where router i is; once detachable while the run waits to hand over, the run
// looks again (only then: another wake-up of the loop would start its window timer anew, a
// command histories recorded before do not have).
func (w *upgrade) reached(i int, where UpgradeCarried) {
	w.live[i] = where
	if w.detach {
		w.events++
	}
}

// handOver reports whether the run can continue as new with its routers in flight: each is
// detachable (its recreate child started, or in its gate), and some router is still to start
// (otherwise there is nothing to keep the window full with: the run lets them finish and ends).
func (w *upgrade) handOver() bool {
	for _, c := range w.live {
		if c.Phase == "" {
			return false
		}
	}
	return w.toStart()
}

// toStart reports whether some router is still to start (pending, or waiting for its window).
func (w *upgrade) toStart() bool {
	return slices.ContainsFunc(w.st.Routers, func(r UpgradeRouter) bool {
		return r.State == UpgradePending || r.State == UpgradeWaitingWindow
	})
}

// carried lists the routers in flight, in the order of the plan, for the next run (nil when
// none).
func (w *upgrade) carried() []UpgradeCarried {
	var out []UpgradeCarried
	for _, i := range slices.Sorted(maps.Keys(w.live)) {
		out = append(out, w.live[i])
	}
	return out
}

// takeOver counts the routers the last run handed over in flight and finishes each from where
// it was: a recreate's child run is waited for (never started again: the router's workflow ID
// and its operation are that run's), then the gate; a gate is run again.
func (w *upgrade) takeOver(ctx workflow.Context) {
	carried := w.st.Carried
	w.st.Carried = nil
	for _, c := range carried {
		w.fly(ctx, c.Router, c, func(ctx workflow.Context) (string, string) {
			if c.Phase == CarriedRecreate {
				return w.awaitRecreate(ctx, c)
			}
			return w.gate(ctx, c.Router)
		})
	}
}

// awaitRecreate finishes a router handed over in its recreate: its child run's result, read by
// an activity (it goes to the closed run that started it), then its gate.
func (w *upgrade) awaitRecreate(ctx workflow.Context, c UpgradeCarried) (string, string) {
	r := &w.st.Routers[c.Router]
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		// A recreate takes minutes; an attempt that outlives this is retried (it only waits).
		StartToCloseTimeout: time.Hour,
		HeartbeatTimeout:    30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second,
			NonRetryableErrorTypes: []string{activities.ErrTypeRecreateFailed, activities.ErrTypeNotFound}},
		Summary: "await the recreate of " + r.Name,
	})
	var res activities.AwaitRecreateResult
	if err := workflow.ExecuteActivity(actx, a.AwaitRecreate, activities.AwaitRecreateInput{WorkflowID: c.WorkflowID, RunID: c.RunID,
		RouterID: r.ID}).Get(ctx, &res); err != nil {
		return UpgradeFailed, "recreate: " + rootMessage(err)
	}
	var out LifecycleResult
	if len(res.Result) > 0 {
		if err := json.Unmarshal(res.Result, &out); err != nil {
			return UpgradeFailed, fmt.Sprintf("recreate: its result %s: %v", res.Result, err)
		}
	}
	return w.recreated(ctx, c.Router, out)
}

func (w *upgrade) upgradeRouter(ctx workflow.Context, i int) (string, string) {
	r := &w.st.Routers[i]
	var chk activities.UpgradeCheck
	// A local activity: one short read at the router's turn, recorded as a single marker.
	lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 10 * time.Second,
			MaximumAttempts: 10}})
	if err := workflow.ExecuteLocalActivity(lctx, a.RouterUpgradeCheck, activities.UpgradeCheckInput{
		RouterID: r.ID, Force: w.req.Selection.Force}).Get(ctx, &chk); err != nil {
		return UpgradeFailed, "check before the upgrade: " + err.Error()
	}
	if chk.Skip {
		return UpgradeSkipped, chk.Reason
	}
	r.FromVersion = chk.Version
	if w.req.Mode == UpgradeModePatch {
		// A new branch, taken only by patch-mode upgrades (recreate histories never reach it).
		return w.patchRouter(ctx, i, chk)
	}
	opID := RouterUpgradeRouterOperationID(w.in.OperationID, r.ID)
	t := RouterTarget(r.ID, r.ZoneID, RouterUpgradeOperationKind)
	cctx := workflow.WithChildOptions(ctx, t.ChildOptions(map[string]any{"operationId": opID, "target": r.ID,
		"parentOperationId": w.in.OperationID}))
	reason := fmt.Sprintf("router upgrade %s: version %s, required %s", w.in.OperationID, cmp.Or(chk.Version, "unknown"), cmp.Or(chk.MinReq, "none"))
	var out LifecycleResult
	child := workflow.ExecuteChildWorkflow(cctx, LifecycleWorkflowName, LifecycleInput{OperationID: opID, VMID: r.ID,
		Action: ActionRecreate, Reason: reason})
	var started workflow.Execution
	if child.GetChildWorkflowExecution().Get(ctx, &started) == nil {
		// Started: from here on the router can be handed over to the next run.
		w.reached(i, UpgradeCarried{Router: i, Phase: CarriedRecreate, WorkflowID: started.ID, RunID: started.RunID})
	}
	if err := child.Get(ctx, &out); err != nil {
		if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
			return UpgradeFailed, fmt.Sprintf("another operation runs on the router (workflow %s)", t.WorkflowID)
		}
		return UpgradeFailed, "recreate: " + rootMessage(err)
	}
	return w.recreated(ctx, i, out)
}

// recreated goes on with router i once its recreate child ended with out: its gate when the
// child left it Running.
func (w *upgrade) recreated(ctx workflow.Context, i int, out LifecycleResult) (string, string) {
	if out.State != models.StateRunning {
		return UpgradeFailed, fmt.Sprintf("recreate left it %s, not Running", out.State)
	}
	return w.healthGate(ctx, i)
}

// healthGate runs router i's health gate once its upgrade step (recreate or patch) is done.
func (w *upgrade) healthGate(ctx workflow.Context, i int) (string, string) {
	r := &w.st.Routers[i]
	r.State, r.GateStarted = UpgradeHealthCheck, workflow.Now(ctx).UnixMilli()
	w.events++
	w.live[i] = UpgradeCarried{Router: i, Phase: CarriedGate}
	return w.gate(ctx, i)
}

// gate is router i's health gate activity (idempotent: a config push and read-only checks).
func (w *upgrade) gate(ctx workflow.Context, i int) (string, string) {
	r := &w.st.Routers[i]
	gctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: w.req.GateTimeout + 2*time.Minute,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: 30 * time.Second, MaximumAttempts: 3,
			NonRetryableErrorTypes: []string{activities.ErrTypeGateFailed, activities.ErrTypeNotFound}},
		Summary: "health gate " + r.Name,
	})
	var gate activities.UpgradeGateResult
	if err := workflow.ExecuteActivity(gctx, ha.UpgradeHealthGate, activities.UpgradeGateInput{RouterID: r.ID,
		Timeout: w.req.GateTimeout, Poll: w.req.GatePoll}).Get(ctx, &gate); err != nil {
		return UpgradeFailed, rootMessage(err)
	}
	r.ToVersion = gate.Version
	return UpgradeDone, gate.Note
}

// raiseBudgetAlert raises the alert of a pause for the failure budget, naming every failed
// router and why.
func (w *upgrade) raiseBudgetAlert(ctx workflow.Context) {
	if w.kind != nil {
		w.kind.alert(ctx)
		return
	}
	var lines []string
	var zone string
	for _, r := range w.st.Routers {
		if r.State == UpgradeFailed {
			lines = append(lines, fmt.Sprintf("%s (%s): %s", r.Name, r.ID, r.Reason))
			zone = r.ZoneID
		}
	}
	if w.req.Selection.ZoneID != "" {
		zone = w.req.Selection.ZoneID
	}
	names := make([]string, 0, len(lines))
	for _, l := range lines {
		names = append(names, strings.SplitN(l, " ", 2)[0])
	}
	in := activities.UpgradeAlertInput{OperationID: w.in.OperationID, Key: fmt.Sprintf("budget.%d", w.st.Pauses), ZoneID: zone,
		Subject: fmt.Sprintf("Router upgrade %s paused: failure budget %s exceeded (%s failed)", w.in.OperationID, w.req.Budget,
			strings.Join(names, ", ")),
		Description: "Failed routers:\n" + strings.Join(lines, "\n") + "\nResume the upgrade once the cause is fixed (the budget counts anew), or cancel it."}
	w.st.BudgetAlertOpen = true
	if err := workflow.ExecuteActivity(withShortActivity(ctx), a.RaiseUpgradeAlert, in).Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Error("raise upgrade alert", "error", err)
	}
}

// resolveBudgetAlertChange versions the resolution of the budget alert and the second look
// after an alert activity (histories recorded before it do neither).
const resolveBudgetAlertChange = "upgrade-resolve-budget-alert"

func budgetAlertVersion(ctx workflow.Context) workflow.Version {
	return workflow.GetVersion(ctx, resolveBudgetAlertChange, workflow.DefaultVersion, 1)
}

// resolveBudgetAlert resolves the open budget alert (and so the paused-by-budget gauge) once the
// operator resumed the upgrade or it ended, on a context a cancel does not reach.
func (w *upgrade) resolveBudgetAlert(ctx workflow.Context, why string) {
	if w.st == nil || !w.st.BudgetAlertOpen {
		return
	}
	w.st.BudgetAlertOpen = false
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	if budgetAlertVersion(dctx) == workflow.DefaultVersion {
		return
	}
	in := activities.UpgradeAlertResolveInput{OperationID: w.in.OperationID, Why: why}
	if err := workflow.ExecuteActivity(withShortActivity(dctx), a.ResolveUpgradeAlert, in).Get(dctx, nil); err != nil {
		workflow.GetLogger(ctx).Error("resolve upgrade alert", "error", err)
	}
}

func (w *upgrade) counts() map[string]int {
	c := map[string]int{}
	for _, s := range UpgradeStates() {
		c[s] = 0
	}
	if w.st == nil {
		return c
	}
	for _, r := range w.st.Routers {
		c[r.State]++
	}
	return c
}

func countsText(c map[string]int) string {
	var parts []string
	for _, s := range UpgradeStates() {
		if c[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c[s], s))
		}
	}
	return strings.Join(parts, ", ")
}

func (w *upgrade) result() RouterUpgradeResult {
	res := RouterUpgradeResult{Counts: w.counts()}
	if w.st != nil {
		res.Routers = slices.Clone(w.st.Routers)
	}
	return res
}

func (w *upgrade) progress(now time.Time) RouterUpgradeProgress {
	p := RouterUpgradeProgress{Status: "running", Counts: w.counts(), InFlight: w.inFlight, Budget: w.req.Budget.String(),
		Mode: w.req.Mode}
	if w.st == nil {
		p.Step = "plan"
		return p
	}
	p.Parallelism, p.MaxInFlight, p.Run, p.GroupBy = w.st.Parallelism, w.st.MaxInFlight, w.st.Runs, w.st.GroupBy
	p.Groups, p.Routers = w.st.Groups, w.st.Routers
	p.Total = len(w.st.Routers)
	p.Done = p.Counts[UpgradeDone] + p.Counts[UpgradeFailed] + p.Counts[UpgradeSkipped]
	p.update()
	switch {
	case w.canceling:
		p.Status = "canceling"
	case w.st.Paused:
		p.Status, p.PauseReason = "paused", w.st.PauseReason
	case w.waitingWindow && w.inFlight == 0:
		p.Status = UpgradeWaitingWindow
	case w.draining && (!w.detach || w.toStart()):
		// Draining, or waiting for its routers in flight to be detachable before the next
		// run takes them over (a handing-over run with nothing left to start just finishes).
		p.Status = "draining"
	}
	p.Step = fmt.Sprintf("%s: %s", p.Status, countsText(p.Counts))
	// ETA: the mean time of the routers upgraded so far, over the routers left, Parallelism at
	// a time.
	var sum int64
	n := 0
	for _, r := range w.st.Routers {
		if r.State == UpgradeDone && r.Ended > r.Started && r.Started > 0 {
			sum += r.Ended - r.Started
			n++
		}
	}
	left := p.Total - p.Done
	if n > 0 && left > 0 && !w.st.Paused && !w.waitingWindow && w.st.Parallelism > 0 {
		mean := time.Duration(sum/int64(n)) * time.Millisecond
		waves := (left + w.st.Parallelism - 1) / w.st.Parallelism
		eta := now.Add(time.Duration(waves) * mean)
		p.ETA = &eta
	}
	return p
}
