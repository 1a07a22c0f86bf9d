package workflows

import (
	"fmt"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// NetworkRestartWorkflowName is the registered workflow type name of NetworkRestart.
const NetworkRestartWorkflowName = "NetworkRestart"

// NetworkRestartOperationKind is the operation kind of restartNetwork.
const NetworkRestartOperationKind = "network.restart"

// NetworkRestartWorkflowID is the workflow ID of every restart of one network: one at a time.
func NetworkRestartWorkflowID(networkID string) string { return "network:" + networkID }

// NetworkRestartInput starts a NetworkRestart workflow.
type NetworkRestartInput struct {
	OperationID string `json:"operationId"`
	NetworkID   string `json:"networkId"`
	// Cleanup recreates every router (stop, destroy, create from the current template, start)
	// instead of rebooting it.
	Cleanup bool `json:"cleanup,omitempty"`
}

// NetworkRestartResult is what a restart ends with: each router's lifecycle result, in order.
type NetworkRestartResult struct {
	NetworkID string            `json:"networkId"`
	Action    string            `json:"action"`
	Routers   []LifecycleResult `json:"routers"`
}

// NetworkRestartRouterOperationID is the operation ID the restart gives the lifecycle run of
// one router: a UUID derived from the restart's operation ID and the router's ID, so each
// router's steps are journaled apart (the journal keys steps by operation ID and step name)
// and a replayed or retried restart finds the same journal.
func NetworkRestartRouterOperationID(parentOperationID, routerID string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("sysvm:network.restart:"+parentOperationID+"/"+routerID)).String()
}

// NetworkRestart is CloudStack's restartNetwork: it reboots (or with Cleanup recreates) every
// router serving a network, one at a time, each as a SystemVMLifecycle child run with the
// router's own workflow ID (so it cannot overlap another operation on that router). BACKUP
// routers go first and the next router starts only once the previous one is Running again, so
// a redundant pair is never down together. The first failure stops the restart; the routers
// not reached yet are left running as they were. A cancel does not reach the router in
// flight: its child run (on a disconnected context) finishes its recreate or reboot, or its
// own compensation, and the restart ends canceled before the next router.
func NetworkRestart(ctx workflow.Context, in NetworkRestartInput) (NetworkRestartResult, error) {
	action := ActionReboot
	if in.Cleanup {
		action = ActionRecreate
	}
	res := NetworkRestartResult{NetworkID: in.NetworkID, Action: string(action)}
	progress := Progress{Step: "load"}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return progress, nil }); err != nil {
		return res, finishOperation(ctx, in.OperationID, res, err)
	}
	err := restartRouters(ctx, in, action, &res, &progress)
	if err == nil {
		progress.Step, progress.Done, progress.Percent = "done", progress.Total, 100
	}
	return res, finishOperation(ctx, in.OperationID, res, err)
}

func restartRouters(ctx workflow.Context, in NetworkRestartInput, action LifecycleAction, res *NetworkRestartResult, progress *Progress) error {
	var nr activities.NetworkRoutersResult
	if err := workflow.ExecuteActivity(withShortActivity(ctx), a.NetworkRouters, in.NetworkID).Get(ctx, &nr); err != nil {
		return fmt.Errorf("load routers of network %s: %w", in.NetworkID, err)
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, ZoneIDKey.ValueSet(nr.ZoneID),
		OperationKindKey.ValueSet(NetworkRestartOperationKind)); err != nil {
		return err
	}
	progress.Total = len(nr.RouterIDs)
	progress.update()
	reason := fmt.Sprintf("restartNetwork cleanup=%t", in.Cleanup)
	for _, routerID := range nr.RouterIDs {
		if err := ctx.Err(); err != nil {
			// Canceled while the previous router ran: stop before touching the next one.
			return temporal.NewCanceledError(fmt.Sprintf("restart of network %s canceled after %d of %d routers",
				in.NetworkID, len(res.Routers), len(nr.RouterIDs)))
		}
		progress.Step = string(action) + " " + routerID
		opID := NetworkRestartRouterOperationID(in.OperationID, routerID)
		// The child runs on a disconnected context: canceling the restart must not cancel a
		// router half way through its recreate (its own compensation would have to undo it);
		// the restart waits for it and stops before the next router.
		dctx, cancel := workflow.NewDisconnectedContext(ctx)
		cctx := workflow.WithChildOptions(dctx, RouterTarget(routerID, nr.ZoneID, action.OperationKind()).ChildOptions(
			map[string]any{"operationId": opID, "target": routerID, "parentOperationId": in.OperationID}))
		var out LifecycleResult
		err := workflow.ExecuteChildWorkflow(cctx, LifecycleWorkflowName, LifecycleInput{
			OperationID: opID, VMID: routerID, Action: action, Reason: reason}).Get(dctx, &out)
		cancel()
		if err != nil {
			if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
				return fmt.Errorf("%s router %s: another operation runs on it (workflow %s): %w",
					action, routerID, LifecycleWorkflowID(routerID), err)
			}
			return fmt.Errorf("%s router %s: %w", action, routerID, err)
		}
		res.Routers = append(res.Routers, out)
		if out.State != models.StateRunning {
			// The next router goes down only once this one serves again.
			return fmt.Errorf("%s router %s (%s): it is %s afterwards, not Running; the remaining routers are left as they are",
				action, out.Name, routerID, out.State)
		}
		progress.advance(string(action) + " " + out.Name + " done")
	}
	return nil
}
