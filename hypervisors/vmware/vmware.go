// Package vmware is the VMware vSphere driver: it reaches a vCenter (or a standalone ESXi)
// through its SOAP SDK with github.com/vmware/govmomi and implements hypervisors.Driver.
//
// Inventory mapping:
//   - hosts are ESXi HostSystems, named by their inventory name;
//   - storage pools are datastores (capacity and free space from their summary);
//   - a template is a VirtualMachine marked as template, kept in the folder
//     vm/sysvm-templates/<datastore>/ of the datastore's datacenter, so the same template name
//     can be seeded into several datastores; Template.Ref is its inventory path;
//   - system VMs are cloned from a template into the datacenter's root VM folder, on the named
//     host, datastore and the host's cluster (or standalone host) root resource pool.
//
// Datacenters: with Connection.Datacenter empty the driver works across every datacenter of
// the vCenter (VM, host and template names are resolved in all of them; a VM name must be
// unique across the vCenter, which CreateVM enforces). With Connection.Datacenter set, every
// lookup is narrowed to that one datacenter and objects elsewhere are invisible.
//
// Boot arguments are written to the VM's extraConfig as guestinfo.cloudstack.cmdline (read in
// the guest with `vmtoolsd --cmd "info-get guestinfo.cloudstack.cmdline"`) and as machine.id,
// the key CloudStack's own VMware resource uses for the system VM cmdline. The driver keeps
// its own bookkeeping (template name, NIC roles and addresses) under sysvm.* keys.
package vmware

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sysvm/sysvm/hypervisors"
)

// connectTimeout bounds the login when the caller's context has no deadline.
const connectTimeout = 30 * time.Second

// Driver is the VMware implementation of hypervisors.Driver. It is safe for concurrent use.
type Driver struct {
	conn  hypervisors.Connection
	user  *url.Userinfo
	soap  *soap.Client
	c     *vim25.Client
	sm    *session.Manager
	pc    *property.Collector
	root  types.ManagedObjectReference // the datacenter in scope, or the root folder
	log   *slog.Logger
	relog sync.Mutex // serialises re-login after a lost session

	// vmRefs caches VM name -> moref; every hit is re-checked against the VM's name.
	vmRefs sync.Map
	// seedLocks serialises seeding of one template name into one datastore.
	seedLocks hypervisors.KeyedMutex
}

var _ hypervisors.Driver = (*Driver)(nil)

// Connect logs in to the vCenter at conn.Endpoint (an SDK URL such as
// https://vc.example.com/sdk; a bare host name gets https:// and /sdk added) with
// conn.Username and conn.Password, and returns a driver narrowed to conn.Datacenter when set.
// A refused login is ErrAuth, an endpoint that does not answer ErrUnreachable and an unknown
// datacenter ErrNotFound.
func Connect(ctx context.Context, conn hypervisors.Connection) (hypervisors.Driver, error) {
	d, err := Open(ctx, conn)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Open is Connect returning the concrete driver type.
func Open(ctx context.Context, conn hypervisors.Connection) (*Driver, error) {
	const op = "connect"
	if conn.Endpoint == "" {
		return nil, hypervisors.Errorf(hypervisors.ErrInvalid, op, "", "empty vCenter endpoint")
	}
	u, err := soap.ParseURL(conn.Endpoint)
	if err != nil || u == nil {
		return nil, hypervisors.Errorf(hypervisors.ErrInvalid, op, conn.Endpoint, "parse endpoint: %v", err)
	}
	user := u.User
	if conn.Username != "" {
		user = url.UserPassword(conn.Username, conn.Password)
	}
	if user == nil {
		return nil, hypervisors.Errorf(hypervisors.ErrInvalid, op, conn.Endpoint, "no username given")
	}
	u.User = nil // the URL must never carry the secret (it ends up in error messages)
	object := u.String()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, connectTimeout)
		defer cancel()
	}

	sc := soap.NewClient(u, conn.Insecure)
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		sc.CloseIdleConnections()
		return nil, mapErr(op, object, fmt.Errorf("reach vSphere SDK: %w", err))
	}
	d := &Driver{
		conn: conn,
		user: user,
		soap: sc,
		c:    c,
		sm:   session.NewManager(c),
		pc:   property.DefaultCollector(c),
		root: c.ServiceContent.RootFolder,
		log:  slog.Default().With("hypervisor", string(hypervisors.VMware), "endpoint", object),
	}
	d.conn.Password = "" // kept only inside user
	if err := d.sm.Login(ctx, user); err != nil {
		sc.CloseIdleConnections()
		return nil, mapErr(op, object, fmt.Errorf("login as %q: %w", user.Username(), err))
	}
	if conn.Datacenter != "" {
		ref, err := d.findDatacenter(ctx, conn.Datacenter)
		if err != nil {
			_ = d.Close()
			return nil, err
		}
		d.root = ref
	}
	d.log.Debug("connected to vCenter", "user", user.Username(), "datacenter", conn.Datacenter,
		"api", c.ServiceContent.About.ApiVersion)
	return d, nil
}

// Type is hypervisors.VMware.
func (d *Driver) Type() hypervisors.Type { return hypervisors.VMware }

// Capabilities of the VMware driver: live migration (vMotion within a cluster) yes; CPU and
// memory changes only on a stopped VM; system VMs are reached on their private IP; templates
// come as OVA.
func (d *Driver) Capabilities() hypervisors.Capabilities {
	return hypervisors.Capabilities{
		LiveMigration:    true,
		HotScale:         false,
		LinkLocalControl: false,
		TemplateFormats:  []string{"OVA"},
	}
}

// Close logs out and releases idle connections.
func (d *Driver) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := d.sm.Logout(ctx)
	d.soap.CloseIdleConnections()
	if err != nil {
		return mapErr("close", d.soap.URL().Host, fmt.Errorf("logout: %w", err))
	}
	return nil
}

// Client exposes the underlying vim25 client (tests and diagnostics).
func (d *Driver) Client() *vim25.Client { return d.c }

// relogin logs in again when the server no longer knows our session (vCenter restarted, the
// session expired or an administrator terminated it). It returns nil when the driver holds
// a valid session afterwards (made here or by a concurrent caller).
func (d *Driver) relogin(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), connectTimeout)
	defer cancel()
	d.relog.Lock()
	defer d.relog.Unlock()
	if s, err := d.sm.UserSession(ctx); err == nil && s != nil {
		return nil // a concurrent caller already logged in again
	}
	if err := d.sm.Login(ctx, d.user); err != nil {
		d.log.Warn("re-login to vCenter failed", "user", d.user.Username(), "err", err)
		return fmt.Errorf("log in again as %q: %w", d.user.Username(), err)
	}
	d.log.Info("vCenter session was lost; logged in again", "user", d.user.Username())
	return nil
}

// fail maps err to a driver error; a lost session triggers a re-login first, so that the
// (retryable) error it returns succeeds when the caller tries again. If the login is
// refused now (password changed), the error is ErrAuth.
func (d *Driver) fail(ctx context.Context, op, object string, err error) error {
	if err == nil {
		return nil
	}
	if isNotAuthenticated(err) {
		if lerr := d.relogin(ctx); lerr != nil {
			return mapErr(op, object, lerr)
		}
		return hypervisors.Wrap(hypervisors.ErrUnreachable, op, object,
			fmt.Errorf("vCenter session was lost and has been renewed, retry: %w", err))
	}
	return mapErr(op, object, err)
}
