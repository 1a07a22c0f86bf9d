// Package modelstest opens real databases for tests: the embedded SQLite and the MariaDB/MySQL
// server on 127.0.0.1:3306, each test on a fresh database of its own.
package modelstest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/go-sql-driver/mysql" // the MySQL driver gorm uses, for CREATE/DROP DATABASE

	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
)

// MySQLBase is the server DSN (without database) tests use; SYSVM_TEST_MYSQL overrides it
// ("root:@tcp(127.0.0.1:3306)/").
func MySQLBase() string {
	if v := os.Getenv("SYSVM_TEST_MYSQL"); v != "" {
		return v
	}
	return "root:@tcp(127.0.0.1:3306)/"
}

// TestKey is a fixed master key for test databases.
var TestKey = []byte("0123456789abcdef0123456789abcdef")

// SQLiteDSN returns the sqlite:// DSN of a new, empty database file in a temp dir.
func SQLiteDSN(t testing.TB) string {
	t.Helper()
	return "sqlite://" + filepath.Join(t.TempDir(), "sysvm.db")
}

// SQLite opens a migrated SQLite database in a temp dir.
func SQLite(t testing.TB) *models.Store {
	t.Helper()
	dsn := SQLiteDSN(t)
	s, err := models.OpenAndMigrate(context.Background(), dsn, TestKey)
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// MySQLDSN creates a fresh database on the MySQL server and returns its mysql:// DSN; the
// database is dropped when the test ends. Without a server the test fails: MariaDB is part of
// every machine this project runs on (set SYSVM_TEST_SKIP_MYSQL=1 to skip instead, except under CI=true).
func MySQLDSN(t testing.TB) string {
	t.Helper()
	base := MySQLBase()
	admin, err := sql.Open("mysql", base)
	if err == nil {
		err = admin.Ping()
	}
	if err != nil {
		if os.Getenv("SYSVM_TEST_SKIP_MYSQL") != "" {
			testenv.Require(t, "MySQL at "+base, err) // skips, but fails under CI=true
		}
		t.Fatalf("MySQL not reachable at %s (start MariaDB or set SYSVM_TEST_SKIP_MYSQL=1): %v", base, err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "sysvm_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4"); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec("DROP DATABASE IF EXISTS " + name)
		_ = admin.Close()
	})
	return "mysql://" + strings.TrimSuffix(base, "/") + "/" + name
}

// MySQL opens a migrated store on a fresh MySQL database.
func MySQL(t testing.TB) *models.Store {
	t.Helper()
	s, err := models.OpenAndMigrate(context.Background(), MySQLDSN(t), TestKey)
	if err != nil {
		t.Fatalf("open mysql: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// ForEachDSN runs f as a subtest with the DSN of a new, empty (unmigrated) SQLite database and
// of a new, empty MySQL database.
func ForEachDSN(t *testing.T, f func(t *testing.T, dsn string)) {
	t.Helper()
	for _, db := range []struct {
		name string
		dsn  func(testing.TB) string
	}{{"sqlite", SQLiteDSN}, {"mysql", MySQLDSN}} {
		t.Run(db.name, func(t *testing.T) { f(t, db.dsn(t)) })
	}
}

// ForEach runs f as a subtest against SQLite and against MySQL.
func ForEach(t *testing.T, f func(t *testing.T, s *models.Store)) {
	t.Helper()
	for _, db := range []struct {
		name string
		open func(testing.TB) *models.Store
	}{{"sqlite", SQLite}, {"mysql", MySQL}} {
		t.Run(db.name, func(t *testing.T) { f(t, db.open(t)) })
	}
}

// Must fails the test on error.
func Must(t testing.TB, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}
