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

func runWorker(ctx context.Context, logger *slog.Logger, args []string) error {
	var tcfg telemetryConfig
	c, err := parseConfig("worker", args, func(fs *flag.FlagSet) { tcfg.flags(fs, defaultWorkerMetricsAddr) })
	if err != nil {
		return err
	}
	tel, err := tcfg.start(ctx, logger, "sysvm-worker", c)
	if err != nil {
		return err
	}
	defer stopTelemetry(logger, tel)
	store, err := c.openStore(ctx, false)
	if err != nil {
		return err
	}
	defer store.Close()
	tc, err := c.dialTemporal(ctx, logger)
	if err != nil {
		return err
	}
	defer tc.Close()
	p, err := worker.BuildPlatform(ctx, store, logger, worker.Drivers(), nil)
	if err != nil {
		return err
	}
	defer p.Close()
	if err := instrumentWorker(ctx, logger, tel, tcfg, p); err != nil {
		return err
	}
	stop, err := startWorker(ctx, tc, c.TemporalNamespace, store, p, logger)
	if err != nil {
		return err
	}
	defer stop()
	logger.Info("worker running", "temporal", c.TemporalAddress, "namespace", c.TemporalNamespace)
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
	go workflows.KeepHealthSchedulesInSync(ctx, tc, store, time.Minute, logger)
	return w.Stop, nil
}
