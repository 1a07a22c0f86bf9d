package activities

// Live patching a router (issue 8, `mode: patch`; CloudStack's patchSystemVm): the
// platform's current agent and scripts bundle goes over SSH to `sysvm-agent patch`, which
// verifies its checksum, installs it under the VM's root, restarts the services and records
// the scripts version; the row then records what the VM reported. No reboot: the VM, its
// instance name and its boot time stay.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/models"
)

// EventLivePatch is the event of a router live-patched (CloudStack's LIVE.PATCH.SYSTEM.VM).
const EventLivePatch = "LIVE.PATCH.SYSTEM.VM"

// ErrTypePatchFailed: the agent refused or failed the patch (a bad bundle, a service that did
// not restart); retrying the same bundle would not help.
const ErrTypePatchFailed = "PatchFailed"

// PatchRouterInput asks for one router's live patch.
type PatchRouterInput struct {
	// OperationID keys the patch: the per-router operation of an upgrade (the upgrade's ID and
	// the router's), so a retried activity finds what an earlier attempt recorded.
	OperationID string `json:"operationId"`
	RouterID    string `json:"routerId"`
	// Force re-installs and restarts even when the VM runs the bundle already
	// (patchSystemVm's forced). Only the first attempt forces: a retry after a patch that
	// succeeded in the VM but was not reported is a no-op there.
	Force bool `json:"force,omitempty"`
}

// PatchRouterResult is a patched router as the VM reported it and the row now records.
type PatchRouterResult struct {
	RouterID     string `json:"routerId"`
	RouterName   string `json:"routerName"`
	InstanceName string `json:"instanceName"`
	// TemplateVersion is the router's template version (unchanged by a patch).
	TemplateVersion string `json:"templateVersion"`
	// SoftwareVersion and ScriptsVersion are the bundle's version and checksum.
	SoftwareVersion string   `json:"softwareVersion"`
	ScriptsVersion  string   `json:"scriptsVersion"`
	AgentVersion    string   `json:"agentVersion"`
	Changed         bool     `json:"changed"`
	Files           []string `json:"files,omitempty"`
	Restarted       []string `json:"restarted,omitempty"`
}

func (h *Health) patchBundle(ctx context.Context) (agent.Bundle, error) {
	if h.PatchBundle != nil {
		return h.PatchBundle(ctx)
	}
	return agent.DefaultBundle()
}

func patchStep(checksum string) string { return "patch." + checksum[:min(len(checksum), 16)] }

// PatchRouter live-patches one router: it must exist and be Running (a router that is not is
// refused, non-retryable, as CloudStack's "please destroy and recreate"); the bundle goes on
// stdin to `sysvm-agent patch` over SSH along the router's access path, heartbeating while
// it runs; the row records the scripts and software versions the agent reported (the
// template version stays: nothing was rebuilt), an event LIVE.PATCH.SYSTEM.VM is recorded,
// and the step is journaled under OperationID so a retry after that returns what was
// recorded. A bad bundle or a service that did not restart is ErrTypePatchFailed; a router
// that does not answer is retryable.
func (h *Health) PatchRouter(ctx context.Context, in PatchRouterInput) (PatchRouterResult, error) {
	var vm models.SystemVM
	if err := h.Store.Get(ctx, &vm, in.RouterID); err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return PatchRouterResult{}, temporal.NewNonRetryableApplicationError("no router with id "+in.RouterID, ErrTypeNotFound, err)
		}
		return PatchRouterResult{}, fmt.Errorf("load router %s: %w", in.RouterID, err)
	}
	b, err := h.patchBundle(ctx)
	if err != nil {
		return PatchRouterResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypePatchFailed, err)
	}
	res := PatchRouterResult{RouterID: vm.ID, RouterName: vm.Name, InstanceName: vm.HypervisorName(),
		TemplateVersion: vm.Version, SoftwareVersion: b.Version, ScriptsVersion: b.Checksum, AgentVersion: b.AgentVersion}
	step := patchStep(b.Checksum)
	if done, err := h.stepDone(ctx, in.OperationID, step); err != nil {
		return res, err
	} else if done && vm.ScriptsVersion == b.Checksum {
		return res, nil // recorded by an earlier attempt
	}
	if vm.State != models.StateRunning || vm.RemovedAt != nil {
		return res, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("router %s is %s: only a Running router can be live-patched (recreate it instead)", vm.Name, vm.State),
			ErrTypeNotRunning, nil)
	}
	// A patch does not hold the router's own workflow ID (systemvm:<id>): it refuses to run
	// while an operation there (a stop, reboot, recreate, migrate...) may replace or stop the VM.
	var busy models.Operation
	err = h.Store.DB.WithContext(ctx).Where("workflow_id = ? AND status = ?", "systemvm:"+vm.ID, models.OpRunning).
		Order("created_at").Limit(1).Find(&busy).Error
	if err != nil {
		return res, fmt.Errorf("operations on router %s: %w", vm.Name, err)
	}
	if busy.ID != "" {
		return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("another operation runs on the router: %s %s (workflow systemvm:%s)",
			busy.Kind, busy.ID, vm.ID), ErrTypePatchFailed, nil)
	}
	if h.Exec == nil {
		return res, errors.New("live patch: no SSH executor configured")
	}
	data, err := json.Marshal(b)
	if err != nil {
		return res, fmt.Errorf("encode the patch bundle: %w", err)
	}
	t, err := h.targets().TargetFor(ctx, vm)
	if err != nil {
		return res, err
	}
	args := []string{"patch"}
	if in.Force && (!activity.IsActivity(ctx) || activity.GetInfo(ctx).Attempt <= 1) {
		args = append(args, "--force")
	}
	var out agent.PatchResult
	err = heartbeatWhile(ctx, "live patch of "+vm.Name, func() error {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		r, err := h.agentRun(rctx, t, data, args...)
		if err != nil {
			return fmt.Errorf("live patch of %s: %w", vm.Name, err)
		}
		if r.ExitCode != 0 {
			return temporal.NewNonRetryableApplicationError(exitError("live patch of "+vm.Name, r).Error(), ErrTypePatchFailed, nil)
		}
		if err := json.Unmarshal(r.Stdout, &out); err != nil {
			return fmt.Errorf("live patch of %s printed no result: %w", vm.Name, err)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if out.ScriptsVersion != b.Checksum {
		return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("live patch of %s: the agent reports scripts version %q, want %s",
			vm.Name, out.ScriptsVersion, b.Checksum), ErrTypePatchFailed, nil)
	}
	res.Changed, res.Files, res.Restarted = out.Changed, out.Files, out.Restarted
	res.AgentVersion = cmp.Or(out.AgentVersion, res.AgentVersion)
	if err := h.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vm.ID).
		Updates(map[string]any{"scripts_version": out.ScriptsVersion, "software_version": out.Version}).Error; err != nil {
		return res, fmt.Errorf("record the patch of %s: %w", vm.Name, err)
	}
	what := "installed, restarted " + fmt.Sprint(out.Restarted)
	if !out.Changed {
		what = "already installed: nothing to do"
	}
	desc := fmt.Sprintf("router %s (%s) live-patched with bundle %s (scripts %s): %s", vm.Name, vm.HypervisorName(), b.Version, b.Checksum, what)
	if err := h.Store.DB.WithContext(ctx).Create(&models.Event{Type: EventLivePatch, Level: "INFO", Description: clip(desc, 4000),
		ResourceType: ResourceRouter, ResourceID: vm.ID, ZoneID: vm.ZoneID}).Error; err != nil {
		return res, fmt.Errorf("record the patch event of %s: %w", vm.Name, err)
	}
	if err := h.markStep(ctx, in.OperationID, step, desc); err != nil {
		return res, err
	}
	h.log().Info("router live-patched", "router", vm.Name, "instance", vm.HypervisorName(), "bundle", b.Version, "changed", out.Changed)
	return res, nil
}

func (h *Health) stepDone(ctx context.Context, opID, step string) (bool, error) {
	return (&Activities{Store: h.Store}).stepDone(ctx, opID, step)
}

func (h *Health) markStep(ctx context.Context, opID, step, detail string) error {
	return (&Activities{Store: h.Store}).markStep(ctx, opID, step, detail)
}
