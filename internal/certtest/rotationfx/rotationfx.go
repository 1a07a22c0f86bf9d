// Package rotationfx is the test fixture of console proxy certificate rotations: zones of
// SSVMs and CPVMs simulated by a real fleet over real SSH, each serving real TLS on loopback
// (devcloud/fleet.Consoles), on a real database with an uploaded three-level chain, and the
// real activities reaching them.
package rotationfx

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/internal/certtest"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// Suffix is the fixture's console domain suffix.
const Suffix = "*.consoleproxy.example.com"

// Fixture is the zones, the fleet, its console endpoints and the activities.
type Fixture struct {
	T     testing.TB
	Store *models.Store
	Fleet *fleet.Fleet
	Cons  *fleet.Consoles
	Acts  *activities.Activities
	PKI   *certtest.PKI
	Roots *x509.CertPool
	Dev   *certtest.Issued
	// Zones are the VMs of each zone by name, in creation order; Zone the zone rows. A VM
	// added (AddCPVM) or removed (RemoveVM) while a sampler runs changes them under mu.
	Zones map[string][]models.SystemVM
	Zone  map[string]models.Zone

	mu    sync.Mutex
	hosts map[string]models.Host
	n     int
}

// Layout is each zone's VMs: "cpvm" or "ssvm".
type Layout map[string][]string

// New builds the fixture: every VM serves the dev default until given a certificate. The
// simulated hosts and VMs also accept the extra keys (a worker process's system VM key).
func New(t testing.TB, store *models.Store, layout Layout, extra ...ssh.PublicKey) *Fixture {
	t.Helper()
	ctx := context.Background()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	signer, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	dev := certtest.Issue(certtest.Options{CN: "sysvm dev console", DNSNames: []string{"*.consoleproxy.dev.test"}}, nil)
	devPair, err := tls.X509KeyPair([]byte(dev.CertPEM()), []byte(dev.KeyPEM()))
	require.NoError(t, err)
	tk, err := consoles.TokenKey(modelstest.TestKey)
	require.NoError(t, err)
	cons, err := fleet.NewConsoles(fleet.ConsoleOptions{TokenKey: tk, Default: devPair, RestartDelay: 30 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(cons.Close)
	f, err := fleet.New(fleet.Options{AuthorizedKeys: append([]ssh.PublicKey{signer.PublicKey()}, extra...), NoSampleCheck: true,
		Commands: map[string]fleet.CommandFunc{fleet.ConsoleCommand: cons.Command()}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	exec, err := sshexec.New(sshexec.Config{Signer: signer, HostKeys: &sshexec.MemoryHostKeyStore{}, Dialer: f.DialContext,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = exec.Close() })
	fx := &Fixture{T: t, Store: store, Fleet: f, Cons: cons, Dev: dev, Zones: map[string][]models.SystemVM{}, Zone: map[string]models.Zone{},
		hosts: map[string]models.Host{},
		Acts:  &activities.Activities{Store: store, Exec: exec, Logger: slog.New(slog.DiscardHandler)}}
	names := make([]string, 0, len(layout))
	for z := range layout {
		names = append(names, z)
	}
	sort.Strings(names)
	for _, zname := range names {
		z := models.Zone{Name: zname, NetworkType: "Advanced"}
		require.NoError(t, store.DB.Create(&z).Error)
		fx.Zone[zname] = z
		cl := models.Cluster{ZoneID: z.ID, Name: zname + "-kvm", HypervisorType: string(hypervisors.KVM)}
		require.NoError(t, store.DB.Create(&cl).Error)
		addr, err := f.AddHost(zname + "-kvm-1")
		require.NoError(t, err)
		h := models.Host{ZoneID: z.ID, ClusterID: cl.ID, Name: zname + "-kvm-1", HypervisorType: string(hypervisors.KVM), Address: addr, State: models.HostUp}
		require.NoError(t, store.DB.Create(&h).Error)
		fx.hosts[zname] = h
		for _, kind := range layout[zname] {
			typ := models.TypeCPVM
			if kind == "ssvm" {
				typ = models.TypeSSVM
			}
			fx.add(zname, typ, "")
		}
	}
	fx.PKI = certtest.NewPKI(Suffix, certtest.P256)
	fx.Roots = x509.NewCertPool()
	fx.Roots.AddCert(fx.PKI.Root.Cert)
	for _, up := range []models.CertificateUpload{
		{Certificate: fx.PKI.Root.CertPEM(), Name: "root1", ChainPosition: 1},
		{Certificate: fx.PKI.Intermediate.CertPEM(), Name: "intermed1", ChainPosition: 2},
	} {
		_, err := store.UploadCertificate(ctx, up, "test", time.Now(), 0)
		require.NoError(t, err)
	}
	return fx
}

// add makes a running VM of a zone: its row, its simulated VM over SSH and its console
// endpoint (serving the dev default).
func (fx *Fixture) add(zname, typ, id string) models.SystemVM {
	t := fx.T
	t.Helper()
	fx.mu.Lock()
	fx.n++
	n := fx.n
	h := fx.hosts[zname]
	fx.mu.Unlock()
	prefix := "v"
	if typ == models.TypeSSVM {
		prefix = "s"
	}
	vm := models.SystemVM{Name: fmt.Sprintf("%s-%d-VM", prefix, n), Type: typ, State: models.StateRunning, ZoneID: h.ZoneID,
		ClusterID: h.ClusterID, HostID: h.ID, HypervisorType: string(hypervisors.KVM), LinkLocalIP: fmt.Sprintf("169.254.0.%d", n+1),
		PrivateIP: fmt.Sprintf("10.0.0.%d", n+1), PublicIP: fmt.Sprintf("198.51.100.%d", n)}
	vm.ID = id
	require.NoError(t, fx.Store.DB.Create(&vm).Error)
	require.NoError(t, fx.Fleet.Add(fleet.RouterSpec{ID: vm.ID, Name: vm.Name, Type: typ, HostName: h.Name, LinkLocalIP: vm.LinkLocalIP,
		PrivateIP: vm.PrivateIP, TemplateVersion: "4.15.0"}))
	_, err := fx.Cons.Start(vm.ID)
	require.NoError(t, err)
	fx.mu.Lock()
	fx.Zones[zname] = append(fx.Zones[zname], vm)
	fx.mu.Unlock()
	return vm
}

// AddCPVM deploys a new running CPVM into a zone (what SystemVMDeploy leaves), serving the
// dev default until given a certificate; id, when set, is its row's ID.
func (fx *Fixture) AddCPVM(zname, id string) models.SystemVM {
	fx.T.Helper()
	return fx.add(zname, models.TypeCPVM, id)
}

// RemoveVM destroys a VM (what the lifecycle destroy leaves): its console endpoint and
// simulated VM stop and its row is Destroyed.
func (fx *Fixture) RemoveVM(id string) error {
	fx.Cons.Stop(id)
	if err := fx.Fleet.Remove(id); err != nil {
		return err
	}
	if err := fx.Store.DB.Model(&models.SystemVM{}).Where("id = ?", id).Update("state", models.StateDestroyed).Error; err != nil {
		return err
	}
	fx.mu.Lock()
	defer fx.mu.Unlock()
	for z, vms := range fx.Zones {
		for i, vm := range vms {
			if vm.ID == id {
				fx.Zones[z] = append(vms[:i:i], vms[i+1:]...)
			}
		}
	}
	return nil
}

// ZoneVMs are a zone's VMs now.
func (fx *Fixture) ZoneVMs(zname string) []models.SystemVM {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return append([]models.SystemVM(nil), fx.Zones[zname]...)
}

// UploadServer uploads a new server certificate version and returns its row.
func (fx *Fixture) UploadServer() models.Certificate {
	fx.T.Helper()
	srv := fx.PKI.ServerFor(certtest.Options{Algo: certtest.P256})
	res, err := fx.Store.UploadCertificate(context.Background(), models.CertificateUpload{Certificate: srv.CertPEM(), PrivateKey: srv.KeyPEM(),
		DomainSuffix: Suffix}, "test", time.Now(), 0)
	require.NoError(fx.T, err)
	return res.Certificate
}

var dialer = net.Dialer{Timeout: 2 * time.Second}

// Served is the fingerprint a VM's endpoint serves, seen by a TLS client ("" when it does not
// answer). The client trusts nothing here: callers compare fingerprints.
func (fx *Fixture) Served(vm models.SystemVM) string {
	st, err := fx.Cons.Status(vm.ID)
	if err != nil || st.Addr == "" {
		return ""
	}
	conn, err := tls.DialWithDialer(&dialer, "tcp", st.Addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // fingerprints are compared
	if err != nil {
		return ""
	}
	defer conn.Close()
	return models.Fingerprint(conn.ConnectionState().PeerCertificates[0].Raw)
}

// Verifies fails unless a VM's endpoint passes a full verification: the uploaded root only, a
// name under the suffix, and the leaf is cert.
func (fx *Fixture) Verifies(vm models.SystemVM, cert models.Certificate) error {
	st, err := fx.Cons.Status(vm.ID)
	if err != nil {
		return err
	}
	conn, err := tls.DialWithDialer(&dialer, "tcp", st.Addr, &tls.Config{RootCAs: fx.Roots, ServerName: "10-1-2-3.consoleproxy.example.com"})
	if err != nil {
		return err
	}
	defer conn.Close()
	if got := models.Fingerprint(conn.ConnectionState().PeerCertificates[0].Raw); got != cert.Fingerprint {
		return fmt.Errorf("serves %s, want %s", got, cert.Fingerprint)
	}
	return nil
}

// Restarts is how many times a VM's endpoint restarted.
func (fx *Fixture) Restarts(vm models.SystemVM) int {
	st, _ := fx.Cons.Status(vm.ID)
	return st.Restarts
}

// Sampler handshakes with every CPVM of every zone in a loop and counts the samples in which a
// zone had no CPVM answering TLS.
type Sampler struct {
	samples atomic.Int64
	mu      sync.Mutex
	gaps    map[string]int
	stop    chan struct{}
	done    chan struct{}
}

// Sample starts a sampler.
func (fx *Fixture) Sample() *Sampler {
	s := &Sampler{gaps: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for range 200000 {
			select {
			case <-s.stop:
				return
			default:
			}
			fx.mu.Lock()
			zones := make([]string, 0, len(fx.Zones))
			for z := range fx.Zones {
				zones = append(zones, z)
			}
			fx.mu.Unlock()
			for _, zname := range zones {
				serving := 0
				for _, vm := range fx.ZoneVMs(zname) {
					if vm.Type == models.TypeCPVM && fx.Served(vm) != "" {
						serving++
					}
				}
				if serving == 0 {
					s.mu.Lock()
					s.gaps[zname]++
					s.mu.Unlock()
				}
			}
			s.samples.Add(1)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return s
}

// Finish stops the sampler and returns the samples taken and the gaps by zone.
func (s *Sampler) Finish() (int64, map[string]int) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples.Load(), s.gaps
}
