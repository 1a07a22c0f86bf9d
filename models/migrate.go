package models

// Versioned schema migrations. The schema is a numbered list of steps (Migrations); the
// database records in schema_migrations which steps it has had. Only `sysvm migrate` (and
// `sysvm dev`, and tests on their fresh databases) apply them, through Store.Migrate, under a
// lock so two processes migrating at once take turns; `sysvm api` and `sysvm worker` only
// check the record (RequireCurrentSchema) and refuse a schema that is behind or ahead of the
// steps they know.
//
// The steps run through github.com/go-gormigrate/gormigrate/v2, which applies each step not
// yet recorded, in order, and records it. Steps are Go functions over gorm's Migrator, so one
// step serves MariaDB/MySQL and SQLite alike.

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/go-gormigrate/gormigrate/v2"
	"gorm.io/gorm"
)

// SchemaTable is the table that records the migrations a database has had.
const SchemaTable = "schema_migrations"

// Migration is one numbered step of the schema.
type Migration struct {
	// ID is the step's number and what it does ("0002_health_failure_counted_by"). IDs sort in
	// the order the steps run; an ID, once released, never changes.
	ID string
	// Migrate changes the schema. It must describe the change with its own types (a local
	// struct with just the new fields), never with the live models, which keep changing.
	Migrate func(tx *gorm.DB) error
}

// Migrations lists every step of the schema, oldest first. To change the schema, append a step
// and change the model in this package the same way; TestMigrationsCoverModels fails while a
// model has a field no step gave a column. A new column on system_vms, for example:
//
//	{ID: "0003_systemvm_last_error", Migrate: func(tx *gorm.DB) error {
//		type SystemVM struct {
//			LastError string `gorm:"type:text"`
//		}
//		return AddColumns(tx, &SystemVM{}, "LastError")
//	}},
//
// (the local type's name gives the table, system_vms, as for the model). Steps never change
// once released: a mistake is fixed by the next step.
func Migrations() []Migration {
	return []Migration{
		{ID: "0001_baseline", Migrate: baselineSchema},
		{ID: "0002_health_failure_counted_by", Migrate: func(tx *gorm.DB) error {
			type HealthCheckResult struct {
				FailureCountedBy string `gorm:"size:255"`
			}
			return AddColumns(tx, &HealthCheckResult{}, "FailureCountedBy")
		}},
		{ID: "0003_systemvm_instance_name_last_error_destroy_operation", Migrate: func(tx *gorm.DB) error {
			type SystemVM struct {
				InstanceName       string `gorm:"size:255;index"`
				LastError          string `gorm:"type:text"`
				DestroyOperationID string `gorm:"size:36;index"`
			}
			if err := AddColumns(tx, &SystemVM{}, "InstanceName", "LastError", "DestroyOperationID"); err != nil {
				return err
			}
			for _, f := range []string{"InstanceName", "DestroyOperationID"} {
				if !tx.Migrator().HasIndex(&SystemVM{}, f) {
					if err := tx.Migrator().CreateIndex(&SystemVM{}, f); err != nil {
						return fmt.Errorf("index %s: %w", f, err)
					}
				}
			}
			return nil
		}},
		{ID: "0004_templates", Migrate: migrateTemplates},
		{ID: "0005_diagnostics_results_archives", Migrate: func(tx *gorm.DB) error {
			type DiagnosticsResult struct {
				ID          string `gorm:"primaryKey;size:36"`
				CreatedAt   time.Time
				UpdatedAt   time.Time
				SystemVMID  string `gorm:"size:36;index:idx_diagnostics_vm"`
				OperationID string `gorm:"size:36;index"`
				Type        string `gorm:"size:32"`
				IPAddress   string `gorm:"size:64"`
				Params      string `gorm:"size:255"`
				Command     string `gorm:"type:text"`
				Stdout      string `gorm:"type:text"`
				Stderr      string `gorm:"type:text"`
				ExitCode    int
				TimedOut    bool
				DurationMs  int64
				RanAt       time.Time `gorm:"index:idx_diagnostics_vm"`
			}
			type DiagnosticsArchive struct {
				ID          string `gorm:"primaryKey;size:36"`
				CreatedAt   time.Time
				UpdatedAt   time.Time
				SystemVMID  string `gorm:"size:36;index"`
				OperationID string `gorm:"size:36;index"`
				FileName    string `gorm:"size:255"`
				SizeBytes   int64
				SHA256      string `gorm:"size:64"`
				Manifest    string `gorm:"type:text"`
				Data        []byte
				ExpiresAt   time.Time `gorm:"index"`
			}
			return tx.AutoMigrate(&DiagnosticsResult{}, &DiagnosticsArchive{})
		}},
		{ID: "0006_certificates", Migrate: certificatesMigration},
		{ID: "0007_public_ip_ranges_capacity", Migrate: capacityMigration},
	}
}

// AddColumns adds the named fields of model as columns of its table, each unless it is there
// already; for migration steps.
func AddColumns(tx *gorm.DB, model any, fields ...string) error {
	m := tx.Migrator()
	for _, f := range fields {
		if m.HasColumn(model, f) {
			continue
		}
		if err := m.AddColumn(model, f); err != nil {
			return fmt.Errorf("add column %s: %w", f, err)
		}
	}
	return nil
}

// LatestSchema is the ID of the last migration this build knows: the schema it needs.
func LatestSchema() string {
	ms := Migrations()
	return ms[len(ms)-1].ID
}

// Errors of RequireCurrentSchema, for errors.Is.
var (
	// ErrSchemaOutdated: the database lacks migrations this build needs (or has no recorded
	// schema at all): run `sysvm migrate`.
	ErrSchemaOutdated = errors.New("database schema is outdated")
	// ErrSchemaNewer: the database has migrations this build does not know: a newer sysvm
	// migrated it.
	ErrSchemaNewer = errors.New("database schema is newer than this sysvm")
)

// SchemaStatus is where a database's schema stands against the migrations of this build.
type SchemaStatus struct {
	// Versioned: the database records its migrations (schema_migrations exists).
	Versioned bool `json:"versioned"`
	// HasTables: the database holds sysvm tables (an unversioned one was made by AutoMigrate).
	HasTables bool `json:"hasTables"`
	// Applied are the known migrations the database has had, in order.
	Applied []string `json:"applied"`
	// Pending are the known migrations it has not had, in order.
	Pending []string `json:"pending"`
	// Unknown are recorded migrations this build does not know (a newer sysvm ran them).
	Unknown []string `json:"unknown,omitempty"`
}

// Version is the last applied known migration ("" when none).
func (st SchemaStatus) Version() string {
	if len(st.Applied) == 0 {
		return ""
	}
	return st.Applied[len(st.Applied)-1]
}

// Current reports whether the schema is exactly the one this build needs.
func (st SchemaStatus) Current() bool {
	return st.Versioned && len(st.Pending) == 0 && len(st.Unknown) == 0
}

// Problem explains a schema that is not current and what to do, wrapping ErrSchemaOutdated or
// ErrSchemaNewer; nil when it is current.
func (st SchemaStatus) Problem() error {
	switch {
	case len(st.Unknown) > 0:
		return fmt.Errorf("%w: it has migrations this sysvm does not know (%s), so a newer sysvm migrated it; "+
			"run that version or a newer one (this one knows up to %s)", ErrSchemaNewer, strings.Join(st.Unknown, ", "), LatestSchema())
	case !st.Versioned && st.HasTables:
		return fmt.Errorf("%w: its tables were made by a sysvm from before versioned migrations; "+
			"run `sysvm migrate` to adopt them (data is kept)", ErrSchemaOutdated)
	case !st.Versioned:
		return fmt.Errorf("%w: the database has no sysvm tables yet; run `sysvm migrate` to create them", ErrSchemaOutdated)
	case len(st.Pending) > 0:
		version := st.Version()
		if version == "" {
			version = "none"
		}
		return fmt.Errorf("%w: it is at %s, this sysvm needs %s (%d migration(s) pending: %s); run `sysvm migrate`",
			ErrSchemaOutdated, version, LatestSchema(), len(st.Pending), strings.Join(st.Pending, ", "))
	}
	return nil
}

// SchemaStatus reads which migrations the database has had. It takes no lock and changes
// nothing.
func (s *Store) SchemaStatus(ctx context.Context) (SchemaStatus, error) {
	return schemaStatus(s.DB.WithContext(ctx))
}

func schemaStatus(db *gorm.DB) (SchemaStatus, error) {
	var st SchemaStatus
	m := db.Migrator()
	st.Versioned = m.HasTable(SchemaTable)
	st.HasTables = m.HasTable(&Zone{})
	var recorded []string
	if st.Versioned {
		if err := db.Table(SchemaTable).Order("id").Pluck("id", &recorded).Error; err != nil {
			return st, fmt.Errorf("read %s: %w", SchemaTable, err)
		}
	}
	known := map[string]bool{}
	for _, mg := range Migrations() {
		known[mg.ID] = true
		if slices.Contains(recorded, mg.ID) {
			st.Applied = append(st.Applied, mg.ID)
		} else {
			st.Pending = append(st.Pending, mg.ID)
		}
	}
	for _, id := range recorded {
		if !known[id] {
			st.Unknown = append(st.Unknown, id)
		}
	}
	return st, nil
}

// RequireCurrentSchema fails unless the database has had exactly the migrations of this build:
// what `sysvm api` and `sysvm worker` check at start. The error says to run `sysvm migrate`
// (ErrSchemaOutdated) or that a newer sysvm migrated the database (ErrSchemaNewer).
func (s *Store) RequireCurrentSchema(ctx context.Context) error {
	st, err := s.SchemaStatus(ctx)
	if err != nil {
		return err
	}
	return st.Problem()
}

// MigrateResult says what Migrate did.
type MigrateResult struct {
	// From is the version before ("" for a new or unversioned database), To the version after.
	From string `json:"from"`
	To   string `json:"to"`
	// Applied are the migrations this call ran; none when another process had run them.
	Applied []string `json:"applied,omitempty"`
	// Adopted: the database had tables from before versioned migrations; the baseline took
	// them over as they were.
	Adopted bool `json:"adopted,omitempty"`
}

// migrationLockWait bounds how long Migrate waits for another process's migration.
const migrationLockWait = 10 * time.Minute

// Migrate applies the migrations the database has not had, in order, holding the database's
// migration lock (MariaDB/MySQL: GET_LOCK on the database's name; SQLite: the whole run in one
// immediate transaction, which holds SQLite's write lock), so processes migrating at once take
// turns and the later ones find nothing left to do. It refuses a database migrated by a newer
// sysvm. A database made by the AutoMigrate of earlier releases is adopted: the baseline finds
// its tables as they are and records itself.
func (s *Store) Migrate(ctx context.Context) (MigrateResult, error) {
	var res MigrateResult
	err := s.withMigrationLock(ctx, func(db *gorm.DB) error {
		res = MigrateResult{}
		before, err := schemaStatus(db)
		if err != nil {
			return err
		}
		if len(before.Unknown) > 0 {
			return before.Problem()
		}
		res.From, res.Adopted = before.Version(), !before.Versioned && before.HasTables
		if s.migrateHook != nil {
			s.migrateHook("locked")
		}
		ms := Migrations()
		steps := make([]*gormigrate.Migration, len(ms))
		for i, m := range ms {
			steps[i] = &gormigrate.Migration{ID: m.ID, Migrate: m.Migrate}
		}
		g := gormigrate.New(db, &gormigrate.Options{TableName: SchemaTable, IDColumnName: "id", IDColumnSize: 255,
			ValidateUnknownMigrations: true}, steps)
		if err := g.Migrate(); err != nil {
			return err
		}
		after, err := schemaStatus(db)
		if err != nil {
			return err
		}
		if len(after.Pending) > 0 {
			return fmt.Errorf("migrations still pending after migrating: %s", strings.Join(after.Pending, ", "))
		}
		res.To = after.Version()
		res.Applied = slices.DeleteFunc(slices.Clone(before.Pending), func(id string) bool { return !slices.Contains(after.Applied, id) })
		if s.migrateHook != nil {
			s.migrateHook("unlocking")
		}
		return nil
	})
	if err != nil {
		return MigrateResult{}, fmt.Errorf("migrate %s database: %w", s.dialect, err)
	}
	return res, nil
}

// withMigrationLock runs f holding the database's migration lock, with the handle f must use.
func (s *Store) withMigrationLock(ctx context.Context, f func(db *gorm.DB) error) error {
	if s.dialect == "sqlite" {
		return s.withSQLiteMigrationLock(ctx, f)
	}
	return s.withMySQLMigrationLock(ctx, f)
}

// withMySQLMigrationLock holds GET_LOCK on a connection of its own while f migrates through
// the pool (MySQL DDL is not transactional, so the lock cannot be a transaction). The lock is
// the server's and named after the database; a process that dies loses its connection and
// with it the lock.
func (s *Store) withMySQLMigrationLock(ctx context.Context, f func(db *gorm.DB) error) error {
	sqlDB, err := s.DB.DB()
	if err != nil {
		return err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	defer conn.Close()
	var dbName sql.NullString
	if err := conn.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&dbName); err != nil {
		return fmt.Errorf("migration lock: current database: %w", err)
	}
	name := migrationLockName(dbName.String)
	deadline := time.Now().Add(migrationLockWait)
	for waited := false; ; waited = true {
		var got sql.NullInt64
		// A short wait per query, so a canceled context is noticed between them.
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 5)", name).Scan(&got); err != nil {
			return fmt.Errorf("migration lock %s: %w", name, err)
		}
		if got.Valid && got.Int64 == 1 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("migration lock %s: another process has held it for over %s", name, migrationLockWait)
		}
		if !waited {
			slog.Default().Info("waiting for another process's migration of the database", "lock", name)
		}
	}
	defer func() {
		// Released on the same connection, even when ctx has ended.
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK(?)", name); err != nil {
			slog.Default().Warn("release migration lock", "lock", name, "error", err)
		}
	}()
	return f(s.DB.WithContext(ctx))
}

// migrationLockName names the lock after the database (GET_LOCK names are server-wide, at
// most 64 characters).
func migrationLockName(database string) string {
	name := "sysvm-migrate:" + database
	if len(name) > 64 {
		sum := sha256.Sum256([]byte(database))
		name = "sysvm-migrate:" + hex.EncodeToString(sum[:])[:40]
	}
	return name
}

// withSQLiteMigrationLock runs f in one transaction, begun IMMEDIATE (the DSN's _txlock), which
// takes SQLite's write lock at once: another process's migration waits in BEGIN until this one
// commits, then reads the migrations it recorded. SQLite's DDL is transactional, so a failed
// migration leaves nothing behind. A BEGIN that times out on the busy lock is tried again.
func (s *Store) withSQLiteMigrationLock(ctx context.Context, f func(db *gorm.DB) error) error {
	deadline := time.Now().Add(migrationLockWait)
	for {
		err := s.DB.WithContext(ctx).Transaction(f)
		if err == nil || !sqliteBusy(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func sqliteBusy(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
}
