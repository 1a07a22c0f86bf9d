package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/worker"
	"github.com/sysvm/sysvm/workflows"
)

// TestUpgradeContinuesAsNewWithRoutersInFlight runs a zone's router upgrade (MariaDB, vcsim
// with 1.5 s clones, a worker process wired as `sysvm worker` is) with RoutersPerRun 2 and
// parallelism 3, so that its runs continue as new while routers are being recreated: each run hands its
// routers in flight over (their recreate child runs go on) and the next one waits for those
// children with AwaitRecreate and gates them. Afterwards the upgrade's chain has more than one
// run and at least one hand-over carried a router — and the worker is killed (-9) while a run
// waits for a carried router's child, the wait going on on the next worker; every router that required upgrade was
// upgraded exactly once — one completed lifecycle run on its workflow ID (for a carried
// router, the one the hand-over named), one VM for it on vcsim, the replacement, running, the
// old one gone — and the database has it at the current version, Running; the operation is
// completed with every router done. (Health checks are off in the zone: no simulated SSH
// routers here, so the gate requires Running only.)
func TestUpgradeContinuesAsNewWithRoutersInFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim and a worker")
	}
	begin := time.Now()
	s, _, dsn, zone, outdated := newUpgradeZone(t, nil)
	// A `sysvm worker` process's wiring (worker.BuildPlatform, worker.New: the health gate, and
	// the Temporal client AwaitRecreate reads the carried children's runs with).
	proc := startWorkerProcess(t, dsn, s.temporal.Address)

	op := s.startRouterUpgrade(workflows.RouterUpgradeRequest{Selection: activities.UpgradeSelection{ZoneID: zone.ID},
		Parallelism: 3, RoutersPerRun: 2, Mode: workflows.UpgradeModeRecreate})
	// Once a run waits for a carried router's child on the worker, kill -9 the worker: the
	// wait goes on on the next one (the activity's heartbeat timeout), as do the children.
	waitForAwaitStarted(t, s, op, 2*time.Minute)
	if err := proc.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_, _ = proc.Process.Wait()
	startWorkerProcess(t, dsn, s.temporal.Address)
	t.Logf("%s: a run awaited a carried router's recreate: worker killed and started again", time.Since(begin).Round(time.Millisecond))
	final := s.waitUpgrade(op, 5*time.Minute)
	t.Logf("%s: upgrade of %d routers ended %s", time.Since(begin).Round(time.Millisecond), len(outdated), final.Status)
	if final.Status != models.OpCompleted {
		t.Fatalf("upgrade ended %s: %s", final.Status, final.Error)
	}
	res := upgradeResult(t, final)
	if res.Counts[workflows.UpgradeDone] != len(outdated) || len(res.Routers) != len(outdated) {
		for _, r := range res.Routers {
			t.Logf("%s: %s (%s)", r.Name, r.State, r.Reason)
		}
		t.Fatalf("counts %v over %d routers, want all %d done", res.Counts, len(res.Routers), len(outdated))
	}

	chain := s.upgradeChain(op)
	runs, carried := len(chain), map[string]workflows.UpgradeCarried{}
	for _, run := range chain {
		for _, c := range run.carried {
			carried[run.next.State.Routers[c.Router].ID] = c
		}
	}
	if runs < 2 {
		t.Fatalf("the upgrade ran in %d run, want it continued as new (RoutersPerRun 2 of %d routers)", runs, len(outdated))
	}
	if len(carried) == 0 {
		t.Fatalf("%d runs, none carried a router in flight: every hand-over drained", runs)
	}

	lifecycleRuns := checkUpgradedOnce(t, s, outdated)
	for id, c := range carried {
		if c.Phase == workflows.CarriedRecreate && (c.WorkflowID != workflows.LifecycleWorkflowID(id) || c.RunID != lifecycleRuns[id]) {
			t.Errorf("router %s carried with recreate run %s/%s, its lifecycle run is %s", id, c.WorkflowID, c.RunID, lifecycleRuns[id])
		}
	}
	// Every run's history replays with today's code (the hand-over and the take-over are
	// deterministic).
	replayer := sdkworker.NewWorkflowReplayer()
	for _, w := range worker.Workflows() {
		replayer.RegisterWorkflowWithOptions(w.Fn, workflow.RegisterOptions{Name: w.Name})
	}
	for i, run := range chain {
		if err := replayer.ReplayWorkflowHistory(nil, s.history(op.WorkflowID, run.runID)); err != nil {
			t.Errorf("replay run %d: %v", i+1, err)
		}
	}
	t.Logf("upgraded %d routers in %d runs, %d routers carried across, in %s", len(outdated), runs, len(carried),
		time.Since(begin).Round(time.Millisecond))
}

// waitUpgrade waits for an upgrade operation to end; on time-out, or when it pauses (its
// failure budget spent), it fails with the current run's progress and pending activities.
func (s *stack) waitUpgrade(op operation, timeout time.Duration) operation {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var env struct {
			Operation struct {
				operation
				Progress *workflows.RouterUpgradeProgress `json:"progress"`
			} `json:"operation"`
		}
		if code := s.do(http.MethodGet, "/api/v1/router-upgrades/"+op.ID, nil, &env); code != http.StatusOK {
			s.t.Fatalf("GET the upgrade = %d", code)
		}
		if env.Operation.Status != models.OpRunning {
			return env.Operation.operation
		}
		if p := env.Operation.Progress; time.Now().After(deadline) || p != nil && p.Status == "paused" {
			if p := env.Operation.Progress; p != nil {
				for _, r := range p.Routers {
					s.t.Logf("%s: %s %s", r.Name, r.State, r.Reason)
				}
				s.t.Logf("run %d: %s, %d in flight", p.Run, p.Step, p.InFlight)
			}
			if desc, err := s.client.DescribeWorkflowExecution(context.Background(), op.WorkflowID, ""); err == nil {
				for _, pa := range desc.PendingActivities {
					s.t.Logf("pending %s: %s attempt %d: %s", pa.ActivityType.GetName(), pa.State, pa.Attempt, pa.LastFailure.GetMessage())
				}
			}
			s.t.Fatalf("upgrade %s still running (%s)", op.ID, time.Since(deadline.Add(-timeout)).Round(time.Millisecond))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startRouterUpgrade starts a router upgrade as the API does (the API takes no routersPerRun)
// and returns its operation.
func (s *stack) startRouterUpgrade(req workflows.RouterUpgradeRequest) operation {
	s.t.Helper()
	eng, err := operations.New(operations.Config{Store: s.store, Temporal: s.client, DataConverter: s.codec.DataConverter(), Logger: logger()})
	if err != nil {
		s.t.Fatal(err)
	}
	kind, id := req.Selection.Scope()
	started, err := eng.Start(context.Background(), operations.Spec{
		Target:     workflows.ZoneTarget(workflows.RouterUpgradeWorkflowID(kind, id), req.Selection.ZoneID, workflows.RouterUpgradeOperationKind),
		Workflow:   workflows.RouterUpgradeWorkflowName,
		TargetType: kind, TargetID: id, TargetName: kind + " " + id, RequestedBy: "e2e",
		Input: func(opID string) any { return workflows.RouterUpgradeInput{OperationID: opID, Request: req} },
	})
	if err != nil {
		s.t.Fatalf("start the router upgrade: %v", err)
	}
	return operation{ID: started.ID, Kind: started.Kind, WorkflowID: started.WorkflowID, RunID: started.RunID}
}

// upgradeRun is one closed run of an upgrade's chain.
type upgradeRun struct {
	runID string
	// next is the input the run continued as new with (zero for the last run), carried the
	// routers it handed over in flight.
	next    workflows.RouterUpgradeInput
	carried []workflows.UpgradeCarried
}

// upgradeChain follows an ended upgrade's runs from its first (op.RunID) by their close
// events, and logs what each hand-over carried.
func (s *stack) upgradeChain(op operation) []upgradeRun {
	s.t.Helper()
	ctx := context.Background()
	var chain []upgradeRun
	for runID := op.RunID; runID != ""; {
		hist := s.client.GetWorkflowHistory(ctx, op.WorkflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT)
		ev, err := hist.Next()
		if err == nil {
			err = s.codec.DecodeMessage(ctx, ev) // payloads are encrypted in history
		}
		if err != nil {
			s.t.Fatalf("close event of run %s: %v", runID, err)
		}
		run := upgradeRun{runID: runID}
		runID = ""
		if can := ev.GetWorkflowExecutionContinuedAsNewEventAttributes(); can != nil {
			if err := json.Unmarshal(can.Input.Payloads[0].Data, &run.next); err != nil {
				s.t.Fatal(err)
			}
			run.carried = run.next.State.Carried
			var names []string
			for _, c := range run.carried {
				names = append(names, run.next.State.Routers[c.Router].Name+" ("+c.Phase+")")
			}
			s.t.Logf("run %d continued as new carrying %v", len(chain)+1, names)
			runID = can.NewExecutionRunId
		} else if ev.GetEventType() != enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED {
			s.t.Fatalf("run %d closed with %s", len(chain)+1, ev.GetEventType())
		}
		chain = append(chain, run)
	}
	return chain
}

// waitForAwaitStarted waits until the upgrade's current run has an AwaitRecreate activity
// STARTED on a worker (it waits for a router the run before handed over).
func waitForAwaitStarted(t *testing.T, s *stack, op operation, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		desc, err := s.client.DescribeWorkflowExecution(dctx, op.WorkflowID, "")
		cancel()
		if err != nil {
			t.Fatalf("describe the upgrade: %v", err)
		}
		if startedActivity(desc, "AwaitRecreate", time.Time{}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no run awaited a carried router within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
