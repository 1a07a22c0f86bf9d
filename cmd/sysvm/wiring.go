package main

import (
	"context"
	"log/slog"
	"net"
	"strings"

	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/kvm"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/hypervisors/vmware"
	"github.com/sysvm/sysvm/hypervisors/xen"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// registry lists the three hypervisor drivers.
func registry() *hypervisors.Registry {
	return hypervisors.NewRegistry().
		Register(hypervisors.KVM, kvm.Connect).
		Register(hypervisors.VMware, vmware.Connect).
		Register(hypervisors.XenServer, xen.Connect)
}

// platform is what the worker runs: the activities and their dependencies, built once.
type platform struct {
	acts   *activities.Activities
	health *activities.Health
	exec   *sshexec.Executor
}

// close releases drivers and SSH connections.
func (p *platform) close() {
	p.acts.Drivers.Close()
	_ = p.exec.Close()
}

// buildPlatform wires the activities: hypervisor drivers from reg, the system VM key pair
// (generated once, stored encrypted), and the SSH executor into system VMs (dial overrides how
// it connects, for the dev cloud's simulated routers; nil dials the network).
func buildPlatform(ctx context.Context, store *models.Store, logger *slog.Logger, reg *hypervisors.Registry,
	dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*platform, error) {
	kp, err := activities.SystemVMKeyPair(ctx, store.Secrets)
	if err != nil {
		return nil, err
	}
	exec, err := sshexec.New(sshexec.Config{Key: kp, HostKeys: store.Secrets, RemoteKill: true, Dialer: dial, Logger: logger})
	if err != nil {
		return nil, err
	}
	health, err := activities.NewHealth(ctx, store, exec, logger)
	if err != nil {
		_ = exec.Close()
		return nil, err
	}
	_, bootKey := sshexec.BootArg(kp.AuthorizedKey)
	acts := &activities.Activities{
		Store:       store,
		Drivers:     activities.NewDriverPool(store, reg),
		Logger:      logger,
		SystemVMKey: func(context.Context) (string, error) { return bootKey, nil },
	}
	return &platform{acts: acts, health: health, exec: exec}, nil
}

// resyncSchedules is the API's settings hook: a change to a router.health.checks.* setting
// reschedules the health check schedules at once (the worker also re-syncs every minute).
func resyncSchedules(tc client.Client, store *models.Store, logger *slog.Logger) func(context.Context, string) {
	return func(ctx context.Context, name string) {
		if !strings.HasPrefix(name, "router.health.checks.") {
			return
		}
		if _, err := workflows.SyncHealthSchedules(ctx, tc, store); err != nil {
			logger.Error("resync health check schedules after a settings change", "setting", name, "error", err)
		}
	}
}
