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

// Server is a running dev server.
type Server struct {
	Address   string
	UIPort    int
	Namespace string
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
	var err error
	if o.Port == 0 {
		if o.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	httpPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	args := []string{"server", "start-dev", "--ip", "127.0.0.1", "--port", strconv.Itoa(o.Port),
		"--http-port", strconv.Itoa(httpPort), "--metrics-port", "0", "--log-level", "error", "--namespace", "default"}
	t := &Server{Address: fmt.Sprintf("127.0.0.1:%d", o.Port), Namespace: "default", done: make(chan struct{})}
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
	cmd := exec.Command(o.Binary, args...)
	if o.Output != nil {
		cmd.Stdout, cmd.Stderr = o.Output, o.Output
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start temporal dev server: %w", err)
	}
	t.cmd = cmd
	go func() { _ = cmd.Wait(); close(t.done) }()
	deadline := time.Now().Add(90 * time.Second)
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
			return nil, errors.New("temporal dev server exited during start-up (is the port taken?)")
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Stop()
			return nil, fmt.Errorf("temporal dev server not healthy at %s after 90s: %v", t.Address, err)
		}
	}
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
