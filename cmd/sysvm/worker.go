package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/worker"
	"github.com/sysvm/sysvm/workflows"
)

// runWorker runs a Temporal worker with every workflow and activity until ctx ends.
func runWorker(ctx context.Context, logger *slog.Logger, args []string) error {
	var tcfg telemetryConfig
	a, err := setup(logger, "worker", args, false, func(fs *flag.FlagSet) { tcfg.flags(fs, defaultWorkerMetricsAddr) })
	if err != nil {
		return err
	}
	defer a.close()
	tel, err := tcfg.start(ctx, logger, "sysvm-worker", a.cfg)
	if err != nil {
		return err
	}
	defer stopTelemetry(logger, tel)
	if _, err := a.openStore(ctx); err != nil {
		return err
	}
	if _, err := a.dialTemporal(ctx); err != nil {
		return err
	}
	p, err := worker.BuildPlatform(ctx, a.store, logger, worker.Drivers(), nil)
	if err != nil {
		return err
	}
	defer p.Close()
	if err := instrumentWorker(ctx, logger, tel, tcfg, p); err != nil {
		return err
	}
	stop, err := startWorker(ctx, a.tc, a.cfg.Temporal.Namespace, a.store, p, logger)
	if err != nil {
		return err
	}
	defer stop()
	logger.Info("worker running", "temporal", a.cfg.Temporal.Address, "namespace", a.cfg.Temporal.Namespace,
		"codecKey", a.codec.KeyID())
	<-ctx.Done()
	return nil
}

// startWorker registers the search attributes, starts a worker with every workflow and
// activity, and keeps the health check schedules in line with the settings (at once, then
// every minute, as zones come and go) until ctx ends. stop stops the worker.
func startWorker(ctx context.Context, tc client.Client, namespace string, store *models.Store, p *worker.Platform,
	logger *slog.Logger) (stop func(), err error) {
	if err := worker.EnsureSearchAttributes(ctx, tc, namespace); err != nil {
		return nil, err
	}
	w := worker.New(worker.Config{Client: tc, Activities: p.Activities, Health: p.Health, Logger: logger})
	if err := w.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	if _, err := workflows.SyncHealthSchedules(ctx, tc, store); err != nil {
		w.Stop()
		return nil, fmt.Errorf("health check schedules: %w", err)
	}
	if _, _, err := workflows.SyncCertificateExpirySchedule(ctx, tc, store); err != nil {
		logger.Warn("certificate expiry schedule", "error", err)
	}
	if _, err := workflows.SyncCapacitySchedules(ctx, tc, store); err != nil {
		logger.Warn("capacity scan schedules", "error", err)
	}
	go workflows.KeepHealthSchedulesInSync(ctx, tc, store, time.Minute, logger)
	go workflows.KeepCapacitySchedulesInSync(ctx, tc, store, time.Minute, logger)
	return w.Stop, nil
}
