package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/models"
)

// ErrTypeGateFailed: a router's basic checks did not all pass within the gate's timeout.
const ErrTypeGateFailed = "HealthGateFailed"

// UpgradeGateInput asks for a router's health gate after its upgrade.
type UpgradeGateInput struct {
	RouterID string `json:"routerId"`
	// Timeout is how long the checks may take to pass (2 minutes when 0).
	Timeout time.Duration `json:"timeout"`
	// Poll is the pause between two fresh checks (5 s when 0).
	Poll time.Duration `json:"poll,omitempty"`
}

// UpgradeGateResult is a passed gate.
type UpgradeGateResult struct {
	RouterID string `json:"routerId"`
	// Version is the router's version in the inventory once it passed.
	Version string `json:"version"`
	// Attempts is how many fresh checks it took.
	Attempts int `json:"attempts"`
	// Note says when the gate could check less than usual (health checks disabled).
	Note string `json:"note,omitempty"`
}

// UpgradeHealthGate is an upgraded router's health gate: it runs fresh checks on the router
// (the on-demand path: configuration pushed, basic and advanced checks run, results stored)
// until every basic check — connectivity, disk, CPU, memory, gateways, the router's version
// and the ssh/dnsmasq/haproxy/httpd services — passes, or the timeout passes. Advanced checks
// (DNS, DHCP, LB, iptables entries) are stored and alerted as usual but do not hold the gate.
// A router that is not Running yet is asked again. In a zone with health checks disabled the
// gate only requires the router to be Running, and says so. A gate that does not pass is a
// non-retryable error of type ErrTypeGateFailed naming the failing checks and their details.
func (h *Health) UpgradeHealthGate(ctx context.Context, in UpgradeGateInput) (UpgradeGateResult, error) {
	out := UpgradeGateResult{RouterID: in.RouterID}
	err := pollGate(ctx, in.Timeout, in.Poll, 5*time.Second, "checks", &out.Attempts, func() (bool, string, error) {
		fresh, err := h.HealthCheckNow(ctx, in.RouterID)
		var appErr *temporal.ApplicationError
		switch {
		case err == nil:
			failing := failingBasic(fresh.Results)
			if len(failing) == 0 {
				var vm models.SystemVM
				if err := h.Store.Get(ctx, &vm, in.RouterID); err == nil {
					out.Version = vm.Version
				}
				return true, "", nil
			}
			return false, "basic checks failing: " + strings.Join(failing, "; "), nil
		case errors.As(err, &appErr) && appErr.Type() == ErrTypeHealthDisabled:
			var vm models.SystemVM
			if err := h.Store.Get(ctx, &vm, in.RouterID); err != nil {
				return false, "", fmt.Errorf("load router %s: %w", in.RouterID, err)
			}
			if vm.State == models.StateRunning {
				out.Version = vm.Version
				out.Note = "health checks are disabled in the router's zone: the gate checked only that it is Running"
				return true, "", nil
			}
			return false, "router is " + vm.State, nil
		case errors.As(err, &appErr) && appErr.Type() == ErrTypeNotRunning:
			return false, appErr.Message(), nil
		case errors.As(err, &appErr) && appErr.Type() == ErrTypeNotFound:
			return false, "", err
		case ctx.Err() != nil:
			return false, "", ctx.Err()
		default:
			return false, err.Error(), nil
		}
	})
	return out, err
}

// pollGate runs attempt, counting attempts, until it passes or fails for good (a non-nil
// error), every poll (def when 0) within timeout (2 minutes when 0): the loop of
// UpgradeHealthGate and SystemVMUpgradeGate. An attempt that does not pass says why; once
// the timeout would pass, the last why is a non-retryable error of type ErrTypeGateFailed
// ("not passed within ... after N <tries>"). Each attempt heartbeats in an activity.
func pollGate(ctx context.Context, timeout, poll, def time.Duration, tries string, attempts *int,
	attempt func() (passed bool, why string, err error)) error {
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	if poll <= 0 {
		poll = def
	}
	deadline := time.Now().Add(timeout)
	for {
		*attempts++
		passed, why, err := attempt()
		if err != nil {
			return err
		}
		if passed {
			return nil
		}
		if time.Now().Add(poll).After(deadline) {
			return temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("health gate: not passed within %s after %d %s: %s", timeout, *attempts, tries, clip(why, 2000)),
				ErrTypeGateFailed, nil)
		}
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, fmt.Sprintf("gate attempt %d: %s", *attempts, clip(why, 200)))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// failingBasic names the failing basic checks with their details.
func failingBasic(rs []models.HealthCheckResult) []string {
	var out []string
	seen := false
	for _, r := range rs {
		if r.CheckType != string(agent.Basic) {
			continue
		}
		seen = true
		if !r.Success {
			out = append(out, r.CheckName+": "+clip(r.Details, 300))
		}
	}
	if !seen {
		out = append(out, "no basic check result yet")
	}
	return out
}
