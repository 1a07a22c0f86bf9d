package main

import (
	"context"
	"log/slog"
)

// runMigrate creates or updates the database tables.
func runMigrate(ctx context.Context, logger *slog.Logger, args []string) error {
	a, err := setup(logger, "migrate", args, false, nil)
	if err != nil {
		return err
	}
	defer a.close()
	store, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	logger.Info("database migrated", "dialect", store.Dialect())
	return nil
}
