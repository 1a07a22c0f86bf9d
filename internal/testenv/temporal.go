// Package testenv starts the real parts integration tests need: a Temporal dev server (the
// `temporal` CLI built into bin/ by `go tool task build:temporal`) on loopback ports.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
)

// Temporal is a running dev server.
type Temporal struct {
	// Address is host:port of its gRPC frontend.
	Address string
	// UIPort is the Web UI port (0 when headless).
	UIPort    int
	Namespace string
	cmd       *exec.Cmd
	done      chan struct{}
}

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

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// SearchAttributes are registered at start (the same list as workflows.SearchAttributeNames,
// kept here to avoid an import cycle in tests of workflows).
var SearchAttributes = []string{"SystemVmId", "RouterId", "ZoneId", "OperationKind"}

// StartTemporal starts an in-memory dev server; ui also starts the Web UI.
func StartTemporal(ctx context.Context, ui bool) (*Temporal, error) {
	bin, err := TemporalBinary()
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	args := []string{"server", "start-dev", "--ip", "127.0.0.1", "--port", strconv.Itoa(port),
		"--log-level", "error", "--namespace", "default"}
	t := &Temporal{Address: fmt.Sprintf("127.0.0.1:%d", port), Namespace: "default", done: make(chan struct{})}
	if ui {
		up, err := FreePort()
		if err != nil {
			return nil, err
		}
		t.UIPort = up
		args = append(args, "--ui-port", strconv.Itoa(up))
	} else {
		args = append(args, "--headless")
	}
	hp, err := FreePort()
	if err != nil {
		return nil, err
	}
	args = append(args, "--http-port", strconv.Itoa(hp), "--metrics-port", "0")
	for _, sa := range SearchAttributes {
		args = append(args, "--search-attribute", sa+"=Keyword")
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start temporal dev server: %w", err)
	}
	t.cmd = cmd
	go func() { _ = cmd.Wait(); close(t.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := client.Dial(client.Options{HostPort: t.Address, Namespace: t.Namespace, Logger: quietLogger{}})
		if err == nil {
			_, err = c.CheckHealth(ctx, &client.CheckHealthRequest{})
			c.Close()
			if err == nil {
				return t, nil
			}
		}
		select {
		case <-t.done:
			return nil, errors.New("temporal dev server exited during start-up")
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Stop()
			return nil, fmt.Errorf("temporal dev server not healthy at %s after 60s: %v", t.Address, err)
		}
	}
}

// Stop ends the server.
func (t *Temporal) Stop() {
	if t.cmd != nil && t.cmd.Process != nil {
		_ = t.cmd.Process.Signal(os.Interrupt)
		select {
		case <-t.done:
		case <-time.After(10 * time.Second):
			_ = t.cmd.Process.Kill()
			<-t.done
		}
	}
}

// Client dials the server.
func (t *Temporal) Client() (client.Client, error) {
	return client.Dial(client.Options{HostPort: t.Address, Namespace: t.Namespace, Logger: quietLogger{}})
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

type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}
