package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// TestAwaitRecreateOnTemporal runs Activities.AwaitRecreate against runs on a Temporal dev
// server, as a run that took over a router waits for the recreate child another run started:
// a run that completes gives its result as recorded (a LifecycleResult), also when it ends
// while AwaitRecreate waits; one that fails gives a non-retryable RecreateFailed error with its
// failure's message, one terminated while waited for gives "terminated" (what a parent reads
// of such a child), a run ID that does not exist NotFound.
func TestAwaitRecreateOnTemporal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal")
	}
	srv := testenv.TemporalT(t, false)
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	const queue = "await-recreate-probe"
	w := sdkworker.New(c, queue, sdkworker.Options{})
	// The probe stands in for a recreate: it ends Running, fails as a recreate step does, or
	// waits for a signal (to be terminated meanwhile).
	w.RegisterWorkflowWithOptions(func(ctx workflow.Context, mode string) (workflows.LifecycleResult, error) {
		switch mode {
		case "fail":
			return workflows.LifecycleResult{}, temporal.NewNonRetryableApplicationError("clone of r-1: no capacity on host h1",
				"RecreateStepFailed", nil)
		case "wait":
			workflow.GetSignalChannel(ctx, "go").Receive(ctx, nil)
		}
		return workflows.LifecycleResult{VMID: "vm-1", Name: "r-1", Action: string(workflows.ActionRecreate), State: models.StateRunning,
			InstanceName: "r-1-VM-2"}, nil
	}, workflow.RegisterOptions{Name: "AwaitRecreateProbe"})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	acts := &activities.Activities{Temporal: c}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := func(t *testing.T, mode string) client.WorkflowRun {
		t.Helper()
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "systemvm:probe-" + mode + "-" + t.Name(), TaskQueue: queue},
			"AwaitRecreateProbe", mode)
		if err != nil {
			t.Fatal(err)
		}
		return run
	}
	await := func(run client.WorkflowRun) (activities.AwaitRecreateResult, error) {
		return acts.AwaitRecreate(ctx, activities.AwaitRecreateInput{WorkflowID: run.GetID(), RunID: run.GetRunID(), RouterID: "vm-1"})
	}
	wantFailure := func(t *testing.T, err error, typ, msg string) {
		t.Helper()
		var app *temporal.ApplicationError
		if !errors.As(err, &app) || app.Type() != typ || app.Message() != msg || !app.NonRetryable() {
			t.Fatalf("error %v, want a non-retryable %s %q", err, typ, msg)
		}
	}

	t.Run("completed", func(t *testing.T) {
		for _, mode := range []string{"ok", "wait"} {
			run := start(t, mode)
			if mode == "wait" {
				time.AfterFunc(500*time.Millisecond, func() { _ = c.SignalWorkflow(ctx, run.GetID(), run.GetRunID(), "go", nil) })
			}
			res, err := await(run)
			if err != nil {
				t.Fatalf("%s: %v", mode, err)
			}
			var out workflows.LifecycleResult
			if err := json.Unmarshal(res.Result, &out); err != nil || out.State != models.StateRunning || out.InstanceName != "r-1-VM-2" {
				t.Fatalf("%s: result %s (%v)", mode, res.Result, err)
			}
		}
	})
	t.Run("failed", func(t *testing.T) {
		_, err := await(start(t, "fail"))
		wantFailure(t, err, activities.ErrTypeRecreateFailed, "clone of r-1: no capacity on host h1")
	})
	t.Run("terminated", func(t *testing.T) {
		run := start(t, "wait")
		time.AfterFunc(500*time.Millisecond, func() { _ = c.TerminateWorkflow(ctx, run.GetID(), run.GetRunID(), "operator") })
		_, err := await(run)
		wantFailure(t, err, activities.ErrTypeRecreateFailed, "terminated")
	})
	t.Run("not found", func(t *testing.T) {
		run := start(t, "ok")
		_, err := acts.AwaitRecreate(ctx, activities.AwaitRecreateInput{WorkflowID: run.GetID(), RunID: "0190c0de-0000-7000-8000-000000000000",
			RouterID: "vm-1"})
		var app *temporal.ApplicationError
		if !errors.As(err, &app) || app.Type() != activities.ErrTypeNotFound {
			t.Fatalf("error %v, want NotFound", err)
		}
	})
}
