package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/sysvm/sysvm/models"
)

const migrateUsage = `usage: sysvm migrate [up|status] [flags]

  up       apply the pending schema migrations (the default); safe to run from several
           processes at once: they take turns under a database lock
  status   print the schema version, the applied and the pending migrations; exits 1 when
           the schema is not the one this sysvm needs
`

// runMigrate applies the pending schema migrations (`sysvm migrate`, `sysvm migrate up`) or
// prints where the schema stands (`sysvm migrate status`). It is the only production command
// that changes the schema: api and worker refuse to start on an outdated one.
func runMigrate(ctx context.Context, logger *slog.Logger, args []string) error {
	action := "up"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		action, args = args[0], args[1:]
	}
	if action != "up" && action != "status" {
		fmt.Fprint(os.Stderr, migrateUsage)
		return fmt.Errorf("migrate: unknown action %q (want up or status)", action)
	}
	a, err := setup(logger, "migrate", args, false, nil)
	if err != nil {
		return err
	}
	defer a.close()
	store, err := a.openDatabase(ctx)
	if err != nil {
		return err
	}
	if action == "status" {
		st, err := store.SchemaStatus(ctx)
		if err != nil {
			return err
		}
		printSchemaStatus(os.Stdout, store.Dialect(), st)
		return st.Problem()
	}
	res, err := store.Migrate(ctx)
	if err != nil {
		return err
	}
	if len(res.Applied) == 0 {
		logger.Info("database schema is up to date", "dialect", store.Dialect(), "version", res.To)
		return nil
	}
	logger.Info("database migrated", "dialect", store.Dialect(), "from", res.From, "to", res.To,
		"applied", strings.Join(res.Applied, ","), "adopted", res.Adopted)
	return nil
}

// printSchemaStatus writes where the schema stands, one fact a line.
func printSchemaStatus(w io.Writer, dialect string, st models.SchemaStatus) {
	version := st.Version()
	switch {
	case !st.Versioned && st.HasTables:
		version = "unversioned (made before versioned migrations)"
	case version == "":
		version = "none (empty database)"
	}
	fmt.Fprintf(w, "database  %s\nversion   %s\nneeded    %s\n", dialect, version, models.LatestSchema())
	for _, id := range st.Applied {
		fmt.Fprintf(w, "applied   %s\n", id)
	}
	for _, id := range st.Pending {
		fmt.Fprintf(w, "pending   %s\n", id)
	}
	for _, id := range st.Unknown {
		fmt.Fprintf(w, "unknown   %s (applied by a newer sysvm)\n", id)
	}
}
