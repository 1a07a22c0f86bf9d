package main

import (
	"context"
	"flag"
	"log/slog"
)

func runMigrate(ctx context.Context, logger *slog.Logger, args []string) error {
	var c config
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	c.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	store, err := c.openStore(ctx, false)
	if err != nil {
		return err
	}
	defer store.Close()
	logger.Info("database migrated", "dialect", store.Dialect())
	return nil
}
