// Package testenv starts the real parts integration tests need: a Temporal dev server (the
// `temporal` CLI built into bin/ by `go tool task build:temporal`) on loopback ports.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/sysvm/sysvm/devcloud/temporaldev"
)

// RepoRoot finds the module root from this source file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// TemporalBinary is the CLI path: $SYSVM_TEMPORAL_BIN or bin/temporal in the repo.
func TemporalBinary() (string, error) {
	if p := os.Getenv("SYSVM_TEMPORAL_BIN"); p != "" {
		return p, nil
	}
	p := filepath.Join(RepoRoot(), "bin", "temporal")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("temporal CLI not built at %s: run `go tool task build:temporal` (or the README's test command): %w", p, err)
	}
	return p, nil
}

// SearchAttributes are registered at start (the same list as workflows.SearchAttributeNames,
// kept here to avoid an import cycle in tests of workflows).
var SearchAttributes = []string{"SystemVmId", "RouterId", "ZoneId", "OperationKind"}

// Temporal is a running in-memory dev server.
type Temporal = temporaldev.Server

// StartTemporal starts an in-memory dev server; ui also starts the Web UI.
func StartTemporal(ctx context.Context, ui bool) (*Temporal, error) {
	o, err := temporalOptions(ui)
	if err != nil {
		return nil, err
	}
	return temporaldev.Start(ctx, o)
}

func temporalOptions(ui bool) (temporaldev.Options, error) {
	bin, err := TemporalBinary()
	if err != nil {
		return temporaldev.Options{}, err
	}
	o := temporaldev.Options{Binary: bin, UIPort: -1, SearchAttributes: SearchAttributes}
	if ui {
		o.UIPort = 0
	}
	if os.Getenv("SYSVM_TEST_VERBOSE") != "" {
		o.Output = os.Stderr
	}
	return o, nil
}

// PersistentTemporalT starts a headless server for one test that keeps its state in a SQLite
// file in the test's temporary directory, on a free loopback port fixed for the test's life,
// so that the test can kill it (Kill) and start it again (Restart) on the same address and
// state. It stops when the test ends.
func PersistentTemporalT(t testing.TB) *Temporal {
	t.Helper()
	o, err := temporalOptions(false)
	if err != nil {
		t.Fatalf("temporal dev server: %v", err)
	}
	if o.Port, err = temporaldev.FreePort(); err != nil {
		t.Fatalf("temporal dev server port: %v", err)
	}
	o.DBFile = filepath.Join(t.TempDir(), "temporal.db")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv, err := temporaldev.Start(ctx, o)
	if err != nil {
		t.Fatalf("temporal dev server: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// TemporalT starts a server for one test and stops it when the test ends.
func TemporalT(t testing.TB, ui bool) *Temporal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv, err := StartTemporal(ctx, ui)
	if err != nil {
		t.Fatalf("temporal dev server: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv
}
