package workflows

// Make-before-break for a zone with a single CPVM: restarting its only CPVM would leave the
// zone without a console proxy, so the rotation first deploys a new CPVM (SystemVMDeploy, as a
// child under the new VM's own workflow ID), installs the certificate on it and verifies it
// with a real TLS handshake, and only then retires the old CPVM with the lifecycle destroy.
// The zone ends as it began, with one CPVM, now serving the new certificate. A failure of the
// new CPVM destroys it and leaves the old one serving what it served; the rotation stops with
// an alert. A cancel before the old CPVM is retired does the same without the alert.

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// certReplaceSingleCPVMChange is the workflow.GetVersion change of make-before-break for a
// zone with a single CPVM: histories recorded before it skipped that CPVM with an alert.
const certReplaceSingleCPVMChange = "certificate-rotation-replace-single-cpvm"

// Where the replacement of a zone's single CPVM stands (CertRotationReplacement.Status).
const (
	CertReplacementDeploying = "deploying"
	CertReplacementInstall   = "installing"
	CertReplacementServing   = "serving"
	CertReplacementRetiring  = "retiring-old"
	CertReplacementDone      = "replaced-old"
	CertReplacementDestroyed = "destroyed"
	CertReplacementFailed    = "failed"
)

// CertRotationReplacement is the new CPVM a rotation starts in a zone with a single CPVM.
type CertRotationReplacement struct {
	VMID     string `json:"vmId"`
	Name     string `json:"name,omitempty"`
	PublicIP string `json:"publicIp,omitempty"`
	// ConsoleAddr is where it was verified serving the certificate.
	ConsoleAddr string `json:"consoleAddr,omitempty"`
	Status      string `json:"status"`
	Detail      string `json:"detail,omitempty"`
}

// CertRotationChildOperationID is the operation ID a rotation gives one of its children (the
// deploy of a replacement, the destroy of the old CPVM or of a failed replacement): derived
// from the rotation's operation and the VM, so a replayed or resumed rotation journals the
// same steps and never deploys a second replacement.
func CertRotationChildOperationID(rotationOperationID, vmID, purpose string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("sysvm:certificate.rotate:"+rotationOperationID+"/"+vmID+"/"+purpose)).String()
}

// replaceSingleCPVM rotates the only CPVM of a zone make-before-break. It returns the error
// that stops the rotation (nil when the zone now serves the certificate).
func replaceSingleCPVM(ctx workflow.Context, in activities.CertRotationInput, plan activities.CertRotationPlan,
	z activities.CertRotationZone, old activities.CertRotationVM, cur *CertRotationVMResult, st *CertificateRotationProgress, res *CertificateRotationResult) error {
	base := in.OperationID
	if base == "" {
		base = workflow.GetInfo(ctx).WorkflowExecution.RunID
	}
	deployOp := CertRotationChildOperationID(base, old.ID, "deploy")
	rep := &CertRotationReplacement{VMID: activities.DeployVMID(deployOp), Status: CertReplacementDeploying}
	cur.Replacement = rep
	st.Step = "deploy a replacement CPVM for " + old.Name

	// 1. The new CPVM. The deploy discards what it built when it fails or is canceled; the
	// rotation waits for that (WaitForCancellation) before it goes on.
	opts := DeployTarget(rep.VMID, models.TypeCPVM, z.ID).ChildOptions(map[string]any{
		"operationId": deployOp, "target": "replacement of " + old.Name, "parentOperationId": in.OperationID})
	opts.WaitForCancellation = true
	var dep DeployResult
	err := workflow.ExecuteChildWorkflow(workflow.WithChildOptions(ctx, opts), SystemVMDeployWorkflowName, DeployInput{
		OperationID: deployOp, VMID: rep.VMID, ZoneID: z.ID, Type: models.TypeCPVM,
		Reason: fmt.Sprintf("certificate rotation: replacement of %s, the only CPVM of zone %s", old.Name, z.Name)}).Get(ctx, &dep)
	rep.Name, rep.PublicIP = dep.Name, dep.PublicIP
	if err != nil {
		state := dep.State
		if state == "" {
			state = "not built"
		}
		rep.Status, rep.Detail = CertReplacementDestroyed, "deploy failed: "+rootMessage(err)+"; the new CPVM is "+state
		return stopReplacement(ctx, in, z, old, rep, cur, res, "deploy of a replacement CPVM failed: "+rootMessage(err), err)
	}
	nvm := activities.CertRotationVM{ID: rep.VMID, Name: dep.Name, Type: models.TypeCPVM, ZoneID: z.ID}
	if err := workflow.UpsertTypedSearchAttributes(ctx, SystemVMIDKey.ValueSet(nvm.ID)); err != nil {
		return err
	}

	// 2. The certificate on it, verified with a TLS handshake, recorded as served.
	rep.Status = CertReplacementInstall
	st.Step = "rotate replacement " + dep.Name + " of " + old.Name
	var seen CertRotationVMResult
	if _, err := rotateOne(ctx, in, nvm, &seen); err != nil {
		reason := rootMessage(err)
		rep.Status, rep.Detail = CertReplacementFailed, reason+"; "+destroyReplacement(ctx, base, z, nvm)
		return stopReplacement(ctx, in, z, old, rep, cur, res, fmt.Sprintf("replacement %s: %s", dep.Name, reason), err)
	}
	rep.Status, rep.ConsoleAddr = CertReplacementServing, seen.ConsoleAddr
	// A cancel that came while the new CPVM was made undoes it: the old one keeps serving.
	if ctx.Err() != nil {
		rep.Status, rep.Detail = CertReplacementDestroyed, "canceled; "+destroyReplacement(ctx, base, z, nvm)
		return stopReplacement(ctx, in, z, old, rep, cur, res, "canceled", temporal.NewCanceledError())
	}

	// 3. The old CPVM retired, on a disconnected context: a destroy once started finishes.
	rep.Status = CertReplacementRetiring
	st.Step = "retire " + old.Name + " (replaced by " + dep.Name + ")"
	if err := workflow.UpsertTypedSearchAttributes(ctx, SystemVMIDKey.ValueSet(old.ID)); err != nil {
		return err
	}
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	var gone LifecycleResult
	if err := destroyChild(dctx, CertRotationChildOperationID(base, old.ID, "retire"), z, old,
		fmt.Sprintf("certificate rotation: replaced by %s serving %s v%d", dep.Name, plan.Certificate, plan.Version), &gone); err != nil {
		reason := rootMessage(err)
		rep.Status = CertReplacementServing
		cur.Status, cur.Detail = CertVMFailed, fmt.Sprintf("replaced by %s (serving %s v%d), but destroying %s failed: %s; both run",
			dep.Name, plan.Certificate, plan.Version, old.Name, reason)
		return stopRotation(ctx, in, z, old, cur, res, fmt.Sprintf("retire %s after its replacement %s: %s", old.Name, dep.Name, reason))
	}
	rep.Status = CertReplacementDone
	cur.Status = CertVMReplaced
	cur.Detail = fmt.Sprintf("the only CPVM of the zone: replaced by %s (public IP %s) serving %s v%d, then destroyed",
		dep.Name, dep.PublicIP, plan.Certificate, plan.Version)
	if ctx.Err() != nil {
		return temporal.NewCanceledError()
	}
	return nil
}

// stopReplacement ends a zone's make-before-break that did not get to the old CPVM: that one
// keeps serving. A cancel returns the cancel; a failure raises the alert and stops.
func stopReplacement(ctx workflow.Context, in activities.CertRotationInput, z activities.CertRotationZone, old activities.CertRotationVM,
	rep *CertRotationReplacement, cur *CertRotationVMResult, res *CertificateRotationResult, reason string, err error) error {
	prev := "the dev default certificate"
	if old.PreviousCertificateID != "" {
		prev = "certificate " + old.PreviousCertificateID
	}
	cur.Status = CertVMRolledBack
	cur.Detail = fmt.Sprintf("%s; %s kept serving %s", rep.Detail, old.Name, prev)
	var canceled *temporal.CanceledError
	if errors.As(err, &canceled) || ctx.Err() != nil {
		cur.Detail = "canceled: " + cur.Detail
		res.Stopped = fmt.Sprintf("zone %s, CPVM %s: canceled", z.Name, old.Name)
		return temporal.NewCanceledError(res.Stopped)
	}
	return stopRotation(ctx, in, z, old, cur, res, reason)
}

// stopRotation raises the CRITICAL alert of a stopped rotation and returns its error.
func stopRotation(ctx workflow.Context, in activities.CertRotationInput, z activities.CertRotationZone, vm activities.CertRotationVM,
	cur *CertRotationVMResult, res *CertificateRotationResult, reason string) error {
	res.Stopped = fmt.Sprintf("zone %s, %s %s: %s", z.Name, vmKind(vm.Type), vm.Name, reason)
	desc := fmt.Sprintf("certificate rotation stopped in zone %s at %s %s: %s; %s", z.Name, vmKind(vm.Type), vm.Name, reason, cur.Detail)
	if aerr := raiseRotationAlert(ctx, in.OperationID, z, vm, "CRITICAL", "console proxy certificate rotation failed on "+vm.Name, desc); aerr != nil {
		workflow.GetLogger(ctx).Error("raise rotation alert", "error", aerr)
	}
	return errors.New(res.Stopped)
}

// destroyReplacement destroys a replacement CPVM that did not make it (lifecycle destroy, on a
// disconnected context) and says how that went.
func destroyReplacement(ctx workflow.Context, base string, z activities.CertRotationZone, nvm activities.CertRotationVM) string {
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	var gone LifecycleResult
	if err := destroyChild(dctx, CertRotationChildOperationID(base, nvm.ID, "discard"), z, nvm, "certificate rotation: the replacement failed", &gone); err != nil {
		return "destroying " + nvm.Name + " failed too: " + rootMessage(err)
	}
	return nvm.Name + " destroyed"
}

// destroyChild runs the lifecycle destroy of a system VM as a child under the VM's workflow ID.
func destroyChild(ctx workflow.Context, opID string, z activities.CertRotationZone, vm activities.CertRotationVM, reason string, out *LifecycleResult) error {
	cctx := workflow.WithChildOptions(ctx, VMTarget(vm.ID, vm.Type, z.ID, ActionDestroy.OperationKind()).
		ChildOptions(map[string]any{"operationId": opID, "target": vm.Name}))
	return workflow.ExecuteChildWorkflow(cctx, LifecycleWorkflowName, LifecycleInput{OperationID: opID, VMID: vm.ID,
		Action: ActionDestroy, Reason: reason}).Get(ctx, out)
}
