package workflows

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// patchRig is the upgrade rig with a stand-in for Health.PatchRouter taking 2 minutes of
// virtual time per router; patchFail makes a router's patch fail as the agent would.
type patchRig struct {
	*upgradeRig
	patchFail map[string]string
	patched   map[string]time.Time // patch returned (virtual)
	patchIn   map[string][]activities.PatchRouterInput
}

func newPatchRig(t *testing.T, plan activities.UpgradePlan) *patchRig {
	p := &patchRig{upgradeRig: newUpgradeRig(t, plan), patchFail: map[string]string{}, patched: map[string]time.Time{},
		patchIn: map[string][]activities.PatchRouterInput{}}
	p.env.OnActivity(ha.PatchRouter, mock.Anything, mock.Anything).After(2 * time.Minute).Return(
		func(_ context.Context, in activities.PatchRouterInput) (activities.PatchRouterResult, error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.patchIn[in.RouterID] = append(p.patchIn[in.RouterID], in)
			p.patched[in.RouterID] = p.env.Now()
			if why, ok := p.patchFail[in.RouterID]; ok {
				return activities.PatchRouterResult{}, temporal.NewNonRetryableApplicationError(why, activities.ErrTypePatchFailed, nil)
			}
			return activities.PatchRouterResult{RouterID: in.RouterID, SoftwareVersion: "1.0.0+abcdef12", ScriptsVersion: "abcdef12",
				TemplateVersion: "4.14.0", Changed: true}, nil
		})
	return p
}

// TestUpgradePatchMode: with mode patch every router is live-patched (one PatchRouter keyed
// by the upgrade's and the router's IDs, the forced flag passed on) and then gated — never
// recreated; a patch that fails fails its router and spends the budget (the upgrade pauses
// and raises its alert naming the router and the agent's reason); the redundant pair goes
// BACKUP first, its PRIMARY only after the BACKUP's gate; resume finishes the rest.
func TestUpgradePatchMode(t *testing.T) {
	plan := plainPlan(ids("r", 4))
	plan.Groups[0].Routers = append(plan.Groups[0].Routers,
		activities.PlannedRouter{ID: "b1", Name: "r-b1", ZoneID: "z1", RedundantState: models.RedundantBackup},
		activities.PlannedRouter{ID: "p1", Name: "r-p1", ZoneID: "z1", RedundantState: models.RedundantPrimary, After: "b1"})
	r := newPatchRig(t, plan)
	r.patchFail["r02"] = "live patch of r-r02: exit status 1: patch bundle checksum mismatch"
	var paused RouterUpgradeProgress
	r.at(2*time.Hour, func() {
		paused = r.progress()
		r.env.SignalWorkflow(SignalUpgradeResume, nil)
	})
	r.run(RouterUpgradeRequest{Parallelism: 2, Mode: UpgradeModePatch, PatchForce: true})
	require.NoError(t, r.env.GetWorkflowError())

	require.Equal(t, "paused", paused.Status, paused.Step)
	require.Equal(t, UpgradeModePatch, paused.Mode)
	require.Contains(t, paused.PauseReason, "failure budget 0 exceeded")
	require.Len(t, r.alerts, 1)
	require.Contains(t, r.alerts[0].Subject, "r-r02")
	require.Contains(t, r.alerts[0].Description, "checksum mismatch")

	res := r.result()
	st := r.states(res)
	require.Equal(t, UpgradeFailed, st["r02"])
	require.Equal(t, 5, res.Counts[UpgradeDone], "%v", res.Counts)
	require.Empty(t, r.children, "no router is recreated in patch mode")
	for _, x := range res.Routers {
		require.Len(t, r.patchIn[x.ID], 1, "%s patched once", x.ID)
		in := r.patchIn[x.ID][0]
		require.Equal(t, RouterUpgradeRouterOperationID("op-1", x.ID), in.OperationID)
		require.True(t, in.Force)
		if x.State != UpgradeDone {
			require.Zero(t, r.gated[x.ID], "%s failed its patch: not gated", x.ID)
			continue
		}
		require.Equal(t, "1.0.0+abcdef12", x.SoftwareVersion)
		require.Contains(t, x.Reason, "live-patched with 1.0.0+abcdef12")
		require.False(t, r.gated[x.ID].Before(r.patched[x.ID]), "%s gated after its patch", x.ID)
		require.True(t, x.GateStarted >= x.Started && x.Ended >= x.GateStarted, "%s timings", x.ID)
	}
	require.True(t, r.patched["p1"].After(r.gated["b1"]) || r.patched["p1"].Equal(r.gated["b1"].Add(2*time.Minute)),
		"PRIMARY patched %s, after its BACKUP's gate %s", r.patched["p1"], r.gated["b1"])
	require.Equal(t, models.OpCompleted, r.finished[len(r.finished)-1].Status)
}

// TestUpgradePatchGateFails: a router whose patch went in but whose gate fails is failed
// (the gate holds after a patch as after a recreate), and its PRIMARY stays untouched.
func TestUpgradePatchGateFails(t *testing.T) {
	plan := redundantPairPlan()
	r := newPatchRig(t, plan)
	r.gateFail["b1"] = "health gate: router_version_check.py: scripts version mismatch"
	r.run(RouterUpgradeRequest{Parallelism: 5, Mode: UpgradeModePatch, Budget: FailureBudget{Count: 1}})
	require.NoError(t, r.env.GetWorkflowError())
	st := r.states(r.result())
	require.Equal(t, UpgradeFailed, st["b1"])
	require.Equal(t, UpgradeSkipped, st["p1"])
	require.Len(t, r.patchIn["b1"], 1)
	require.Empty(t, r.patchIn["p1"], "the PRIMARY of a failed BACKUP is not patched")
	require.Empty(t, r.alerts, "within the budget")
}

// TestUpgradePatchCancel: a cancel lets the patches in flight finish and pass their gate,
// and starts no other.
func TestUpgradePatchCancel(t *testing.T) {
	r := newPatchRig(t, plainPlan(ids("r", 8)))
	r.at(time.Minute, func() { r.env.CancelWorkflow() })
	r.run(RouterUpgradeRequest{Parallelism: 3, Mode: UpgradeModePatch})
	var canceled *temporal.CanceledError
	require.True(t, errors.As(r.env.GetWorkflowError(), &canceled), "error %v", r.env.GetWorkflowError())
	for _, id := range []string{"r01", "r02", "r03"} {
		require.Len(t, r.patchIn[id], 1, "%s in flight at the cancel", id)
		require.False(t, r.gated[id].IsZero(), "%s in flight at the cancel was gated", id)
	}
	require.Empty(t, r.patchIn["r04"], "nothing starts after the cancel")
	require.Empty(t, r.children)
	require.Equal(t, models.OpCanceled, r.finished[len(r.finished)-1].Status)
}
