package workflows

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// recreateSim is a small model of one VM and its replacement on a hypervisor, driven by the
// mocked recreate activities: the tests assert what compensation did to it, not only which
// activities were called.
type recreateSim struct {
	mu sync.Mutex
	// calls are the recreate steps in the order they ran.
	calls []string
	// failAt makes that step fail (non-retryable); blockAt makes it wait until canceled.
	failAt  activities.Step
	blockAt activities.Step
	// cancel, when set, is called by the blockAt step if it is a local activity (the test
	// environment does not advance its clock while one runs), which then waits for its
	// context to end, as a step under way when the cancel arrives.
	cancel func()
	// oldRunning, oldExists, newExists, newRunning: the hypervisor side.
	oldExists, oldRunning bool
	newExists, newRunning bool
	committed             bool
	// newHolds: the replacement holds the service addresses (take-over); oldHolds: the
	// old VM does (it runs). conflict: both at once, which must never happen.
	newHolds, conflict bool
	settled            *activities.SettleInput
	finished           activities.FinishInput
}

func (s *recreateSim) step(ctx context.Context, in activities.RecreateInput) (activities.RecreateResult, error) {
	s.mu.Lock()
	s.calls = append(s.calls, string(in.Step))
	fail := in.Step == s.failAt
	s.mu.Unlock()
	if in.Step == s.blockAt && s.cancel != nil && IsLocalRecreateStep(in.Step) {
		s.cancel()
		select {
		case <-ctx.Done():
			return activities.RecreateResult{}, ctx.Err()
		case <-time.After(10 * time.Second):
			return activities.RecreateResult{}, fmt.Errorf("%s: the cancel never reached the local activity", in.Step)
		}
	}
	if fail {
		return activities.RecreateResult{}, temporal.NewNonRetryableApplicationError(string(in.Step)+" failed: injected", "Injected", nil)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	res := activities.RecreateResult{}
	switch in.Step {
	case activities.StepCreateReplacement:
		s.newExists = true
	case activities.StepStartReplacement:
		s.newRunning = true
	case activities.StepSwitch:
		s.oldRunning = false
		res.OldStoppedAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		res.ServingAt = res.OldStoppedAt.Add(1500 * time.Millisecond)
	case activities.StepStopOld:
		s.oldRunning = false
		res.OldStoppedAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	case activities.StepTakeOver:
		if s.oldRunning {
			s.conflict = true
		}
		s.newHolds = true
		res.ServingAt = time.Date(2026, 1, 1, 0, 0, 1, 500_000_000, time.UTC)
		res.Addresses = []string{"203.0.113.9", "10.1.1.1"}
	case activities.StepReleaseAddresses:
		s.newHolds = false
	case activities.StepDestroyOld:
		s.oldExists, s.oldRunning = false, false
	case activities.StepCommit:
		s.committed = true
		res.State = models.StateRunning
	case activities.StepDestroyReplacement:
		s.newExists, s.newRunning, s.newHolds = false, false, false
	case activities.StepStartOld:
		if in.Plan.OldExists && in.Plan.OldRunning {
			s.oldRunning = true
			if s.newHolds {
				s.conflict = true
			}
		}
	}
	return res, nil
}

func newRecreateEnv(t *testing.T, sim *recreateSim, vm activities.VMRecord) *testsuite.TestWorkflowEnvironment {
	env := newEnv(t)
	env.OnActivity(a.LoadVM, mock.Anything, vm.ID).Return(vm, nil)
	prep := env.OnActivity(a.PrepareRecreate, mock.Anything, mock.Anything)
	if sim.blockAt == activities.StepPrepare {
		prep.After(10 * time.Minute)
	}
	prep.Return(
		func(ctx context.Context, in activities.RecreateInput) (activities.RecreatePlan, error) {
			sim.mu.Lock()
			sim.calls = append(sim.calls, string(in.Step))
			fail := sim.failAt == activities.StepPrepare
			p := activities.RecreatePlan{InstanceName: vm.Name + "-0a0b0c0d", OldInstanceName: vm.Name, ControlIP: "169.254.7.7",
				LinkLocal: true, OldExists: sim.oldExists, OldRunning: sim.oldRunning}
			sim.mu.Unlock()
			if fail {
				return activities.RecreatePlan{}, temporal.NewNonRetryableApplicationError("prepare failed: injected", "Injected", nil)
			}
			return p, nil
		})
	if sim.blockAt != "" && sim.blockAt != activities.StepPrepare && !IsLocalRecreateStep(sim.blockAt) {
		// The blocked step takes ten minutes of workflow time; the test cancels before.
		env.OnActivity(a.RecreateStep, mock.Anything, mock.MatchedBy(func(in activities.RecreateInput) bool {
			return in.Step == sim.blockAt
		})).After(10 * time.Minute).Return(sim.step)
	}
	env.OnActivity(a.RecreateStep, mock.Anything, mock.Anything).Return(sim.step)
	env.OnActivity(a.SettleVM, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.SettleInput) (string, error) {
			sim.mu.Lock()
			defer sim.mu.Unlock()
			sim.settled = &in
			// What the real SettleVM reads: the row's instance (the old one until commit).
			switch {
			case sim.committed && sim.newRunning, !sim.committed && sim.oldRunning:
				return models.StateRunning, nil
			case !sim.committed && !sim.oldExists:
				return models.StateError, nil
			}
			return models.StateStopped, nil
		})
	env.OnActivity(a.RecordEvent, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error { sim.finished = in; return nil })
	return env
}

func allRecreateCalls() []string {
	out := []string{string(activities.StepPrepare)}
	for _, s := range activities.RecreateTakeoverSteps() {
		out = append(out, string(s))
	}
	return out
}

// upTo lists the recreate steps up to and including step.
func upTo(step activities.Step) []string {
	var out []string
	for _, s := range allRecreateCalls() {
		out = append(out, s)
		if s == string(step) {
			break
		}
	}
	return out
}

func TestRecreateIsMakeBeforeBreak(t *testing.T) {
	sim := &recreateSim{oldExists: true, oldRunning: true}
	env := newRecreateEnv(t, sim, router)
	env.ExecuteWorkflow(SystemVMLifecycle, LifecycleInput{OperationID: "op-1", VMID: "vm-1", Action: ActionRecreate})
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, allRecreateCalls(), sim.calls, "the replacement is built, started and verified before the old VM is stopped")
	require.Equal(t, []string{"verify-replacement", "stop-old", "take-over", "destroy-old"}, sim.calls[4:8],
		"the addresses are taken over after the old VM stopped and before it is destroyed")
	require.True(t, sim.newRunning && sim.committed && !sim.oldExists, "one VM afterwards: the replacement")
	require.True(t, sim.newHolds && !sim.conflict, "the replacement holds the addresses, never both at once")
	require.Nil(t, sim.settled, "a success needs no settle step")
	var res LifecycleResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, models.StateRunning, res.State)
	require.Equal(t, "r-1-VM-0a0b0c0d", res.InstanceName)
	require.Equal(t, "169.254.7.7", res.ControlIP)
	require.EqualValues(t, 1500, res.SwitchGapMillis, "the gap old stopped -> new serving is in the result")
	require.Equal(t, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), *res.OldStoppedAt)
	require.Equal(t, []string{"203.0.113.9", "10.1.1.1"}, res.Addresses)
	require.Equal(t, models.OpCompleted, sim.finished.Status)
	require.Contains(t, sim.finished.Result, `"switchGapMs":1500`)
}

// TestRecreateFailureAtEveryStep injects a failure at each step and checks what the
// compensation did: before the switch the replacement is destroyed and the old VM serves on;
// from the switch on the old VM is started again and the replacement destroyed; a failed
// commit keeps the replacement (the old VM is gone). Every failure ends in a settle step and
// the operation failed with the step named.
func TestRecreateFailureAtEveryStep(t *testing.T) {
	for _, step := range append([]activities.Step{activities.StepPrepare}, activities.RecreateTakeoverSteps()...) {
		t.Run(string(step), func(t *testing.T) {
			sim := &recreateSim{oldExists: true, oldRunning: true, failAt: step}
			env := newRecreateEnv(t, sim, router)
			env.ExecuteWorkflow(SystemVMLifecycle, LifecycleInput{OperationID: "op-f", VMID: "vm-1", Action: ActionRecreate})
			require.True(t, env.IsWorkflowCompleted())
			err := env.GetWorkflowError()
			require.Error(t, err)
			require.Contains(t, err.Error(), string(step)+" failed: injected")
			want := upTo(step)
			switch step {
			case activities.StepPrepare:
				// Nothing was built: nothing to undo.
			case activities.StepSeed, activities.StepCreateReplacement, activities.StepStartReplacement, activities.StepVerifyReplacement:
				want = append(want, string(activities.StepDestroyReplacement))
			case activities.StepStopOld, activities.StepTakeOver, activities.StepDestroyOld:
				// The replacement gives the addresses up before the old VM starts again.
				want = append(want, string(activities.StepReleaseAddresses), string(activities.StepStartOld), string(activities.StepDestroyReplacement))
			case activities.StepCommit:
				// The old VM is destroyed; the replacement is all there is: keep it.
			}
			require.Equal(t, want, sim.calls)
			require.NotNil(t, sim.settled, "every failure settles the VM")
			require.Contains(t, sim.settled.Error, "injected", "the reason becomes LastError")
			require.Equal(t, models.OpFailed, sim.finished.Status)
			require.Contains(t, sim.finished.Error, string(step))
			if step == activities.StepCommit {
				require.True(t, sim.newRunning, "the replacement keeps serving")
				return
			}
			require.True(t, sim.oldExists && sim.oldRunning, "the old VM serves afterwards")
			require.False(t, sim.newExists, "no replacement is left behind")
			require.False(t, sim.conflict, "the old VM never started while the replacement held its addresses")
			require.Contains(t, sim.finished.Result, `"state":"Running"`, "the settled state is in the result")
		})
	}
}

// TestRecreateCancelAtSeveralSteps cancels the run while a step is under way: compensation
// still runs (disconnected context), the old VM serves and the operation is canceled.
func TestRecreateCancelAtSeveralSteps(t *testing.T) {
	for _, step := range []activities.Step{activities.StepPrepare, activities.StepCreateReplacement,
		activities.StepVerifyReplacement, activities.StepStopOld, activities.StepTakeOver} {
		t.Run(string(step), func(t *testing.T) {
			sim := &recreateSim{oldExists: true, oldRunning: true, blockAt: step}
			env := newRecreateEnv(t, sim, router)
			if IsLocalRecreateStep(step) {
				sim.cancel = env.CancelWorkflow
			} else {
				env.RegisterDelayedCallback(env.CancelWorkflow, time.Minute)
			}
			env.ExecuteWorkflow(SystemVMLifecycle, LifecycleInput{OperationID: "op-c", VMID: "vm-1", Action: ActionRecreate})
			require.True(t, env.IsWorkflowCompleted())
			var canceled *temporal.CanceledError
			require.ErrorAs(t, env.GetWorkflowError(), &canceled)
			// The canceled step never completed (its mock takes longer than the cancel, or, run
			// as a local activity, it ran until the cancel ended its context).
			want := upTo(step)
			if !IsLocalRecreateStep(step) {
				want = want[:len(want)-1]
			}
			switch step {
			case activities.StepPrepare:
				// A local activity (localStepsChange): the test environment runs its mock to
				// its end before the cancel reaches the run. Nothing was built: nothing to undo.
				want = upTo(step)
			case activities.StepStopOld, activities.StepTakeOver:
				want = append(want, string(activities.StepReleaseAddresses), string(activities.StepStartOld), string(activities.StepDestroyReplacement))
			default:
				want = append(want, string(activities.StepDestroyReplacement))
			}
			require.Equal(t, want, append([]string{}, sim.calls...), "compensation runs on cancel")
			require.True(t, sim.oldRunning, "the old VM serves after the cancel")
			require.False(t, sim.newExists, "no replacement is left behind")
			require.NotNil(t, sim.settled, "a cancel settles the VM too")
			require.Equal(t, models.OpCanceled, sim.finished.Status)
		})
	}
}

// TestRecreateOfAMissingOrStoppedVM: an old VM missing on its hypervisor is just created
// again, and a rollback does not start a VM that was stopped before.
func TestRecreateOfAMissingOrStoppedVM(t *testing.T) {
	missing := router
	missing.State = models.StateError
	sim := &recreateSim{}
	env := newRecreateEnv(t, sim, missing)
	env.ExecuteWorkflow(SystemVMLifecycle, LifecycleInput{OperationID: "op-m", VMID: "vm-1", Action: ActionRecreate})
	require.NoError(t, env.GetWorkflowError(), "recreate repairs a VM in Error, missing on its hypervisor")
	require.True(t, sim.committed && sim.newRunning)

	stopped := router
	stopped.State = models.StateStopped
	sim = &recreateSim{oldExists: true, failAt: activities.StepDestroyOld}
	env = newRecreateEnv(t, sim, stopped)
	env.ExecuteWorkflow(SystemVMLifecycle, LifecycleInput{OperationID: "op-s", VMID: "vm-1", Action: ActionRecreate})
	require.Error(t, env.GetWorkflowError())
	require.False(t, sim.oldRunning, "a VM stopped before the recreate is not started by its rollback")
	require.True(t, sim.oldExists)
	require.False(t, sim.newExists)
}

func TestRecreateOfADestroyedRowIsRefused(t *testing.T) {
	gone := router
	gone.State = models.StateDestroyed
	sim := &recreateSim{}
	env := newRecreateEnv(t, sim, gone)
	env.ExecuteWorkflow(SystemVMLifecycle, LifecycleInput{OperationID: "op-d", VMID: "vm-1", Action: ActionRecreate})
	require.ErrorContains(t, env.GetWorkflowError(), "is destroyed")
	require.Empty(t, sim.calls)
	require.Nil(t, sim.settled, "nothing was touched: nothing to settle")
}
