package workflows

import (
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/models"
)

// Target is what one run acts on. It is the one place that derives a run's workflow ID, its
// search attributes (so the Web UI finds it by VM, router, zone and kind) and its start or
// child options; the API, the operation engine and parent workflows all build runs from it.
type Target struct {
	// WorkflowID is derived from what the run acts on (systemvm:<id>, network:<id>, ...), so a
	// second run on the same thing is refused by Temporal itself.
	WorkflowID string
	// Kind is the operation kind (systemvm.recreate, network.restart, health.basic, ...).
	Kind string
	// VMID is set for runs on one system VM; RouterID too when that VM is a router.
	VMID     string
	RouterID string
	ZoneID   string
}

// VMTarget is the target of an operation of this kind on one system VM.
func VMTarget(vmID, vmType, zoneID, kind string) Target {
	t := Target{WorkflowID: LifecycleWorkflowID(vmID), Kind: kind, VMID: vmID, ZoneID: zoneID}
	if vmType == models.TypeRouter {
		t.RouterID = vmID
	}
	return t
}

// RouterTarget is the target of an operation of this kind on one router.
func RouterTarget(routerID, zoneID, kind string) Target {
	return VMTarget(routerID, models.TypeRouter, zoneID, kind)
}

// NetworkTarget is the target of an operation of this kind on one network.
func NetworkTarget(networkID, zoneID, kind string) Target {
	return Target{WorkflowID: NetworkRestartWorkflowID(networkID), Kind: kind, ZoneID: zoneID}
}

// ZoneTarget is the target of a zone-wide run (a health sweep) under an explicit workflow ID.
func ZoneTarget(workflowID, zoneID, kind string) Target {
	return Target{WorkflowID: workflowID, Kind: kind, ZoneID: zoneID}
}

// SearchAttributes are the run's SystemVmId, RouterId, ZoneId and OperationKind, those set.
func (t Target) SearchAttributes() []temporal.SearchAttributeUpdate {
	var sa []temporal.SearchAttributeUpdate
	if t.VMID != "" {
		sa = append(sa, SystemVMIDKey.ValueSet(t.VMID))
	}
	if t.RouterID != "" {
		sa = append(sa, RouterIDKey.ValueSet(t.RouterID))
	}
	if t.ZoneID != "" {
		sa = append(sa, ZoneIDKey.ValueSet(t.ZoneID))
	}
	if t.Kind != "" {
		sa = append(sa, OperationKindKey.ValueSet(t.Kind))
	}
	return sa
}

// TypedSearchAttributes is SearchAttributes as the set start and child options carry.
func (t Target) TypedSearchAttributes() temporal.SearchAttributes {
	return temporal.NewSearchAttributes(t.SearchAttributes()...)
}

// StartOptions are the client start options of a run on the target: one run at a time per
// workflow ID (a second start fails with WorkflowExecutionAlreadyStarted), a closed ID reused.
func (t Target) StartOptions(memo map[string]any) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                                       t.WorkflowID,
		TaskQueue:                                TaskQueue,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowIDReusePolicy:                    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		TypedSearchAttributes:                    t.TypedSearchAttributes(),
		Memo:                                     memo,
	}
}

// ChildOptions are the options of a child run on the target. The child is abandoned when its
// parent closes: a VM half way through its steps finishes them (or its own compensation)
// whatever happens to the parent. A child started on the parent's context is still canceled
// with it: start it on a disconnected context where a parent's cancel must not reach it.
func (t Target) ChildOptions(memo map[string]any) workflow.ChildWorkflowOptions {
	return workflow.ChildWorkflowOptions{
		WorkflowID:            t.WorkflowID,
		TaskQueue:             TaskQueue,
		ParentClosePolicy:     enumspb.PARENT_CLOSE_POLICY_ABANDON,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		TypedSearchAttributes: t.TypedSearchAttributes(),
		Memo:                  memo,
	}
}
