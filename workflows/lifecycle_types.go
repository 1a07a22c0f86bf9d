package workflows

import (
	"fmt"
	"time"
)

// LifecycleAction is one system VM lifecycle operation.
type LifecycleAction string

// The lifecycle actions of SSVMs, CPVMs and routers.
const (
	ActionStart    LifecycleAction = "start"
	ActionStop     LifecycleAction = "stop"
	ActionReboot   LifecycleAction = "reboot"
	ActionDestroy  LifecycleAction = "destroy"
	ActionRecreate LifecycleAction = "recreate"
)

// ParseLifecycleAction validates an action name.
func ParseLifecycleAction(s string) (LifecycleAction, error) {
	switch a := LifecycleAction(s); a {
	case ActionStart, ActionStop, ActionReboot, ActionDestroy, ActionRecreate:
		return a, nil
	}
	return "", fmt.Errorf("unknown action %q (want start, stop, reboot, destroy or recreate)", s)
}

// OperationKind is the operation kind recorded for an action ("systemvm.start", ...).
func (a LifecycleAction) OperationKind() string { return "systemvm." + string(a) }

// LifecycleInput starts a SystemVMLifecycleWorkflow.
type LifecycleInput struct {
	OperationID string          `json:"operationId"`
	VMID        string          `json:"vmId"`
	Action      LifecycleAction `json:"action"`
	// Force stops without a clean shutdown.
	Force bool `json:"force,omitempty"`
	// Reason is recorded in events (e.g. "health check dns_check.py failed 2 times").
	Reason string `json:"reason,omitempty"`
}

// LifecycleResult is what a lifecycle run ends with.
type LifecycleResult struct {
	VMID   string `json:"vmId"`
	Name   string `json:"name"`
	Action string `json:"action"`
	State  string `json:"state"`
	// Host is the name of the host the VM runs on afterwards.
	Host string `json:"host,omitempty"`
	// InstanceName is the hypervisor name of the VM afterwards (a recreate's replacement).
	InstanceName string `json:"instanceName,omitempty"`
	// OldInstanceName is the hypervisor name of the VM a recreate replaced.
	OldInstanceName string `json:"oldInstanceName,omitempty"`
	// ControlIP is a recreate's new control address (link-local, or private on VMware).
	ControlIP string `json:"controlIp,omitempty"`
	// OldStoppedAt, ServingAt and SwitchGapMillis measure a recreate's switch: the old VM
	// stopped, the replacement confirmed serving, and the gap between the two.
	OldStoppedAt    *time.Time `json:"oldStoppedAt,omitempty"`
	ServingAt       *time.Time `json:"servingAt,omitempty"`
	SwitchGapMillis int64      `json:"switchGapMs,omitempty"`
	// Addresses are the service addresses the replacement took over at the switch.
	Addresses []string `json:"addresses,omitempty"`
	// Compensations lists the compensation steps a failed or canceled run took.
	Compensations []string `json:"compensations,omitempty"`
}

// LifecycleWorkflowID is the workflow ID of every lifecycle operation on one VM: one ID per VM,
// so Temporal itself refuses a second operation while one runs.
func LifecycleWorkflowID(vmID string) string { return "systemvm:" + vmID }

// LifecycleWorkflowName is the registered workflow type name of SystemVMLifecycleWorkflow.
const LifecycleWorkflowName = "SystemVMLifecycle"
