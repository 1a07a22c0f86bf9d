package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
)

// NetworkRulesWorkflowName is the registered workflow type name of NetworkRulesPush.
const NetworkRulesWorkflowName = "NetworkRulesPush"

// NetworkRulesOperationKind is the operation kind of a change to what a network's routers
// serve (guest VM entries, port forwarding and LB rules).
const NetworkRulesOperationKind = "network.rules"

// NetworkRulesInput starts a NetworkRulesPush.
type NetworkRulesInput struct {
	OperationID string `json:"operationId"`
	NetworkID   string `json:"networkId"`
	// Change says what changed, for the progress and the result ("guest VM vm-3 added").
	Change string `json:"change"`
}

// NetworkRulesResult is each router's answer, in order.
type NetworkRulesResult struct {
	NetworkID string                       `json:"networkId"`
	Change    string                       `json:"change"`
	Routers   []activities.PushRulesResult `json:"routers"`
}

// NetworkRulesPush pushes what a network's routers must serve to each of them (all at once:
// the configuration is idempotent, a router reads the inventory as it is when its push runs).
// It runs under the network's workflow ID, so it never overlaps a restart of the network. A
// router that does not take the push fails the operation, naming it; the others keep what
// they got.
func NetworkRulesPush(ctx workflow.Context, in NetworkRulesInput) (NetworkRulesResult, error) {
	res := NetworkRulesResult{NetworkID: in.NetworkID, Change: in.Change}
	progress := Progress{Step: "load"}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return progress, nil }); err != nil {
		return res, finishOperation(ctx, in.OperationID, res, err)
	}
	err := pushRules(ctx, in, &res, &progress)
	if err == nil {
		progress.Step, progress.Done, progress.Percent = "done", progress.Total, 100
	}
	return res, finishOperation(ctx, in.OperationID, res, err)
}

func pushRules(ctx workflow.Context, in NetworkRulesInput, res *NetworkRulesResult, progress *Progress) error {
	var nr activities.NetworkRoutersResult
	if err := workflow.ExecuteActivity(withShortActivity(ctx), a.NetworkRouters, in.NetworkID).Get(ctx, &nr); err != nil {
		return fmt.Errorf("load routers of network %s: %w", in.NetworkID, err)
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, ZoneIDKey.ValueSet(nr.ZoneID),
		OperationKindKey.ValueSet(NetworkRulesOperationKind)); err != nil {
		return err
	}
	progress.Total, progress.Step = len(nr.RouterIDs), "push: "+in.Change
	progress.update()
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 2 * time.Minute,
		HeartbeatTimeout:    30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: 30 * time.Second, MaximumAttempts: 5},
	})
	futures := make([]workflow.Future, len(nr.RouterIDs))
	for i, id := range nr.RouterIDs {
		futures[i] = workflow.ExecuteActivity(actx, ha.PushNetworkRules, id)
	}
	var firstErr error
	for i, f := range futures {
		var out activities.PushRulesResult
		if err := f.Get(ctx, &out); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("push to router %s: %w", nr.RouterIDs[i], err)
			}
			continue
		}
		res.Routers = append(res.Routers, out)
		progress.advance("pushed to " + out.RouterName)
	}
	return firstErr
}
