package main

import (
	"context"
	"log/slog"
)

func runMigrate(ctx context.Context, logger *slog.Logger, args []string) error {
	c, err := parseConfig("migrate", args, nil)
	if err != nil {
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
