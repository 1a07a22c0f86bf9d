package workflows

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
)

// healthFixture is a zone of routers that are simulated routers of a real fleet on one KVM
// host, reached over real SSH by real health activities on a real database.
type healthFixture struct {
	t     testing.TB
	ctx   context.Context
	store *models.Store
	fleet *fleet.Fleet
	h     *activities.Health
	zone  models.Zone
	host  models.Host
	net   models.Network

	mu sync.Mutex
	n  int
}

type fixtureOptions struct {
	// noSample leaves out the sample custom check (no process per run).
	noSample bool
}

func newHealthFixture(t testing.TB, store *models.Store, o fixtureOptions) *healthFixture {
	t.Helper()
	ctx := context.Background()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	signer, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	f, err := fleet.New(fleet.Options{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, NoSampleCheck: o.noSample})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, f.Close()) })
	exec, err := sshexec.New(sshexec.Config{Signer: signer, HostKeys: &sshexec.MemoryHostKeyStore{}, Dialer: f.DialContext,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = exec.Close() })
	fx := &healthFixture{t: t, ctx: ctx, store: store, fleet: f}
	fx.h, err = activities.NewHealth(ctx, store, exec, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	fx.zone = models.Zone{Name: "zone-" + models.NewID()[:8], NetworkType: "Advanced"}
	fx.create(&fx.zone)
	cluster := models.Cluster{ZoneID: fx.zone.ID, Name: "kvm", HypervisorType: string(hypervisors.KVM)}
	fx.create(&cluster)
	addr, err := f.AddHost("kvm-1")
	require.NoError(t, err)
	fx.host = models.Host{ZoneID: fx.zone.ID, ClusterID: cluster.ID, Name: "kvm-1", HypervisorType: string(hypervisors.KVM),
		Address: addr, State: models.HostUp}
	fx.create(&fx.host)
	fx.net = models.Network{ZoneID: fx.zone.ID, Name: "net-1", Type: models.NetworkIsolated, Gateway: "10.100.0.1",
		CIDR: "10.100.0.0/24", Services: "Dhcp,Dns,Lb,UserData", State: "Implemented"}
	fx.create(&fx.net)
	return fx
}

func (fx *healthFixture) create(v any) {
	fx.t.Helper()
	require.NoError(fx.t, fx.store.DB.WithContext(fx.ctx).Create(v).Error)
}

func (fx *healthFixture) set(name, value string) {
	fx.t.Helper()
	_, err := fx.store.Settings.Set(fx.ctx, name, models.ScopeZone, fx.zone.ID, value)
	require.NoError(fx.t, err)
}

// routers adds n running routers on the zone's network; their files match what the platform
// expects.
func (fx *healthFixture) routers(n int) []models.SystemVM {
	fx.t.Helper()
	out := make([]models.SystemVM, 0, n)
	for range n {
		fx.mu.Lock()
		fx.n++
		i := fx.n
		fx.mu.Unlock()
		vm := models.SystemVM{Name: fmt.Sprintf("r-%d-VM", i), Type: models.TypeRouter, State: models.StateRunning,
			ZoneID: fx.zone.ID, ClusterID: fx.host.ClusterID, HostID: fx.host.ID, HypervisorType: string(hypervisors.KVM),
			Version: "4.15.0", NetworkID: fx.net.ID, LinkLocalIP: fmt.Sprintf("169.254.%d.%d", i/250, i%250+2),
			PrivateIP: fmt.Sprintf("10.0.%d.%d", i/250, i%250+2)}
		fx.create(&vm)
		require.NoError(fx.t, fx.fleet.Add(fleet.RouterSpec{ID: vm.ID, Name: vm.Name, HostName: fx.host.Name,
			LinkLocalIP: vm.LinkLocalIP, PrivateIP: vm.PrivateIP, TemplateVersion: "4.15.0",
			Services: agent.Services{DHCP: true, DNS: true, LB: true, UserData: true}, Gateways: []string{fx.net.Gateway}}))
		out = append(out, vm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (fx *healthFixture) inject(vm models.SystemVM, fault string) {
	fx.t.Helper()
	require.NoError(fx.t, fx.fleet.Inject(vm.ID, fleet.Fault{Name: fault}))
}

func (fx *healthFixture) result(vm models.SystemVM, check string) (models.HealthCheckResult, bool) {
	fx.t.Helper()
	var rows []models.HealthCheckResult
	require.NoError(fx.t, fx.store.DB.Where("router_id = ? AND check_name = ?", vm.ID, check).Find(&rows).Error)
	if len(rows) == 0 {
		return models.HealthCheckResult{}, false
	}
	return rows[0], true
}

func (fx *healthFixture) count(model any, where string, args ...any) int64 {
	fx.t.Helper()
	var n int64
	require.NoError(fx.t, fx.store.DB.Model(model).Where(where, args...).Count(&n).Error)
	return n
}
