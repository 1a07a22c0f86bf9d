package api

import (
	"context"
	"strings"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/converter"

	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// TestNetworkRestart starts restartNetwork against a real Temporal server with no worker: the
// run stays running, so the test sees what was started and the 409 of a second start.
func TestNetworkRestart(t *testing.T) {
	tsrv := testenv.TemporalT(t, false)
	tc, err := tsrv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	s := modelstest.SQLite(t)
	e := newEnv(t, s, Config{Temporal: tc, Namespace: tsrv.Namespace, TemporalUI: testUI})
	f := seed(t, s)
	ctx := context.Background()
	op := models.RoleOperator
	t.Cleanup(func() {
		var rows []models.Operation
		_ = s.DB.Where("run_id <> ''").Find(&rows).Error
		for _, r := range rows {
			_ = tc.TerminateWorkflow(context.Background(), r.WorkflowID, r.RunID, "test cleanup")
		}
	})

	// A VPC tier: its routers are the VPC's redundant pair.
	started := opOf(t, e.want(e.do("POST", "/networks/"+f.net2+"/restart?cleanup=true", op, nil), 202, "restart tier-web"))
	opID, _ := started["id"].(string)
	runID, _ := started["runId"].(string)
	wid := workflows.NetworkRestartWorkflowID(f.net2)
	if started["status"] != "running" || started["kind"] != "network.restart" || started["targettype"] != "network" ||
		started["targetid"] != f.net2 || started["zoneid"] != f.zone1 || started["workflowId"] != "network:"+f.net2 || runID == "" {
		t.Fatalf("started operation = %v", started)
	}
	desc, err := tc.DescribeWorkflowExecution(ctx, wid, runID)
	modelstest.Must(t, err, "describe")
	if got := desc.GetWorkflowExecutionInfo().GetType().GetName(); got != workflows.NetworkRestartWorkflowName {
		t.Errorf("workflow type %s", got)
	}
	for name, want := range map[string]string{"ZoneId": f.zone1, "OperationKind": "network.restart"} {
		if got := searchAttr(t, tc, wid, runID, name); got != want {
			t.Errorf("search attribute %s = %q, want %q", name, got, want)
		}
	}
	ev, err := tc.GetWorkflowHistory(ctx, wid, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT).Next()
	modelstest.Must(t, err, "first history event")
	var in workflows.NetworkRestartInput
	modelstest.Must(t, converter.GetDefaultDataConverter().FromPayloads(
		ev.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in), "decode input")
	if in != (workflows.NetworkRestartInput{OperationID: opID, NetworkID: f.net2, Cleanup: true}) {
		t.Errorf("workflow input = %+v", in)
	}

	// A second restart of the same network while the first runs: 409 naming it.
	r := e.do("POST", "/networks/"+f.net2+"/restart", op, nil)
	e.wantErr(r, 409, CodeConflict, "", "second restart")
	if other := opOf(t, r); other["id"] != opID {
		t.Errorf("409 names %v, want operation %s", other["id"], opID)
	}
	if _, msg, _ := r.errParts(); !strings.Contains(msg, "network tier-web already has a running operation") {
		t.Errorf("409 message %q", msg)
	}

	// Without cleanup the isolated network's router is rebooted.
	plain := opOf(t, e.want(e.do("POST", "/networks/"+f.net1+"/restart?cleanup=false", op, nil), 202, "restart net1"))
	ev, err = tc.GetWorkflowHistory(ctx, plain["workflowId"].(string), plain["runId"].(string), false,
		enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT).Next()
	modelstest.Must(t, err, "first history event")
	in = workflows.NetworkRestartInput{}
	modelstest.Must(t, converter.GetDefaultDataConverter().FromPayloads(
		ev.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in), "decode input")
	if in.Cleanup || in.NetworkID != f.net1 || in.OperationID != plain["id"] {
		t.Errorf("restart without cleanup started with %+v", in)
	}

	// Refusals: unknown network, a network whose only router is destroyed, a bad cleanup, a
	// read-only key. None leaves an operation behind.
	var before int64
	modelstest.Must(t, s.DB.Model(&models.Operation{}).Count(&before).Error, "count operations")
	e.wantErr(e.do("POST", "/networks/no-such-network/restart", op, nil), 404, CodeNotFound, "", "unknown network")
	r = e.do("POST", "/networks/"+f.net3+"/restart?cleanup=true", op, nil)
	e.wantErr(r, 409, CodeConflict, "", "no router")
	if _, msg, _ := r.errParts(); !strings.Contains(msg, "has no router") {
		t.Errorf("no-router message %q", msg)
	}
	r = e.do("POST", "/networks/"+f.net1+"/restart?cleanup=maybe", op, nil)
	e.wantErr(r, 400, CodeBadRequest, "cleanup", "bad cleanup")
	if _, msg, _ := r.errParts(); !strings.Contains(msg, `"maybe"`) {
		t.Errorf("bad cleanup message %q does not quote the value", msg)
	}
	e.wantErr(e.do("POST", "/networks/"+f.net1+"/restart?clean=true", op, nil), 400, CodeBadRequest, "clean", "misspelt parameter")
	e.wantErr(e.do("POST", "/networks/"+f.net1+"/restart", models.RoleReadOnly, nil), 403, CodeForbidden, "", "read-only key")
	var after int64
	modelstest.Must(t, s.DB.Model(&models.Operation{}).Count(&after).Error, "count operations")
	if after != before {
		t.Errorf("refused restarts left %d operation rows", after-before)
	}
}
