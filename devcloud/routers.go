package devcloud

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
)

// Routers runs the simulated routers of a dev cloud: one per router in the inventory, each
// serving real SSH on loopback (through its host for KVM and XenServer, directly for VMware)
// and running the real sysvm-agent code on a sandbox root.
type Routers struct {
	Fleet *fleet.Fleet
	store *models.Store
	cfg   func(ctx context.Context, vm models.SystemVM) (agent.Config, error)
	mu    sync.Mutex
	names map[string]string // instance name -> router ID
}

// StartRouters builds the fleet for every router of the inventory. The platform's key is
// accepted by every simulated host and router; configFor is the platform's own configuration
// builder, so each sandbox is rendered from what the platform will push. Hosts' addresses in
// the inventory are pointed at their simulated SSH listeners.
func StartRouters(ctx context.Context, s *models.Store, platformKey ssh.PublicKey,
	configFor func(context.Context, models.SystemVM) (agent.Config, error), log *slog.Logger, opts fleet.Options) (*Routers, error) {
	opts.AuthorizedKeys = append(opts.AuthorizedKeys, platformKey)
	if opts.Logger == nil {
		opts.Logger = log
	}
	if opts.HostKey == nil {
		// The platform trusts host keys on first use: keep the simulated routers' key across runs.
		k, err := fleetHostKey(ctx, s)
		if err != nil {
			return nil, err
		}
		opts.HostKey = k
	}
	f, err := fleet.New(opts)
	if err != nil {
		return nil, err
	}
	r := &Routers{Fleet: f, store: s, cfg: configFor, names: map[string]string{}}
	var hosts []models.Host
	if err := s.DB.WithContext(ctx).Where("hypervisor_type IN ?", []string{string(hypervisors.KVM), string(hypervisors.XenServer)}).
		Find(&hosts).Error; err != nil {
		_ = f.Close()
		return nil, err
	}
	for _, h := range hosts {
		addr, err := f.AddHost(h.Name)
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("simulated host %s: %w", h.Name, err)
		}
		if err := s.DB.WithContext(ctx).Model(&models.Host{}).Where("id = ?", h.ID).Update("address", addr).Error; err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	var vms []models.SystemVM
	if err := s.DB.WithContext(ctx).Where("type = ? AND state <> ?", models.TypeRouter, models.StateDestroyed).
		Order("name").Find(&vms).Error; err != nil {
		_ = f.Close()
		return nil, err
	}
	for _, vm := range vms {
		if err := r.Sync(ctx, vm); err != nil {
			_ = f.Close()
			return nil, err
		}
		if vm.State != models.StateRunning {
			_ = r.setReachable(vm.ID, false)
		}
	}
	return r, nil
}

// Close stops every simulated router and host.
func (r *Routers) Close() error { return r.Fleet.Close() }

// Sync adds a router to the fleet, or updates it, from the inventory.
func (r *Routers) Sync(ctx context.Context, vm models.SystemVM) error {
	cfg, err := r.cfg(ctx, vm)
	if err != nil {
		return fmt.Errorf("configuration of router %s: %w", vm.Name, err)
	}
	var host models.Host
	if err := r.store.DB.WithContext(ctx).First(&host, "id = ?", vm.HostID).Error; err != nil {
		return fmt.Errorf("host of router %s: %w", vm.Name, err)
	}
	t, _ := hypervisors.ParseType(vm.HypervisorType)
	spec := fleet.RouterSpec{ID: vm.ID, Name: vm.Name, Hypervisor: t, HostName: host.Name,
		LinkLocalIP: vm.LinkLocalIP, PrivateIP: vm.PrivateIP, RedundantState: cfg.RedundantState,
		TemplateVersion: cfg.TemplateVersion, Services: cfg.Services, ExpectedVMs: cfg.ExpectedVMs,
		Gateways: cfg.Gateways, PortForwardingRules: cfg.PortForwardingRules, LBRules: cfg.LBRules,
		MaxConnections: cfg.MaxConnections}
	r.mu.Lock()
	_, known := r.names[vm.Name]
	r.names[vm.Name] = vm.ID
	r.mu.Unlock()
	if known {
		return r.Fleet.Update(spec)
	}
	return r.Fleet.Add(spec)
}

// InjectFault implements the API's dev hooks.
func (r *Routers) InjectFault(_ context.Context, routerID, fault, service string) error {
	return r.Fleet.Inject(routerID, fleet.Fault{Name: fault, Service: service})
}

// ClearFaults implements the API's dev hooks.
func (r *Routers) ClearFaults(_ context.Context, routerID string) error {
	return r.Fleet.Clear(routerID)
}

// setReachable makes a simulated router answer SSH (running) or not (stopped, destroyed),
// keeping its other faults.
func (r *Routers) setReachable(id string, up bool) error {
	faults, err := r.Fleet.Faults(id)
	if err != nil {
		return err
	}
	down := slices.ContainsFunc(faults, func(f fleet.Fault) bool { return f.Name == fleet.FaultUnreachable })
	switch {
	case up && down:
		if err := r.Fleet.Clear(id); err != nil {
			return err
		}
		for _, f := range faults {
			if f.Name != fleet.FaultUnreachable {
				if err := r.Fleet.Inject(id, f); err != nil {
					return err
				}
			}
		}
	case !up && !down:
		return r.Fleet.Inject(id, fleet.Fault{Name: fleet.FaultUnreachable})
	}
	return nil
}

func (r *Routers) idOf(name string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ok := r.names[name]
	return id, ok
}

// Observe wraps a driver registry so each simulated router follows its VM's life on the
// simulated hypervisor: a stopped or destroyed VM does not answer SSH, a started one does, and
// a newly created one starts clean (its injected faults are gone, as on a rebuilt router).
func (r *Routers) Observe(reg *hypervisors.Registry) *hypervisors.Registry {
	return reg.Decorate(func(_ hypervisors.Type, c hypervisors.Connector) hypervisors.Connector {
		return func(ctx context.Context, conn hypervisors.Connection) (hypervisors.Driver, error) {
			d, err := c(ctx, conn)
			if err != nil {
				return nil, err
			}
			return &observed{Driver: d, r: r}, nil
		}
	})
}

type observed struct {
	hypervisors.Driver
	r *Routers
}

func (o *observed) follow(name string, err error, f func(id string) error) error {
	if err != nil && !errors.Is(err, hypervisors.ErrNotFound) && !errors.Is(err, hypervisors.ErrAlreadyExists) {
		return err
	}
	if id, ok := o.r.idOf(name); ok {
		if ferr := f(id); ferr != nil {
			slog.Warn("simulated router did not follow its VM", "router", name, "error", ferr)
		}
	}
	return err
}

func (o *observed) CreateVM(ctx context.Context, spec hypervisors.VMSpec) (hypervisors.VMInfo, error) {
	info, err := o.Driver.CreateVM(ctx, spec)
	if errors.Is(err, hypervisors.ErrAlreadyExists) {
		return info, err
	}
	return info, o.follow(spec.Name, err, func(id string) error {
		// A new VM has a new disk: a fresh sandbox, no faults, no old results or configuration.
		var vm models.SystemVM
		if err := o.r.store.Get(ctx, &vm, id); err != nil {
			return err
		}
		if err := o.r.Fleet.Remove(id); err != nil {
			return err
		}
		o.r.mu.Lock()
		delete(o.r.names, spec.Name)
		o.r.mu.Unlock()
		if err := o.r.Sync(ctx, vm); err != nil {
			return err
		}
		return o.r.setReachable(id, false)
	})
}

func (o *observed) StartVM(ctx context.Context, name string) error {
	return o.follow(name, o.Driver.StartVM(ctx, name), func(id string) error {
		// A started router runs what the inventory now says (a recreated one, its new template).
		var vm models.SystemVM
		if err := o.r.store.Get(ctx, &vm, id); err != nil {
			return err
		}
		if err := o.r.Sync(ctx, vm); err != nil {
			return err
		}
		return o.r.setReachable(id, true)
	})
}

func (o *observed) StopVM(ctx context.Context, name string, force bool) error {
	return o.follow(name, o.Driver.StopVM(ctx, name, force), func(id string) error { return o.r.setReachable(id, false) })
}

func (o *observed) DestroyVM(ctx context.Context, name string) error {
	return o.follow(name, o.Driver.DestroyVM(ctx, name), func(id string) error { return o.r.setReachable(id, false) })
}

// fleetHostKeyName is the secret holding the simulated hosts' and routers' SSH host key.
const fleetHostKeyName = "devcloud/fleet-host-key"

// fleetHostKey loads the fleet's host key from the encrypted store, creating it once.
func fleetHostKey(ctx context.Context, s *models.Store) (ssh.Signer, error) {
	pemBytes, err := s.Secrets.GetSecret(ctx, fleetHostKeyName)
	if errors.Is(err, models.ErrSecretNotFound) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, gerr
		}
		block, merr := ssh.MarshalPrivateKey(priv, "sysvm dev fleet")
		if merr != nil {
			return nil, merr
		}
		pemBytes = pem.EncodeToMemory(block)
		if err := s.Secrets.Put(ctx, fleetHostKeyName, "ssh-host-key", pemBytes); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	return ssh.ParsePrivateKey(pemBytes)
}
