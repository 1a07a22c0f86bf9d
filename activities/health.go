package activities

// Virtual router health checks, the platform side (SPEC §4.3): the activities a health sweep
// and the on-demand check are made of. Inside each router the sysvm-agent (package agent) runs
// the checks; these activities push its configuration, ask it to run or to print its last
// results over SSH (port 3922, along the router's access path), and keep the last result of
// each check per router in the database, with the consecutive-failure count the recreation
// rules need, the router's healthchecksfailed flag, and one alert and one event per failure.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
)

// CheckConnectivity is the platform's own check: it fails when the router does not answer over
// SSH (CloudStack's connectivity.test, a basic check).
const CheckConnectivity = "connectivity.test"

// DefaultAgentCommand is the agent program the platform runs in a router.
const DefaultAgentCommand = "sysvm-agent"

// RequestedByHealthChecks is Operation.RequestedBy of recreations started by health checks.
const RequestedByHealthChecks = "health-checks"

// Alert and event types of health checks.
const (
	// EventHealthChecks / AlertHealthChecks: a router's checks fail (WARN) or pass again (INFO event).
	EventHealthChecks = "ROUTER.HEALTH.CHECKS"
	AlertHealthChecks = "ROUTER.HEALTH.CHECKS"
	// AlertCircuitBreaker: too many routers of a zone fail at once; recreation is stopped there.
	AlertCircuitBreaker = "ROUTER.HEALTH.CIRCUIT.BREAKER"
	// AlertRecreateLimit: a router was recreated too often for the same check; no more.
	AlertRecreateLimit = "ROUTER.HEALTH.RECREATE.LIMIT"
	// EventRecreate: health checks start a router's recreation.
	EventRecreate = "ROUTER.HEALTH.RECREATE"
)

// Resource types of health alerts and events.
const (
	ResourceRouter = "DomainRouter"
	ResourceZone   = "Zone"
)

// Exec runs a command in a system VM over SSH. *sshexec.Executor satisfies it.
type Exec interface {
	Run(ctx context.Context, t sshexec.Target, argv []string, stdin []byte) (sshexec.Result, error)
}

// TargetResolver says how to reach a system VM over SSH.
type TargetResolver interface {
	TargetFor(ctx context.Context, vm models.SystemVM) (sshexec.Target, error)
}

// ExpectedState is what a router must serve, as the management side knows it: the guest VMs
// of its networks (DHCP and DNS entries), port forwarding and load balancing rules, and
// haproxy's maxconn (0 = not checked).
type ExpectedState struct {
	VMs            []agent.ExpectedVM
	PortForwarding []agent.PortForwarding
	LoadBalancing  []agent.LBRule
	MaxConnections int
}

// Health holds the health check activities and their dependencies. Build it with NewHealth
// (or set the fields). Its tables, health_recreations included, are the migrations' (models).
// Register it on the worker with RegisterActivity: every exported method is an activity.
type Health struct {
	// Store is the inventory, settings and results (required).
	Store *models.Store
	// Exec runs the agent in routers (required for the SSH activities).
	Exec Exec
	// Targets resolves access paths (default: StoreTargets over Store).
	Targets TargetResolver
	// Logger receives logs (default slog.Default()).
	Logger *slog.Logger
	// AgentCommand is the agent program in the router (default DefaultAgentCommand).
	AgentCommand string
	// Expected overrides what a router must serve. nil (production): the inventory's rows, read
	// by ExpectedFromStore (running guest VMs, port forwarding and LB rules of the router's
	// networks). Tests set it to expect something else.
	Expected func(ctx context.Context, vm models.SystemVM) (ExpectedState, error)
	// PatchBundle is the agent and scripts bundle routers are live-patched with (nil: this
	// build's, agent.DefaultBundle).
	PatchBundle func(ctx context.Context) (agent.Bundle, error)
}

// NewHealth builds the health activities over a store (migrated: see models.Migrate) and an
// SSH executor, with the default access path resolver.
func NewHealth(_ context.Context, store *models.Store, exec Exec, logger *slog.Logger) (*Health, error) {
	if store == nil {
		return nil, errors.New("health activities: a store is required")
	}
	return &Health{Store: store, Exec: exec, Logger: logger}, nil
}

func (h *Health) log() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.Default()
}

func (h *Health) targets() TargetResolver {
	if h.Targets != nil {
		return h.Targets
	}
	return StoreTargets{Store: h.Store}
}

func (h *Health) agentCommand() string {
	if h.AgentCommand != "" {
		return h.AgentCommand
	}
	return DefaultAgentCommand
}

// StoreTargets resolves access paths from the inventory: the driver contract's
// LinkLocalControl capability of the VM's hypervisor type (hypervisors.Type.LinkLocalControl,
// known without connecting) chooses the path, its host row gives the jump address
// (Host.Address, "ip" or "ip:port"), its row the link-local and private IPs.
type StoreTargets struct {
	Store *models.Store
	// LinkLocal overrides hypervisors.Type.LinkLocalControl (nil uses it).
	LinkLocal func(hypervisors.Type) bool
}

// TargetFor builds the SSH target of a system VM.
func (s StoreTargets) TargetFor(ctx context.Context, vm models.SystemVM) (sshexec.Target, error) {
	ht, err := hypervisors.ParseType(vm.HypervisorType)
	if err != nil {
		return sshexec.Target{}, fmt.Errorf("access path of %s: %w", vm.Name, err)
	}
	linkLocal := hypervisors.Type.LinkLocalControl
	if s.LinkLocal != nil {
		linkLocal = s.LinkLocal
	}
	t := sshexec.Target{VMName: vm.Name, Hypervisor: ht, LinkLocalControl: linkLocal(ht),
		LinkLocalIP: vm.LinkLocalIP, PrivateIP: vm.PrivateIP, Port: sshexec.DefaultPort}
	if t.LinkLocalControl {
		if vm.HostID == "" {
			return sshexec.Target{}, fmt.Errorf("access path of %s: it runs on no host (the %s path goes through the VM's host)", vm.Name, ht)
		}
		var host models.Host
		if err := s.Store.Get(ctx, &host, vm.HostID); err != nil {
			return sshexec.Target{}, fmt.Errorf("access path of %s: host %s: %w", vm.Name, vm.HostID, err)
		}
		addr, port, err := splitHostAddress(host.Address)
		if err != nil {
			return sshexec.Target{}, fmt.Errorf("access path of %s: host %s address %q: %w", vm.Name, host.Name, host.Address, err)
		}
		t.HostAddress, t.HostPort = addr, port
	}
	if err := t.Validate(); err != nil {
		return sshexec.Target{}, fmt.Errorf("access path of %s: %w", vm.Name, err)
	}
	return t, nil
}

// splitHostAddress reads "ip", "ip:port", "[v6]:port" or a bare IPv6 address.
func splitHostAddress(s string) (string, int, error) {
	if s == "" {
		return "", 0, errors.New("empty")
	}
	if ip := net.ParseIP(s); ip != nil {
		return s, 0, nil
	}
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return s, 0, nil // a host name without a port
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not 1-65535", p)
	}
	return host, port, nil
}
