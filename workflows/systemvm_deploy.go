package workflows

import (
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// SystemVMDeployWorkflowName is the registered workflow type name of SystemVMDeploy.
const SystemVMDeployWorkflowName = "SystemVMDeploy"

// OperationKindDeploy is the operation kind of a system VM deploy.
const OperationKindDeploy = "systemvm.deploy"

// DeployInput starts a SystemVMDeploy: a new CPVM or SSVM in a zone.
type DeployInput struct {
	// OperationID journals the deploy's steps (required): a retry or a resumed run finds the
	// VM it allocated and never makes a second one.
	OperationID string `json:"operationId"`
	// VMID is the new VM's ID. Empty derives it from the operation ID
	// (activities.DeployVMID); a parent running the deploy as a child under the VM's own
	// workflow ID (DeployTarget) chooses it first.
	VMID   string `json:"vmId,omitempty"`
	ZoneID string `json:"zoneId"`
	// Type is models.TypeCPVM ("consoleproxy") or models.TypeSSVM ("secondarystoragevm").
	Type string `json:"type"`
	// Reason is recorded in the events (e.g. "capacity: 3 sessions, standby 2").
	Reason string `json:"reason,omitempty"`
	// HostID places the VM on that host; empty picks the zone's Up host with most free memory.
	HostID string `json:"hostId,omitempty"`
}

// DeployResult is the new VM as the deploy left it.
type DeployResult struct {
	VMID   string `json:"vmId"`
	Name   string `json:"name"`
	Type   string `json:"type"`
	ZoneID string `json:"zoneId"`
	// State is Running after a success; after a failure the state the discard left (Destroyed,
	// or Error when the hypervisor could not confirm).
	State       string `json:"state"`
	Host        string `json:"host,omitempty"`
	PublicIP    string `json:"publicIp,omitempty"`
	PrivateIP   string `json:"privateIp,omitempty"`
	LinkLocalIP string `json:"linkLocalIp,omitempty"`
	// ConsoleAddr is where a new CPVM's console endpoint was verified serving TLS.
	ConsoleAddr string `json:"consoleAddr,omitempty"`
	// Compensations lists the compensation steps a failed or canceled run took.
	Compensations []string `json:"compensations,omitempty"`
}

// DeployTarget is the target of a deploy of a new VM: the VM's own workflow ID
// (systemvm:<vmID>), so later lifecycle operations on it and its deploy share one ID.
func DeployTarget(vmID, vmType, zoneID string) Target {
	return VMTarget(vmID, vmType, zoneID, OperationKindDeploy)
}

// deployEventType is CloudStack's event of a new VM: PROXY.CREATE or SSVM.CREATE.
func deployEventType(vmType string) string {
	if vmType == models.TypeCPVM {
		return "PROXY.CREATE"
	}
	return "SSVM.CREATE"
}

// deploy is one SystemVMDeploy run.
type deploy struct {
	in            DeployInput
	plan          activities.DeployPlan
	progress      Progress
	compensations []string
}

// SystemVMDeploy adds a CPVM or SSVM to a zone: it allocates the row (name, public, private
// and control addresses, host, pool, template) under the zone lock, creates the VM on its
// hypervisor, starts it, verifies it (running, `sysvm-agent version` over SSH along the access
// path, and for a CPVM its console endpoint serving TLS), and commits it Running with a
// PROXY.CREATE or SSVM.CREATE event. Every step is journaled under the operation ID. A failure
// or cancel destroys what was built on a disconnected context and leaves the row Destroyed (or
// Error with LastError when the hypervisor cannot confirm), never a half-made VM.
func SystemVMDeploy(ctx workflow.Context, in DeployInput) (DeployResult, error) {
	w := &deploy{in: in, progress: Progress{Step: "allocate", Total: len(activities.DeploySteps()) + 1}}
	res := DeployResult{Type: in.Type, ZoneID: in.ZoneID, VMID: in.VMID}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return w.progress, nil }); err != nil {
		return res, err
	}
	err := w.validate()
	if err == nil {
		res, err = w.run(ctx, res)
	}
	if err != nil {
		res = w.compensate(ctx, res, err)
	} else {
		w.progress.Step, w.progress.Done, w.progress.Percent = "done", w.progress.Total, 100
	}
	return res, finishOperation(ctx, in.OperationID, res, err)
}

func (w *deploy) validate() error {
	if w.in.OperationID == "" {
		return temporal.NewNonRetryableApplicationError("operationId is required: it journals the deploy", activities.ErrTypeNotAllowed, nil)
	}
	if w.in.ZoneID == "" {
		return temporal.NewNonRetryableApplicationError("zoneId is required", activities.ErrTypeNotAllowed, nil)
	}
	if w.in.Type != models.TypeCPVM && w.in.Type != models.TypeSSVM {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("type %q cannot be deployed (want %s or %s)",
			w.in.Type, models.TypeCPVM, models.TypeSSVM), activities.ErrTypeNotAllowed, nil)
	}
	return nil
}

func (w *deploy) run(ctx workflow.Context, res DeployResult) (DeployResult, error) {
	actx := withDeployActivity(ctx, activities.StepAllocate, string(w.in.Type))
	if err := workflow.ExecuteActivity(actx, a.AllocateSystemVM, activities.DeployRequest{OperationID: w.in.OperationID,
		VMID: w.in.VMID, ZoneID: w.in.ZoneID, Type: w.in.Type, HostID: w.in.HostID}).Get(ctx, &w.plan); err != nil {
		return res, fmt.Errorf("%s %s in zone %s: %w", activities.StepAllocate, w.in.Type, w.in.ZoneID, err)
	}
	res.VMID, res.Name, res.Host = w.plan.VMID, w.plan.Name, w.plan.Host
	res.PublicIP, res.PrivateIP, res.LinkLocalIP = w.plan.PublicIP, w.plan.PrivateIP, w.plan.LinkLocalIP
	if err := workflow.UpsertTypedSearchAttributes(ctx, DeployTarget(w.plan.VMID, w.in.Type, w.in.ZoneID).SearchAttributes()...); err != nil {
		return res, err
	}
	w.progress.advance(string(activities.StepAllocate) + " " + w.plan.Name + " done")
	for _, step := range activities.DeploySteps() {
		w.progress.Step = string(step)
		var out activities.DeployStepResult
		if err := workflow.ExecuteActivity(withDeployActivity(ctx, step, w.plan.Name), a.DeployStep, activities.DeployStepInput{
			OperationID: w.in.OperationID, Step: step, VMID: w.plan.VMID}).Get(ctx, &out); err != nil {
			return res, fmt.Errorf("%s %s: %w", step, w.plan.Name, err)
		}
		if out.Host != "" {
			res.Host = out.Host
		}
		if out.ConsoleAddr != "" {
			res.ConsoleAddr = out.ConsoleAddr
		}
		if step == activities.StepDeployCommit {
			res.State = out.State
		}
		w.progress.advance(string(step) + " done")
	}
	desc := fmt.Sprintf("created %s (%s) on %s, public IP %s", w.plan.Name, w.in.Type, res.Host, w.plan.PublicIP)
	if w.in.Reason != "" {
		desc += ": " + w.in.Reason
	}
	err := workflow.ExecuteActivity(withShortActivity(ctx), a.RecordEvent, activities.EventInput{
		Type: deployEventType(w.in.Type), Level: "INFO", Description: desc,
		VMID: w.plan.VMID, ZoneID: w.in.ZoneID, OperationID: w.in.OperationID}).Get(ctx, nil)
	return res, err
}

// compensate discards what a failed or canceled deploy built, on a disconnected context so a
// cancel does not stop it: the discard destroys the VM and marks the row Destroyed; when it
// cannot (the hypervisor does not answer), the settle step writes what is known (Error with
// the reason). Then the failure event.
func (w *deploy) compensate(ctx workflow.Context, res DeployResult, runErr error) DeployResult {
	if w.in.OperationID == "" {
		return res
	}
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	w.progress.Step = "compensate: " + string(activities.StepDeployDiscard)
	w.compensations = append(w.compensations, string(activities.StepDeployDiscard))
	var out activities.DeployStepResult
	err := workflow.ExecuteActivity(withDeployActivity(dctx, activities.StepDeployDiscard, res.Name), a.DeployStep, activities.DeployStepInput{
		OperationID: w.in.OperationID, Step: activities.StepDeployDiscard, Reason: runErr.Error()}).Get(dctx, &out)
	switch {
	case err == nil:
		if out.State != "" {
			res.State = out.State
		}
	case w.plan.VMID != "":
		workflow.GetLogger(ctx).Error("deploy discard failed", "vm", w.plan.Name, "error", err)
		w.compensations = append(w.compensations, "settle")
		var state string
		if serr := workflow.ExecuteActivity(withStepActivity(dctx, "settle", w.plan.Name), a.SettleVM, activities.SettleInput{
			OperationID: w.in.OperationID, VMID: w.plan.VMID, Destroying: true,
			Error: fmt.Sprintf("deploy failed: %v; discard failed: %v", runErr, err)}).Get(dctx, &state); serr != nil {
			workflow.GetLogger(ctx).Error("settle after a failed deploy", "vm", w.plan.Name, "error", serr)
		} else {
			res.State = state
		}
	}
	res.Compensations = w.compensations
	name := res.Name
	if name == "" {
		name = "a new " + w.in.Type
	}
	desc := fmt.Sprintf("deploy of %s in zone %s failed: %v", name, w.in.ZoneID, runErr)
	if len(desc) > 4000 {
		desc = desc[:4000]
	}
	if w.in.Reason != "" {
		desc += " (" + w.in.Reason + ")"
	}
	_ = workflow.ExecuteActivity(withShortActivity(dctx), a.RecordEvent, activities.EventInput{
		Type: deployEventType(w.in.Type) + ".FAILED", Level: "ERROR", Description: desc,
		VMID: w.plan.VMID, ZoneID: w.in.ZoneID, OperationID: w.in.OperationID}).Get(dctx, nil)
	return res
}

// withDeployActivity is for one deploy step. Forward steps wait for their cancellation to be
// acknowledged (WaitForCancellation), so a canceled run's discard never races the step it
// canceled (a VM created after its discard ran). Verifying retries for about twenty seconds
// while the VM boots.
func withDeployActivity(ctx workflow.Context, step activities.Step, name string) workflow.Context {
	opts := workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Minute,
		HeartbeatTimeout:    10 * time.Second,
		WaitForCancellation: true,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: time.Minute, MaximumAttempts: 8},
		Summary: strings.TrimSpace(string(step) + " " + name),
	}
	switch step {
	case activities.StepAllocate:
		opts.StartToCloseTimeout = time.Minute
	case activities.StepDeployVerify:
		opts.StartToCloseTimeout = time.Minute
		opts.RetryPolicy = &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2,
			MaximumInterval: 5 * time.Second, MaximumAttempts: 6}
	case activities.StepDeployDiscard:
		opts.WaitForCancellation = false
		opts.RetryPolicy = &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: 30 * time.Second, MaximumAttempts: 5}
	}
	return workflow.WithActivityOptions(ctx, opts)
}
