package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// CertificateRotationWorkflowName is the registered type of CertificateRotation.
const CertificateRotationWorkflowName = "CertificateRotation"

// CertificateRotationWorkflowID is the one workflow ID of every rotation: one rotation at a
// time, fleet-wide.
const CertificateRotationWorkflowID = "certificates:rotate"

// CertificateRotationKind is the operation kind of a rotation.
const CertificateRotationKind = "certificate.rotate"

// AlertCertificateRotation is the alert type of a failed or held-back rotation step.
const AlertCertificateRotation = "CERTIFICATE.ROTATION"

// Rotation statuses of one VM.
const (
	CertVMPending    = "pending"
	CertVMRotated    = "rotated"
	CertVMRolledBack = "rolled-back"
	CertVMSkipped    = "skipped"
	// CertVMReplaced is the only CPVM of a zone, replaced by a new CPVM serving the
	// certificate (CertRotationVMResult.Replacement) and then destroyed.
	CertVMReplaced = "replaced"
	// CertVMFailed is a VM a failure left in neither its old nor its new place (the old CPVM
	// of a replacement that could not be destroyed).
	CertVMFailed = "failed"
)

// CertRotationVMResult is where one VM stands in a rotation.
type CertRotationVMResult struct {
	VMID   string `json:"vmId"`
	Name   string `json:"name"`
	Type   string `json:"type"`
	ZoneID string `json:"zoneId"`
	Zone   string `json:"zone"`
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Restarted is false when the VM already served the certificate (a resumed run).
	Restarted bool `json:"restarted,omitempty"`
	// ConsoleAddr is where the VM was verified serving the certificate (in dev, the
	// simulated endpoint's loopback address; else its public IP on 8443).
	ConsoleAddr string `json:"consoleAddr,omitempty"`
	// Replacement is the new CPVM started for the only CPVM of a zone (make-before-break).
	Replacement *CertRotationReplacement `json:"replacement,omitempty"`
}

// CertificateRotationResult is a rotation's end: every VM's status; Stopped says where and
// why a failure stopped it.
type CertificateRotationResult struct {
	Certificate string                 `json:"certificate"`
	Version     int                    `json:"version"`
	VMs         []CertRotationVMResult `json:"vms"`
	Stopped     string                 `json:"stopped,omitempty"`
}

// CertificateRotationProgress is a rotation's answer to the progress query: the common
// progress plus the zone and VM it is at and every VM's status.
type CertificateRotationProgress struct {
	Progress
	Zone string                 `json:"zone,omitempty"`
	VM   string                 `json:"vm,omitempty"`
	VMs  []CertRotationVMResult `json:"vms"`
}

// CertificateRotation rolls a server certificate out to the console proxy VMs and SSVMs, zone
// by zone and one VM at a time. Each VM gets the certificate and restarts its endpoint; a real
// TLS handshake then checks it serves the certificate's chain for a name under the suffix. A
// failure puts that VM back on its previous certificate, raises an alert naming zone, VM and
// reason, and stops the rotation. The only CPVM of a zone is not restarted (that would leave
// the zone without a console): a new CPVM is deployed and given the certificate first, and the
// old one is then destroyed (make-before-break, replaceSingleCPVM).
// The workflow carries certificate IDs only, never a key.
func CertificateRotation(ctx workflow.Context, in activities.CertRotationInput) (CertificateRotationResult, error) {
	st := CertificateRotationProgress{VMs: []CertRotationVMResult{}}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (CertificateRotationProgress, error) { return st, nil }); err != nil {
		return CertificateRotationResult{}, err
	}
	res, err := rotateCertificates(ctx, in, &st)
	if err == nil {
		st.Step, st.Done, st.Percent = "done", st.Total, 100
	}
	return res, finishOperation(ctx, in.OperationID, res, err)
}

func rotateCertificates(ctx workflow.Context, in activities.CertRotationInput, st *CertificateRotationProgress) (CertificateRotationResult, error) {
	var plan activities.CertRotationPlan
	if err := workflow.ExecuteActivity(withShortActivity(ctx), a.PlanCertificateRotation, in).Get(ctx, &plan); err != nil {
		return CertificateRotationResult{}, fmt.Errorf("plan the rotation: %w", err)
	}
	res := CertificateRotationResult{Certificate: plan.Certificate, Version: plan.Version}
	for _, z := range plan.Zones {
		for _, vm := range z.VMs {
			st.VMs = append(st.VMs, CertRotationVMResult{VMID: vm.ID, Name: vm.Name, Type: vm.Type, ZoneID: z.ID, Zone: z.Name, Status: CertVMPending})
		}
	}
	st.Total = len(st.VMs)
	i := 0
	for _, z := range plan.Zones {
		if err := workflow.UpsertTypedSearchAttributes(ctx, ZoneIDKey.ValueSet(z.ID)); err != nil {
			return res, err
		}
		st.Zone = z.Name
		for _, vm := range z.VMs {
			cur := &st.VMs[i]
			i++
			st.VM = vm.Name
			if vm.Type == models.TypeCPVM && z.CPVMs < 2 &&
				workflow.GetVersion(ctx, certReplaceSingleCPVMChange, workflow.DefaultVersion, 1) >= 1 {
				err := replaceSingleCPVM(ctx, in, plan, z, vm, cur, st, &res)
				res.VMs = st.VMs
				if err != nil {
					var canceled *temporal.CanceledError
					if errors.As(err, &canceled) || res.Stopped == "" {
						return res, err
					}
					return res, temporal.NewNonRetryableApplicationError(res.Stopped, "RotationStopped", nil, res)
				}
				st.advance(vm.Name + " replaced by " + cur.Replacement.Name)
				continue
			}
			if vm.Type == models.TypeCPVM && z.CPVMs < 2 { // histories from before make-before-break
				cur.Status = CertVMSkipped
				cur.Detail = "the only CPVM of the zone: restarting it would leave the zone without a serving console proxy"
				desc := fmt.Sprintf("zone %s: %s kept on its current certificate: %s; add a second CPVM and rotate again", z.Name, vm.Name, cur.Detail)
				if err := raiseRotationAlert(ctx, in.OperationID, z, vm, "WARN", "console proxy certificate not rotated on "+vm.Name, desc); err != nil {
					return res, err
				}
				st.advance(vm.Name + " skipped")
				continue
			}
			if err := workflow.UpsertTypedSearchAttributes(ctx, SystemVMIDKey.ValueSet(vm.ID)); err != nil {
				return res, err
			}
			st.Step = "rotate " + vm.Name
			restarted, err := rotateOne(ctx, in, vm, cur)
			cur.Restarted = restarted
			if err != nil {
				reason := rootMessage(err)
				rollback := rollBack(ctx, in, vm)
				cur.Status, cur.Detail = CertVMRolledBack, reason+"; "+rollback
				res.Stopped = fmt.Sprintf("zone %s, %s %s: %s", z.Name, vmKind(vm.Type), vm.Name, reason)
				res.VMs = st.VMs
				desc := fmt.Sprintf("certificate rotation stopped in zone %s at %s %s: %s; %s", z.Name, vmKind(vm.Type), vm.Name, reason, rollback)
				if aerr := raiseRotationAlert(ctx, in.OperationID, z, vm, "CRITICAL", "console proxy certificate rotation failed on "+vm.Name, desc); aerr != nil {
					workflow.GetLogger(ctx).Error("raise rotation alert", "error", aerr)
				}
				return res, temporal.NewNonRetryableApplicationError(res.Stopped, "RotationStopped", nil, res)
			}
			cur.Status = CertVMRotated
			st.advance(vm.Name + " rotated")
		}
	}
	res.VMs = st.VMs
	return res, nil
}

// rotateOne installs the certificate on one VM, verifies it with a TLS handshake and records
// it as served; cur, when set, gets the address the VM was verified on.
func rotateOne(ctx workflow.Context, in activities.CertRotationInput, vm activities.CertRotationVM, cur *CertRotationVMResult) (bool, error) {
	var inst activities.CertInstallResult
	if err := workflow.ExecuteActivity(withCertInstallActivity(ctx, vm.Name), a.InstallCertificate, activities.CertInstallInput{
		OperationID: in.OperationID, VMID: vm.ID, CertificateID: in.CertificateID}).Get(ctx, &inst); err != nil {
		return false, fmt.Errorf("install on %s: %w", vm.Name, err)
	}
	var seen activities.CertVerifyResult
	if err := workflow.ExecuteActivity(withCertVerifyActivity(ctx, vm.Name), a.VerifyConsoleCertificate, activities.CertVerifyInput{
		VMID: vm.ID, CertificateID: in.CertificateID}).Get(ctx, &seen); err != nil {
		return inst.Restarted, fmt.Errorf("verify %s: %w", vm.Name, err)
	}
	if cur != nil {
		cur.ConsoleAddr = seen.Addr
	}
	return inst.Restarted, workflow.ExecuteActivity(withShortActivity(ctx), a.RecordServedCertificate, activities.CertServedInput{
		OperationID: in.OperationID, VMID: vm.ID, CertificateID: in.CertificateID}).Get(ctx, nil)
}

// rollBack puts a VM back on what it served before and says how that went.
func rollBack(ctx workflow.Context, in activities.CertRotationInput, vm activities.CertRotationVM) string {
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	prev := "the dev default certificate"
	if vm.PreviousCertificateID != "" {
		prev = "certificate " + vm.PreviousCertificateID
	}
	if err := workflow.ExecuteActivity(withCertInstallActivity(dctx, vm.Name), a.InstallCertificate, activities.CertInstallInput{
		OperationID: in.OperationID, VMID: vm.ID, CertificateID: vm.PreviousCertificateID}).Get(dctx, nil); err != nil {
		return "rolling back to " + prev + " failed too: " + rootMessage(err)
	}
	if vm.PreviousCertificateID != "" {
		if err := workflow.ExecuteActivity(withCertVerifyActivity(dctx, vm.Name), a.VerifyConsoleCertificate, activities.CertVerifyInput{
			VMID: vm.ID, CertificateID: vm.PreviousCertificateID}).Get(dctx, nil); err != nil {
			return "rolled back to " + prev + " but it does not verify: " + rootMessage(err)
		}
	}
	return "rolled back to " + prev
}

func raiseRotationAlert(ctx workflow.Context, opID string, z activities.CertRotationZone, vm activities.CertRotationVM, severity, subject, desc string) error {
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	return workflow.ExecuteActivity(withShortActivity(dctx), a.RaiseCertificateAlert, activities.CertAlertInput{
		OperationID: opID, Type: AlertCertificateRotation, Severity: severity, Subject: subject, Description: desc,
		ZoneID: z.ID, VMID: vm.ID}).Get(dctx, nil)
}

func vmKind(t string) string {
	if t == models.TypeSSVM {
		return "SSVM"
	}
	return "CPVM"
}

func withCertInstallActivity(ctx workflow.Context, vmName string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 2 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2,
			MaximumInterval: 10 * time.Second, MaximumAttempts: 4},
		Summary: "install certificate on " + vmName,
	})
}

// withCertVerifyActivity retries for a few seconds while the endpoint restarts.
func withCertVerifyActivity(ctx workflow.Context, vmName string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 500 * time.Millisecond, BackoffCoefficient: 2,
			MaximumInterval: 2 * time.Second, MaximumAttempts: 4},
		Summary: "verify TLS of " + vmName,
	})
}
