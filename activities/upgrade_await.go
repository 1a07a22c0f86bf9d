package activities

// A router upgrade that continues as new without waiting for its routers in flight hands each
// router whose recreate child has started to the next run, which cannot receive that child's
// result (Temporal sends it to the run that started the child, closed by then): it waits for
// the child run here instead, through the worker's Temporal client.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/temporal"
)

// ErrTypeRecreateFailed: the recreate run AwaitRecreate waited for ended without a result
// (failed, terminated, timed out or canceled); the message is why, as the run that started it
// would have read it.
const ErrTypeRecreateFailed = "RecreateFailed"

// AwaitRecreateInput names the recreate child run of one router.
type AwaitRecreateInput struct {
	WorkflowID string `json:"workflowId"`
	RunID      string `json:"runId"`
	// RouterID is the router it recreates (for logs and the activity's summary).
	RouterID string `json:"routerId,omitempty"`
}

// AwaitRecreateResult is what the recreate run ended with.
type AwaitRecreateResult struct {
	// Result is the run's result as it was recorded (a workflows.LifecycleResult, kept raw:
	// this package does not know the workflows' types).
	Result json.RawMessage `json:"result,omitempty"`
}

// AwaitRecreate waits until the recreate run in.WorkflowID/in.RunID ends and returns its
// result, heartbeating meanwhile (a dead worker is noticed by the heartbeat timeout and the
// wait goes on elsewhere). A run that ended without a result is a non-retryable
// ErrTypeRecreateFailed error with its failure's message (the innermost application error's,
// else the innermost error's: the message the upgrade gives a child that failed); a run that
// does not exist is ErrTypeNotFound; anything else (the server unreachable, the wait cut
// short) is returned for the activity to be retried.
func (a *Activities) AwaitRecreate(ctx context.Context, in AwaitRecreateInput) (AwaitRecreateResult, error) {
	if a.Temporal == nil {
		// A wiring bug of this worker (worker.New sets the client): another worker may wait.
		return AwaitRecreateResult{}, fmt.Errorf("await the recreate of %s: this worker has no Temporal client", in.RouterID)
	}
	var raw json.RawMessage
	err := heartbeatWhile(ctx, nil, func() error {
		return a.Temporal.GetWorkflow(ctx, in.WorkflowID, in.RunID).Get(ctx, &raw)
	})
	if err == nil {
		return AwaitRecreateResult{Result: raw}, nil
	}
	var ended *temporal.WorkflowExecutionError
	if errors.As(err, &ended) {
		return AwaitRecreateResult{}, temporal.NewNonRetryableApplicationError(endedMessage(errors.Unwrap(ended)),
			ErrTypeRecreateFailed, nil)
	}
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return AwaitRecreateResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("the recreate run %s (%s) of %s is not found: %v", in.WorkflowID, in.RunID, in.RouterID, err), ErrTypeNotFound, nil)
	}
	return AwaitRecreateResult{}, fmt.Errorf("await the recreate run %s (%s) of %s: %w", in.WorkflowID, in.RunID, in.RouterID, err)
}

// endedMessage is why a run ended without a result, as a parent reads its child's failure: the
// message of the innermost application error when there is one, else the innermost error's
// (a timed-out run reads as a parent's child time-out does).
func endedMessage(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Message()
	}
	var timeout *temporal.TimeoutError
	if errors.As(err, &timeout) && timeout.Unwrap() == nil {
		// The SDK words a child's time-out "Child workflow timeout (type: ...)" and a run's
		// read by a client "Workflow timeout (type: ...)": give the child's.
		return fmt.Sprintf("Child workflow timeout (type: %s)", timeout.TimeoutType())
	}
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}
