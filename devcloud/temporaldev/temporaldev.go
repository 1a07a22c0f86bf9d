// Package temporaldev starts a Temporal dev server from the `temporal` CLI for `sysvm dev` and tests.
package temporaldev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"time"

	"go.temporal.io/sdk/client"
)

// Options configure a Temporal dev server started from the `temporal` CLI.
type Options struct {
	// Binary is the CLI path (built into bin/temporal by `go tool task build:temporal`).
	Binary string
	// Port is the gRPC frontend port on 127.0.0.1 (0 picks a free one).
	Port int
	// UIPort is the Web UI port; 0 picks a free one; -1 runs headless.
	UIPort int
	// DBFile keeps the server's state in a SQLite file; empty keeps it in memory.
	DBFile string
	// SearchAttributes are registered as Keyword attributes at start.
	SearchAttributes []string
	// Output receives the server's logs (nil discards them).
	Output io.Writer
	// UICodecEndpoint points the Web UI at a remote codec endpoint (the UI decodes payloads
	// through it); empty shows payloads as stored.
	UICodecEndpoint string
}

// eagerActivities is the dynamic configuration every dev server starts with:
// system.enableActivityEagerExecution lets the server hand an activity scheduled by a
// workflow task straight back to the worker that completed it, in the reply, instead of
// through the task queue (the SDK asks for it when the worker has a free slot): one trip
// through matching less per activity, which is most of a make-before-break recreate's steps.
// Production servers need the same setting for the same effect (README, Speed).
const eagerActivities = "system.enableActivityEagerExecution=true"

// Server is a running dev server.
type Server struct {
	Address   string
	UIPort    int
	Namespace string
	opts      Options
	args      []string
	cmd       *exec.Cmd
	done      chan struct{}
}

// UIURL is the Web UI's base URL ("" when headless).
func (t *Server) UIURL() string {
	if t.UIPort <= 0 {
		return ""
	}
	return fmt.Sprintf("http://localhost:%d", t.UIPort)
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

// Start starts `temporal server start-dev` and waits until it answers health checks.
func Start(ctx context.Context, o Options) (*Server, error) {
	if _, err := os.Stat(o.Binary); err != nil {
		return nil, fmt.Errorf("temporal CLI not found at %s (build it with `go tool task build:temporal`): %w", o.Binary, err)
	}
	// A port picked free here can be taken by another process before the server binds it
	// (tests start servers side by side): when the ports were ours to pick, pick again.
	for attempt := 1; ; attempt++ {
		t, err := start(ctx, o)
		if err == nil || !errors.Is(err, errExitedAtStart) || o.Port != 0 || o.UIPort > 0 || attempt == 3 {
			return t, err
		}
	}
}

// errExitedAtStart is the server process ending before it answered health checks.
var errExitedAtStart = errors.New("temporal dev server exited during start-up (is the port taken?)")

func start(ctx context.Context, o Options) (*Server, error) {
	var err error
	if o.Port == 0 {
		if o.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	args := []string{"server", "start-dev", "--ip", "127.0.0.1", "--port", strconv.Itoa(o.Port),
		"--metrics-port", "0", "--log-level", "error", "--namespace", "default"}
	t := &Server{Address: fmt.Sprintf("127.0.0.1:%d", o.Port), Namespace: "default"}
	switch {
	case o.UIPort < 0:
		args = append(args, "--headless")
	default:
		if o.UIPort == 0 {
			if o.UIPort, err = FreePort(); err != nil {
				return nil, err
			}
		}
		t.UIPort = o.UIPort
		args = append(args, "--ui-port", strconv.Itoa(o.UIPort))
		if o.UICodecEndpoint != "" {
			args = append(args, "--ui-codec-endpoint", o.UICodecEndpoint)
		}
	}
	if o.DBFile != "" {
		args = append(args, "--db-filename", o.DBFile)
	}
	for _, sa := range o.SearchAttributes {
		args = append(args, "--search-attribute", sa+"=Keyword")
	}
	args = append(args, "--dynamic-config-value", eagerActivities)
	t.opts, t.args = o, args
	if err := t.launch(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// launch runs the server process with t's arguments (a fresh HTTP port each time) and waits
// until it answers health checks.
func (t *Server) launch(ctx context.Context) error {
	httpPort, err := FreePort()
	if err != nil {
		return err
	}
	cmd := exec.Command(t.opts.Binary, append(slices.Clone(t.args), "--http-port", strconv.Itoa(httpPort))...)
	if t.opts.Output != nil {
		cmd.Stdout, cmd.Stderr = t.opts.Output, t.opts.Output
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start temporal dev server: %w", err)
	}
	done := make(chan struct{})
	t.cmd, t.done = cmd, done
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		c, err := client.Dial(client.Options{HostPort: t.Address, Namespace: t.Namespace, Logger: quietLogger{}})
		if err == nil {
			_, err = c.CheckHealth(ctx, &client.CheckHealthRequest{})
			c.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-done:
			return errExitedAtStart
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Stop()
			return fmt.Errorf("temporal dev server not healthy at %s after 90s: %v", t.Address, err)
		}
	}
}

// Kill kills the server process at once (SIGKILL: no shutdown, as a crash would) and waits
// for it to exit.
func (t *Server) Kill() {
	if t.cmd == nil || t.cmd.Process == nil {
		return
	}
	_ = t.cmd.Process.Kill()
	<-t.done
}

// Restart starts the server again, after Kill or Stop, on the same port and database file
// (the state it had persisted is all there), and waits until it answers health checks. Clients
// dialed before reconnect by themselves. A server without DBFile cannot be restarted: its
// state was in memory.
func (t *Server) Restart(ctx context.Context) error {
	if t.opts.DBFile == "" {
		return errors.New("restart temporal dev server: it keeps its state in memory (no DBFile)")
	}
	if t.done != nil {
		select {
		case <-t.done:
		default:
			return errors.New("restart temporal dev server: it still runs (Kill or Stop it first)")
		}
	}
	return t.launch(ctx)
}

// Stop interrupts the server and waits for it to exit.
func (t *Server) Stop() {
	if t.cmd == nil || t.cmd.Process == nil {
		return
	}
	_ = t.cmd.Process.Signal(os.Interrupt)
	select {
	case <-t.done:
	case <-time.After(15 * time.Second):
		_ = t.cmd.Process.Kill()
		<-t.done
	}
}

// Client dials the server; each configure function adjusts the options first (e.g. a payload
// codec's Apply).
func (t *Server) Client(configure ...func(*client.Options)) (client.Client, error) {
	o := client.Options{HostPort: t.Address, Namespace: t.Namespace, Logger: quietLogger{}}
	for _, f := range configure {
		f(&o)
	}
	return client.Dial(o)
}

type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}
