package operations_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/converter"

	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// quiet logs warnings and errors to the test's log.
func quiet(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func rebootSpec(vmID, zoneID, by string) operations.Spec {
	return operations.Spec{
		Target:   workflows.RouterTarget(vmID, zoneID, workflows.ActionReboot.OperationKind()),
		Workflow: workflows.LifecycleWorkflowName, TargetType: operations.TargetRouter, TargetID: vmID, TargetName: "r-" + vmID,
		Input: func(opID string) any {
			return workflows.LifecycleInput{OperationID: opID, VMID: vmID, Action: workflows.ActionReboot}
		},
		RequestedBy: by,
	}
}

// TestEngine drives the engine without HTTP, as the schedules and the CloudStack-compatible
// API do: start, a refused second start naming the first, list, get, cancel of a run no
// worker picked up, and the typed errors.
func TestEngine(t *testing.T) {
	if _, err := operations.New(operations.Config{}); err == nil {
		t.Error("New without a store succeeded")
	}
	tsrv := testenv.TemporalT(t, false)
	tc, err := tsrv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		vm, zone := models.NewID(), models.NewID()
		t.Cleanup(func() {
			_ = tc.TerminateWorkflow(context.Background(), workflows.LifecycleWorkflowID(vm), "", "test cleanup")
		})
		offline, err := operations.New(operations.Config{Store: s, Logger: quiet(t)})
		modelstest.Must(t, err, "engine without Temporal")
		if _, err := offline.Start(ctx, rebootSpec(vm, zone, "a")); !errors.Is(err, operations.ErrUnavailable) {
			t.Errorf("start without Temporal: %v, want ErrUnavailable", err)
		}
		e, err := operations.New(operations.Config{Store: s, Temporal: tc, Namespace: tsrv.Namespace, Logger: quiet(t)})
		modelstest.Must(t, err, "engine")
		bad := rebootSpec(vm, zone, "a")
		bad.Workflow = ""
		if _, err := e.Start(ctx, bad); err == nil || !strings.Contains(err.Error(), "required") {
			t.Errorf("start without a workflow: %v", err)
		}

		first, err := e.Start(ctx, rebootSpec(vm, zone, "alice"))
		modelstest.Must(t, err, "start")
		if first.ID == "" || first.RunID == "" || first.Status != models.OpRunning || first.ZoneID != zone ||
			first.Kind != "systemvm.reboot" || first.WorkflowID != workflows.LifecycleWorkflowID(vm) || first.RequestedBy != "alice" {
			t.Fatalf("started = %+v", first.Operation)
		}
		d, err := tc.DescribeWorkflowExecution(ctx, first.WorkflowID, "")
		modelstest.Must(t, err, "describe")
		if d.GetWorkflowExecutionInfo().GetExecution().GetRunId() != first.RunID {
			t.Errorf("Temporal's run %s, engine's %s", d.GetWorkflowExecutionInfo().GetExecution().GetRunId(), first.RunID)
		}

		_, err = e.Start(ctx, rebootSpec(vm, zone, "bob"))
		var oe *operations.Error
		if !errors.Is(err, operations.ErrAlreadyRunning) || !errors.As(err, &oe) || oe.Operation == nil || oe.Operation.ID != first.ID {
			t.Errorf("second start: %v, want ErrAlreadyRunning naming %s", err, first.ID)
		}
		ops, n, err := e.List(ctx, operations.ListQuery{TargetID: vm})
		modelstest.Must(t, err, "list")
		if n != 1 || len(ops) != 1 || ops[0].ID != first.ID {
			t.Errorf("list after a refused start: %d %+v, want only %s", n, ops, first.ID)
		}
		if _, n, _ := e.List(ctx, operations.ListQuery{TargetID: vm, Status: models.OpCompleted}); n != 0 {
			t.Errorf("%d completed operations, want 0", n)
		}

		got, err := e.Get(ctx, first.ID)
		modelstest.Must(t, err, "get")
		if got.Status != models.OpRunning || got.Progress != nil || got.CancelRequested {
			t.Errorf("get = %+v", got)
		}
		if _, err := e.Get(ctx, "no-such-op"); !errors.Is(err, operations.ErrNotFound) {
			t.Errorf("get unknown: %v, want ErrNotFound", err)
		}

		c, err := e.Cancel(ctx, first.ID, "alice")
		modelstest.Must(t, err, "cancel")
		if c.Status != models.OpCanceled || c.CompletedAt == nil || !strings.HasPrefix(c.Error, operations.CancelReasonPrefix) {
			t.Errorf("canceled = %+v", c.Operation)
		}
		d, err = tc.DescribeWorkflowExecution(ctx, first.WorkflowID, first.RunID)
		modelstest.Must(t, err, "describe canceled")
		if d.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED {
			t.Errorf("canceled run is %s, want terminated (no worker picked it up)", d.GetWorkflowExecutionInfo().GetStatus())
		}
		_, err = e.Cancel(ctx, first.ID, "alice")
		if !errors.Is(err, operations.ErrNotRunning) || !errors.As(err, &oe) || oe.Operation.Status != models.OpCanceled {
			t.Errorf("second cancel: %v, want ErrNotRunning showing canceled", err)
		}
		var events int64
		modelstest.Must(t, s.DB.Model(&models.Event{}).Where("type = ? AND operation_id = ?", operations.EventCancel, first.ID).
			Count(&events).Error, "events")
		if events != 1 {
			t.Errorf("%d cancel events, want 1", events)
		}

		// The target is free again: the next start gets a new run under the same ID.
		next, err := e.Start(ctx, rebootSpec(vm, zone, "bob"))
		modelstest.Must(t, err, "start after cancel")
		if next.RunID == first.RunID || next.WorkflowID != first.WorkflowID {
			t.Errorf("next run %s of %s, first %s", next.RunID, next.WorkflowID, first.RunID)
		}
	})
}

// TestEngineMemoUnreadable: with a memo the engine cannot decode (another data converter than
// the client's), a row without its run ID is matched by start time: a run that started after
// the row is the row's; one that started before it is another operation's.
func TestEngineMemoUnreadable(t *testing.T) {
	tsrv := testenv.TemporalT(t, false)
	tc, err := tsrv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	s := modelstest.SQLite(t)
	ctx := context.Background()
	// Proto JSON only: the client's JSON memo does not decode.
	e, err := operations.New(operations.Config{Store: s, Temporal: tc, Namespace: tsrv.Namespace, StartGrace: time.Millisecond, Logger: quiet(t),
		DataConverter: converter.NewCompositeDataConverter(converter.NewProtoJSONPayloadConverter())})
	modelstest.Must(t, err, "engine")
	zone := models.NewID()
	before, after := models.NewID(), models.NewID()
	t.Cleanup(func() {
		for _, vm := range []string{before, after} {
			_ = tc.TerminateWorkflow(context.Background(), workflows.LifecycleWorkflowID(vm), "", "test cleanup")
		}
	})
	start := func(vm string) string {
		t.Helper()
		target := workflows.RouterTarget(vm, zone, "systemvm.reboot")
		run, err := tc.ExecuteWorkflow(ctx, target.StartOptions(map[string]any{operations.MemoOperationID: "elsewhere"}),
			workflows.LifecycleWorkflowName, workflows.LifecycleInput{VMID: vm, Action: workflows.ActionReboot})
		modelstest.Must(t, err, "start %s", vm)
		return run.GetRunID()
	}
	row := func(vm string, created time.Time) models.Operation {
		t.Helper()
		op := models.Operation{Kind: "systemvm.reboot", TargetType: operations.TargetRouter, TargetID: vm, ZoneID: zone,
			WorkflowID: workflows.LifecycleWorkflowID(vm), Status: models.OpRunning}
		op.CreatedAt = created
		modelstest.Must(t, s.DB.Create(&op).Error, "row of %s", vm)
		return op
	}
	oldRun := start(before)
	time.Sleep(6 * time.Second) // past the 5 s of clock skew the match allows
	stale := row(before, time.Now())
	fresh := row(after, time.Now().Add(-time.Second))
	newRun := start(after)

	if got := e.Reconcile(ctx, fresh); got.RunID != newRun || got.Status != models.OpRunning {
		t.Errorf("row written before its run = %+v, want running with run %s", got.Operation, newRun)
	}
	if got := e.Reconcile(ctx, stale); got.RunID == oldRun || got.Status != models.OpFailed || !strings.Contains(got.Error, "never started") {
		t.Errorf("row written after the current run started = %+v, want failed never started", got.Operation)
	}
}

// TestEngineFindsClosedRunByMemo: a row without its run ID whose run has closed and whose
// workflow ID now holds another operation's run is matched through visibility by its memo,
// and gets the end of its own run (not "never started").
func TestEngineFindsClosedRunByMemo(t *testing.T) {
	tsrv := testenv.TemporalT(t, false)
	tc, err := tsrv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	s := modelstest.SQLite(t)
	ctx := context.Background()
	e, err := operations.New(operations.Config{Store: s, Temporal: tc, Namespace: tsrv.Namespace, Logger: quiet(t)})
	modelstest.Must(t, err, "engine")
	vm, zone := models.NewID(), models.NewID()
	t.Cleanup(func() {
		_ = tc.TerminateWorkflow(context.Background(), workflows.LifecycleWorkflowID(vm), "", "test cleanup")
	})
	row := models.Operation{Kind: "systemvm.reboot", TargetType: operations.TargetRouter, TargetID: vm, ZoneID: zone,
		WorkflowID: workflows.LifecycleWorkflowID(vm), Status: models.OpRunning}
	row.CreatedAt = time.Now().Add(-2 * operations.DefaultStartGrace)
	modelstest.Must(t, s.DB.Create(&row).Error, "row")
	target := workflows.RouterTarget(vm, zone, "systemvm.reboot")
	start := func(opID string) string {
		t.Helper()
		run, err := tc.ExecuteWorkflow(ctx, target.StartOptions(map[string]any{operations.MemoOperationID: opID}),
			workflows.LifecycleWorkflowName, workflows.LifecycleInput{OperationID: opID, VMID: vm, Action: workflows.ActionReboot})
		modelstest.Must(t, err, "start run of %s", opID)
		return run.GetRunID()
	}
	ours := start(row.ID)
	modelstest.Must(t, tc.TerminateWorkflow(ctx, row.WorkflowID, ours, "ended by hand"), "terminate")
	start(models.NewID())
	// Visibility lags a little behind the runs (a row this old has runs older than the lag):
	// wait until it shows both, then reconcile once.
	for i := 0; ; i++ {
		resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: tsrv.Namespace,
			Query: "WorkflowId = '" + row.WorkflowID + "'"})
		modelstest.Must(t, err, "list runs")
		if len(resp.GetExecutions()) == 2 {
			break
		}
		if i == 50 {
			t.Fatalf("visibility shows %d runs of %s after 5 s, want 2", len(resp.GetExecutions()), row.WorkflowID)
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := e.Reconcile(ctx, row)
	if got.RunID != ours || got.Status != models.OpFailed || got.Error != "terminated in Temporal: ended by hand" {
		t.Errorf("row whose closed run holds no longer its workflow ID = %+v, want run %s failed as terminated", got.Operation, ours)
	}
}
