package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/sysvm/sysvm/worker"
	"github.com/sysvm/sysvm/workflows"
)

func runWorker(ctx context.Context, logger *slog.Logger, args []string) error {
	var c config
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	c.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
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
	if err := worker.EnsureSearchAttributes(ctx, tc, c.TemporalNamespace); err != nil {
		return err
	}
	p, err := buildPlatform(ctx, store, logger, registry(), nil)
	if err != nil {
		return err
	}
	defer p.close()
	w := worker.New(worker.Config{Client: tc, Activities: p.acts, Health: p.health, Logger: logger})
	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	defer w.Stop()
	if _, err := workflows.SyncHealthSchedules(ctx, tc, store); err != nil {
		return fmt.Errorf("health check schedules: %w", err)
	}
	logger.Info("worker running", "temporal", c.TemporalAddress, "namespace", c.TemporalNamespace)
	// Zones come and go and settings change: keep the schedules in line.
	workflows.KeepHealthSchedulesInSync(ctx, tc, store, time.Minute, logger)
	return nil
}
