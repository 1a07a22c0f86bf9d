package models

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/driver/mysql"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	// Pure-Go SQLite, registered as "sqlite": the embedded default needs no C compiler.
	_ "modernc.org/sqlite"
)

// Store is the database handle with its helpers.
type Store struct {
	DB       *gorm.DB
	Settings *Settings
	Secrets  *Secrets
	dialect  string
	// migrateHook, when set (tests), is called inside Migrate's lock: "locked", "unlocking".
	migrateHook func(stage string)
}

// Dialect is "mysql" or "sqlite".
func (s *Store) Dialect() string { return s.dialect }

// ErrNotFound is returned when a row does not exist.
var ErrNotFound = errors.New("not found")

// Open connects to the database a DSN names; it does not change the schema (see Migrate,
// OpenAndMigrate and RequireCurrentSchema):
//
//	mysql://root:@tcp(127.0.0.1:3306)/test       MySQL or MariaDB (go-sql-driver DSN after the scheme)
//	sqlite://.data/sysvm.db                      embedded SQLite file (pure Go)
//	sqlite://file::memory:?cache=shared          in-memory SQLite (tests)
//
// masterKey encrypts secrets at rest (32 bytes, see NewSecretBox).
func Open(ctx context.Context, dsn string, masterKey []byte) (*Store, error) {
	box, err := NewSecretBox(masterKey)
	if err != nil {
		return nil, err
	}
	var dialector gorm.Dialector
	var dialect string
	switch {
	case strings.HasPrefix(dsn, "mysql://"):
		d := strings.TrimPrefix(dsn, "mysql://")
		d = withParam(d, "parseTime", "true")
		d = withParam(d, "charset", "utf8mb4")
		d = withParam(d, "loc", "UTC")
		dialector, dialect = mysql.Open(d), "mysql"
	case strings.HasPrefix(dsn, "sqlite://"):
		d := strings.TrimPrefix(dsn, "sqlite://")
		d = withParam(d, "_pragma", "busy_timeout(10000)")
		if !strings.Contains(d, ":memory:") {
			d += "&_pragma=journal_mode(WAL)"
		}
		d += "&_pragma=foreign_keys(1)&_txlock=immediate&_time_format=sqlite"
		dialector, dialect = sqlite.New(sqlite.Config{DriverName: "sqlite", DSN: d}), "sqlite"
	default:
		return nil, fmt.Errorf("database DSN %q: want mysql://... or sqlite://...", redactDSN(dsn))
	}
	db, err := gorm.Open(dialector, &gorm.Config{
		Logger:  logger.New(slogWriter{}, logger.Config{SlowThreshold: time.Second, LogLevel: logger.Warn, IgnoreRecordNotFoundError: true}),
		NowFunc: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
	})
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", dialect, err)
	}
	if dialect == "sqlite" {
		sqlDB, err := db.DB()
		if err != nil {
			return nil, err
		}
		// One writer at a time is SQLite's nature; a small pool keeps readers concurrent.
		sqlDB.SetMaxOpenConns(4)
	}
	return &Store{DB: db, Settings: &Settings{db: db}, Secrets: &Secrets{db: db, box: box}, dialect: dialect}, nil
}

// OpenAndMigrate opens the database and applies its pending migrations: for `sysvm migrate`,
// `sysvm dev` and tests' fresh databases. The production processes use Open and
// RequireCurrentSchema instead.
func OpenAndMigrate(ctx context.Context, dsn string, masterKey []byte) (*Store, error) {
	s, err := Open(ctx, dsn, masterKey)
	if err != nil {
		return nil, err
	}
	if _, err := s.Migrate(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

func withParam(dsn, key, value string) string {
	if strings.Contains(dsn, key+"=") {
		return dsn
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + key + "=" + value
}

// redactDSN hides a password in a DSN for error messages.
func redactDSN(dsn string) string {
	if i := strings.Index(dsn, "@"); i > 0 {
		if j := strings.LastIndex(dsn[:i], ":"); j > 0 && !strings.HasSuffix(dsn[:j], "/") {
			return dsn[:j+1] + "***" + dsn[i:]
		}
	}
	return dsn
}

// Close closes the connection pool.
func (s *Store) Close() error {
	sqlDB, err := s.DB.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// NewID returns a fresh UUID string.
func NewID() string { return uuid.NewString() }

// Get loads one row by primary key into dst, returning ErrNotFound when it is absent.
func (s *Store) Get(ctx context.Context, dst any, id string) error {
	err := s.DB.WithContext(ctx).First(dst, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return ErrNotFound
	}
	return err
}

// BeforeCreate gives every Base row an ID when it has none.
func (b *Base) BeforeCreate(*gorm.DB) error {
	if b.ID == "" {
		b.ID = NewID()
	}
	return nil
}

// AddEvent records an event.
func (s *Store) AddEvent(ctx context.Context, e Event) error {
	if e.Level == "" {
		e.Level = "INFO"
	}
	return s.DB.WithContext(ctx).Create(&e).Error
}

// AddAlert records an alert.
func (s *Store) AddAlert(ctx context.Context, a Alert) error {
	if a.Severity == "" {
		a.Severity = "WARN"
	}
	return s.DB.WithContext(ctx).Create(&a).Error
}

type slogWriter struct{}

func (slogWriter) Printf(format string, args ...any) {
	slog.Warn("database", "msg", fmt.Sprintf(format, args...))
}
