package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/workflows"
)

// Breakdown is where the routers of one upgrade spent their time, as means per router read
// from the Temporal histories: every gap between two consecutive events of a router's recreate
// run (SystemVMLifecycle) is attributed to the later event (an activity's start: its wait in
// the task queue; its completion: its run; a workflow task's start and completion: its wait and
// its processing, which includes the local activities it ran: the recreate's short steps from
// workflows.IsLocalRecreateStep), so the parts add up to the recreate run's time. The
// upgrade's own history gives the rest of a router's time: its child's start, the health gate,
// the upgrade's workflow tasks.
type Breakdown struct {
	Routers int `json:"routers"`
	// Total, Recreate and Gate are from the upgrade's state: router start to end, start to the
	// gate's start, the gate's start to the end.
	Total    time.Duration `json:"total"`
	Recreate time.Duration `json:"recreate"`
	Gate     time.Duration `json:"gate"`
	// ChildRun is the recreate run's first to last event; Parts splits it (see Breakdown).
	ChildRun time.Duration            `json:"childRun"`
	Parts    map[string]time.Duration `json:"parts"`
	// Retries counts activity attempts past the first in the recreate runs, over all routers.
	Retries int `json:"retries"`
	// GateQueue and GateRun are the health gate activity's wait in the task queue and run (in
	// the upgrade's history); ChildStartWait is from the child's initiation to its start.
	GateQueue      time.Duration `json:"gateQueue"`
	GateRun        time.Duration `json:"gateRun"`
	ChildStartWait time.Duration `json:"childStartWait"`
	// UpgradeWFTs counts the upgrade's workflow tasks; UpgradeWFTQueue and UpgradeWFTRun are
	// their mean wait and processing, UpgradeWFTRunMax the longest processing.
	UpgradeWFTs      int           `json:"upgradeWfts"`
	UpgradeWFTQueue  time.Duration `json:"upgradeWftQueue"`
	UpgradeWFTRun    time.Duration `json:"upgradeWftRun"`
	UpgradeWFTRunMax time.Duration `json:"upgradeWftRunMax"`
}

// breakdown reads the histories of an upgrade (its continue-as-new chain, from the latest run
// back) and of its done routers' recreate runs.
func breakdown(ctx context.Context, tc client.Client, upgradeID string, out workflows.RouterUpgradeResult) (Breakdown, error) {
	b := Breakdown{Parts: map[string]time.Duration{}}
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, r := range out.Routers {
		if r.State != workflows.UpgradeDone {
			continue
		}
		b.Routers++
		b.Total += time.Duration(r.Ended-r.Started) * time.Millisecond
		b.Recreate += time.Duration(r.GateStarted-r.Started) * time.Millisecond
		b.Gate += time.Duration(r.Ended-r.GateStarted) * time.Millisecond
		id := workflows.RouterTarget(r.ID, r.ZoneID, workflows.RouterUpgradeOperationKind).WorkflowID
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			run, parts, retries, err := childParts(ctx, tc, id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				firstErr = cmp.Or(firstErr, err)
				return
			}
			b.ChildRun += run
			b.Retries += retries
			for k, v := range parts {
				b.Parts[k] += v
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return b, firstErr
	}
	var n upgradeCounts
	runID := ""
	for {
		prev, err := upgradeParts(ctx, tc, upgradeID, runID, &b, &n)
		if err != nil {
			return b, err
		}
		if prev == "" {
			break
		}
		runID = prev
	}
	if b.Routers > 0 {
		r := time.Duration(b.Routers)
		b.Total, b.Recreate, b.Gate, b.ChildRun = b.Total/r, b.Recreate/r, b.Gate/r, b.ChildRun/r
		for k := range b.Parts {
			b.Parts[k] /= r
		}
	}
	if n.gates > 0 {
		b.GateQueue, b.GateRun = b.GateQueue/time.Duration(n.gates), b.GateRun/time.Duration(n.gates)
	}
	if n.children > 0 {
		b.ChildStartWait /= time.Duration(n.children)
	}
	if b.UpgradeWFTs > 0 {
		b.UpgradeWFTQueue /= time.Duration(b.UpgradeWFTs)
	}
	if n.wftRuns > 0 {
		b.UpgradeWFTRun /= time.Duration(n.wftRuns)
	}
	return b, nil
}

// upgradeCounts are what the upgrade's sums are divided by for their means (the workflow
// tasks started are b.UpgradeWFTs).
type upgradeCounts struct{ gates, children, wftRuns int }

// childParts splits one recreate run's time (see Breakdown).
func childParts(ctx context.Context, tc client.Client, workflowID string) (time.Duration, map[string]time.Duration, int, error) {
	parts := map[string]time.Duration{}
	names := map[int64]string{}
	retries, recreateSteps := 0, 0
	var events []*historypb.HistoryEvent
	activitySteps := 0
	it := tc.GetWorkflowHistory(ctx, workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return 0, nil, 0, fmt.Errorf("history of %s: %w", workflowID, err)
		}
		events = append(events, e)
		if e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == "RecreateStep" {
			activitySteps++
		}
	}
	// The RecreateStep activities are the steps in order: all of them in runs before the
	// short steps ran as local activities (whose time is in their workflow task's run), else
	// the others (the clone and the boot).
	steps := activities.RecreateTakeoverSteps()
	if activitySteps < len(steps) {
		steps = slices.DeleteFunc(steps, workflows.IsLocalRecreateStep)
	}
	var first, last time.Time
	for _, e := range events {
		t := e.GetEventTime().AsTime()
		if first.IsZero() {
			first = t
		}
		gap := t.Sub(last)
		if last.IsZero() {
			gap = 0
		}
		last = t
		parts[eventPart(e, names, &retries, &recreateSteps, steps)] += gap
	}
	return last.Sub(first), parts, retries, nil
}

// eventPart names what the gap before e was spent on.
func eventPart(e *historypb.HistoryEvent, names map[int64]string, retries, recreateSteps *int, steps []activities.Step) string {
	switch e.GetEventType() {
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
		name := e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName()
		if name == "RecreateStep" && *recreateSteps < len(steps) {
			name += " " + string(steps[*recreateSteps])
			*recreateSteps++
		}
		names[e.GetEventId()] = name
		return "activity scheduled"
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
		*retries += int(e.GetActivityTaskStartedEventAttributes().GetAttempt()) - 1
		return "activity task queue wait"
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
		return "activity run: " + names[e.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()]
	case enumspb.EVENT_TYPE_WORKFLOW_TASK_STARTED:
		return "workflow task queue wait"
	case enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
		return "workflow task run"
	}
	return "other: " + strings.ToLower(strings.TrimPrefix(e.GetEventType().String(), "EVENT_TYPE_"))
}

// upgradeParts adds one run of the upgrade's history to b and returns the run it continued.
func upgradeParts(ctx context.Context, tc client.Client, workflowID, runID string, b *Breakdown, n *upgradeCounts) (string, error) {
	scheduled := map[int64]time.Time{}
	gateIDs := map[int64]bool{}
	prev := ""
	it := tc.GetWorkflowHistory(ctx, workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return "", fmt.Errorf("history of %s: %w", workflowID, err)
		}
		t := e.GetEventTime().AsTime()
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
			prev = e.GetWorkflowExecutionStartedEventAttributes().GetContinuedExecutionRunId()
		case enumspb.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, enumspb.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
			scheduled[e.GetEventId()] = t
		case enumspb.EVENT_TYPE_WORKFLOW_TASK_STARTED:
			b.UpgradeWFTs++
			b.UpgradeWFTQueue += t.Sub(scheduled[e.GetWorkflowTaskStartedEventAttributes().GetScheduledEventId()])
			scheduled[e.GetEventId()] = t
		case enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
			d := t.Sub(scheduled[e.GetWorkflowTaskCompletedEventAttributes().GetStartedEventId()])
			n.wftRuns++
			b.UpgradeWFTRun += d
			b.UpgradeWFTRunMax = max(b.UpgradeWFTRunMax, d)
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			if e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == "UpgradeHealthGate" {
				gateIDs[e.GetEventId()] = true
				scheduled[e.GetEventId()] = t
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			if s := e.GetActivityTaskStartedEventAttributes().GetScheduledEventId(); gateIDs[s] {
				b.GateQueue += t.Sub(scheduled[s])
				scheduled[e.GetEventId()] = t
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			a := e.GetActivityTaskCompletedEventAttributes()
			if gateIDs[a.GetScheduledEventId()] {
				n.gates++
				b.GateRun += t.Sub(scheduled[a.GetStartedEventId()])
			}
		case enumspb.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
			if s, ok := scheduled[e.GetChildWorkflowExecutionStartedEventAttributes().GetInitiatedEventId()]; ok {
				n.children++
				b.ChildStartWait += t.Sub(s)
			}
		}
	}
	return prev, nil
}

// Print writes the breakdown as text, the recreate run's parts longest first.
func (b Breakdown) Print(w io.Writer, title string) {
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	fmt.Fprintf(w, "%s: %d routers, mean per router: total %s = recreate %s + gate %s\n", title, b.Routers, ms(b.Total), ms(b.Recreate), ms(b.Gate))
	fmt.Fprintf(w, "  recreate run (child) %s; child start wait %s; %d activity retries\n", ms(b.ChildRun), ms(b.ChildStartWait), b.Retries)
	keys := make([]string, 0, len(b.Parts))
	for k := range b.Parts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y string) int {
		if b.Parts[x] != b.Parts[y] {
			return int(b.Parts[y] - b.Parts[x])
		}
		return strings.Compare(x, y)
	})
	for _, k := range keys {
		fmt.Fprintf(w, "    %-45s %s\n", k, ms(b.Parts[k]))
	}
	fmt.Fprintf(w, "  gate activity: queue %s, run %s\n", ms(b.GateQueue), ms(b.GateRun))
	fmt.Fprintf(w, "  upgrade workflow tasks: %d, mean queue %s, mean run %s, longest run %s\n",
		b.UpgradeWFTs, ms(b.UpgradeWFTQueue), ms(b.UpgradeWFTRun), ms(b.UpgradeWFTRunMax))
}
