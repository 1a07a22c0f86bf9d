// Package agent is the in-router side of sysvm's virtual router health checks: what the
// sysvm-agent binary does inside a system VM (installed in the system VM template, invoked by
// the platform over SSH on port 3922). It stores the configuration the platform pushes, runs
// the basic and advanced checks of SPEC §4.3 (the nine built-in checks, the service checks,
// filesystem.writable.test and the custom checks in /root/health_checks/), writes the results
// files and prints the results as JSON.
//
// Everything outside the router's file tree goes through the System interface, and the file
// tree is read under a root directory, so the same code runs in a real Debian system VM
// (LinuxSystem, root "/") and in a simulated router's sandbox (SandboxSystem, root a temporary
// directory), which is how devcloud/fleet runs it.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Version is the sysvm-agent version `sysvm-agent version` reports.
const Version = "1.0.0"

// Paths of the router's files, relative to the agent's root.
const (
	ConfigFile           = "root/health_checks_data.json"
	BasicResultsFile     = "root/basic_monitor_results.json"
	AdvancedResultsFile  = "root/advance_monitor_results.json"
	CustomChecksDir      = "root/health_checks"
	ReleaseFile          = "etc/cloudstack-release"
	ScriptsSignatureFile = "var/cache/cloud/cloud-scripts-signature"
	HostsFile            = "etc/hosts"
	DHCPHostsFile        = "etc/dhcphosts.txt"
	HaproxyConfigFile    = "etc/haproxy/haproxy.cfg"
	// writableProbeFile is the temporary file filesystem.writable.test creates and removes.
	writableProbeFile = "root/.sysvm-writable-probe"
)

// ResultsFile returns the results file of a check type, relative to the root.
func ResultsFile(t CheckType) string {
	if t == Advanced {
		return AdvancedResultsFile
	}
	return BasicResultsFile
}

// Agent runs the health checks of one router.
type Agent struct {
	// Root is the router's file tree: "/" in a real router, a sandbox directory in the fleet.
	Root string
	// Sys is everything outside the file tree.
	Sys System
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// New returns an Agent for the file tree at root.
func New(root string, sys System, logger *slog.Logger) *Agent {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Agent{Root: root, Sys: sys, Logger: logger}
}

// Path joins a router path ("etc/hosts" or "/etc/hosts") to the root.
func (a *Agent) Path(rel string) string {
	return filepath.Join(a.Root, filepath.FromSlash(strings.TrimPrefix(rel, "/")))
}

// LoadConfig reads the pushed configuration.
func (a *Agent) LoadConfig() (Config, error) {
	f, err := os.Open(a.Path(ConfigFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Config{}, fmt.Errorf("no health check configuration at /%s: the platform has not pushed one yet: %w", ConfigFile, err)
		}
		return Config{}, fmt.Errorf("load health check config: %w", err)
	}
	defer f.Close()
	return DecodeConfig(f)
}

// SaveConfig validates and stores a configuration.
func (a *Agent) SaveConfig(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode health check config: %w", err)
	}
	if err := a.Sys.WriteFile(a.Path(ConfigFile), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("save health check config: %w", err)
	}
	return nil
}

// RunAndRecord loads the stored configuration, runs the checks of type t and writes the
// results file. The Run is returned even when the results file could not be written (a
// read-only file system): writeErr then says why, and the run's filesystem.writable.test has
// failed.
func (a *Agent) RunAndRecord(ctx context.Context, t CheckType) (run Run, writeErr error, err error) {
	cfg, err := a.LoadConfig()
	if err != nil {
		return Run{}, nil, err
	}
	run = a.Check(ctx, cfg, t)
	if run.Disabled {
		return run, nil, nil
	}
	return run, a.WriteResults(run), nil
}

// WriteResults writes a run to its results file atomically.
func (a *Agent) WriteResults(run Run) error {
	data, err := json.MarshalIndent(run, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s results: %w", run.Type, err)
	}
	path := a.Path(ResultsFile(run.Type))
	if err := a.Sys.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("record %s results: %w", run.Type, err)
	}
	return nil
}

// LastRun reads the last results file of type t.
func (a *Agent) LastRun(t CheckType) (Run, error) {
	data, err := os.ReadFile(a.Path(ResultsFile(t)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Run{}, fmt.Errorf("no %s results yet: %w", t, err)
		}
		return Run{}, fmt.Errorf("read %s results: %w", t, err)
	}
	var run Run
	if err := json.Unmarshal(data, &run); err != nil {
		return Run{}, fmt.Errorf("parse /%s: %w", ResultsFile(t), err)
	}
	return run, nil
}
