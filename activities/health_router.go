package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
)

// HealthKind is what a sweep does on each router.
type HealthKind string

// The four periodic health tasks of SPEC §3, each with its own interval setting.
const (
	// HealthBasic runs the basic checks (router.health.checks.basic.interval).
	HealthBasic HealthKind = "basic"
	// HealthAdvanced runs the advanced checks (router.health.checks.advanced.interval).
	HealthAdvanced HealthKind = "advanced"
	// HealthConfig pushes the check configuration (router.health.checks.config.refresh.interval).
	HealthConfig HealthKind = "config"
	// HealthFetch reads the routers' last results files (router.health.checks.results.fetch.interval).
	HealthFetch HealthKind = "fetch"
)

// HealthKinds lists the kinds in a fixed order.
func HealthKinds() []HealthKind {
	return []HealthKind{HealthBasic, HealthAdvanced, HealthConfig, HealthFetch}
}

// ParseHealthKind validates a kind name.
func ParseHealthKind(s string) (HealthKind, error) {
	for _, k := range HealthKinds() {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("health check kind %q: want basic, advanced, config or fetch", s)
}

// IntervalSetting is the setting that schedules the kind.
func (k HealthKind) IntervalSetting() string {
	switch k {
	case HealthBasic:
		return SettingHealthBasicInterval
	case HealthAdvanced:
		return SettingHealthAdvancedInterval
	case HealthConfig:
		return SettingHealthConfigInterval
	}
	return SettingHealthFetchInterval
}

// OperationKind is the OperationKind search attribute of runs of this kind ("router.health.basic").
func (k HealthKind) OperationKind() string { return "router.health." + string(k) }

// ProducesResults reports whether the kind stores check results (all but config, which stores
// only connectivity.test) and so evaluates recreation.
func (k HealthKind) ProducesResults() bool { return k != HealthConfig }

// contact is what talking to one router gave.
type contact struct {
	results   []models.HealthCheckResult
	fullTypes []string
	// reachable: the router answered over SSH.
	reachable bool
	// err is a platform-side failure that is not a check result (no access path, the agent
	// refused a command); the router's results are left as they are.
	err      error
	warnings []string
}

// errNotConfigured is in the agent's message when no configuration was pushed yet.
const errNotConfigured = "has not pushed one yet"

// isReadOnly recognises the agent's error when it cannot write its files.
func isReadOnly(stderr string) bool {
	return strings.Contains(strings.ToLower(stderr), "read-only file system")
}

// connectivityFailure reports whether err means the router did not answer: any SSH failure
// after validation (dial, handshake, session, a command that did not finish).
func connectivityFailure(err error) bool {
	var se *sshexec.Error
	if errors.As(err, &se) {
		return se.Stage != sshexec.StageValidate
	}
	return false
}

func connectivityResult(ok bool, at time.Time, details string) models.HealthCheckResult {
	return models.HealthCheckResult{CheckName: CheckConnectivity, CheckType: string(agent.Basic), Success: ok,
		LastUpdated: at, Details: details}
}

func fromRun(run agent.Run) []models.HealthCheckResult {
	out := make([]models.HealthCheckResult, 0, len(run.Results))
	for _, r := range run.Results {
		out = append(out, models.HealthCheckResult{CheckName: r.CheckName, CheckType: string(r.CheckType),
			Success: r.Success, LastUpdated: r.LastUpdated, Details: r.Details})
	}
	return out
}

// agentRun runs the agent with args in the router. A connectivity failure is returned as
// (nil, err) with connectivityFailure(err) true.
func (h *Health) agentRun(ctx context.Context, t sshexec.Target, stdin []byte, args ...string) (sshexec.Result, error) {
	argv := append([]string{h.agentCommand()}, args...)
	return h.Exec.Run(ctx, t, argv, stdin)
}

func exitError(what string, r sshexec.Result) error {
	msg := strings.TrimSpace(string(r.Stderr))
	if msg == "" {
		msg = strings.TrimSpace(string(r.Stdout))
	}
	return fmt.Errorf("%s: exit status %d: %s", what, r.ExitCode, clip(msg, 512))
}

// session talks to one router along its access path, recording connectivity.test once.
type session struct {
	h      *Health
	vm     models.SystemVM
	t      sshexec.Target
	at     time.Time
	c      *contact
	failed bool // the router did not answer: stop
}

// do runs one agent command; it returns ok=false when the router did not answer (recorded
// as connectivity.test) or the context ended (err set).
func (s *session) do(ctx context.Context, stdin []byte, args ...string) (sshexec.Result, bool, error) {
	start := time.Now()
	r, err := s.h.agentRun(ctx, s.t, stdin, args...)
	if err != nil {
		if ctx.Err() != nil {
			return r, false, ctx.Err()
		}
		if connectivityFailure(err) {
			s.failed = true
			s.c.reachable = false
			s.c.results = append(s.c.results, connectivityResult(false, s.at,
				fmt.Sprintf("router %s does not answer over SSH: %v", s.vm.Name, err)))
			return r, false, nil
		}
		s.c.err = fmt.Errorf("%s %s on %s: %w", s.h.agentCommand(), args[0], s.vm.Name, err)
		return r, false, nil
	}
	if !s.c.reachable {
		s.c.reachable = true
		s.c.results = append(s.c.results, connectivityResult(true, s.at,
			fmt.Sprintf("router answered over SSH along %s in %s", s.t, time.Since(start).Round(time.Millisecond))))
	}
	return r, true, nil
}

// push sends the configuration. A router whose root file system is read-only cannot store it:
// that is recorded as filesystem.writable.test failed.
func (s *session) push(ctx context.Context, cfg agent.Config) (bool, error) {
	data, err := json.Marshal(cfg)
	if err != nil {
		return false, fmt.Errorf("encode configuration of %s: %w", s.vm.Name, err)
	}
	r, ok, err := s.do(ctx, data, "push-config")
	if !ok || err != nil {
		return false, err
	}
	if r.ExitCode != 0 {
		if isReadOnly(string(r.Stderr)) {
			s.c.results = append(s.c.results, models.HealthCheckResult{CheckName: agent.CheckFilesystemWritable,
				CheckType: string(agent.Basic), Success: false, LastUpdated: s.at,
				Details: "cannot store the health check configuration: " + clip(strings.TrimSpace(string(r.Stderr)), 512)})
			s.c.warnings = append(s.c.warnings, "configuration not stored: the router's root file system is read-only")
			return false, nil
		}
		s.c.err = exitError("push-config on "+s.vm.Name, r)
		return false, nil
	}
	return true, nil
}

// run runs the checks of one type and records the run; a router that has no configuration yet
// gets it first (cfg), then the run is tried again.
func (s *session) run(ctx context.Context, typ agent.CheckType, cfg func() (agent.Config, error)) error {
	r, ok, err := s.do(ctx, nil, "run", string(typ))
	if !ok || err != nil {
		return err
	}
	if r.ExitCode != 0 && strings.Contains(string(r.Stderr), errNotConfigured) && cfg != nil {
		c, err := cfg()
		if err != nil {
			s.c.err = err
			return nil
		}
		if pushed, err := s.push(ctx, c); !pushed || err != nil {
			return err
		}
		if r, ok, err = s.do(ctx, nil, "run", string(typ)); !ok || err != nil {
			return err
		}
	}
	if r.ExitCode != 0 {
		s.c.err = exitError("run "+string(typ)+" on "+s.vm.Name, r)
		return nil
	}
	return s.record(r, "run "+string(typ), true)
}

// results reads the last results file of one type; none yet is not an error.
func (s *session) results(ctx context.Context, typ agent.CheckType) error {
	r, ok, err := s.do(ctx, nil, "results", string(typ))
	if !ok || err != nil {
		return err
	}
	if r.ExitCode != 0 {
		if strings.Contains(string(r.Stderr), "results yet") {
			return nil
		}
		s.c.err = exitError("results "+string(typ)+" on "+s.vm.Name, r)
		return nil
	}
	return s.record(r, "results "+string(typ), true)
}

func (s *session) record(r sshexec.Result, what string, full bool) error {
	var run agent.Run
	if err := json.Unmarshal(r.Stdout, &run); err != nil {
		s.c.err = fmt.Errorf("%s on %s printed no run: %w", what, s.vm.Name, err)
		return nil
	}
	if run.Disabled {
		s.c.warnings = append(s.c.warnings, fmt.Sprintf("%s: the router's configuration has health checks disabled", what))
		return nil
	}
	s.c.results = append(s.c.results, fromRun(run)...)
	if full {
		s.c.fullTypes = append(s.c.fullTypes, string(run.Type))
	}
	return nil
}

// visit does kind on one router. at stamps platform results (connectivity.test) so that a
// retried batch of the same sweep stores them once. A non-nil error means the context ended.
func (h *Health) visit(ctx context.Context, vm models.SystemVM, kind HealthKind, at time.Time, cfg func() (agent.Config, error)) (contact, error) {
	var c contact
	t, err := h.targets().TargetFor(ctx, vm)
	if err != nil {
		c.err = err
		return c, nil
	}
	s := &session{h: h, vm: vm, t: t, at: at, c: &c}
	switch kind {
	case HealthConfig:
		conf, err := cfg()
		if err != nil {
			c.err = err
			return c, nil
		}
		_, err = s.push(ctx, conf)
		return c, err
	case HealthBasic, HealthAdvanced:
		return c, s.run(ctx, agent.CheckType(kind), cfg)
	case HealthFetch:
		for _, typ := range []agent.CheckType{agent.Basic, agent.Advanced} {
			if err := s.results(ctx, typ); err != nil || s.failed {
				return c, err
			}
		}
		return c, nil
	}
	c.err = fmt.Errorf("unknown health check kind %q", kind)
	return c, nil
}

// visitFresh pushes the configuration and runs all checks now (the on-demand check).
func (h *Health) visitFresh(ctx context.Context, vm models.SystemVM, at time.Time, cfg agent.Config) (contact, error) {
	var c contact
	t, err := h.targets().TargetFor(ctx, vm)
	if err != nil {
		c.err = err
		return c, nil
	}
	s := &session{h: h, vm: vm, t: t, at: at, c: &c}
	if _, err := s.push(ctx, cfg); err != nil || s.failed {
		return c, err
	}
	if c.err != nil {
		// The run below still uses the configuration the router has.
		c.warnings = append(c.warnings, c.err.Error())
		c.err = nil
	}
	for _, typ := range []agent.CheckType{agent.Basic, agent.Advanced} {
		if err := s.run(ctx, typ, nil); err != nil || s.failed {
			return c, err
		}
	}
	return c, nil
}
