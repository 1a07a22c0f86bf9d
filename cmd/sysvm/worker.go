package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/sysvm/sysvm/worker"
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
	acts := buildActivities(store, logger)
	defer acts.Drivers.Close()
	w := worker.New(worker.Config{Client: tc, Activities: acts, Logger: logger})
	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	logger.Info("worker running", "temporal", c.TemporalAddress, "namespace", c.TemporalNamespace)
	<-ctx.Done()
	w.Stop()
	return nil
}
