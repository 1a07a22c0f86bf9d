package api

import (
	"context"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// timeoutAfter is a Temporal client whose workflow starts answer context.DeadlineExceeded,
// as a client whose deadline ran out while the server answered would. With accept, the start
// reaches the server first (the server accepted it; the answer was lost); without, it never
// does.
type timeoutAfter struct {
	client.Client
	accept bool
}

func (c timeoutAfter) ExecuteWorkflow(ctx context.Context, opts client.StartWorkflowOptions, workflow any, args ...any) (client.WorkflowRun, error) {
	if c.accept {
		if _, err := c.Client.ExecuteWorkflow(ctx, opts, workflow, args...); err != nil {
			return nil, err
		}
	}
	return nil, context.DeadlineExceeded
}

// silentAfter is a Temporal client that lets a workflow start through and then stops
// answering: the start and every description fail as Unavailable.
type silentAfter struct{ client.Client }

func (c silentAfter) ExecuteWorkflow(ctx context.Context, opts client.StartWorkflowOptions, workflow any, args ...any) (client.WorkflowRun, error) {
	if _, err := c.Client.ExecuteWorkflow(ctx, opts, workflow, args...); err != nil {
		return nil, err
	}
	return nil, serviceerror.NewUnavailable("connection reset while reading the answer")
}

func (c silentAfter) DescribeWorkflowExecution(context.Context, string, string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	return nil, serviceerror.NewUnavailable("connection refused")
}

// TestOperationStartInDoubt: a start whose answer is lost keeps its journal row, and the row
// gets its run (or fails with the reason when the server never had the start); a row left
// without its run ID (the API died between the start and recording it) is found again by
// its workflow ID and can be canceled, or fails when its workflow never started.
func TestOperationStartInDoubt(t *testing.T) {
	tsrv := testenv.TemporalT(t, false)
	tc, err := tsrv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		f := seed(t, s)
		t.Cleanup(func() {
			for _, vm := range []string{f.r4, f.r5, f.r6, f.ssvm1, f.ssvm2, f.cpvm1} {
				_ = tc.TerminateWorkflow(context.Background(), workflows.LifecycleWorkflowID(vm), "", "test cleanup")
			}
		})
		op, ro := models.RoleOperator, models.RoleReadOnly
		current := func(vmID string) (string, enumspb.WorkflowExecutionStatus) {
			t.Helper()
			d, err := tc.DescribeWorkflowExecution(ctx, workflows.LifecycleWorkflowID(vmID), "")
			modelstest.Must(t, err, "describe %s", vmID)
			return d.GetWorkflowExecutionInfo().GetExecution().GetRunId(), d.GetWorkflowExecutionInfo().GetStatus()
		}

		// Each part is a subtest of its own, so each shows its own failure.
		t.Run("accepted-answer-lost", func(t *testing.T) {
			// 1. The server accepted the start but the client timed out: 202, the row keeps its
			// place and records the run Temporal has.
			lost := newEnv(t, s, Config{Temporal: timeoutAfter{Client: tc, accept: true}, Namespace: tsrv.Namespace})
			started := opOf(t, lost.want(lost.do("POST", "/routers/"+f.r4+"/reboot", op, nil), 202, "reboot with a lost answer"))
			runID, status := current(f.r4)
			if started["runId"] != runID || status != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING || started["status"] != "running" {
				t.Errorf("started = %v; Temporal's run %s is %s", started, runID, status)
			}
			var row models.Operation
			modelstest.Must(t, s.Get(ctx, &row, started["id"].(string)), "row of the accepted start")
			if row.RunID != runID || row.Status != models.OpRunning {
				t.Errorf("row of the accepted start = %+v, want running with run %s", row, runID)
			}

		})

		t.Run("never-arrived", func(t *testing.T) {
			// 2. The start never reached the server: 503, and the row says why it failed.
			never := newEnv(t, s, Config{Temporal: timeoutAfter{Client: tc}, Namespace: tsrv.Namespace})
			never.wantErr(never.do("POST", "/routers/"+f.r5+"/reboot", op, nil), 503, CodeUnavailable, "", "start that never arrived")
			var failed []models.Operation
			modelstest.Must(t, s.DB.Where("target_id = ?", f.r5).Find(&failed).Error, "rows of r-5")
			if len(failed) != 1 || failed[0].Status != models.OpFailed || !strings.Contains(failed[0].Error, "not started") ||
				failed[0].CompletedAt == nil {
				t.Errorf("rows of a start Temporal never had: %+v, want one failed not started", failed)
			}

		})

		e := newEnv(t, s, Config{Temporal: tc, Namespace: tsrv.Namespace})
		t.Run("no-answer", func(t *testing.T) {
			// The server took the start, then stopped answering: 503 naming the operation, whose
			// row stays running without a run ID until Temporal answers again.
			e.t = t
			silent := newEnv(t, s, Config{Temporal: silentAfter{tc}, Namespace: tsrv.Namespace})
			r := silent.do("POST", "/system-vms/"+f.ssvm2+"/reboot", op, nil)
			silent.wantErr(r, 503, CodeUnavailable, "", "start without an answer")
			var rows []models.Operation
			modelstest.Must(t, s.DB.Where("target_id = ?", f.ssvm2).Find(&rows).Error, "rows of s-3")
			if len(rows) != 1 || rows[0].Status != models.OpRunning || rows[0].RunID != "" {
				t.Fatalf("rows of an unanswered start: %+v, want one running without run ID", rows)
			}
			if _, msg, _ := r.errParts(); !strings.Contains(msg, rows[0].ID) || !strings.Contains(msg, "reconciled") {
				t.Errorf("503 of an unanswered start: %q, want it to name operation %s", msg, rows[0].ID)
			}
			// Temporal answers again: the GET finds the run.
			runID, _ := current(f.ssvm2)
			if g := opOf(t, e.want(e.do("GET", "/operations/"+rows[0].ID, ro, nil), 200, "get")); g["runId"] != runID || g["status"] != "running" {
				t.Errorf("unanswered start once Temporal answers = %v, want running with run %s", g, runID)
			}
		})

		t.Run("run-id-missing", func(t *testing.T) {
			// 3. The API died after the start, before recording the run ID: the row is found
			// again by its workflow ID (its memo names the operation), listed with it, canceled.
			e.t = t
			orphan := models.Operation{Kind: "systemvm.reboot", TargetType: TargetRouter, TargetID: f.r6, ZoneID: f.zone1,
				WorkflowID: workflows.LifecycleWorkflowID(f.r6), Status: models.OpRunning, RequestedBy: "operator-key"}
			modelstest.Must(t, s.DB.Create(&orphan).Error, "orphan row")
			target := workflows.RouterTarget(f.r6, f.zone1, "systemvm.reboot")
			run, err := tc.ExecuteWorkflow(ctx, target.StartOptions(map[string]any{operations.MemoOperationID: orphan.ID}),
				workflows.LifecycleWorkflowName, workflows.LifecycleInput{OperationID: orphan.ID, VMID: f.r6, Action: workflows.ActionReboot})
			modelstest.Must(t, err, "start the orphan's run")
			lst := e.want(e.do("GET", "/operations?status=running&targetid="+f.r6, ro, nil), 200, "list running")
			if its := items(t, lst); len(its) != 1 || its[0]["runId"] != run.GetRunID() {
				t.Errorf("list shows the orphan as %s, want run %s", lst.Raw, run.GetRunID())
			}
			c := opOf(t, e.want(e.do("POST", "/operations/"+orphan.ID+"/cancel", op, nil), 202, "cancel the orphan"))
			if c["status"] != "canceled" || c["runId"] != run.GetRunID() {
				t.Errorf("canceled orphan = %v", c)
			}
			if _, st := current(f.r6); st == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				t.Error("the orphan's run still runs after its cancel")
			}
			var row models.Operation
			modelstest.Must(t, s.Get(ctx, &row, orphan.ID), "orphan row")
			if row.Status != models.OpCanceled || row.RunID != run.GetRunID() {
				t.Errorf("orphan row after cancel = %+v", row)
			}

		})

		t.Run("never-started", func(t *testing.T) {
			e.t = t
			// 4. A row whose workflow never started: while young it is starting (cancel says
			// retry), once past the start grace it fails with the reason instead of starting
			// forever; so does one whose workflow ID is held by another operation's run.
			young := models.Operation{Kind: "systemvm.stop", TargetType: TargetSystemVM, TargetID: f.ssvm1, ZoneID: f.zone1,
				WorkflowID: workflows.LifecycleWorkflowID(f.ssvm1), Status: models.OpRunning}
			modelstest.Must(t, s.DB.Create(&young).Error, "young row")
			r := e.do("POST", "/operations/"+young.ID+"/cancel", op, nil)
			e.wantErr(r, 409, CodeConflict, "", "cancel a young row")
			if _, msg, _ := r.errParts(); !strings.Contains(msg, "still starting") {
				t.Errorf("cancel of a young row: %q", msg)
			}
			old := time.Now().Add(-2 * operations.DefaultStartGrace)
			modelstest.Must(t, s.DB.Model(&models.Operation{}).Where("id = ?", young.ID).Update("created_at", old).Error, "age row")
			g := opOf(t, e.want(e.do("GET", "/operations/"+young.ID, ro, nil), 200, "get a stranded row"))
			if g["status"] != "failed" || !strings.Contains(g["error"].(string), "never started") || g["completed"] == nil {
				t.Errorf("stranded row = %v", g)
			}
			e.wantErr(e.do("POST", "/operations/"+young.ID+"/cancel", op, nil), 409, CodeConflict, "", "cancel a failed row")

			other := opOf(t, e.want(e.do("POST", "/system-vms/"+f.cpvm1+"/reboot", op, nil), 202, "reboot v-2"))
			held := models.Operation{Kind: "systemvm.stop", TargetType: TargetSystemVM, TargetID: f.cpvm1, ZoneID: f.zone1,
				WorkflowID: workflows.LifecycleWorkflowID(f.cpvm1), Status: models.OpRunning}
			modelstest.Must(t, s.DB.Create(&held).Error, "held row")
			modelstest.Must(t, s.DB.Model(&models.Operation{}).Where("id = ?", held.ID).Update("created_at", old).Error, "age row")
			g = opOf(t, e.want(e.do("GET", "/operations/"+held.ID, ro, nil), 200, "get a row whose ID another run holds"))
			if g["status"] != "failed" || !strings.Contains(g["error"].(string), "another operation") {
				t.Errorf("row whose workflow ID another run holds = %v", g)
			}
			if g := opOf(t, e.want(e.do("GET", "/operations/"+other["id"].(string), ro, nil), 200, "get v-2")); g["status"] != "running" {
				t.Errorf("the run holding v-2's ID = %v, want running", g)
			}
		})
	})
}
