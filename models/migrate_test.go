package models_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

func migrationIDs() []string {
	var ids []string
	for _, m := range models.Migrations() {
		ids = append(ids, m.ID)
	}
	return ids
}

func open(t *testing.T, dsn string) *models.Store {
	t.Helper()
	s, err := models.Open(context.Background(), dsn, modelstest.TestKey)
	require.NoError(t, err, "open")
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Open does not touch the schema; api and worker refuse the empty database; Migrate creates
// it once and a second Migrate finds nothing to do.
func TestMigrateFreshDatabase(t *testing.T) {
	modelstest.ForEachDSN(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := open(t, dsn)
		assert.False(t, s.DB.Migrator().HasTable(&models.Zone{}), "Open created tables")
		err := s.RequireCurrentSchema(ctx)
		require.ErrorIs(t, err, models.ErrSchemaOutdated)
		assert.Contains(t, err.Error(), "run `sysvm migrate`")

		res, err := s.Migrate(ctx)
		require.NoError(t, err)
		assert.Equal(t, migrationIDs(), res.Applied)
		assert.Equal(t, "", res.From)
		assert.Equal(t, models.LatestSchema(), res.To)
		assert.False(t, res.Adopted)
		require.NoError(t, s.RequireCurrentSchema(ctx))
		st, err := s.SchemaStatus(ctx)
		require.NoError(t, err)
		assert.True(t, st.Current())
		assert.Equal(t, migrationIDs(), st.Applied)
		assert.Empty(t, st.Pending)

		again, err := s.Migrate(ctx)
		require.NoError(t, err)
		assert.Empty(t, again.Applied, "second migrate ran steps again")
		assert.Equal(t, models.LatestSchema(), again.From)
	})
}

// Every field of every model has its column and every index its index after the migrations:
// a model changed without a migration fails here.
func TestMigrationsCoverModels(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		m := s.DB.Migrator()
		for _, model := range models.AllModels() {
			stmt := &gorm.Statement{DB: s.DB}
			require.NoError(t, stmt.Parse(model))
			sch := stmt.Schema
			if !assert.True(t, m.HasTable(model), "table %s: no migration creates it", sch.Table) {
				continue
			}
			for _, f := range sch.Fields {
				if f.DBName == "" {
					continue
				}
				assert.True(t, m.HasColumn(model, f.DBName), "%s.%s (%s.%s): no migration adds the column",
					sch.Name, f.Name, sch.Table, f.DBName)
			}
			for _, idx := range sch.ParseIndexes() {
				assert.True(t, m.HasIndex(model, idx.Name), "%s: no migration creates index %s", sch.Table, idx.Name)
			}
		}
	})
}

// A database the previous release made with AutoMigrate (its schema dumped in testdata, as a
// production MariaDB and the dev .data/sysvm.db have it) is adopted by the baseline with its
// rows, and then takes the later steps.
func TestMigrateAdoptsAutoMigrateDatabase(t *testing.T) {
	modelstest.ForEachDSN(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := open(t, dsn)
		dump, err := os.ReadFile("testdata/automigrate-v0." + s.Dialect() + ".sql")
		require.NoError(t, err)
		created := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
		require.NoError(t, s.DB.Connection(func(tx *gorm.DB) error {
			if s.Dialect() == "mysql" {
				if err := tx.Exec("SET FOREIGN_KEY_CHECKS=0").Error; err != nil {
					return err
				}
			}
			for _, stmt := range strings.Split(string(dump), ";\n") {
				if strings.TrimSpace(stmt) == "" {
					continue
				}
				if err := tx.Exec(stmt).Error; err != nil {
					return err
				}
			}
			// Rows as the previous release wrote them (its columns only).
			for _, q := range []struct {
				sql  string
				args []any
			}{
				{"INSERT INTO zones (id, created_at, updated_at, name, network_type) VALUES (?, ?, ?, ?, ?)",
					[]any{"z1", created, created, "zone-1", "Advanced"}},
				{"INSERT INTO system_vms (id, created_at, updated_at, name, type, state, zone_id, health_checks_failed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
					[]any{"r1", created, created, "r-1-VM", models.TypeRouter, models.StateRunning, "z1", true}},
				{"INSERT INTO health_check_results (router_id, check_name, check_type, success, last_updated, details, consecutive_failures) VALUES (?, ?, ?, ?, ?, ?, ?)",
					[]any{"r1", "dns.check", "basic", false, created, "no answer", 3}},
				{"INSERT INTO health_recreations (operation_id, router_id, check_name, zone_id, failures, created_at) VALUES (?, ?, ?, ?, ?, ?)",
					[]any{"op1", "r1", "dns.check", "z1", 2, created}},
				{"INSERT INTO secrets (name, kind, ciphertext, updated_at) VALUES (?, ?, ?, ?)",
					[]any{"k1", "password", []byte{1, 2, 3}, created}},
				{"INSERT INTO settings (name, scope, scope_id, value, updated_at) VALUES (?, ?, ?, ?, ?)",
					[]any{"router.health.checks.basic.interval", models.ScopeGlobal, "", "7", created}},
			} {
				if err := tx.Exec(q.sql, q.args...).Error; err != nil {
					return err
				}
			}
			return nil
		}), "load the previous release's schema and rows")

		err = s.RequireCurrentSchema(ctx)
		require.ErrorIs(t, err, models.ErrSchemaOutdated)
		assert.Contains(t, err.Error(), "before versioned migrations")

		res, err := s.Migrate(ctx)
		require.NoError(t, err)
		assert.True(t, res.Adopted)
		assert.Equal(t, migrationIDs(), res.Applied)
		require.NoError(t, s.RequireCurrentSchema(ctx))

		var vm models.SystemVM
		require.NoError(t, s.Get(ctx, &vm, "r1"))
		assert.Equal(t, "r-1-VM", vm.Name)
		assert.True(t, vm.HealthChecksFailed)
		assert.Equal(t, "z1", vm.ZoneID)
		var z models.Zone
		require.NoError(t, s.Get(ctx, &z, "z1"))
		assert.Equal(t, "zone-1", z.Name)
		assert.True(t, z.CreatedAt.Equal(created), "zone created_at %v", z.CreatedAt)
		var r models.HealthCheckResult
		require.NoError(t, s.DB.First(&r, "router_id = ? AND check_name = ?", "r1", "dns.check").Error)
		assert.Equal(t, 3, r.ConsecutiveFailures)
		assert.Equal(t, "no answer", r.Details)
		assert.Empty(t, r.FailureCountedBy)
		var hr models.HealthRecreation
		require.NoError(t, s.DB.First(&hr, "operation_id = ?", "op1").Error)
		assert.Equal(t, 2, hr.Failures)
		var sec models.Secret
		require.NoError(t, s.DB.First(&sec, "name = ?", "k1").Error)
		assert.Equal(t, []byte{1, 2, 3}, sec.Ciphertext)
		n, err := s.Settings.Int(ctx, "router.health.checks.basic.interval", models.Scope{})
		require.NoError(t, err)
		assert.Equal(t, 7, n)
		// The rows still work with the new column.
		require.NoError(t, s.DB.Model(&models.HealthCheckResult{}).Where("router_id = ?", "r1").
			Update("failure_counted_by", "sweep-1").Error)
	})
}

// Processes migrating one database at once take turns: one applies the steps, the others
// wait for its lock and find nothing left to do.
func TestConcurrentMigrate(t *testing.T) {
	modelstest.ForEachDSN(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		const n = 3
		var mu sync.Mutex
		var stages []string
		stores := make([]*models.Store, n)
		for i := range stores {
			stores[i] = open(t, dsn) // a pool of its own, as another process would have
			models.SetMigrateHook(stores[i], func(stage string) {
				mu.Lock()
				stages = append(stages, stage)
				mu.Unlock()
				if stage == "locked" {
					// Hold the lock a while: without it the others would be inside now too.
					time.Sleep(100 * time.Millisecond)
				}
			})
		}
		results := make([]models.MigrateResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, s := range stores {
			wg.Go(func() { results[i], errs[i] = s.Migrate(ctx) })
		}
		wg.Wait()
		applied := 0
		for i := range n {
			require.NoError(t, errs[i], "migrator %d", i)
			if len(results[i].Applied) > 0 {
				applied++
				assert.Equal(t, migrationIDs(), results[i].Applied)
			}
		}
		assert.Equal(t, 1, applied, "exactly one migrator applies the steps: %+v", results)
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, stages, 2*n)
		for i := 0; i < len(stages); i += 2 {
			assert.Equal(t, []string{"locked", "unlocking"}, stages[i:i+2], "migrations overlapped: %v", stages)
		}
		var count int64
		require.NoError(t, stores[0].DB.Table(models.SchemaTable).Count(&count).Error)
		assert.Equal(t, int64(len(migrationIDs())), count)
	})
}

// A database with a step missing is outdated (api and worker refuse it; migrate runs the
// step); one with a step this build does not know is newer (everything refuses it).
func TestSchemaBehindAndAhead(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		ids := migrationIDs()
		last := ids[len(ids)-1]
		require.NoError(t, s.DB.Exec("DELETE FROM "+models.SchemaTable+" WHERE id = ?", last).Error)
		err := s.RequireCurrentSchema(ctx)
		require.ErrorIs(t, err, models.ErrSchemaOutdated)
		assert.Contains(t, err.Error(), "pending: "+last)
		assert.Contains(t, err.Error(), "run `sysvm migrate`")
		res, err := s.Migrate(ctx)
		require.NoError(t, err)
		assert.Equal(t, []string{last}, res.Applied)
		require.NoError(t, s.RequireCurrentSchema(ctx))

		require.NoError(t, s.DB.Exec("INSERT INTO "+models.SchemaTable+" (id) VALUES (?)", "9999_from_the_future").Error)
		err = s.RequireCurrentSchema(ctx)
		require.ErrorIs(t, err, models.ErrSchemaNewer)
		assert.Contains(t, err.Error(), "9999_from_the_future")
		_, err = s.Migrate(ctx)
		require.Error(t, err)
		assert.True(t, errors.Is(err, models.ErrSchemaNewer), "migrate of a newer schema: %v", err)
	})
}
