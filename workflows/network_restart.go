package workflows

import (
	"fmt"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
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
// not reached yet are left running as they were.
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
		progress.Step = string(action) + " " + routerID
		opID := NetworkRestartRouterOperationID(in.OperationID, routerID)
		cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
			WorkflowID: LifecycleWorkflowID(routerID),
			TaskQueue:  TaskQueue,
			// A router half way through its steps finishes them even if the restart goes away.
			ParentClosePolicy:     enumspb.PARENT_CLOSE_POLICY_ABANDON,
			WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
			TypedSearchAttributes: temporal.NewSearchAttributes(SystemVMIDKey.ValueSet(routerID), RouterIDKey.ValueSet(routerID),
				ZoneIDKey.ValueSet(nr.ZoneID), OperationKindKey.ValueSet(action.OperationKind())),
			Memo: map[string]any{"operationId": opID, "target": routerID, "parentOperationId": in.OperationID},
		})
		var out LifecycleResult
		err := workflow.ExecuteChildWorkflow(cctx, LifecycleWorkflowName, LifecycleInput{
			OperationID: opID, VMID: routerID, Action: action, Reason: reason}).Get(ctx, &out)
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
