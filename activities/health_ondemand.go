package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/models"
)

// Error types of the on-demand check, for the API to map.
const (
	// ErrTypeHealthDisabled: router.health.checks.enabled is false for the router's zone.
	ErrTypeHealthDisabled = "HealthChecksDisabled"
	// ErrTypeNotRunning: the router is not Running, so it cannot be checked.
	ErrTypeNotRunning = "NotRunning"
)

// FreshResult is the answer of an on-demand check (getRouterHealthCheckResults with
// performfreshchecks=true): the router's last result of every check, just refreshed.
type FreshResult struct {
	RouterID           string                     `json:"routerid"`
	RouterName         string                     `json:"routername"`
	HealthChecksFailed bool                       `json:"healthchecksfailed"`
	Results            []models.HealthCheckResult `json:"healthcheckresults"`
	// Warnings say what did not work but did not stop the checks (a configuration the router
	// could not store, a platform-side error).
	Warnings []string `json:"warnings,omitempty"`
}

// HealthEnabledIn reports router.health.checks.enabled for a zone.
func HealthEnabledIn(ctx context.Context, s *models.Store, zoneID string) (bool, error) {
	return s.Settings.Bool(ctx, SettingHealthEnabled, models.Scope{ZoneID: zoneID})
}

// HealthCheckNow refreshes a router's configuration, runs its basic and advanced checks now,
// stores the results and returns every last result. It never recreates a router, and a failed
// check's consecutive-failure count is left as it is (a pass still resets it), so asking for
// fresh results never moves a router closer to recreation. A failing check still raises its
// alert and event.
func (h *Health) HealthCheckNow(ctx context.Context, routerID string) (FreshResult, error) {
	var vm models.SystemVM
	if err := h.Store.Get(ctx, &vm, routerID); err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return FreshResult{}, temporal.NewNonRetryableApplicationError("no router with id "+routerID, ErrTypeNotFound, err)
		}
		return FreshResult{}, fmt.Errorf("load router %s: %w", routerID, err)
	}
	if !vm.IsRouter() {
		return FreshResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s (%s) is a %s, not a router", vm.Name, vm.ID, vm.Type), ErrTypeNotFound, nil)
	}
	if vm.State != models.StateRunning {
		return FreshResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("router %s is %s; health checks run on Running routers only", vm.Name, vm.State), ErrTypeNotRunning, nil)
	}
	cs, err := readCheckSettings(ctx, h.Store.Settings, vm.ZoneID)
	if err != nil {
		return FreshResult{}, err
	}
	if !cs.enabled {
		return FreshResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("router health checks are disabled in zone %s (router.health.checks.enabled is false)", vm.ZoneID),
			ErrTypeHealthDisabled, nil)
	}
	if h.Exec == nil {
		return FreshResult{}, errors.New("health checks: no SSH executor configured")
	}
	cfg, err := h.configFor(ctx, vm, cs)
	if err != nil {
		return FreshResult{}, err
	}
	var c contact
	err = heartbeatWhile(ctx, "checking "+vm.Name, func() error {
		var verr error
		c, verr = h.visitFresh(ctx, vm, time.Now().UTC(), cfg)
		return verr
	})
	if err != nil {
		return FreshResult{}, err
	}
	out := FreshResult{RouterID: vm.ID, RouterName: vm.Name, Warnings: c.warnings}
	if c.err != nil {
		out.Warnings = append(out.Warnings, c.err.Error())
	}
	st, err := h.storeResults(ctx, vm, c.results, storeOptions{countFailures: false, fullTypes: c.fullTypes, excluded: cs.exclude})
	if err != nil {
		return FreshResult{}, err
	}
	out.Results = st.results
	if out.Results == nil {
		out.Results = []models.HealthCheckResult{}
	}
	out.HealthChecksFailed = len(st.failing) > 0
	if activity.IsActivity(ctx) {
		h.log().Info("on-demand health check", "router", vm.Name, "failing", len(st.failing), "results", len(st.results))
	}
	return out, nil
}
