package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	commandpb "go.temporal.io/api/command/v1"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

const testUI = "http://127.0.0.1:8233"

// opOf returns the "operation" member of a response.
func opOf(t *testing.T, r resp) map[string]any {
	t.Helper()
	op, found := r.JSON["operation"].(map[string]any)
	if !found {
		t.Fatalf("response without operation: %s", r.Raw)
	}
	return op
}

// handWorker speaks the worker side of Temporal's protocol by hand, one task at a time, so a
// test decides exactly how a run ends (no workflow code of the integrator's is involved).
type handWorker struct {
	t   *testing.T
	svc workflowservice.WorkflowServiceClient
	ns  string
}

func (w handWorker) poll(wantWorkflowID string) *workflowservice.PollWorkflowTaskQueueResponse {
	w.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		task, err := w.svc.PollWorkflowTaskQueue(ctx, &workflowservice.PollWorkflowTaskQueueRequest{
			Namespace: w.ns, TaskQueue: &taskqueuepb.TaskQueue{Name: workflows.TaskQueue, Kind: enumspb.TASK_QUEUE_KIND_NORMAL},
			Identity: "api-test-hand-worker"})
		cancel()
		if err != nil && ctx.Err() == nil {
			w.t.Fatalf("poll workflow task queue: %v", err)
		}
		if err != nil || len(task.GetTaskToken()) == 0 {
			continue
		}
		if got := task.GetWorkflowExecution().GetWorkflowId(); got != wantWorkflowID {
			w.t.Fatalf("polled a task of %s, want %s", got, wantWorkflowID)
		}
		return task
	}
	w.t.Fatalf("no workflow task for %s within 20s", wantWorkflowID)
	return nil
}

func (w handWorker) complete(task *workflowservice.PollWorkflowTaskQueueResponse, commands ...*commandpb.Command) {
	w.t.Helper()
	_, err := w.svc.RespondWorkflowTaskCompleted(context.Background(), &workflowservice.RespondWorkflowTaskCompletedRequest{
		Namespace: w.ns, TaskToken: task.TaskToken, Commands: commands, Identity: "api-test-hand-worker"})
	if err != nil {
		w.t.Fatalf("respond workflow task completed: %v", err)
	}
}

func payloads(t *testing.T, v any) *commonpb.Payloads {
	t.Helper()
	p, err := converter.GetDefaultDataConverter().ToPayloads(v)
	if err != nil {
		t.Fatalf("encode payload: %v", err)
	}
	return p
}

// searchAttr reads a keyword search attribute of a run.
func searchAttr(t *testing.T, tc client.Client, wid, rid, name string) string {
	t.Helper()
	d, err := tc.DescribeWorkflowExecution(context.Background(), wid, rid)
	if err != nil {
		t.Fatalf("describe %s: %v", wid, err)
	}
	p := d.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()[name]
	if p == nil {
		return ""
	}
	var v string
	if err := converter.GetDefaultDataConverter().FromPayload(p, &v); err != nil {
		t.Fatalf("decode search attribute %s: %v", name, err)
	}
	return v
}

func TestOperations(t *testing.T) {
	tsrv := testenv.TemporalT(t, false)
	tc, err := tsrv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	hw := handWorker{t: t, svc: tc.WorkflowService(), ns: tsrv.Namespace}

	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		hw.t = t
		e := newEnv(t, s, Config{Temporal: tc, Namespace: tsrv.Namespace, TemporalUI: testUI + "/"})
		f := seed(t, s)
		ctx := context.Background()
		op, ro := models.RoleOperator, models.RoleReadOnly
		// Leave no run behind for the next database's subtest.
		t.Cleanup(func() {
			var rows []models.Operation
			_ = s.DB.Where("run_id <> ''").Find(&rows).Error
			for _, r := range rows {
				_ = tc.TerminateWorkflow(context.Background(), r.WorkflowID, r.RunID, "test cleanup")
			}
		})

		// 1. A reboot starts a workflow that stays running: there is no worker.
		started := e.want(e.do("POST", "/routers/"+f.r4+"/reboot", op, nil), 202, "reboot r-4")
		first := opOf(t, started)
		opID, _ := first["id"].(string)
		runID, _ := first["runId"].(string)
		wid := workflows.LifecycleWorkflowID(f.r4)
		if first["status"] != "running" || first["kind"] != "systemvm.reboot" || first["targettype"] != "router" ||
			first["targetid"] != f.r4 || first["zoneid"] != f.zone1 || first["workflowId"] != wid || runID == "" ||
			first["requestedBy"] != "operator-key" {
			t.Fatalf("started operation = %v", first)
		}
		wantLink := testUI + "/namespaces/default/workflows/systemvm:" + f.r4 + "/" + runID + "/history"
		if links := first["links"].(map[string]any); links["temporalUi"] != wantLink || links["self"] != Prefix+"/operations/"+opID {
			t.Errorf("links = %v, want temporalUi %s", links, wantLink)
		}
		var row models.Operation
		modelstest.Must(t, s.Get(ctx, &row, opID), "operation row")
		if row.Status != models.OpRunning || row.RunID != runID || row.WorkflowID != wid || row.TargetType != TargetRouter {
			t.Errorf("operation row = %+v", row)
		}
		// What Temporal holds: the workflow type, queue, input and search attributes.
		desc, err := tc.DescribeWorkflowExecution(ctx, wid, runID)
		modelstest.Must(t, err, "describe")
		info := desc.GetWorkflowExecutionInfo()
		if info.GetType().GetName() != workflows.LifecycleWorkflowName || info.GetTaskQueue() != workflows.TaskQueue ||
			info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
			t.Errorf("workflow %s: type %s, queue %s, status %s", wid, info.GetType().GetName(), info.GetTaskQueue(), info.GetStatus())
		}
		for name, want := range map[string]string{"SystemVmId": f.r4, "RouterId": f.r4, "ZoneId": f.zone1, "OperationKind": "systemvm.reboot"} {
			if got := searchAttr(t, tc, wid, runID, name); got != want {
				t.Errorf("search attribute %s = %q, want %q", name, got, want)
			}
		}
		it := tc.GetWorkflowHistory(ctx, wid, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		ev, err := it.Next()
		modelstest.Must(t, err, "first history event")
		var in workflows.LifecycleInput
		modelstest.Must(t, converter.GetDefaultDataConverter().FromPayloads(
			ev.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in), "decode input")
		if in != (workflows.LifecycleInput{OperationID: opID, VMID: f.r4, Action: workflows.ActionReboot}) {
			t.Errorf("workflow input = %+v", in)
		}
		// The Web UI finds it by router and kind (visibility is eventually consistent).
		found := false
		for i := 0; i < 50 && !found; i++ {
			resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: tsrv.Namespace,
				Query: fmt.Sprintf("RouterId = '%s' AND OperationKind = 'systemvm.reboot' AND ExecutionStatus = 'Running'", f.r4)})
			modelstest.Must(t, err, "list workflows")
			found = len(resp.GetExecutions()) == 1 && resp.GetExecutions()[0].GetExecution().GetRunId() == runID
			if !found {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if !found {
			t.Error("the run is not found by RouterId and OperationKind in Temporal's visibility")
		}

		// 2. A second operation on the same VM: 409 naming the running one; no row left behind.
		r := e.do("POST", "/routers/"+f.r4+"/stop", op, map[string]any{"forced": true})
		e.wantErr(r, 409, CodeConflict, "", "second operation")
		_, msg, _ := r.errParts()
		if want := fmt.Sprintf("system VM r-4-VM already has a running operation %s (systemvm.reboot)", opID); msg != want {
			t.Errorf("409 message %q, want %q", msg, want)
		}
		if other := opOf(t, r); other["id"] != opID || other["runId"] != runID || other["status"] != "running" {
			t.Errorf("409 names operation %v, want %s", other, opID)
		}
		var n int64
		modelstest.Must(t, s.DB.Model(&models.Operation{}).Where("target_id = ?", f.r4).Count(&n).Error, "count")
		if n != 1 {
			t.Errorf("%d operation rows for r-4 after a refused start, want 1", n)
		}

		// 3. GET shows it running, with the link; without a worker there is no progress, and the
		// GET does not wait for one.
		t0 := time.Now()
		got := opOf(t, e.want(e.do("GET", "/operations/"+opID, ro, nil), 200, "get running"))
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("GET of a run no worker has picked up took %v", d)
		}
		if got["status"] != "running" || got["links"].(map[string]any)["temporalUi"] != wantLink || got["progress"] != nil {
			t.Errorf("GET running operation = %v", got)
		}
		lst := e.want(e.do("GET", "/operations?status=running&targetid="+f.r4+"&kind=systemvm.reboot", ro, nil), 200, "list running")
		if count(lst) != 1 || items(t, lst)[0]["id"] != opID {
			t.Errorf("running operations on r-4: %s", lst.Raw)
		}

		// 4. Refusals before Temporal is asked.
		e.wantErr(e.do("POST", "/routers/00000000-0000-0000-0000-000000000000/start", op, nil), 404, CodeNotFound, "", "unknown router")
		e.wantErr(e.do("POST", "/system-vms/no-such-vm/reboot", op, nil), 404, CodeNotFound, "", "unknown system VM")
		e.wantErr(e.do("POST", "/system-vms/"+f.r4+"/reboot", op, nil), 404, CodeNotFound, "", "router under /system-vms")
		e.wantErr(e.do("POST", "/routers/"+f.ssvm1+"/reboot", op, nil), 404, CodeNotFound, "", "SSVM under /routers")
		r = e.do("POST", "/routers/"+f.r7+"/start", op, nil)
		e.wantErr(r, 409, CodeConflict, "", "destroyed router")
		if _, msg, _ := r.errParts(); !strings.Contains(msg, "r-7-VM is destroyed") {
			t.Errorf("destroyed router message: %q", msg)
		}
		e.wantErr(e.do("POST", "/routers/"+f.r4+"/reboot", ro, nil), 403, CodeForbidden, "", "read-only reboot")
		e.wantErr(e.do("POST", "/routers/"+f.r5+"/reboot", op, map[string]any{"forced": true}), 400, CodeBadRequest, "forced", "forced reboot")
		e.wantErr(e.do("POST", "/routers/"+f.r5+"/reboot", op, `{"force": true}`), 400, CodeBadRequest, "force", "misspelt forced")
		e.wantErr(e.do("GET", "/operations/no-such-op", ro, nil), 404, CodeNotFound, "", "unknown operation")
		e.wantErr(e.do("POST", "/operations/no-such-op/cancel", op, nil), 404, CodeNotFound, "", "cancel unknown operation")
		modelstest.Must(t, s.DB.Model(&models.Operation{}).Count(&n).Error, "count")
		if n != 1 {
			t.Errorf("refused requests left %d operation rows, want 1", n)
		}

		// 5. Cancel: no worker ever picked the run up, so it ends at once, recorded canceled.
		c := opOf(t, e.want(e.do("POST", "/operations/"+opID+"/cancel", op, nil), 202, "cancel"))
		if c["status"] != "canceled" || c["completed"] == nil || !strings.Contains(c["error"].(string), "operator-key") {
			t.Errorf("canceled operation = %v", c)
		}
		desc, err = tc.DescribeWorkflowExecution(ctx, wid, runID)
		modelstest.Must(t, err, "describe canceled")
		if st := desc.GetWorkflowExecutionInfo().GetStatus(); st == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
			t.Error("the canceled run is still running in Temporal")
		}
		modelstest.Must(t, s.Get(ctx, &row, opID), "row after cancel")
		if row.Status != models.OpCanceled || row.CompletedAt == nil {
			t.Errorf("row after cancel = %+v", row)
		}
		r = e.do("POST", "/operations/"+opID+"/cancel", op, nil)
		e.wantErr(r, 409, CodeConflict, "", "cancel twice")
		if opOf(t, r)["status"] != "canceled" {
			t.Errorf("409 of a second cancel should show the operation: %s", r.Raw)
		}
		var cancelEvents int64
		modelstest.Must(t, s.DB.Model(&models.Event{}).Where("type = ? AND operation_id = ?", "OPERATION.CANCEL", opID).Count(&cancelEvents).Error, "events")
		if cancelEvents != 1 {
			t.Errorf("%d OPERATION.CANCEL events, want 1", cancelEvents)
		}

		// 6. GET reconciles rows whose run Temporal closed behind the API's back.
		ssvm := opOf(t, e.want(e.do("POST", "/system-vms/"+f.ssvm2+"/stop", op, map[string]any{"forced": true}), 202, "stop s-3"))
		ssvmID, ssvmRun := ssvm["id"].(string), ssvm["runId"].(string)
		if searchAttr(t, tc, ssvm["workflowId"].(string), ssvmRun, "RouterId") != "" {
			t.Error("an SSVM's run has a RouterId search attribute")
		}
		modelstest.Must(t, tc.TerminateWorkflow(ctx, ssvm["workflowId"].(string), ssvmRun, "operator ended it in the Web UI"), "terminate")
		g := opOf(t, e.want(e.do("GET", "/operations/"+ssvmID, ro, nil), 200, "get terminated"))
		if g["status"] != "failed" || g["error"] != "terminated in Temporal: operator ended it in the Web UI" || g["completed"] == nil {
			t.Errorf("terminated run reconciled as %v", g)
		}
		row = models.Operation{}
		modelstest.Must(t, s.Get(ctx, &row, ssvmID), "row after reconcile")
		if row.Status != models.OpFailed || !strings.Contains(row.Error, "operator ended it") {
			t.Errorf("reconciled row = %+v", row)
		}
		// A run our cancel ended but whose row was not updated (say, the API restarted between
		// the two) reconciles to canceled.
		cp := opOf(t, e.want(e.do("POST", "/system-vms/"+f.cpvm1+"/reboot", op, nil), 202, "reboot v-2"))
		modelstest.Must(t, tc.TerminateWorkflow(ctx, cp["workflowId"].(string), cp["runId"].(string), cancelReasonPrefix+" by API key someone"), "terminate")
		if g := opOf(t, e.want(e.do("GET", "/operations/"+cp["id"].(string), ro, nil), 200, "get")); g["status"] != "canceled" {
			t.Errorf("cancel-terminated run reconciled as %v", g)
		}

		// 7. The VM is free again: a new run under the same workflow ID. Run it by hand as a
		// worker would: its progress query is answered, then it completes with a result.
		next := opOf(t, e.want(e.do("POST", "/routers/"+f.r4+"/reboot", op, nil), 202, "reboot r-4 again"))
		nextID, nextRun := next["id"].(string), next["runId"].(string)
		if nextRun == runID || next["workflowId"] != wid {
			t.Fatalf("second reboot: run %s (first was %s), workflow %v", nextRun, runID, next["workflowId"])
		}
		hw.complete(hw.poll(wid)) // the first workflow task: no commands, the run waits
		var wg sync.WaitGroup
		var progressResp resp
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, Prefix+"/operations/"+nextID, nil)
			req.Header.Set("Authorization", "Bearer "+e.keys[ro])
			e.srv.Handler().ServeHTTP(rec, req)
			progressResp = resp{Status: rec.Code, Raw: rec.Body.Bytes(), Header: rec.Header()}
			_ = json.Unmarshal(progressResp.Raw, &progressResp.JSON)
		}()
		q := hw.poll(wid)
		if q.GetQuery().GetQueryType() != workflows.QueryProgress {
			t.Fatalf("expected the progress query, got task %v", q)
		}
		_, err = hw.svc.RespondQueryTaskCompleted(ctx, &workflowservice.RespondQueryTaskCompletedRequest{Namespace: hw.ns,
			TaskToken: q.TaskToken, CompletedType: enumspb.QUERY_RESULT_TYPE_ANSWERED,
			QueryResult: payloads(t, workflows.Progress{Step: "reboot", Done: 1, Total: 2, Percent: 50})})
		modelstest.Must(t, err, "answer query")
		wg.Wait()
		e.validate("GET", "/operations/"+nextID, nil, progressResp)
		pr := opOf(t, e.want(progressResp, 200, "get with progress"))
		if p, _ := pr["progress"].(map[string]any); p["step"] != "reboot" || p["percent"] != float64(50) || p["total"] != float64(2) {
			t.Errorf("progress = %v", pr["progress"])
		}
		// A signal gives the run a workflow task; the hand worker completes the run.
		modelstest.Must(t, tc.SignalWorkflow(ctx, wid, nextRun, "wake", nil), "signal")
		result := workflows.LifecycleResult{VMID: f.r4, Name: "r-4-VM", Action: "reboot", State: models.StateRunning, Host: f.host1}
		hw.complete(hw.poll(wid), &commandpb.Command{CommandType: enumspb.COMMAND_TYPE_COMPLETE_WORKFLOW_EXECUTION,
			Attributes: &commandpb.Command_CompleteWorkflowExecutionCommandAttributes{CompleteWorkflowExecutionCommandAttributes: &commandpb.CompleteWorkflowExecutionCommandAttributes{
				Result: payloads(t, result)}}})
		done := opOf(t, e.want(e.do("GET", "/operations/"+nextID, ro, nil), 200, "get completed"))
		res, _ := done["result"].(map[string]any)
		if done["status"] != "completed" || res["vmId"] != f.r4 || res["state"] != "Running" || res["host"] != f.host1 || done["completed"] == nil {
			t.Errorf("completed operation = %v", done)
		}
		e.wantErr(e.do("POST", "/operations/"+nextID+"/cancel", op, nil), 409, CodeConflict, "", "cancel a completed operation")

		// 8. A run that fails: its failure message is recorded.
		fr := opOf(t, e.want(e.do("POST", "/routers/"+f.r5+"/recreate", op, map[string]any{"forced": false}), 202, "recreate r-5"))
		fwid := fr["workflowId"].(string)
		if k := searchAttr(t, tc, fwid, fr["runId"].(string), "OperationKind"); k != "systemvm.recreate" {
			t.Errorf("OperationKind = %q", k)
		}
		hw.complete(hw.poll(fwid), &commandpb.Command{CommandType: enumspb.COMMAND_TYPE_FAIL_WORKFLOW_EXECUTION,
			Attributes: &commandpb.Command_FailWorkflowExecutionCommandAttributes{FailWorkflowExecutionCommandAttributes: &commandpb.FailWorkflowExecutionCommandAttributes{
				Failure: &failurepb.Failure{Message: "no host in cluster kvm-cluster has 512 MB free",
					FailureInfo: &failurepb.Failure_ApplicationFailureInfo{ApplicationFailureInfo: &failurepb.ApplicationFailureInfo{
						Type: "CapacityError", NonRetryable: true}}}}}})
		failed := opOf(t, e.want(e.do("GET", "/operations/"+fr["id"].(string), ro, nil), 200, "get failed"))
		if failed["status"] != "failed" || !strings.Contains(fmt.Sprint(failed["error"]), "no host in cluster kvm-cluster has 512 MB free") {
			t.Errorf("failed operation = %v", failed)
		}

		// 9. Concurrent starts on one VM: exactly one wins, every other answer names it.
		const racers = 6
		answers := make([]resp, racers)
		var race sync.WaitGroup
		for i := range racers {
			race.Add(1)
			go func() {
				defer race.Done()
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodPost, Prefix+"/system-vms/"+f.ssvm1+"/reboot", nil)
				req.Header.Set("Authorization", "Bearer "+e.keys[op])
				e.srv.Handler().ServeHTTP(rec, req)
				answers[i] = resp{Status: rec.Code, Raw: rec.Body.Bytes(), Header: rec.Header()}
				_ = json.Unmarshal(answers[i].Raw, &answers[i].JSON)
			}()
		}
		race.Wait()
		var winner string
		for _, a := range answers {
			if a.Status == 202 {
				if winner != "" {
					t.Errorf("two starts won: %s and %v", winner, opOf(t, a)["id"])
				}
				winner = opOf(t, a)["id"].(string)
			}
		}
		if winner == "" {
			t.Fatalf("no start won: %v", answers)
		}
		for _, a := range answers {
			e.validate("POST", "/system-vms/"+f.ssvm1+"/reboot", nil, a)
			if a.Status == 409 && opOf(t, a)["id"] != winner {
				t.Errorf("a loser names %v, not the winner %s: %s", opOf(t, a)["id"], winner, a.Raw)
			} else if a.Status != 409 && a.Status != 202 {
				t.Errorf("racer answered %d: %s", a.Status, a.Raw)
			}
		}
		modelstest.Must(t, s.DB.Model(&models.Operation{}).Where("target_id = ?", f.ssvm1).Count(&n).Error, "count")
		if n != 1 {
			t.Errorf("%d operation rows for s-1 after the race, want 1", n)
		}

		// The journal lists everything, newest first, with the filters.
		all := e.want(e.do("GET", "/operations", ro, nil), 200, "list all")
		if count(all) != 6 || items(t, all)[0]["id"] != winner {
			t.Errorf("operations journal: %s", all.Raw)
		}
		for q, want := range map[string]int{"?status=canceled": 2, "?status=failed": 2, "?status=completed": 1,
			"?zoneid=" + f.zone2: 1, "?targettype=router": 3, "?kind=systemvm.reboot&pagesize=1": 4, "?requestedby=operator-key": 6} {
			if got := count(e.want(e.do("GET", "/operations"+q, ro, nil), 200, q)); got != want {
				t.Errorf("GET /operations%s count = %d, want %d", q, got, want)
			}
		}
	})
}

// TestOperationsTemporalDown: with Temporal unreachable, reads keep working, healthz says
// degraded, and a start is a 503 that leaves no journal row.
func TestOperationsTemporalDown(t *testing.T) {
	s := modelstest.SQLite(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	// A lazy client to a port where nothing listens: every call fails.
	tc, err := client.NewLazyClient(client.Options{HostPort: fmt.Sprintf("127.0.0.1:%d", port),
		ConnectionOptions: client.ConnectionOptions{}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	e := newEnv(t, s, Config{Temporal: tc, TemporalTimeout: time.Second})
	f := seed(t, s)
	r := e.do("POST", "/routers/"+f.r4+"/reboot", models.RoleOperator, nil)
	e.wantErr(r, 503, CodeUnavailable, "", "start with Temporal down")
	var n int64
	modelstest.Must(t, s.DB.Model(&models.Operation{}).Count(&n).Error, "count")
	if n != 0 {
		t.Errorf("a start Temporal never accepted left %d operation rows", n)
	}
	h := e.want(e.do("GET", "/healthz", "", nil), 200, "healthz with Temporal down").JSON
	if h["status"] != "degraded" || !strings.HasPrefix(fmt.Sprint(h["temporal"]), "unavailable") {
		t.Errorf("healthz = %v", h)
	}
	e.want(e.do("GET", "/routers", models.RoleReadOnly, nil), 200, "reads keep working")
}
