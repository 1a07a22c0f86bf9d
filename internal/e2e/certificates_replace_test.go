package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/internal/certtest"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// consoleSampler makes a real TLS handshake with the console endpoint of every CPVM of a zone
// (its rows not Destroyed, found again at every sample, so a replacement is sampled as soon as
// it exists) every 50 ms, and counts the samples in which none answered.
type consoleSampler struct {
	samples, empty atomic.Int64
	mu             sync.Mutex
	seen           map[string]bool // CPVM names seen answering
	stop, done     chan struct{}
}

func sampleConsoles(t *testing.T, store *models.Store, cons *fleet.Consoles, zoneID string) *consoleSampler {
	s := &consoleSampler{seen: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	d := &net.Dialer{Timeout: time.Second}
	go func() {
		defer close(s.done)
		for range 20000 { // bounded: 20,000 x 50 ms is over 16 minutes
			select {
			case <-s.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			var vms []models.SystemVM
			if err := store.DB.Where("zone_id = ? AND type = ? AND state <> ?", zoneID, models.TypeCPVM, models.StateDestroyed).
				Find(&vms).Error; err != nil {
				t.Errorf("sampler: list CPVMs: %v", err)
				return
			}
			serving := 0
			for _, vm := range vms {
				st, err := cons.Status(vm.HypervisorName())
				if err != nil || st.Addr == "" {
					continue
				}
				conn, err := tls.DialWithDialer(d, "tcp", st.Addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // any served certificate counts as serving; the end state is verified
				if err != nil {
					continue
				}
				_ = conn.Close()
				serving++
				s.mu.Lock()
				s.seen[vm.Name] = true
				s.mu.Unlock()
			}
			if serving == 0 {
				s.empty.Add(1)
			}
			s.samples.Add(1)
		}
	}()
	return s
}

func (s *consoleSampler) finish() (samples, empty int64, seen map[string]bool) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples.Load(), s.empty.Load(), s.seen
}

// The only CPVM of a zone on the real stack (Temporal dev server with the codec, MariaDB,
// vcsim, the simulated fleet over SSH with real TLS console endpoints): a rotation started
// through the API deploys a new CPVM (SystemVMDeploy), installs the certificate on it and
// verifies it with a TLS handshake, and only then destroys the old CPVM (the lifecycle
// destroy). A sampler handshakes with every CPVM of the zone every 50 ms throughout and finds
// one serving at every sample. At the end the zone has one CPVM on vcsim and in the database,
// serving the new chain to a client trusting only the uploaded root for a name under the
// suffix, recorded as serving it; the old CPVM is gone from vcsim and Destroyed. With
// SYSVM_RECORD_HISTORIES=1 the rotation's history is recorded for the replay test.
func TestCertificateRotationReplacesTheOnlyCPVM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim and the simulated fleet")
	}
	store := modelstest.MySQL(t)
	ctx := context.Background()
	p := newPlatform(t, store, platformOptions{vmware: true, fleet: true, consoles: true})
	cons := p.consoles

	var olds []models.SystemVM
	if err := store.DB.Where("zone_id = ? AND type = ? AND state = ?", p.zoneID, models.TypeCPVM, models.StateRunning).Find(&olds).Error; err != nil {
		t.Fatal(err)
	}
	if len(olds) != 1 {
		t.Fatalf("the seeded zone has %d running CPVMs, want 1", len(olds))
	}
	old := olds[0]
	if n := len(p.instancesOf(old)); n != 1 {
		t.Fatalf("vcsim has %d VMs for %s before the rotation, want 1", n, old.Name)
	}

	// A root, an intermediate and a server certificate, uploaded through the API.
	const suffix = "*.consoleproxy.example.com"
	pki := certtest.NewPKI(suffix, certtest.P256)
	srv := pki.ServerFor(certtest.Options{Algo: certtest.P256})
	for _, body := range []map[string]any{
		{"certificate": pki.Root.CertPEM(), "name": "root1", "id": 1},
		{"certificate": pki.Intermediate.CertPEM(), "name": "intermed1", "id": 2},
		{"certificate": srv.CertPEM(), "privatekey": srv.KeyPEM(), "domainsuffix": suffix},
	} {
		var out struct{ Error any }
		if code := p.do(http.MethodPost, "/api/v1/certificates", body, &out); code != http.StatusCreated {
			t.Fatalf("upload %v = %d (%v)", body["name"], code, out.Error)
		}
	}
	var cert models.Certificate
	if err := store.DB.Where("name = ? AND is_current = ?", "CPVMCertificate", true).First(&cert).Error; err != nil {
		t.Fatal(err)
	}

	smp := sampleConsoles(t, store, cons, p.zoneID)
	begin := time.Now()
	op := p.start("/api/v1/certificates/rotate")
	done := p.wait(op, 5*time.Minute)
	samples, empty, seen := smp.finish()
	if done.Status != models.OpCompleted {
		t.Fatalf("rotation ended %s: %s", done.Status, done.Error)
	}
	t.Logf("rotation with a replacement CPVM took %s; %d samples", time.Since(begin).Round(time.Millisecond), samples)
	if samples < 10 {
		t.Errorf("only %d samples: the sampler did not run throughout", samples)
	}
	if empty > 0 {
		t.Errorf("%d of %d samples found no CPVM of the zone answering TLS", empty, samples)
	}

	if recording() {
		p.record(workflows.CertificateRotationWorkflowName+"_replace.json", done.WorkflowID, done.RunID)
	}
	var res workflows.CertificateRotationResult
	if err := json.Unmarshal(done.Result, &res); err != nil {
		t.Fatalf("result: %v: %s", err, done.Result)
	}
	var rep *workflows.CertRotationReplacement
	for _, v := range res.VMs {
		if v.VMID == old.ID {
			if v.Status != workflows.CertVMReplaced || v.Replacement == nil {
				t.Fatalf("%s in the result: %+v, want replaced", old.Name, v)
			}
			rep = v.Replacement
		} else if v.Status != workflows.CertVMRotated {
			t.Errorf("%s in the result: %s (%s), want rotated", v.Name, v.Status, v.Detail)
		}
	}
	if rep == nil {
		t.Fatalf("the result does not list %s: %+v", old.Name, res.VMs)
	}
	if !seen[old.Name] || !seen[rep.Name] {
		t.Errorf("the sampler saw answering %v, want both %s and its replacement %s", seen, old.Name, rep.Name)
	}

	// The database: one live CPVM in the zone, the replacement, Running; the old one Destroyed.
	var live []models.SystemVM
	if err := store.DB.Where("zone_id = ? AND type = ? AND state <> ?", p.zoneID, models.TypeCPVM, models.StateDestroyed).Find(&live).Error; err != nil {
		t.Fatal(err)
	}
	if len(live) != 1 || live[0].ID != rep.VMID || live[0].State != models.StateRunning {
		t.Fatalf("live CPVMs of the zone after the rotation: %+v, want only %s Running", live, rep.Name)
	}
	nvm := live[0]
	if st := p.vm(old.ID).State; st != models.StateDestroyed {
		t.Errorf("%s is %s in the database, want Destroyed", old.Name, st)
	}
	// The hypervisor: the old CPVM gone, the replacement running.
	if left := p.instancesOf(old); len(left) != 0 {
		t.Errorf("vcsim still has %d VMs of %s: %+v", len(left), old.Name, left)
	}
	if info, err := p.hv(nvm); err != nil {
		t.Errorf("the replacement %s is not on vcsim: %v", nvm.Name, err)
	} else if info.State != hypervisors.PowerRunning {
		t.Errorf("the replacement %s is %s on vcsim, want Running", nvm.Name, info.State)
	}
	// The served certificate: the new chain, verified with the uploaded root only, for a name
	// under the suffix; recorded in the database.
	st, err := cons.Status(nvm.HypervisorName())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(pki.Root.Cert)
	conn, err := tls.Dial("tcp", st.Addr, &tls.Config{RootCAs: roots, ServerName: "203-0-113-9.consoleproxy.example.com", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("the replacement does not serve the new chain: %v", err)
	}
	if got := models.Fingerprint(conn.ConnectionState().PeerCertificates[0].Raw); got != cert.Fingerprint {
		t.Errorf("the replacement serves %s, want %s", got, cert.Fingerprint)
	}
	_ = conn.Close()
	if _, err := cons.Status(old.HypervisorName()); err == nil {
		t.Errorf("the old CPVM's console endpoint still exists")
	}
	// The dev API lists the endpoints as they are: the replacement on the new certificate, the
	// old CPVM gone.
	var dc struct {
		Items []consoles.Endpoint `json:"items"`
	}
	if code := p.do(http.MethodGet, "/api/v1/dev/consoles", nil, &dc); code != http.StatusOK {
		t.Fatalf("GET /dev/consoles = %d", code)
	}
	listed := map[string]consoles.Endpoint{}
	for _, e := range dc.Items {
		listed[e.Name] = e
	}
	if e := listed[nvm.Name]; e.Addr != st.Addr || e.Fingerprint != cert.Fingerprint || e.VMID != nvm.ID {
		t.Errorf("GET /dev/consoles lists %s as %+v, want %s serving %s", nvm.Name, e, st.Addr, cert.Fingerprint)
	}
	if e, ok := listed[old.Name]; ok {
		t.Errorf("GET /dev/consoles still lists the destroyed %s: %+v", old.Name, e)
	}
	served, err := store.ServedCertificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if served[nvm.ID].CertificateID != cert.ID {
		t.Errorf("the replacement is recorded serving %q, want %s", served[nvm.ID].CertificateID, cert.ID)
	}
	if _, ok := served[old.ID]; ok {
		t.Errorf("the destroyed CPVM is still listed as serving a certificate")
	}
}
