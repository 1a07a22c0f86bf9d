package testenv

import (
	"context"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
)

func TestTemporalDevServerHasSearchAttributes(t *testing.T) {
	srv := TemporalT(t, false)
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.OperatorService().ListSearchAttributes(context.Background(),
		&operatorservice.ListSearchAttributesRequest{Namespace: srv.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	for _, sa := range SearchAttributes {
		if _, ok := resp.CustomAttributes[sa]; !ok {
			t.Errorf("search attribute %s not registered: %v", sa, resp.CustomAttributes)
		}
	}
}

// TestPersistentTemporalSurvivesKill: a run started before a kill -9 of the server is there,
// still running, after Restart on the same address, and a client dialed before the kill
// reconnects by itself.
func TestPersistentTemporalSurvivesKill(t *testing.T) {
	srv := PersistentTemporalT(t)
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "persistent-kill", TaskQueue: "nobody-polls"}, "Nothing")
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Address
	srv.Kill()
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	if _, err := c.DescribeWorkflowExecution(dctx, run.GetID(), run.GetRunID()); err == nil {
		t.Fatal("describe answered with the server killed")
	}
	begin := time.Now()
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted in %s", time.Since(begin).Round(time.Millisecond))
	if srv.Address != addr {
		t.Fatalf("restarted on %s, want %s", srv.Address, addr)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	desc, err := c.DescribeWorkflowExecution(rctx, run.GetID(), run.GetRunID())
	if err != nil {
		t.Fatalf("describe after the restart: %v", err)
	}
	if st := desc.WorkflowExecutionInfo.Status; st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Errorf("run after the restart: %s, want running", st)
	}
	if err := srv.Restart(ctx); err == nil {
		t.Error("Restart of a running server should be refused")
	}
}
