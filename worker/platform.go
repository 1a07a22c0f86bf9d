package worker

import (
	"context"
	"log/slog"
	"net"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/kvm"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/hypervisors/vmware"
	"github.com/sysvm/sysvm/hypervisors/xen"
	"github.com/sysvm/sysvm/models"
)

// Drivers is the registry of the three hypervisor drivers.
func Drivers() *hypervisors.Registry {
	return hypervisors.NewRegistry().
		Register(hypervisors.KVM, kvm.Connect).
		Register(hypervisors.VMware, vmware.Connect).
		Register(hypervisors.XenServer, xen.Connect)
}

// sshPoolSize bounds the SSH clients a worker keeps open.
const sshPoolSize = 512

// Platform is what a worker runs: the activities and their dependencies, built once.
type Platform struct {
	Activities *activities.Activities
	Health     *activities.Health
	Exec       *sshexec.Executor
}

// Close releases drivers and SSH connections.
func (p *Platform) Close() {
	p.Activities.Drivers.Close()
	_ = p.Exec.Close()
}

// BuildPlatform wires the activities: hypervisor drivers from reg, the system VM key pair
// (generated once, stored encrypted), and the SSH executor into system VMs. dial overrides how
// the executor connects (the dev cloud's simulated routers); nil dials the network.
func BuildPlatform(ctx context.Context, store *models.Store, logger *slog.Logger, reg *hypervisors.Registry,
	dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*Platform, error) {
	kp, err := activities.SystemVMKeyPair(ctx, store.Secrets)
	if err != nil {
		return nil, err
	}
	// Pool room for every host client of a 10,000-router zone (one per host, each carrying up
	// to 64 tunnels) plus the routers of a sweep: a full pool falls back to one-off connections,
	// each paying a key exchange and an RSA sign-in (measured: 54 s -> 40 s for 10,000 routers).
	exec, err := sshexec.New(sshexec.Config{Key: kp, HostKeys: store.Secrets, RemoteKill: true, Dialer: dial, Logger: logger,
		MaxConns: sshPoolSize})
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
		Exec:        exec,
	}
	return &Platform{Activities: acts, Health: health, Exec: exec}, nil
}
