package activities

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
)

// hcEnv is a zone of the inventory whose routers are simulated routers of a real fleet,
// reached over real SSH along their access paths by a real executor.
type hcEnv struct {
	t     testing.TB
	ctx   context.Context
	store *models.Store
	fleet *fleet.Fleet
	exec  *sshexec.Executor
	h     *Health
	zone  models.Zone
	kvm   models.Cluster
	vmw   models.Cluster
	host  models.Host

	mu       sync.Mutex
	n        int
	expected map[string]ExpectedState
}

func newHCEnv(t testing.TB, store *models.Store) *hcEnv {
	t.Helper()
	ctx := context.Background()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	signer, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	f, err := fleet.New(fleet.Options{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, NoSampleCheck: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, f.Close()) })
	exec, err := sshexec.New(sshexec.Config{Signer: signer, HostKeys: store.Secrets, Dialer: f.DialContext,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = exec.Close() })
	e := &hcEnv{t: t, ctx: ctx, store: store, fleet: f, exec: exec, expected: map[string]ExpectedState{}}
	e.h, err = NewHealth(ctx, store, exec, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	e.h.Expected = func(_ context.Context, vm models.SystemVM) (ExpectedState, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.expected[vm.ID], nil
	}
	e.zone = models.Zone{Name: "zone-" + models.NewID()[:8], NetworkType: "Advanced", AllocationState: "Enabled"}
	e.create(&e.zone)
	pod := models.Pod{ZoneID: e.zone.ID, Name: "pod-1"}
	e.create(&pod)
	e.kvm = models.Cluster{ZoneID: e.zone.ID, PodID: pod.ID, Name: "kvm-cluster", HypervisorType: string(hypervisors.KVM)}
	e.create(&e.kvm)
	e.vmw = models.Cluster{ZoneID: e.zone.ID, PodID: pod.ID, Name: "vmware-cluster", HypervisorType: string(hypervisors.VMware)}
	e.create(&e.vmw)
	addr, err := f.AddHost("kvm-1")
	require.NoError(t, err)
	e.host = models.Host{ZoneID: e.zone.ID, PodID: pod.ID, ClusterID: e.kvm.ID, Name: "kvm-1",
		HypervisorType: string(hypervisors.KVM), Address: addr, State: models.HostUp}
	e.create(&e.host)
	return e
}

func (e *hcEnv) create(v any) {
	e.t.Helper()
	require.NoError(e.t, e.store.DB.WithContext(e.ctx).Create(v).Error)
}

func (e *hcEnv) set(name, value string) {
	e.t.Helper()
	_, err := e.store.Settings.Set(e.ctx, name, models.ScopeZone, e.zone.ID, value)
	require.NoError(e.t, err)
}

// network creates a guest network getting services (a comma list) from its router.
func (e *hcEnv) network(services string) models.Network {
	e.t.Helper()
	e.mu.Lock()
	e.n++
	i := e.n
	e.mu.Unlock()
	n := models.Network{ZoneID: e.zone.ID, Name: fmt.Sprintf("net-%d", i), Type: models.NetworkIsolated,
		Gateway: fmt.Sprintf("10.%d.%d.1", 100+i/250, i%250), CIDR: fmt.Sprintf("10.%d.%d.0/24", 100+i/250, i%250),
		Services: services, State: "Implemented"}
	e.create(&n)
	return n
}

// routerOpts shape a router.
type routerOpts struct {
	hypervisor hypervisors.Type // default KVM
	net        *models.Network
	vpcID      string
	redundant  string // PRIMARY, BACKUP or "" (not redundant)
	vms        int    // expected guest VMs (DHCP and DNS entries)
	state      string // default Running
}

// router adds a router to the inventory and the fleet, its files matching what the platform
// expects of it.
func (e *hcEnv) router(o routerOpts) models.SystemVM {
	e.t.Helper()
	e.mu.Lock()
	e.n++
	i := e.n
	e.mu.Unlock()
	if o.hypervisor == "" {
		o.hypervisor = hypervisors.KVM
	}
	if o.state == "" {
		o.state = models.StateRunning
	}
	vm := models.SystemVM{Name: fmt.Sprintf("r-%d-VM", i), Type: models.TypeRouter, State: o.state, ZoneID: e.zone.ID,
		PodID: e.kvm.PodID, HypervisorType: string(o.hypervisor), Version: "4.15.0", VPCID: o.vpcID,
		LinkLocalIP: fmt.Sprintf("169.254.%d.%d", i/250, i%250+2), PrivateIP: fmt.Sprintf("10.0.%d.%d", i/250, i%250+2),
		IsRedundant: o.redundant != "", RedundantState: o.redundant}
	if o.hypervisor == hypervisors.VMware {
		vm.ClusterID = e.vmw.ID
	} else {
		vm.ClusterID, vm.HostID = e.kvm.ID, e.host.ID
	}
	if o.net != nil {
		vm.NetworkID = o.net.ID
	}
	e.create(&vm)
	spec := fleet.RouterSpec{ID: vm.ID, Name: vm.Name, Hypervisor: o.hypervisor, LinkLocalIP: vm.LinkLocalIP,
		PrivateIP: vm.PrivateIP, TemplateVersion: "4.15.0", ScriptsVersion: "sig-1"}
	if o.hypervisor != hypervisors.VMware {
		spec.HostName = e.host.Name
	}
	switch o.redundant {
	case models.RedundantPrimary:
		spec.RedundantState = agent.RedundantMaster
	case models.RedundantBackup:
		spec.RedundantState = agent.RedundantBackup
	}
	var nets []models.Network
	if o.vpcID != "" {
		require.NoError(e.t, e.store.DB.Where("vpc_id = ?", o.vpcID).Order("id").Find(&nets).Error)
	} else if o.net != nil {
		nets = []models.Network{*o.net}
	}
	for _, n := range nets {
		s := RouterServices(n.Services)
		spec.Services.DHCP = spec.Services.DHCP || s.DHCP
		spec.Services.DNS = spec.Services.DNS || s.DNS
		spec.Services.LB = spec.Services.LB || s.LB
		spec.Services.UserData = spec.Services.UserData || s.UserData
		spec.Gateways = append(spec.Gateways, n.Gateway)
	}
	var exp ExpectedState
	for v := 1; v <= o.vms; v++ {
		exp.VMs = append(exp.VMs, agent.ExpectedVM{MAC: fmt.Sprintf("02:00:%02x:%02x:00:%02x", i/256, i%256, v),
			IP: fmt.Sprintf("10.200.%d.%d", i%250, 10+v), Name: fmt.Sprintf("vm-%d-%d", i, v)})
	}
	spec.ExpectedVMs = exp.VMs
	e.mu.Lock()
	e.expected[vm.ID] = exp
	e.mu.Unlock()
	require.NoError(e.t, e.fleet.Add(spec))
	return vm
}

func (e *hcEnv) inject(vm models.SystemVM, name, service string) {
	e.t.Helper()
	require.NoError(e.t, e.fleet.Inject(vm.ID, fleet.Fault{Name: name, Service: service}))
}

func (e *hcEnv) clear(vm models.SystemVM) {
	e.t.Helper()
	require.NoError(e.t, e.fleet.Clear(vm.ID))
}

// results returns the stored last results of a router by check name.
func (e *hcEnv) results(vm models.SystemVM) map[string]models.HealthCheckResult {
	e.t.Helper()
	var rows []models.HealthCheckResult
	require.NoError(e.t, e.store.DB.Where("router_id = ?", vm.ID).Find(&rows).Error)
	out := map[string]models.HealthCheckResult{}
	for _, r := range rows {
		out[r.CheckName] = r
	}
	return out
}

func (e *hcEnv) reload(vm models.SystemVM) models.SystemVM {
	e.t.Helper()
	var out models.SystemVM
	require.NoError(e.t, e.store.Get(e.ctx, &out, vm.ID))
	return out
}

func (e *hcEnv) alerts(typ, resourceID string) []models.Alert {
	e.t.Helper()
	var rows []models.Alert
	require.NoError(e.t, e.store.DB.Where("type = ? AND resource_id = ?", typ, resourceID).Order("created_at").Find(&rows).Error)
	return rows
}

func (e *hcEnv) events(typ, resourceID string) []models.Event {
	e.t.Helper()
	var rows []models.Event
	require.NoError(e.t, e.store.DB.Where("type = ? AND resource_id = ?", typ, resourceID).Order("created_at").Find(&rows).Error)
	return rows
}

func (e *hcEnv) settings() SweepSettings {
	e.t.Helper()
	s, err := e.h.HealthSweepSettings(e.ctx, e.zone.ID)
	require.NoError(e.t, err)
	return s
}

// batch runs one kind of task over routers, as a sweep would, at a fresh sweep time.
func (e *hcEnv) batch(kind HealthKind, vms ...models.SystemVM) BatchSummary {
	e.t.Helper()
	ids := make([]string, 0, len(vms))
	for _, vm := range vms {
		ids = append(ids, vm.ID)
	}
	sum, err := e.h.HealthCheckBatch(e.ctx, BatchInput{ZoneID: e.zone.ID, Kind: kind, RouterIDs: ids, Parallel: 4,
		At: time.Now().UTC(), Settings: e.settings()})
	require.NoError(e.t, err)
	return sum
}
