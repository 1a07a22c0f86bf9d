package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
)

// patchRouter is a router's step in a patch-mode upgrade (issue 8, CloudStack's
// patchSystemVm): instead of the recreate child, one Health.PatchRouter activity pushes the
// platform's agent and scripts bundle over SSH to the running VM (no reboot: the same VM,
// instance name and boot time), keyed by the per-router operation ID of this upgrade; then the
// same health gate as a recreate. Everything around it — the sliding window, groups and
// windows, the redundant-pair rule, the failure budget, pause, resume and cancel — is the
// upgrade's, unchanged. It runs on the router's disconnected context, so a cancel of the
// upgrade lets a patch in flight finish.
func (w *upgrade) patchRouter(ctx workflow.Context, i int, chk activities.UpgradeCheck) (string, string) {
	r := &w.st.Routers[i]
	pctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		HeartbeatTimeout:    30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: 30 * time.Second, MaximumAttempts: 3,
			NonRetryableErrorTypes: []string{activities.ErrTypePatchFailed, activities.ErrTypeNotFound, activities.ErrTypeNotRunning}},
		Summary: "live patch " + r.Name,
	})
	var out activities.PatchRouterResult
	err := workflow.ExecuteActivity(pctx, ha.PatchRouter, activities.PatchRouterInput{
		OperationID: RouterUpgradeRouterOperationID(w.in.OperationID, r.ID), RouterID: r.ID, Force: w.req.PatchForce}).Get(ctx, &out)
	if err != nil {
		return UpgradeFailed, "patch: " + rootMessage(err)
	}
	r.SoftwareVersion = out.SoftwareVersion
	state, reason := w.healthGate(ctx, i)
	if state == UpgradeDone && reason == "" {
		what := "installed"
		if !out.Changed {
			what = "already installed"
		}
		reason = fmt.Sprintf("live-patched with %s (%s; template %s kept, required %s)", out.SoftwareVersion, what,
			chk.Version, chk.MinReq)
	}
	return state, reason
}
