package main

import (
	"context"
	"log/slog"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/kvm"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/hypervisors/vmware"
	"github.com/sysvm/sysvm/hypervisors/xen"
	"github.com/sysvm/sysvm/models"
)

// registry lists the three hypervisor drivers.
func registry() *hypervisors.Registry {
	return hypervisors.NewRegistry().
		Register(hypervisors.KVM, kvm.Connect).
		Register(hypervisors.VMware, vmware.Connect).
		Register(hypervisors.XenServer, xen.Connect)
}

// buildActivities wires the activities' dependencies once.
func buildActivities(store *models.Store, logger *slog.Logger) *activities.Activities {
	return &activities.Activities{
		Store:   store,
		Drivers: activities.NewDriverPool(store, registry()),
		Logger:  logger,
		SystemVMKey: func(ctx context.Context) (string, error) {
			kp, err := activities.SystemVMKeyPair(ctx, store.Secrets)
			if err != nil {
				return "", err
			}
			_, v := sshexec.BootArg(kp.AuthorizedKey)
			return v, nil
		},
	}
}
