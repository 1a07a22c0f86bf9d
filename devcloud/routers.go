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
	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
)

// Routers runs the simulated system VMs of a dev cloud: one per router, SSVM and CPVM in the
// inventory, each serving real SSH on loopback (through its host for KVM and XenServer,
// directly for VMware) and running the real sysvm-agent code on a sandbox root. Each is keyed
// in the fleet by its hypervisor instance name, so a recreate's replacement (a new instance
// name and control address) runs beside the VM it replaces until the switch.
type Routers struct {
	Fleet *fleet.Fleet
	store *models.Store
	cfg   func(ctx context.Context, vm models.SystemVM) (agent.Config, error)
	mu    sync.Mutex
	names map[string]string // instance name -> system VM ID
	// broken are system VMs whose new instances never answer SSH (BreakReplacements).
	broken map[string]bool
	// replacementFaults are injected into every new instance of a system VM when it starts
	// (FaultReplacements).
	replacementFaults map[string][]fleet.Fault
	// consoles are the simulated console endpoints that follow their VMs (FollowConsoles).
	consoles *fleet.Consoles
}

// FollowConsoles makes the simulated console endpoints follow their VMs, as on real ones: the
// running SSVMs and CPVMs serve from now on, a started or new one from its start, and a
// stopped or destroyed one's endpoint stops serving and its sessions end. (A console proxy
// that answered only once the platform had talked to it would hide a zone without one.)
func (r *Routers) FollowConsoles(c *fleet.Consoles) {
	r.mu.Lock()
	r.consoles = c
	r.mu.Unlock()
	for _, id := range r.Fleet.Routers() {
		if spec, err := r.Fleet.Spec(id); err == nil && !spec.PoweredOff {
			r.startConsole(id, spec.Type)
		}
	}
}

// ConsoleEndpoints lists the simulated console endpoints of the running SSVMs and CPVMs, by
// VM name (the dev API's GET /dev/consoles): where each serves TLS and which certificate.
func (r *Routers) ConsoleEndpoints(ctx context.Context) ([]consoles.Endpoint, error) {
	r.mu.Lock()
	c := r.consoles
	r.mu.Unlock()
	if c == nil {
		return nil, errors.New("the dev fleet runs no console endpoints")
	}
	var vms []models.SystemVM
	if err := r.store.DB.WithContext(ctx).Where("type IN ? AND state <> ?", []string{models.TypeCPVM, models.TypeSSVM}, models.StateDestroyed).
		Order("name").Find(&vms).Error; err != nil {
		return nil, err
	}
	out := []consoles.Endpoint{}
	for _, vm := range vms {
		st, err := c.Status(vm.HypervisorName())
		if err != nil {
			continue // no endpoint: the VM does not run here
		}
		out = append(out, consoles.Endpoint{VMID: vm.ID, Name: vm.Name, Type: vm.Type, ZoneID: vm.ZoneID, Instance: vm.HypervisorName(),
			Addr: st.Addr, Fingerprint: st.Fingerprint, Sessions: st.Sessions, Restarts: st.Restarts})
	}
	return out, nil
}

// startConsole starts the console endpoint of a running SSVM or CPVM.
func (r *Routers) startConsole(name, vmType string) {
	if vmType != models.TypeCPVM && vmType != models.TypeSSVM {
		return
	}
	r.mu.Lock()
	c := r.consoles
	r.mu.Unlock()
	if c == nil {
		return
	}
	if _, err := c.Start(name); err != nil {
		slog.Warn("simulated console endpoint not started", "instance", name, "error", err)
	}
}

// ConsoleEndpoint implements the API's dev console hook: the loopback address where a system
// VM's simulated console endpoint serves (started if it does not yet).
func (r *Routers) ConsoleEndpoint(ctx context.Context, vmID string) (string, error) {
	r.mu.Lock()
	c := r.consoles
	r.mu.Unlock()
	if c == nil {
		return "", errors.New("the simulated fleet runs no console endpoints")
	}
	name, err := r.instanceOf(ctx, vmID)
	if err != nil {
		return "", err
	}
	if _, known := r.idOf(name); !known {
		return "", fmt.Errorf("%s is not in the simulated fleet", name)
	}
	return c.Start(name)
}

// stopConsole stops the console endpoint of a simulated VM that stopped (keeping its
// installed certificate) or is gone (forgetting it).
func (r *Routers) stopConsole(name string, gone bool) {
	r.mu.Lock()
	c := r.consoles
	r.mu.Unlock()
	switch {
	case c == nil:
	case gone:
		c.Stop(name)
	default:
		c.Down(name)
	}
}

// FaultReplacements injects faults into every new instance of a system VM (a recreate's
// replacement) when it starts, e.g. a read-only root file system, on which ip-assoc brings
// the addresses up but cannot record them and fails; none clears them. The VM's current
// instance is not affected.
func (r *Routers) FaultReplacements(id string, faults ...fleet.Fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(faults) == 0 {
		delete(r.replacementFaults, id)
		return
	}
	r.replacementFaults[id] = slices.Clone(faults)
}

// BreakReplacements makes every new instance of a system VM (a recreate's replacement) never
// answer SSH, as one built from a broken template would not; false repairs it. The VM's
// current instance is not affected.
func (r *Routers) BreakReplacements(id string, broken bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if broken {
		r.broken[id] = true
	} else {
		delete(r.broken, id)
	}
}

// StartRouters builds the fleet for every system VM of the inventory. The platform's key is
// accepted by every simulated host and VM; configFor is the platform's own configuration
// builder for routers, so each sandbox is rendered from what the platform will push. Hosts'
// addresses in the inventory are pointed at their simulated SSH listeners.
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
	r := &Routers{Fleet: f, store: s, cfg: configFor, names: map[string]string{}, broken: map[string]bool{},
		replacementFaults: map[string][]fleet.Fault{}}
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
	if err := s.DB.WithContext(ctx).Where("state <> ?", models.StateDestroyed).Order("name").Find(&vms).Error; err != nil {
		_ = f.Close()
		return nil, err
	}
	for _, vm := range vms {
		if err := r.Sync(ctx, vm); err != nil {
			_ = f.Close()
			return nil, err
		}
		if vm.State != models.StateRunning {
			_ = r.setReachable(vm.HypervisorName(), false)
		}
	}
	return r, nil
}

// Close stops every simulated system VM and host.
func (r *Routers) Close() error { return r.Fleet.Close() }

// ClusterDrivers hands out the driver of a cluster (activities.DriverPool does).
type ClusterDrivers interface {
	For(ctx context.Context, clusterID string) (hypervisors.Driver, error)
}

// AdoptInstances adds to the fleet the VMs the hypervisors have that are no row's current
// instance, as they run there: a recreate's replacement built by a process that died before
// the switch (a real replacement runs on whether or not the worker that built it lives, and a
// restarted worker's take-over must reach it over SSH). StartRouters knows only the rows; call
// this once the platform's drivers are up. VMs that belong to no system VM (templates) are
// left alone.
func (r *Routers) AdoptInstances(ctx context.Context, drivers ClusterDrivers) error {
	var clusters []models.Cluster
	if err := r.store.DB.WithContext(ctx).Order("name").Find(&clusters).Error; err != nil {
		return fmt.Errorf("adopt running instances: clusters: %w", err)
	}
	seen := map[string]bool{}
	for _, c := range clusters {
		d, err := drivers.For(ctx, c.ID)
		if err != nil {
			return fmt.Errorf("adopt running instances: cluster %s: %w", c.Name, err)
		}
		vms, err := d.ListVMs(ctx)
		if err != nil {
			return fmt.Errorf("adopt running instances: list VMs of cluster %s: %w", c.Name, err)
		}
		o := &observed{Driver: d, r: r}
		// A listed VM carries what GetVM reads (boot arguments, host, template, NICs): the
		// drivers build both from the same record.
		for _, vm := range vms {
			if _, known := r.idOf(vm.Name); known || seen[vm.Name] {
				continue
			}
			seen[vm.Name] = true // clusters behind one connection list the same VMs
			o.register(ctx, vm.Name, vm.BootArgs, vm.Host, vm.Template, vm.NICs, vm.State == hypervisors.PowerRunning)
		}
	}
	return nil
}

// instance is one simulated VM as the hypervisor has it: its instance name, host, control
// and private addresses, the template version it was built from, the public IP it boots
// with ("" for a recreate's replacement, which gets its service addresses over ip-assoc at
// the switch) and whether it runs.
type instance struct {
	name, host, linkLocalIP, privateIP, templateVersion string
	bootPublicIP                                        string
	up                                                  bool
}

// Sync adds a system VM to the fleet, or updates it, from its inventory row.
func (r *Routers) Sync(ctx context.Context, vm models.SystemVM) error {
	var host models.Host
	if vm.HostID != "" {
		if err := r.store.DB.WithContext(ctx).First(&host, "id = ?", vm.HostID).Error; err != nil {
			return fmt.Errorf("host of %s: %w", vm.Name, err)
		}
	}
	// The row's instance holds the row's service addresses from boot (built with them, or
	// associated with them and kept across restarts, as CloudStack's ips.json is).
	return r.syncInstance(ctx, vm, instance{name: vm.HypervisorName(), host: host.Name,
		linkLocalIP: vm.LinkLocalIP, privateIP: vm.PrivateIP, templateVersion: vm.Version,
		bootPublicIP: vm.PublicIP, up: vm.State == models.StateRunning})
}

// syncInstance adds or updates the simulated VM of one hypervisor instance of a row.
func (r *Routers) syncInstance(ctx context.Context, vm models.SystemVM, in instance) error {
	t, _ := hypervisors.ParseType(vm.HypervisorType)
	spec := fleet.RouterSpec{ID: in.name, Name: vm.Name, Type: vm.Type, Hypervisor: t, HostName: in.host,
		LinkLocalIP: in.linkLocalIP, PrivateIP: in.privateIP, TemplateVersion: in.templateVersion,
		PoweredOff: !in.up}
	if in.bootPublicIP != "" {
		spec.BootAddresses = []string{in.bootPublicIP}
	}
	if vm.Type == models.TypeRouter {
		cfg, err := r.cfg(ctx, vm)
		if err != nil {
			return fmt.Errorf("configuration of router %s: %w", vm.Name, err)
		}
		spec.RedundantState, spec.Services, spec.ExpectedVMs = cfg.RedundantState, cfg.Services, cfg.ExpectedVMs
		spec.Gateways, spec.PortForwardingRules, spec.LBRules = cfg.Gateways, cfg.PortForwardingRules, cfg.LBRules
		spec.MaxConnections = cfg.MaxConnections
		if in.bootPublicIP != "" {
			// Built with its addresses in its boot arguments: its guest gateways too.
			spec.BootAddresses = append(spec.BootAddresses, cfg.Gateways...)
		}
		if spec.TemplateVersion == "" {
			spec.TemplateVersion = cfg.TemplateVersion
		}
	}
	if in.name == vm.HypervisorName() {
		// The row's own instance keeps the scripts version a live patch recorded (a rendering
		// after the patch must not put the template's back).
		spec.ScriptsVersion = vm.ScriptsVersion
	}
	r.mu.Lock()
	_, known := r.names[in.name]
	r.names[in.name] = vm.ID
	r.mu.Unlock()
	if known {
		return r.Fleet.Update(spec)
	}
	return r.Fleet.Add(spec)
}

// instanceOf is the fleet ID (the instance name) of a system VM's current instance.
func (r *Routers) instanceOf(ctx context.Context, id string) (string, error) {
	var vm models.SystemVM
	if err := r.store.Get(ctx, &vm, id); err != nil {
		return "", fmt.Errorf("system VM %s: %w", id, err)
	}
	return vm.HypervisorName(), nil
}

// InjectFault implements the API's dev hooks: the fault goes to the router's current instance.
func (r *Routers) InjectFault(ctx context.Context, routerID, fault, service string) error {
	name, err := r.instanceOf(ctx, routerID)
	if err != nil {
		return err
	}
	return r.Fleet.Inject(name, fleet.Fault{Name: fault, Service: service})
}

// ClearFaults implements the API's dev hooks.
func (r *Routers) ClearFaults(ctx context.Context, routerID string) error {
	name, err := r.instanceOf(ctx, routerID)
	if err != nil {
		return err
	}
	return r.Fleet.Clear(name)
}

// InstanceOf is the fleet ID (hypervisor instance name) of a system VM's current instance,
// for tests that inject faults into the fleet directly.
func (r *Routers) InstanceOf(ctx context.Context, id string) (string, error) {
	return r.instanceOf(ctx, id)
}

// setReachable makes a simulated VM answer SSH (running) or not (stopped, destroyed),
// keeping its other faults.
func (r *Routers) setReachable(name string, up bool) error {
	faults, err := r.Fleet.Faults(name)
	if err != nil {
		return err
	}
	down := slices.ContainsFunc(faults, func(f fleet.Fault) bool { return f.Name == fleet.FaultUnreachable })
	switch {
	case up && down:
		if err := r.Fleet.Clear(name); err != nil {
			return err
		}
		for _, f := range faults {
			if f.Name != fleet.FaultUnreachable {
				if err := r.Fleet.Inject(name, f); err != nil {
					return err
				}
			}
		}
	case !up && !down:
		return r.Fleet.Inject(name, fleet.Fault{Name: fleet.FaultUnreachable})
	}
	return nil
}

func (r *Routers) idOf(name string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ok := r.names[name]
	return id, ok
}

// Observe wraps a driver registry so each simulated VM follows its instance's life on the
// simulated hypervisor: a stopped or destroyed VM does not answer SSH, a started one does, a
// newly created one starts clean (no faults, as on a rebuilt router) at the control address
// and with the template it was created with, which for a recreate's replacement are not yet
// the row's.
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
			slog.Warn("simulated system VM did not follow its VM", "instance", name, "error", ferr)
		}
	}
	return err
}

// rowOf finds the row a VM spec or boot arguments belong to (its CloudStack name).
func (o *observed) rowOf(ctx context.Context, bootArgs map[string]string, instanceName string) (models.SystemVM, bool) {
	var vm models.SystemVM
	if id, ok := o.r.idOf(instanceName); ok {
		if err := o.r.store.Get(ctx, &vm, id); err == nil {
			return vm, true
		}
	}
	name := bootArgs["name"]
	if name == "" {
		return vm, false
	}
	if err := o.r.store.DB.WithContext(ctx).Where("name = ? AND state <> ?", name, models.StateDestroyed).First(&vm).Error; err != nil {
		return vm, false
	}
	return vm, true
}

// instanceFrom reads a simulated VM's addresses from a spec's NICs and boot arguments.
func (o *observed) instanceFrom(ctx context.Context, vm models.SystemVM, name, host, template string, bootArgs map[string]string, nics []hypervisors.NIC, up bool) instance {
	in := instance{name: name, host: host, linkLocalIP: vm.LinkLocalIP, privateIP: vm.PrivateIP, templateVersion: vm.Version,
		bootPublicIP: bootArgs["publicip"], up: up}
	for _, n := range nics {
		switch n.Kind {
		case hypervisors.NICControl:
			in.linkLocalIP = n.IP
		case hypervisors.NICPrivate:
			in.privateIP = n.IP
		case hypervisors.NICPublic:
			if in.bootPublicIP == "" {
				in.bootPublicIP = n.IP
			}
		}
	}
	if t, _ := hypervisors.ParseType(vm.HypervisorType); t == hypervisors.VMware {
		// VMware's control NIC is the private one.
		for _, n := range nics {
			if n.Kind == hypervisors.NICPrivate && n.IP != "" {
				in.privateIP = n.IP
			}
		}
	}
	if template != "" {
		var tpl models.Template
		if err := o.r.store.DB.WithContext(ctx).Where("name = ?", template).Order("created_at desc").First(&tpl).Error; err == nil {
			in.templateVersion = tpl.Version
		}
	}
	return in
}

func (o *observed) CreateVM(ctx context.Context, spec hypervisors.VMSpec) (hypervisors.VMInfo, error) {
	info, err := o.Driver.CreateVM(ctx, spec)
	if errors.Is(err, hypervisors.ErrAlreadyExists) {
		// Created by an earlier attempt (perhaps of a worker that died): make sure it is simulated.
		if _, known := o.r.idOf(spec.Name); !known {
			o.register(ctx, spec.Name, spec.BootArgs, spec.Host, spec.Template, spec.NICs, false)
		}
		return info, err
	}
	if err != nil {
		return info, err
	}
	// A new VM has a new disk: a fresh sandbox, no faults, no old results or configuration.
	if _, known := o.r.idOf(spec.Name); known {
		if rerr := o.r.Fleet.Remove(spec.Name); rerr != nil {
			slog.Warn("simulated system VM not removed", "instance", spec.Name, "error", rerr)
		}
		o.r.mu.Lock()
		delete(o.r.names, spec.Name)
		o.r.mu.Unlock()
	}
	o.register(ctx, spec.Name, spec.BootArgs, spec.Host, spec.Template, spec.NICs, false)
	return info, nil
}

// register adds or updates the simulated VM of an instance and sets whether it answers.
func (o *observed) register(ctx context.Context, name string, bootArgs map[string]string, host, template string, nics []hypervisors.NIC, up bool) {
	vm, ok := o.rowOf(ctx, bootArgs, name)
	if !ok {
		return
	}
	if err := o.r.syncInstance(ctx, vm, o.instanceFrom(ctx, vm, name, host, template, bootArgs, nics, up)); err != nil {
		slog.Warn("simulated system VM not updated", "instance", name, "error", err)
		return
	}
	o.r.mu.Lock()
	replacement := name != vm.HypervisorName()
	broken := o.r.broken[vm.ID] && replacement
	var faults []fleet.Fault
	if replacement && up {
		faults = o.r.replacementFaults[vm.ID]
	}
	o.r.mu.Unlock()
	if err := o.r.setReachable(name, up && !broken); err != nil {
		slog.Warn("simulated system VM reachability not set", "instance", name, "error", err)
	}
	if up && !broken {
		o.r.startConsole(name, vm.Type)
	}
	for _, f := range faults {
		if err := o.r.Fleet.Inject(name, f); err != nil {
			slog.Warn("fault not injected into a replacement", "instance", name, "error", err)
		}
	}
}

func (o *observed) StartVM(ctx context.Context, name string) error {
	err := o.Driver.StartVM(ctx, name)
	if err != nil {
		return err
	}
	// A started VM runs what its instance was built with, on the host it runs on.
	if info, gerr := o.Driver.GetVM(ctx, name); gerr == nil {
		o.register(ctx, name, info.BootArgs, info.Host, info.Template, info.NICs, true)
	}
	return nil
}

func (o *observed) StopVM(ctx context.Context, name string, force bool) error {
	return o.follow(name, o.Driver.StopVM(ctx, name, force), func(string) error {
		// Powered off: it holds no service address any more, and answers nothing.
		o.r.stopConsole(name, false)
		return errors.Join(o.r.Fleet.SetRunning(name, false), o.r.setReachable(name, false))
	})
}

func (o *observed) RebootVM(ctx context.Context, name string) error {
	// The simulated VM stays reachable: a reboot is seconds on a real system VM.
	return o.Driver.RebootVM(ctx, name)
}

func (o *observed) DestroyVM(ctx context.Context, name string) error {
	return o.follow(name, o.Driver.DestroyVM(ctx, name), func(string) error {
		o.r.mu.Lock()
		delete(o.r.names, name)
		o.r.mu.Unlock()
		o.r.stopConsole(name, true)
		return o.r.Fleet.Remove(name)
	})
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
