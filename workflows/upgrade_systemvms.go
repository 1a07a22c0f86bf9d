package workflows

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// SystemVMUpgradeWorkflowName is the registered workflow type name of SystemVMUpgrade.
const SystemVMUpgradeWorkflowName = "SystemVMUpgrade"

// SystemVMUpgradeOperationKind is the operation kind of a batched SSVM and CPVM upgrade; each
// VM's child run carries it in OperationKind until the lifecycle's own kind replaces it.
const SystemVMUpgradeOperationKind = "systemvm.upgrade"

// Alert of an SSVM and CPVM upgrade that spent its failure budget.
const (
	AlertSystemVMUpgradeBudget = "SYSTEMVM.UPGRADE.FAILURE.BUDGET"
	// ResourceSystemVMUpgrade is the resource type of that alert (the ID is the operation's).
	ResourceSystemVMUpgrade = "SystemVmUpgrade"
)

// SystemVMUpgradeRequest is what an operator asks of an SSVM and CPVM upgrade: the router
// upgrade's knobs (parallelism, failure budget, windows per zone, gate timeout) over a
// selection of system VMs.
type SystemVMUpgradeRequest struct {
	Selection   activities.SystemVMUpgradeSelection `json:"selection"`
	Parallelism int                                 `json:"parallelism"`
	Budget      FailureBudget                       `json:"failureBudget"`
	// Window applies to every zone without one of its own in Windows (by zone ID).
	Window  *UpgradeWindow           `json:"window,omitempty"`
	Windows map[string]UpgradeWindow `json:"windows,omitempty"`
	// GateTimeout bounds each VM's health gate (DefaultGateTimeout when 0).
	GateTimeout time.Duration `json:"gateTimeout,omitempty"`
	// GatePoll is the pause between the gate's attempts (the activity's default when 0).
	GatePoll time.Duration `json:"gatePoll,omitempty"`
	// VMsPerRun is how many VMs a run finishes before it continues as new
	// (DefaultUpgradeRoutersPerRun when 0).
	VMsPerRun int `json:"vmsPerRun,omitempty"`
}

// SystemVMUpgradeInput starts (or, with State, continues) a SystemVMUpgrade.
type SystemVMUpgradeInput struct {
	OperationID string                 `json:"operationId"`
	Request     SystemVMUpgradeRequest `json:"request"`
	// State is carried across continue-as-new; nil on the first run. Its Routers are the
	// upgrade's system VMs (each with its Type).
	State *RouterUpgradeState `json:"state,omitempty"`
}

// SystemVMUpgradeWorkflowID is the workflow ID of the SSVM and CPVM upgrade of one scope.
func SystemVMUpgradeWorkflowID(scopeKind, scopeID string) string {
	if scopeID == "" {
		return "systemvm-upgrade:" + scopeKind
	}
	return "systemvm-upgrade:" + scopeKind + ":" + scopeID
}

// SystemVMUpgradeVMOperationID is the operation ID of one VM's recreate under an upgrade.
func SystemVMUpgradeVMOperationID(upgradeOperationID, vmID string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("sysvm:systemvm.upgrade:"+upgradeOperationID+"/"+vmID)).String()
}

// systemVMUpgrade is what SystemVMUpgrade adds to the router upgrade's engine.
type systemVMUpgrade struct {
	in SystemVMUpgradeInput
	w  *upgrade
}

// SystemVMUpgrade upgrades SSVMs and CPVMs in batches (SPEC §4.4, "CPVM and SSVM are upgraded
// the same way") on RouterUpgrade's engine: zones in order (each in its window), a sliding
// window of at most Parallelism VMs in flight, the failure budget that pauses the upgrade and
// raises an alert, pause/resume/parallelism signals, the operation's cancel (VMs in flight
// finish), the progress query and continue-as-new after VMsPerRun VMs. A zone is never left
// without a serving CPVM or SSVM: the VMs of one zone and kind go one at a time (each only once
// the one before it passed its gate; when one fails the rest of its kind are skipped and keep
// serving), and each is recreated make-before-break (the lifecycle's recreate as a child run on
// its own systemvm:<id> workflow ID) while the zone's others of its kind serve. The zone's only
// VM of a kind (no other of its kind Running at its turn) is never taken down first: a new one
// is deployed from the current template (SystemVMDeploy as a child on the new VM's own workflow
// ID), must pass the health gate, and only then is the old one retired with the lifecycle
// destroy (a new one that fails its gate is destroyed; the old one keeps serving). Each upgraded
// VM must pass its health gate (Activities.SystemVMUpgradeGate: agent over SSH at the required
// version, console or HTTPS upload endpoint serving TLS).
func SystemVMUpgrade(ctx workflow.Context, in SystemVMUpgradeInput) (RouterUpgradeResult, error) {
	s := &systemVMUpgrade{in: in}
	r := in.Request
	w := &upgrade{in: RouterUpgradeInput{OperationID: in.OperationID}, st: in.State,
		req: RouterUpgradeRequest{Selection: activities.UpgradeSelection{ZoneID: r.Selection.ZoneID, Force: r.Selection.Force},
			Parallelism: r.Parallelism, Budget: r.Budget, Window: r.Window, Windows: r.Windows, Mode: UpgradeModeRecreate,
			GateTimeout: r.GateTimeout, GatePoll: r.GatePoll, RoutersPerRun: r.VMsPerRun}}
	w.kind = &upgradeKind{item: s.upgradeVM, continueAsNew: s.continueAsNew, alert: s.raiseBudgetAlert,
		peerSkip: func(peer UpgradeRouter) string {
			return fmt.Sprintf("%s before it in its zone was not upgraded (%s): it stays as it is so the zone keeps a serving one",
				peer.Name, peer.State)
		}}
	s.w = w
	return w.execute(ctx, s.setup, nil)
}

func (s *systemVMUpgrade) setup(ctx workflow.Context) error {
	w := s.w
	w.applyDefaults()
	if err := w.upsertSearchAttributes(ctx, SystemVMUpgradeOperationKind); err != nil {
		return err
	}
	if w.st != nil {
		w.st.Runs++
		return nil
	}
	var plan activities.UpgradePlan
	if err := workflow.ExecuteActivity(withShortActivity(ctx), a.PlanSystemVMUpgrade, s.in.Request.Selection).Get(ctx, &plan); err != nil {
		return fmt.Errorf("plan the upgrade: %w", err)
	}
	w.st = w.newState(ctx, plan)
	return nil
}

func (s *systemVMUpgrade) continueAsNew(ctx workflow.Context) error {
	in := s.in
	in.Request.Parallelism = s.w.st.Parallelism
	in.State = s.w.st
	return workflow.NewContinueAsNewError(ctx, SystemVMUpgradeWorkflowName, in)
}

// upgradeVM runs one VM: the check at its turn, its make-before-break recreate as a child run
// on its own workflow ID, its health gate (on the engine's disconnected context).
func (s *systemVMUpgrade) upgradeVM(ctx workflow.Context, i int) (string, string) {
	w := s.w
	r := &w.st.Routers[i]
	var chk activities.SystemVMUpgradeCheck
	lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 10 * time.Second,
			MaximumAttempts: 10}})
	if err := workflow.ExecuteLocalActivity(lctx, a.SystemVMUpgradeCheck, activities.UpgradeCheckInput{
		RouterID: r.ID, Force: s.in.Request.Selection.Force}).Get(ctx, &chk); err != nil {
		return UpgradeFailed, "check before the upgrade: " + err.Error()
	}
	if chk.Skip {
		return UpgradeSkipped, chk.Reason
	}
	r.FromVersion = chk.Version
	r.Type = cmp.Or(r.Type, chk.Type)
	if chk.Serving == 0 {
		return s.replaceOnly(ctx, i, chk)
	}
	opID := SystemVMUpgradeVMOperationID(s.in.OperationID, r.ID)
	t := VMTarget(r.ID, r.Type, r.ZoneID, SystemVMUpgradeOperationKind)
	cctx := workflow.WithChildOptions(ctx, t.ChildOptions(map[string]any{"operationId": opID, "target": r.ID,
		"parentOperationId": s.in.OperationID}))
	reason := fmt.Sprintf("system VM upgrade %s: version %s, required %s", s.in.OperationID, cmp.Or(chk.Version, "unknown"), cmp.Or(chk.MinReq, "none"))
	var out LifecycleResult
	err := workflow.ExecuteChildWorkflow(cctx, LifecycleWorkflowName, LifecycleInput{OperationID: opID, VMID: r.ID,
		Action: ActionRecreate, Reason: reason}).Get(ctx, &out)
	if err != nil {
		if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
			return UpgradeFailed, fmt.Sprintf("another operation runs on the system VM (workflow %s)", t.WorkflowID)
		}
		return UpgradeFailed, "recreate: " + rootMessage(err)
	}
	if out.State != models.StateRunning {
		return UpgradeFailed, fmt.Sprintf("recreate left it %s, not Running", out.State)
	}
	r.State, r.GateStarted = UpgradeHealthCheck, workflow.Now(ctx).UnixMilli()
	w.events++
	gate, err := s.gate(ctx, r.ID, r.Name)
	if err != nil {
		return UpgradeFailed, rootMessage(err)
	}
	r.ToVersion = gate.Version
	return UpgradeDone, fmt.Sprintf("recreated while %d other %s served the zone; %s", chk.Serving, r.Type, gate.Note)
}

// gate runs the health gate of VM id.
func (s *systemVMUpgrade) gate(ctx workflow.Context, id, name string) (activities.UpgradeGateResult, error) {
	gctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: s.w.req.GateTimeout + 2*time.Minute,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: 30 * time.Second, MaximumAttempts: 3,
			NonRetryableErrorTypes: []string{activities.ErrTypeGateFailed, activities.ErrTypeNotFound}},
		Summary: "health gate " + name,
	})
	var gate activities.UpgradeGateResult
	err := workflow.ExecuteActivity(gctx, a.SystemVMUpgradeGate, activities.SystemVMGateInput{VMID: id,
		Timeout: s.w.req.GateTimeout, Poll: s.w.req.GatePoll}).Get(ctx, &gate)
	return gate, err
}

// destroy runs the lifecycle destroy of VM id as a child on its own workflow ID.
func (s *systemVMUpgrade) destroy(ctx workflow.Context, id, vmType, zoneID, reason string) error {
	opID := SystemVMUpgradeVMOperationID(s.in.OperationID, id+"/destroy")
	t := VMTarget(id, vmType, zoneID, SystemVMUpgradeOperationKind)
	cctx := workflow.WithChildOptions(ctx, t.ChildOptions(map[string]any{"operationId": opID, "target": id,
		"parentOperationId": s.in.OperationID}))
	var out LifecycleResult
	err := workflow.ExecuteChildWorkflow(cctx, LifecycleWorkflowName, LifecycleInput{OperationID: opID, VMID: id,
		Action: ActionDestroy, Reason: reason}).Get(ctx, &out)
	if err != nil {
		if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
			return fmt.Errorf("another operation runs on it (workflow %s)", t.WorkflowID)
		}
		return fmt.Errorf("%s", rootMessage(err))
	}
	return nil
}

// replaceOnly upgrades the zone's only VM of its kind without leaving the zone without one:
// a new VM is deployed from the current template (SystemVMDeploy as a child on the new VM's
// own workflow ID), must pass the health gate, and only then is the old one retired with the
// lifecycle destroy. A new VM that fails its gate is destroyed and the old one keeps serving.
func (s *systemVMUpgrade) replaceOnly(ctx workflow.Context, i int, chk activities.SystemVMUpgradeCheck) (string, string) {
	w := s.w
	r := &w.st.Routers[i]
	deployOp := SystemVMUpgradeVMOperationID(s.in.OperationID, r.ID+"/deploy")
	newID := activities.DeployVMID(deployOp)
	reason := fmt.Sprintf("system VM upgrade %s: replaces %s (version %s, required %s), the zone's only %s", s.in.OperationID, r.Name,
		cmp.Or(chk.Version, "unknown"), cmp.Or(chk.MinReq, "none"), r.Type)
	t := DeployTarget(newID, r.Type, r.ZoneID)
	cctx := workflow.WithChildOptions(ctx, t.ChildOptions(map[string]any{"operationId": deployOp, "target": newID,
		"parentOperationId": s.in.OperationID}))
	var dep DeployResult
	err := workflow.ExecuteChildWorkflow(cctx, SystemVMDeployWorkflowName, DeployInput{OperationID: deployOp, VMID: newID,
		ZoneID: r.ZoneID, Type: r.Type, Reason: reason}).Get(ctx, &dep)
	if err != nil {
		return UpgradeFailed, fmt.Sprintf("deploy a new %s first (the zone's only one): %s; %s keeps serving", r.Type, rootMessage(err), r.Name)
	}
	if dep.State != models.StateRunning {
		return UpgradeFailed, fmt.Sprintf("the new %s %s is %s, not Running; %s keeps serving", r.Type, dep.Name, dep.State, r.Name)
	}
	r.ReplacedBy = dep.VMID
	r.State, r.GateStarted = UpgradeHealthCheck, workflow.Now(ctx).UnixMilli()
	w.events++
	gate, err := s.gate(ctx, dep.VMID, dep.Name)
	if err != nil {
		why := rootMessage(err)
		if derr := s.destroy(ctx, dep.VMID, r.Type, r.ZoneID, "its health gate failed: "+why); derr != nil {
			return UpgradeFailed, fmt.Sprintf("the new %s %s failed its gate (%s) and could not be destroyed: %v; %s keeps serving",
				r.Type, dep.Name, why, derr, r.Name)
		}
		r.ReplacedBy = ""
		return UpgradeFailed, fmt.Sprintf("the new %s %s failed its gate (%s) and was destroyed; %s keeps serving", r.Type, dep.Name, why, r.Name)
	}
	if err := s.destroy(ctx, r.ID, r.Type, r.ZoneID, fmt.Sprintf("replaced by %s (%s) in system VM upgrade %s", dep.Name, dep.VMID,
		s.in.OperationID)); err != nil {
		return UpgradeFailed, fmt.Sprintf("the new %s %s serves, but retiring %s failed: %v", r.Type, dep.Name, r.Name, err)
	}
	r.ToVersion = gate.Version
	return UpgradeDone, fmt.Sprintf("the zone's only %s: %s deployed from the current template, passed its gate (%s), then %s was retired",
		r.Type, dep.Name, gate.Note, r.Name)
}

// raiseBudgetAlert raises the alert of a pause for the failure budget, naming every failed VM
// and why.
func (s *systemVMUpgrade) raiseBudgetAlert(ctx workflow.Context) {
	w := s.w
	var lines, names []string
	var zone string
	for _, r := range w.st.Routers {
		if r.State == UpgradeFailed {
			lines = append(lines, fmt.Sprintf("%s (%s, %s): %s", r.Name, r.Type, r.ID, r.Reason))
			names = append(names, r.Name)
			zone = r.ZoneID
		}
	}
	zone = cmp.Or(s.in.Request.Selection.ZoneID, zone)
	in := activities.UpgradeAlertInput{OperationID: s.in.OperationID, Key: fmt.Sprintf("budget.%d", w.st.Pauses), ZoneID: zone,
		Type: AlertSystemVMUpgradeBudget, ResourceType: ResourceSystemVMUpgrade,
		Subject: fmt.Sprintf("System VM upgrade %s paused: failure budget %s exceeded (%s failed)", s.in.OperationID, w.req.Budget,
			strings.Join(names, ", ")),
		Description: "Failed system VMs:\n" + strings.Join(lines, "\n") + "\nResume the upgrade once the cause is fixed (the budget counts anew), or cancel it."}
	if err := workflow.ExecuteActivity(withShortActivity(ctx), a.RaiseUpgradeAlert, in).Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Error("raise upgrade alert", "error", err)
	}
}
