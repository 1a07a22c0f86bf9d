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
	timeout, poll := in.Timeout, in.Poll
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	if poll <= 0 {
		poll = 5 * time.Second
	}
	deadline := time.Now().Add(timeout)
	out := UpgradeGateResult{RouterID: in.RouterID}
	var last string
	for {
		out.Attempts++
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
				return out, nil
			}
			last = "basic checks failing: " + strings.Join(failing, "; ")
		case errors.As(err, &appErr) && appErr.Type() == ErrTypeHealthDisabled:
			var vm models.SystemVM
			if err := h.Store.Get(ctx, &vm, in.RouterID); err != nil {
				return out, fmt.Errorf("load router %s: %w", in.RouterID, err)
			}
			if vm.State == models.StateRunning {
				out.Version = vm.Version
				out.Note = "health checks are disabled in the router's zone: the gate checked only that it is Running"
				return out, nil
			}
			last = "router is " + vm.State
		case errors.As(err, &appErr) && appErr.Type() == ErrTypeNotRunning:
			last = appErr.Message()
		case errors.As(err, &appErr) && appErr.Type() == ErrTypeNotFound:
			return out, err
		case ctx.Err() != nil:
			return out, ctx.Err()
		default:
			last = err.Error()
		}
		if time.Now().Add(poll).After(deadline) {
			return out, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("health gate: not passed within %s after %d checks: %s", timeout, out.Attempts, clip(last, 2000)),
				ErrTypeGateFailed, nil)
		}
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, fmt.Sprintf("gate attempt %d: %s", out.Attempts, clip(last, 200)))
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
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
