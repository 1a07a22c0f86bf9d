package activities

import "fmt"

// Step is one step of a system VM lifecycle operation: a hypervisor action on the VM
// (HypervisorStep), a step of a make-before-break recreate (RecreateStep), or one of their
// compensations. Steps are journaled by operation ID under their JournalKey, so a retried
// step is not done twice.
type Step string

// The hypervisor steps of start, stop, reboot and destroy (and of the first, destroy-first
// recreate that recorded histories still replay).
const (
	StepStart     Step = "start"
	StepStop      Step = "stop"
	StepForceStop Step = "forcestop"
	StepReboot    Step = "reboot"
	StepDestroy   Step = "destroy"
	// StepCreate builds the VM under its own instance name (the destroy-first recreate).
	StepCreate Step = "create"
)

// The steps of a make-before-break recreate, in order, and its compensations.
const (
	// StepPrepare chooses the replacement's instance name and control address and records
	// whether the old VM still exists on its hypervisor.
	StepPrepare Step = "prepare"
	// StepSeed makes the zone's current system VM template present in the VM's pool.
	StepSeed Step = "seed"
	// StepCreateReplacement defines the replacement VM (stopped) under its new name.
	StepCreateReplacement Step = "create-replacement"
	// StepStartReplacement powers the replacement on.
	StepStartReplacement Step = "start-replacement"
	// StepVerifyReplacement checks the replacement runs and answers over SSH on 3922 on its
	// control address with the template version it was built from.
	StepVerifyReplacement Step = "verify-replacement"
	// StepSwitch stops the old VM, lets the replacement take over the service addresses and
	// confirms it serves; the gap between the two is measured.
	StepSwitch Step = "switch"
	// StepDestroyOld removes the old VM from its hypervisor.
	StepDestroyOld Step = "destroy-old"
	// StepCommit makes the row name the replacement: its instance name, control address,
	// template and host.
	StepCommit Step = "commit"

	// StepStopOld stops the old VM (from address takeover on, the first half of the switch):
	// it holds no service address any more.
	StepStopOld Step = "stop-old"
	// StepTakeOver pushes the service addresses (public IP, guest gateways) to the
	// replacement over SSH (`sysvm-agent ip-assoc`) and confirms it serves them: the agent
	// answers with them up and with its version. Old stopped -> this done is the switch gap.
	StepTakeOver Step = "take-over"

	// StepDestroyReplacement removes the replacement (compensation of a failure or cancel).
	StepDestroyReplacement Step = "destroy-replacement"
	// StepStartOld starts the old VM again (compensation of a failure after the switch
	// stopped it).
	StepStartOld Step = "start-old"
	// StepReleaseAddresses makes the replacement give its service addresses up (ip-assoc
	// release; a replacement that does not answer is stopped), before StepStartOld, so the
	// old VM and the replacement never hold one address at once.
	StepReleaseAddresses Step = "release-addresses"
)

// JournalKey is the key a step is journaled under for its operation.
func (s Step) JournalKey() string {
	switch s {
	case StepStart, StepStop, StepForceStop, StepReboot, StepDestroy, StepCreate:
		return "hypervisor." + string(s)
	}
	return "recreate." + string(s)
}

// Valid reports whether s is a known step.
func (s Step) Valid() bool {
	switch s {
	case StepStart, StepStop, StepForceStop, StepReboot, StepDestroy, StepCreate,
		StepPrepare, StepSeed, StepCreateReplacement, StepStartReplacement, StepVerifyReplacement,
		StepSwitch, StepDestroyOld, StepCommit, StepDestroyReplacement, StepStartOld,
		StepStopOld, StepTakeOver, StepReleaseAddresses:
		return true
	}
	return false
}

// ParseStep validates a step name.
func ParseStep(s string) (Step, error) {
	if st := Step(s); st.Valid() {
		return st, nil
	}
	return "", fmt.Errorf("unknown lifecycle step %q", s)
}

// RecreateSteps are the forward steps of a make-before-break recreate after StepPrepare, as
// runs before address takeover take them (StepSwitch stops the old VM and takes over in one
// step).
func RecreateSteps() []Step {
	return []Step{StepSeed, StepCreateReplacement, StepStartReplacement, StepVerifyReplacement,
		StepSwitch, StepDestroyOld, StepCommit}
}

// RecreateTakeoverSteps are the forward steps of a make-before-break recreate with address
// takeover, after StepPrepare: the replacement is built and verified holding only its control
// address; the old VM is stopped, then the replacement takes the service addresses over.
func RecreateTakeoverSteps() []Step {
	return []Step{StepSeed, StepCreateReplacement, StepStartReplacement, StepVerifyReplacement,
		StepStopOld, StepTakeOver, StepDestroyOld, StepCommit}
}
