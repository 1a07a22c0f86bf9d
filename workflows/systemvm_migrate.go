package workflows

import (
	"fmt"
	"strings"

	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// Registered workflow type names of SystemVMMigrate and SystemVMScale.
const (
	MigrateWorkflowName = "SystemVMMigrate"
	ScaleWorkflowName   = "SystemVMScale"
)

// Operation kinds of migrate and scale.
const (
	MigrateOperationKind = "systemvm.migrate"
	ScaleOperationKind   = "systemvm.scale"
)

// MigrateInput starts a SystemVMMigrate run (migrateSystemVm).
type MigrateInput struct {
	OperationID string `json:"operationId"`
	VMID        string `json:"vmId"`
	// HostID is the target host; "" lets sysvm choose an Up host of the cluster with room.
	HostID string `json:"hostId,omitempty"`
}

// ScaleInput starts a SystemVMScale run (scaleSystemVm).
type ScaleInput struct {
	OperationID       string `json:"operationId"`
	VMID              string `json:"vmId"`
	ServiceOfferingID string `json:"serviceOfferingId"`
}

// MoveResult is what a migrate or scale run ends with.
type MoveResult struct {
	VMID string `json:"vmId"`
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Online: migrated live or scaled hot; otherwise the VM was stopped, changed and started.
	Online   bool   `json:"online"`
	Stopped  bool   `json:"stopped"`
	FromHost string `json:"fromHost,omitempty"`
	Host     string `json:"host,omitempty"`
	CPUs     int    `json:"cpus,omitempty"`
	MemoryMB int    `json:"memoryMb,omitempty"`
	State    string `json:"state,omitempty"`
	// Compensations lists what a failed run did to put the VM back (start).
	Compensations []string `json:"compensations,omitempty"`
}

// SystemVMMigrate moves an SSVM, CPVM or router to another host of its cluster: live where
// the driver migrates running VMs (VMware, XenServer), otherwise stop, move, start (KVM). It
// runs under the VM's workflow ID (VMTarget), so it never overlaps a lifecycle operation on
// the VM; after each step the row says what the hypervisor says. A failure after the VM was
// stopped starts it again where it is; every failure ends with the lifecycle's settle step.
func SystemVMMigrate(ctx workflow.Context, in MigrateInput) (MoveResult, error) {
	return runMove(ctx, in.OperationID, activities.MoveInput{OperationID: in.OperationID, VMID: in.VMID,
		Kind: activities.MoveMigrate, HostID: in.HostID})
}

// SystemVMScale changes a system VM's CPUs and memory to a service offering's: hot where the
// driver scales running VMs, otherwise stop, change, start; a redundant router is stopped
// only while its peer serves. Same guarantees as SystemVMMigrate.
func SystemVMScale(ctx workflow.Context, in ScaleInput) (MoveResult, error) {
	return runMove(ctx, in.OperationID, activities.MoveInput{OperationID: in.OperationID, VMID: in.VMID,
		Kind: activities.MoveScale, ServiceOfferingID: in.ServiceOfferingID})
}

type move struct {
	in            activities.MoveInput
	plan          activities.MovePlan
	progress      Progress
	touched       bool
	stopped       bool
	started       bool
	compensations []string
}

func runMove(ctx workflow.Context, opID string, in activities.MoveInput) (MoveResult, error) {
	m := &move{in: in, progress: Progress{Step: "plan", Total: 2}}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return m.progress, nil }); err != nil {
		return MoveResult{}, err
	}
	res, err := m.run(ctx)
	if err != nil {
		err = m.fail(ctx, &res, err)
	} else {
		m.progress.Step, m.progress.Done, m.progress.Percent = "done", m.progress.Total, 100
	}
	return res, finishOperation(ctx, opID, res, err)
}

func (m *move) run(ctx workflow.Context) (MoveResult, error) {
	short := withShortActivity(ctx)
	res := MoveResult{VMID: m.in.VMID, Kind: m.in.Kind}
	if err := workflow.ExecuteActivity(short, a.PlanMove, m.in).Get(ctx, &m.plan); err != nil {
		return res, err
	}
	p := m.plan
	res.Name, res.Online, res.FromHost, res.Stopped = p.Name, p.Online, p.FromHost, p.StopFirst
	if p.StopFirst {
		m.progress.Total = 4
	}
	m.progress.advance("planned")
	if p.StopFirst {
		if _, err := m.step(ctx, activities.StepStop); err != nil {
			return res, err
		}
		m.stopped = true
	}
	m.progress.Step = p.Kind
	m.touched = true
	var out activities.HypervisorStepResult
	opts := workflow.GetActivityOptions(withHypervisorActivity(ctx))
	opts.Summary = p.Kind + " " + p.Name
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), a.MoveVM, activities.MoveStepInput{
		OperationID: m.in.OperationID, Plan: p}).Get(ctx, &out); err != nil {
		return res, fmt.Errorf("%s %s: %w", p.Kind, p.Name, err)
	}
	res.State, res.Host = out.State, out.Host
	m.progress.advance(p.Kind + " done")
	if p.StopFirst {
		out, err := m.step(ctx, activities.StepStart)
		if err != nil {
			return res, err
		}
		m.started = true
		res.State, res.Host = out.State, out.Host
	}
	if p.Kind == activities.MoveScale {
		res.CPUs, res.MemoryMB = p.CPUs, p.MemoryMB
	}
	desc := fmt.Sprintf("%s %s done", p.Kind, p.Name)
	if p.Kind == activities.MoveMigrate {
		desc = fmt.Sprintf("migrate %s from %s to %s done (%s)", p.Name, p.FromHost, res.Host, onlineWord(p, "live", "cold"))
	} else {
		desc = fmt.Sprintf("scale %s to %d CPUs, %d MB done (%s)", p.Name, p.CPUs, p.MemoryMB, onlineWord(p, "hot", "stop, change, start"))
	}
	return res, workflow.ExecuteActivity(short, a.RecordEvent, activities.EventInput{
		Type: moveEventType(m.plan.Type, p.Kind), Level: "INFO", Description: desc, VMID: p.VMID,
		OperationID: m.in.OperationID}).Get(ctx, nil)
}

func onlineWord(p activities.MovePlan, online, offline string) string {
	if p.Online {
		return online
	}
	return offline
}

// step runs a stop or start of the VM with the lifecycle's activities.
func (m *move) step(ctx workflow.Context, step activities.Step) (activities.HypervisorStepResult, error) {
	m.progress.Step = string(step)
	m.touched = true
	var out activities.HypervisorStepResult
	if transitional := transitionalState(step); transitional != "" {
		if err := workflow.ExecuteActivity(withShortActivity(ctx), a.SetVMState, m.plan.VMID, transitional).Get(ctx, nil); err != nil {
			return out, err
		}
	}
	opts := workflow.GetActivityOptions(withHypervisorActivity(ctx))
	opts.Summary = string(step) + " " + m.plan.Name
	err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), a.HypervisorStep, activities.HypervisorStepInput{
		OperationID: m.in.OperationID, VMID: m.plan.VMID, Step: step}).Get(ctx, &out)
	if err != nil {
		return out, fmt.Errorf("%s %s: %w", step, m.plan.Name, err)
	}
	m.progress.advance(string(step) + " done")
	return out, nil
}

// fail puts a VM this run stopped back to work (start it where it is) and settles the row to
// what the hypervisor confirms, both on a disconnected context so a cancel does not stop them.
func (m *move) fail(ctx workflow.Context, res *MoveResult, runErr error) error {
	if !m.touched {
		return runErr
	}
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	var failed []string
	if m.stopped && !m.started {
		m.compensations = append(m.compensations, string(activities.StepStart))
		if _, err := m.step(dctx, activities.StepStart); err != nil {
			workflow.GetLogger(ctx).Error("start after a failed "+m.in.Kind, "vm", m.plan.Name, "error", err)
			failed = append(failed, fmt.Sprintf("start: %v", err))
		}
	}
	var state string
	if err := workflow.ExecuteActivity(withStepActivity(dctx, "settle", m.plan.Name), a.SettleVM, activities.SettleInput{
		OperationID: m.in.OperationID, VMID: m.plan.VMID, Error: runErr.Error()}).Get(dctx, &state); err != nil {
		workflow.GetLogger(ctx).Error("settle after failure", "vm", m.plan.Name, "error", err)
	} else {
		res.State = state
	}
	res.Compensations = m.compensations
	_ = workflow.ExecuteActivity(withShortActivity(dctx), a.RecordEvent, activities.EventInput{
		Type: moveEventType(m.plan.Type, m.in.Kind) + ".FAILED", Level: "ERROR",
		Description: fmt.Sprintf("%s %s failed: %v", m.in.Kind, m.plan.Name, runErr), VMID: m.plan.VMID,
		OperationID: m.in.OperationID}).Get(dctx, nil)
	if len(failed) > 0 {
		return fmt.Errorf("%w; compensation incomplete: %s", runErr, strings.Join(failed, "; "))
	}
	return runErr
}

// moveEventType names events as CloudStack does: SSVM.MIGRATE, PROXY.SCALE, ROUTER.MIGRATE.
func moveEventType(vmType, kind string) string {
	prefix := map[string]string{models.TypeSSVM: "SSVM", models.TypeCPVM: "PROXY", models.TypeRouter: "ROUTER"}[vmType]
	if prefix == "" {
		prefix = "SYSTEMVM"
	}
	return prefix + "." + strings.ToUpper(kind)
}
