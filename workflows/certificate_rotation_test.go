package workflows

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"
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

const rotSuffix = "*.consoleproxy.example.com"

// certFixture is two zones of SSVMs and CPVMs simulated by a real fleet over real SSH, each
// serving real TLS on loopback, on a real database with an uploaded three-level chain.
type certFixture struct {
	t     *testing.T
	store *models.Store
	fleet *fleet.Fleet
	cons  *fleet.Consoles
	acts  *activities.Activities
	pki   *certtest.PKI
	roots *x509.CertPool
	dev   *certtest.Issued
	zones map[string][]models.SystemVM // zone name -> VMs
	zone  map[string]models.Zone
}

func newCertFixture(t *testing.T, store *models.Store, layout map[string][]string) *certFixture {
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
	f, err := fleet.New(fleet.Options{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, NoSampleCheck: true,
		Commands: map[string]fleet.CommandFunc{fleet.ConsoleCommand: cons.Command()}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, f.Close()) })
	exec, err := sshexec.New(sshexec.Config{Signer: signer, HostKeys: &sshexec.MemoryHostKeyStore{}, Dialer: f.DialContext,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = exec.Close() })
	fx := &certFixture{t: t, store: store, fleet: f, cons: cons, dev: dev, zones: map[string][]models.SystemVM{}, zone: map[string]models.Zone{},
		acts: &activities.Activities{Store: store, Exec: exec, Logger: slog.New(slog.DiscardHandler)}}
	n := 0
	for zname, kinds := range layout {
		z := models.Zone{Name: zname, NetworkType: "Advanced"}
		require.NoError(t, store.DB.Create(&z).Error)
		fx.zone[zname] = z
		cl := models.Cluster{ZoneID: z.ID, Name: zname + "-kvm", HypervisorType: string(hypervisors.KVM)}
		require.NoError(t, store.DB.Create(&cl).Error)
		addr, err := f.AddHost(zname + "-kvm-1")
		require.NoError(t, err)
		h := models.Host{ZoneID: z.ID, ClusterID: cl.ID, Name: zname + "-kvm-1", HypervisorType: string(hypervisors.KVM), Address: addr, State: models.HostUp}
		require.NoError(t, store.DB.Create(&h).Error)
		for _, kind := range kinds {
			n++
			typ, prefix := models.TypeCPVM, "v"
			if kind == "ssvm" {
				typ, prefix = models.TypeSSVM, "s"
			}
			vm := models.SystemVM{Name: fmt.Sprintf("%s-%d-VM", prefix, n), Type: typ, State: models.StateRunning, ZoneID: z.ID,
				ClusterID: cl.ID, HostID: h.ID, HypervisorType: string(hypervisors.KVM), LinkLocalIP: fmt.Sprintf("169.254.0.%d", n+1),
				PrivateIP: fmt.Sprintf("10.0.0.%d", n+1), PublicIP: fmt.Sprintf("198.51.100.%d", n)}
			require.NoError(t, store.DB.Create(&vm).Error)
			require.NoError(t, f.Add(fleet.RouterSpec{ID: vm.ID, Name: vm.Name, Type: typ, HostName: h.Name, LinkLocalIP: vm.LinkLocalIP,
				PrivateIP: vm.PrivateIP, TemplateVersion: "4.15.0"}))
			_, err := cons.Start(vm.ID)
			require.NoError(t, err)
			fx.zones[zname] = append(fx.zones[zname], vm)
		}
	}
	fx.pki = certtest.NewPKI(rotSuffix, certtest.P256)
	fx.roots = x509.NewCertPool()
	fx.roots.AddCert(fx.pki.Root.Cert)
	for _, up := range []models.CertificateUpload{
		{Certificate: fx.pki.Root.CertPEM(), Name: "root1", ChainPosition: 1},
		{Certificate: fx.pki.Intermediate.CertPEM(), Name: "intermed1", ChainPosition: 2},
	} {
		_, err := store.UploadCertificate(ctx, up, "test", time.Now(), 0)
		require.NoError(t, err)
	}
	return fx
}

// uploadServer uploads a new server certificate version and returns its row.
func (fx *certFixture) uploadServer() models.Certificate {
	fx.t.Helper()
	srv := fx.pki.ServerFor(certtest.Options{Algo: certtest.P256})
	res, err := fx.store.UploadCertificate(context.Background(), models.CertificateUpload{Certificate: srv.CertPEM(), PrivateKey: srv.KeyPEM(),
		DomainSuffix: rotSuffix}, "test", time.Now(), 0)
	require.NoError(fx.t, err)
	return res.Certificate
}

// served is the fingerprint a VM's endpoint serves, seen by a TLS client ("" when it does not
// answer). The client trusts nothing: the fingerprint is compared by the caller.
func (fx *certFixture) served(vm models.SystemVM) string {
	st, err := fx.cons.Status(vm.ID)
	if err != nil || st.Addr == "" {
		return ""
	}
	conn, err := tls.DialWithDialer(&netDialer, "tcp", st.Addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test compares fingerprints
	if err != nil {
		return ""
	}
	defer conn.Close()
	return models.Fingerprint(conn.ConnectionState().PeerCertificates[0].Raw)
}

// verifies reports whether a VM's endpoint passes a full verification: the uploaded root only,
// a name under the suffix, and the leaf is cert.
func (fx *certFixture) verifies(vm models.SystemVM, cert models.Certificate) error {
	st, err := fx.cons.Status(vm.ID)
	if err != nil {
		return err
	}
	conn, err := tls.DialWithDialer(&netDialer, "tcp", st.Addr, &tls.Config{RootCAs: fx.roots, ServerName: "10-1-2-3.consoleproxy.example.com"})
	if err != nil {
		return err
	}
	defer conn.Close()
	if got := models.Fingerprint(conn.ConnectionState().PeerCertificates[0].Raw); got != cert.Fingerprint {
		return fmt.Errorf("serves %s, want %s", got, cert.Fingerprint)
	}
	return nil
}

// sampler handshakes with every CPVM of every zone in a loop and counts the moments a zone
// had no CPVM answering TLS.
type sampler struct {
	samples atomic.Int64
	mu      sync.Mutex
	gaps    map[string]int
	stop    chan struct{}
	done    chan struct{}
}

func (fx *certFixture) sample() *sampler {
	s := &sampler{gaps: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for i := 0; i < 100000; i++ {
			select {
			case <-s.stop:
				return
			default:
			}
			for zname, vms := range fx.zones {
				serving := 0
				for _, vm := range vms {
					if vm.Type == models.TypeCPVM && fx.served(vm) != "" {
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

func (s *sampler) finish() (int64, map[string]int) {
	close(s.stop)
	<-s.done
	return s.samples.Load(), s.gaps
}

var netDialer = net.Dialer{Timeout: 2 * time.Second}

func newRotationEnv(fx *certFixture) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: CertificateRotationWorkflowID})
	env.RegisterWorkflowWithOptions(CertificateRotation, workflow.RegisterOptions{Name: CertificateRotationWorkflowName})
	env.RegisterActivity(fx.acts)
	return env
}

// Zone by zone, one VM at a time: every CPVM and SSVM of a zone with two CPVMs ends serving the
// new chain (checked by a TLS client trusting only the uploaded root), the zone always had a
// CPVM answering (sampled throughout), and a zone with a single CPVM keeps it serving on its
// certificate with an alert, while its SSVM is rotated.
func TestCertificateRotationRollsZonesKeepingAConsole(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		fx := newCertFixture(t, store, map[string][]string{"zone-a": {"cpvm", "cpvm", "ssvm"}, "zone-b": {"cpvm", "ssvm"}})
		cert := fx.uploadServer()
		for _, vms := range fx.zones {
			for _, vm := range vms {
				require.Equal(t, models.Fingerprint(fx.dev.Cert.Raw), fx.served(vm), "%s serves the dev default first", vm.Name)
			}
		}
		env := newRotationEnv(fx)
		smp := fx.sample()
		env.ExecuteWorkflow(CertificateRotationWorkflowName, activities.CertRotationInput{CertificateID: cert.ID})
		samples, gaps := smp.finish()
		require.True(t, env.IsWorkflowCompleted())
		require.NoError(t, env.GetWorkflowError())
		var res CertificateRotationResult
		require.NoError(t, env.GetWorkflowResult(&res))
		assert.Greater(t, samples, int64(10), "the sampler ran throughout")
		assert.Empty(t, gaps, "a zone had no CPVM answering TLS")

		status := map[string]string{}
		for _, v := range res.VMs {
			status[v.Name] = v.Status
		}
		for _, vm := range fx.zones["zone-a"] {
			assert.NoError(t, fx.verifies(vm, cert), "%s", vm.Name)
			assert.Equal(t, CertVMRotated, status[vm.Name])
			st, _ := fx.cons.Status(vm.ID)
			assert.Equal(t, 1, st.Restarts, "%s restarted once", vm.Name)
		}
		for _, vm := range fx.zones["zone-b"] {
			st, _ := fx.cons.Status(vm.ID)
			if vm.Type == models.TypeCPVM {
				assert.Equal(t, CertVMSkipped, status[vm.Name])
				assert.Equal(t, 0, st.Restarts, "the single CPVM of zone-b was restarted")
				assert.Equal(t, models.Fingerprint(fx.dev.Cert.Raw), fx.served(vm))
			} else {
				assert.Equal(t, CertVMRotated, status[vm.Name], "SSVMs are rotated too")
				assert.NoError(t, fx.verifies(vm, cert))
			}
		}
		served, err := store.ServedCertificates(context.Background())
		require.NoError(t, err)
		assert.Len(t, served, 4, "rotated VMs are recorded as serving the certificate")
		var alerts []models.Alert
		require.NoError(t, store.DB.Where("type = ?", AlertCertificateRotation).Find(&alerts).Error)
		require.Len(t, alerts, 1)
		assert.Contains(t, alerts[0].Description, "zone zone-b")
		assert.Equal(t, fx.zone["zone-b"].ID, alerts[0].ZoneID)
	})
}

// A CPVM that does not serve the new certificate after its restart is put back on the one it
// served before, the rotation stops there (the VMs after it are not touched) and a CRITICAL
// alert names the zone, the VM and the reason.
func TestCertificateRotationRollsBackAFailingCPVM(t *testing.T) {
	store := modelstest.SQLite(t)
	fx := newCertFixture(t, store, map[string][]string{"zone-a": {"cpvm", "cpvm", "ssvm"}, "zone-b": {"cpvm", "cpvm"}})
	v1 := fx.uploadServer()
	env := newRotationEnv(fx)
	env.ExecuteWorkflow(CertificateRotationWorkflowName, activities.CertRotationInput{CertificateID: v1.ID})
	require.NoError(t, env.GetWorkflowError())

	v2 := fx.uploadServer()
	bad := fx.zones["zone-a"][1]
	require.Equal(t, models.TypeCPVM, bad.Type)
	require.NoError(t, fx.cons.BreakNextRestart(bad.ID, true))
	env = newRotationEnv(fx)
	env.ExecuteWorkflow(CertificateRotationWorkflowName, activities.CertRotationInput{CertificateID: v2.ID})
	require.True(t, env.IsWorkflowCompleted())
	err := env.GetWorkflowError()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "zone zone-a, CPVM "+bad.Name)

	first := fx.zones["zone-a"][0]
	assert.NoError(t, fx.verifies(first, v2), "the CPVM before the failing one is rotated")
	assert.NoError(t, fx.verifies(bad, v1), "the failing CPVM was rolled back to v1 (verified with TLS)")
	st, _ := fx.cons.Status(bad.ID)
	assert.Equal(t, 3, st.Restarts, "v1, the failed v2, the rollback to v1")
	ssvm := fx.zones["zone-a"][2]
	assert.NoError(t, fx.verifies(ssvm, v1), "the SSVM after the failure is not touched")
	for _, vm := range fx.zones["zone-b"] {
		assert.NoError(t, fx.verifies(vm, v1), "zone-b after the failure is not touched")
	}
	var alerts []models.Alert
	require.NoError(t, store.DB.Where("type = ? AND severity = ?", AlertCertificateRotation, "CRITICAL").Find(&alerts).Error)
	require.Len(t, alerts, 1)
	assert.Contains(t, alerts[0].Description, "zone zone-a")
	assert.Contains(t, alerts[0].Description, bad.Name)
	assert.Contains(t, alerts[0].Description, "does not serve CPVMCertificate v2")
	assert.Contains(t, alerts[0].Description, "; rolled back to certificate "+v1.ID)
	assert.Equal(t, bad.ID, alerts[0].ResourceID)
	served, err2 := store.ServedCertificates(context.Background())
	require.NoError(t, err2)
	assert.Equal(t, v1.ID, served[bad.ID].CertificateID, "the failing CPVM is still recorded on v1")
	assert.Equal(t, v2.ID, served[first.ID].CertificateID)
	assert.True(t, strings.Contains(alerts[0].Subject, bad.Name))
}
