package main

import (
	"context"
	"log/slog"
	"strings"

	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// resyncSchedules is the API's settings hook: a change to a router.health.checks.* setting
// reschedules the health check schedules at once (the worker also re-syncs every minute), as a
// change to consoleproxy.capacityscan.interval does the capacity scan schedules.
func resyncSchedules(tc client.Client, store *models.Store, logger *slog.Logger) func(context.Context, string) {
	return func(ctx context.Context, name string) {
		if name == "consoleproxy.certificate.check.interval" {
			if _, _, err := workflows.SyncCertificateExpirySchedule(ctx, tc, store); err != nil {
				logger.Error("resync the certificate expiry schedule after a settings change", "error", err)
			}
			return
		}
		if name == "consoleproxy.capacityscan.interval" {
			if _, err := workflows.SyncCapacitySchedules(ctx, tc, store); err != nil {
				logger.Error("resync the capacity scan schedules after a settings change", "error", err)
			}
			return
		}
		if !strings.HasPrefix(name, "router.health.checks.") {
			return
		}
		if _, err := workflows.SyncHealthSchedules(ctx, tc, store); err != nil {
			logger.Error("resync health check schedules after a settings change", "setting", name, "error", err)
		}
	}
}

// consoleTokenKey derives the console session token key from the master key (nil, so
// POST /consoles answers 503, if that fails).
func consoleTokenKey(master []byte) []byte {
	k, err := consoles.TokenKey(master)
	if err != nil {
		return nil
	}
	return k
}
