package vmware

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
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

// Hosts lists every ESXi host in scope.
func (d *Driver) Hosts(ctx context.Context) ([]hypervisors.HostInfo, error) {
	var hosts []mo.HostSystem
	if err := d.retrieve(ctx, d.root, "HostSystem", hostProps, &hosts); err != nil {
		return nil, d.fail(ctx, "list hosts", "", err)
	}
	out := make([]hypervisors.HostInfo, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, hostInfo(h))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// HostInfo describes one host by its inventory name.
func (d *Driver) HostInfo(ctx context.Context, host string) (hypervisors.HostInfo, error) {
	h, err := d.findHost(ctx, "host info", host)
	if err != nil {
		return hypervisors.HostInfo{}, err
	}
	return hostInfo(h), nil
}

// StoragePools lists the datastores in scope. A datastore name used in several datacenters
// is reported (and may be named) as "<datacenter>/<datastore>".
func (d *Driver) StoragePools(ctx context.Context) ([]hypervisors.StoragePool, error) {
	recs, err := d.datastores(ctx)
	if err != nil {
		return nil, d.fail(ctx, "list storage pools", "", err)
	}
	names := poolNames(recs)
	out := make([]hypervisors.StoragePool, 0, len(recs))
	for i, r := range recs {
		s := r.ds.Summary
		out = append(out, hypervisors.StoragePool{
			Name:          names[i],
			UUID:          datastoreUUID(s.Url, r.ds.Self.Value),
			Type:          s.Type,
			CapacityBytes: s.Capacity,
			FreeBytes:     s.FreeSpace,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
