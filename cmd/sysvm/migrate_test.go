package main

import (
	"context"
	"encoding/base64"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// api and worker (app.openStore outside dev) refuse a database `sysvm migrate` has not migrated,
// saying to run it; after `sysvm migrate` they open it, and `sysvm migrate status` is clean.
func TestAPIAndWorkerNeedSysvmMigrate(t *testing.T) {
	ctx := context.Background()
	dsn := modelstest.SQLiteDSN(t)
	key := base64.StdEncoding.EncodeToString(modelstest.TestKey)
	open := func() (*models.Store, error) {
		a, err := setup(slog.New(slog.DiscardHandler), "api", []string{"-db", dsn, "-secret-key", key, "-data", t.TempDir()}, false, nil)
		require.NoError(t, err)
		t.Cleanup(a.close)
		return a.openStore(ctx)
	}
	_, err := open()
	require.ErrorIs(t, err, models.ErrSchemaOutdated)
	assert.Contains(t, err.Error(), "run `sysvm migrate`")
	require.Error(t, runMigrate(ctx, slog.New(slog.DiscardHandler), []string{"status", "-db", dsn, "-secret-key", key}),
		"status of an empty database is not clean")

	require.NoError(t, runMigrate(ctx, slog.New(slog.DiscardHandler), []string{"-db", dsn, "-secret-key", key}))
	_, err = open()
	require.NoError(t, err)
	require.NoError(t, runMigrate(ctx, slog.New(slog.DiscardHandler), []string{"status", "-db", dsn, "-secret-key", key}))
	require.Error(t, runMigrate(ctx, slog.New(slog.DiscardHandler), []string{"down", "-db", dsn, "-secret-key", key}))
}
