package activities

// Gated changes (SPEC §4.4): what a network's routers serve — guest VM entries (DHCP, DNS),
// port forwarding and load balancing rules — is pushed to every router of the network over
// SSH, where `sysvm-agent apply-rules` rewrites the files and reloads the daemons. With
// router.version.check on, a change that would reach a router below the required version is
// refused before anything is stored (CheckRouterVersions).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/models"
)

// ErrTypeRouterOutdated: a change would reach a router that requires upgrade while
// router.version.check is on.
const ErrTypeRouterOutdated = "RouterRequiresUpgrade"

// OutdatedRouter is a router a change may not be sent to.
type OutdatedRouter struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

// OutdatedError is a change refused by router.version.check: the routers and the version
// they need.
type OutdatedError struct {
	Routers  []OutdatedRouter
	Required string
}

func (e *OutdatedError) Error() string {
	names := make([]string, 0, len(e.Routers))
	for _, r := range e.Routers {
		v := r.Version
		if v == "" {
			v = "unknown"
		}
		names = append(names, fmt.Sprintf("%s (%s, version %s)", r.Name, r.ID, v))
	}
	return fmt.Sprintf("router requires upgrade: %s must run version %s or later (minreq.sysvmtemplate.version) before changes "+
		"are sent to it; upgrade it (POST /api/v1/router-upgrades) or set router.version.check to false",
		strings.Join(names, ", "), e.Required)
}

// CheckRouterVersions refuses (an *OutdatedError) a change that would be sent to routers
// below their zone's minreq.sysvmtemplate.version while router.version.check is true in that
// zone. Destroyed routers are not sent anything and do not count.
func CheckRouterVersions(ctx context.Context, s *models.Store, routers []models.SystemVM) error {
	minreq := models.MinReqVersions{Settings: s.Settings}
	var out *OutdatedError
	checkByZone := map[string]bool{}
	for _, vm := range routers {
		if vm.State == models.StateDestroyed {
			continue
		}
		check, ok := checkByZone[vm.ZoneID]
		if !ok {
			var err error
			if check, err = s.Settings.Bool(ctx, models.SettingRouterVersionCheck, models.Scope{ZoneID: vm.ZoneID}); err != nil {
				return fmt.Errorf("read %s: %w", models.SettingRouterVersionCheck, err)
			}
			checkByZone[vm.ZoneID] = check
		}
		if !check {
			continue
		}
		req, min, err := minreq.RouterRequiresUpgrade(ctx, vm)
		if err != nil {
			return err
		}
		if req {
			if out == nil {
				out = &OutdatedError{Required: min}
			}
			out.Routers = append(out.Routers, OutdatedRouter{ID: vm.ID, Name: vm.Name, Version: vm.Version})
		}
	}
	if out != nil {
		return out
	}
	return nil
}

// PushRulesResult is one router's answer to a push.
type PushRulesResult struct {
	RouterID   string   `json:"routerId"`
	RouterName string   `json:"routerName"`
	Result     string   `json:"result"`
	Warnings   []string `json:"warnings,omitempty"`
}

// PushNetworkRules sends a router the configuration the inventory says it must serve now (its
// networks' running guest VMs, port forwarding and LB rules, with the health check settings)
// and has it applied (`sysvm-agent apply-rules`). The configuration is read when the activity
// runs, so a retried or late push sends the latest rows. With router.version.check on, an
// outdated router is refused (non-retryable, ErrTypeRouterOutdated): the API checks before
// storing a change, this is the last line for a router that became outdated since.
func (h *Health) PushNetworkRules(ctx context.Context, routerID string) (PushRulesResult, error) {
	var vm models.SystemVM
	if err := h.Store.Get(ctx, &vm, routerID); err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return PushRulesResult{}, temporal.NewNonRetryableApplicationError("no router with id "+routerID, ErrTypeNotFound, err)
		}
		return PushRulesResult{}, fmt.Errorf("load router %s: %w", routerID, err)
	}
	if err := CheckRouterVersions(ctx, h.Store, []models.SystemVM{vm}); err != nil {
		var oe *OutdatedError
		if errors.As(err, &oe) {
			return PushRulesResult{}, temporal.NewNonRetryableApplicationError(oe.Error(), ErrTypeRouterOutdated, nil)
		}
		return PushRulesResult{}, err
	}
	if vm.State != models.StateRunning {
		return PushRulesResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("router %s is %s: it gets the change when it starts", vm.Name, vm.State), ErrTypeNotRunning, nil)
	}
	if h.Exec == nil {
		return PushRulesResult{}, errors.New("push rules: no SSH executor configured")
	}
	cfg, err := h.RouterConfig(ctx, vm)
	if err != nil {
		return PushRulesResult{}, err
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return PushRulesResult{}, fmt.Errorf("encode configuration of %s: %w", vm.Name, err)
	}
	t, err := h.targets().TargetFor(ctx, vm)
	if err != nil {
		return PushRulesResult{}, err
	}
	var res agent.ApplyResult
	err = heartbeatWhile(ctx, "apply-rules on "+vm.Name, func() error {
		r, err := h.agentRun(ctx, t, data, "apply-rules")
		if err != nil {
			return fmt.Errorf("apply-rules on %s: %w", vm.Name, err)
		}
		if r.ExitCode != 0 {
			return exitError("apply-rules on "+vm.Name, r)
		}
		if err := json.Unmarshal(r.Stdout, &res); err != nil {
			return fmt.Errorf("apply-rules on %s printed no result: %w", vm.Name, err)
		}
		return nil
	})
	if err != nil {
		return PushRulesResult{}, err
	}
	h.log().Info("network rules pushed", "router", vm.Name, "vms", res.VMs, "portforwarding", res.PortForwarding, "lb", res.LoadBalancing)
	return PushRulesResult{RouterID: vm.ID, RouterName: vm.Name, Warnings: res.Warnings,
		Result: fmt.Sprintf("%d guest VMs, %d port forwarding rules, %d LB rules served", res.VMs, res.PortForwarding, res.LoadBalancing)}, nil
}
