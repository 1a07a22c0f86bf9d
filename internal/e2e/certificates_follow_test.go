package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/internal/certtest"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// servesChain makes a real TLS handshake with the console endpoint of vm (found by its
// hypervisor name in the fleet), trusting only root, for a name under the suffix, and checks
// the leaf is want; and that the database records vm serving want.
func (p *platform) servesChain(vm models.SystemVM, root *x509.Certificate, want models.Certificate) {
	p.t.Helper()
	st, err := p.consoles.Status(vm.HypervisorName())
	if err != nil || st.Addr == "" {
		p.t.Fatalf("console endpoint of %s (%s): %+v, %v", vm.Name, vm.HypervisorName(), st, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	conn, err := tls.Dial("tcp", st.Addr, &tls.Config{RootCAs: roots, ServerName: "203-0-113-9.consoleproxy.example.com", MinVersion: tls.VersionTLS12})
	if err != nil {
		p.t.Errorf("%s (%s) does not serve the uploaded chain at %s: %v", vm.Name, vm.HypervisorName(), st.Addr, err)
	} else {
		if got := models.Fingerprint(conn.ConnectionState().PeerCertificates[0].Raw); got != want.Fingerprint {
			p.t.Errorf("%s serves %s, want %s", vm.Name, got, want.Fingerprint)
		}
		_ = conn.Close()
	}
	served, err := p.store.ServedCertificates(context.Background())
	modelstest.Must(p.t, err, "served certificates")
	if served[vm.ID].CertificateID != want.ID {
		p.t.Errorf("%s is recorded serving %q, want %s", vm.Name, served[vm.ID].CertificateID, want.ID)
	}
}

// TestNewAndRecreatedCPVMsServeTheUploadedCertificate: on the real stack (Temporal, the worker,
// vcsim, the SSH fleet with real TLS console endpoints) a certificate chain is uploaded and
// rotated in; then a CPVM deployed through POST /zones/{id}/system-vms (what the capacity scan
// and the upgrades start) and a CPVM recreated through POST /system-vms/{id}/recreate both
// serve the uploaded chain to a client trusting only the uploaded root, and are recorded as
// serving it, rather than starting on the dev default (no rotation runs after the first); so
// do a deployed SSVM and the recreated rotated SSVM. With the key made unreadable, a deploy
// fails its verify and is discarded, and a recreate fails leaving the CPVM on its old instance,
// still serving the chain.
func TestNewAndRecreatedCPVMsServeTheUploadedCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim and the simulated fleet")
	}
	store := modelstest.MySQL(t)
	p := newPlatform(t, store, platformOptions{vmware: true, fleet: true, consoles: true})

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
	modelstest.Must(t, store.DB.Where("name = ? AND is_current = ?", "CPVMCertificate", true).First(&cert).Error, "server certificate")
	if done := p.wait(p.start("/api/v1/certificates/rotate"), 5*time.Minute); done.Status != models.OpCompleted {
		t.Fatalf("rotation ended %s: %s", done.Status, done.Error)
	}
	// The zone's only CPVM was replaced by the rotation (make-before-break): its deploy's verify
	// installed the certificate, so the rotation's own install found it served and did not
	// restart it again.
	var cpvms []models.SystemVM
	modelstest.Must(t, store.DB.Where("zone_id = ? AND type = ? AND state = ?", p.zoneID, models.TypeCPVM, models.StateRunning).
		Find(&cpvms).Error, "CPVMs")
	for _, c := range cpvms {
		p.servesChain(c, pki.Root.Cert, cert)
		if st, err := p.consoles.Status(c.HypervisorName()); err != nil || st.Restarts != 1 {
			t.Errorf("the rotation's replacement %s: %+v (%v), want exactly one restart (the deploy's install)", c.Name, st, err)
		}
	}

	// A deploy outside the rotation.
	begin := time.Now()
	op, res := p.deploy(models.TypeCPVM)
	if op.Status != models.OpCompleted {
		t.Fatalf("CPVM deploy ended %s: %s", op.Status, op.Error)
	}
	t.Logf("CPVM %s deployed in %s", res.Name, time.Since(begin).Round(time.Millisecond))
	fresh := p.vm(res.VMID)
	p.servesChain(fresh, pki.Root.Cert, cert)
	if st, err := p.consoles.Status(fresh.HypervisorName()); err != nil || st.Restarts != 1 {
		t.Errorf("the deployed %s: %+v (%v), want exactly one restart (its install)", fresh.Name, st, err)
	}

	// A recreate of that CPVM (make-before-break: the replacement has a new instance name).
	before := fresh.HypervisorName()
	begin = time.Now()
	if done := p.wait(p.start("/api/v1/system-vms/"+fresh.ID+"/recreate"), 3*time.Minute); done.Status != models.OpCompleted {
		t.Fatalf("recreate of %s ended %s: %s", fresh.Name, done.Status, done.Error)
	}
	t.Logf("CPVM %s recreated in %s", fresh.Name, time.Since(begin).Round(time.Millisecond))
	rebuilt := p.vm(fresh.ID)
	if rebuilt.HypervisorName() == before || rebuilt.State != models.StateRunning {
		t.Fatalf("after the recreate %s is %s as %s, want Running under a new instance name than %s", rebuilt.Name, rebuilt.State,
			rebuilt.HypervisorName(), before)
	}
	p.servesChain(rebuilt, pki.Root.Cert, cert)
	if _, err := p.consoles.Status(before); err == nil {
		t.Errorf("the endpoint of the recreated CPVM's old instance %s still exists", before)
	}

	// An SSVM (its HTTPS upload endpoint serves the same certificate): deployed, and the
	// zone's rotated SSVM recreated.
	op, res = p.deploy(models.TypeSSVM)
	if op.Status != models.OpCompleted {
		t.Fatalf("SSVM deploy ended %s: %s", op.Status, op.Error)
	}
	p.servesChain(p.vm(res.VMID), pki.Root.Cert, cert)
	var ssvm models.SystemVM
	modelstest.Must(t, store.DB.Where("zone_id = ? AND type = ? AND state = ? AND id <> ?", p.zoneID, models.TypeSSVM, models.StateRunning, res.VMID).
		First(&ssvm).Error, "the rotated SSVM")
	if done := p.wait(p.start("/api/v1/system-vms/"+ssvm.ID+"/recreate"), 3*time.Minute); done.Status != models.OpCompleted {
		t.Fatalf("recreate of %s ended %s: %s", ssvm.Name, done.Status, done.Error)
	}
	if after := p.vm(ssvm.ID); after.HypervisorName() == ssvm.HypervisorName() {
		t.Errorf("SSVM %s still on %s after its recreate", ssvm.Name, ssvm.HypervisorName())
	} else {
		p.servesChain(after, pki.Root.Cert, cert)
	}

	// The install fails (the certificate's sealed key is unreadable): a deploy fails its verify
	// and is discarded; a recreate fails its replacement's verify, the replacement is destroyed
	// and the CPVM keeps serving the certificate on its old instance.
	modelstest.Must(t, store.DB.Model(&models.Certificate{}).Where("id = ?", cert.ID).Update("key_ref", "certificate-key:lost").Error, "lose the key")
	hv0, db0 := p.systemVMCounts()
	op, res = p.deploy(models.TypeCPVM)
	t.Logf("deploy with an unreadable key ended %s: %s", op.Status, op.Error)
	if op.Status != models.OpFailed || !strings.Contains(op.Error, "deploy-verify") || !strings.Contains(op.Error, cert.Name) {
		t.Fatalf("deploy with an unreadable certificate key ended %s: %s", op.Status, op.Error)
	}
	if failed := p.vm(res.VMID); failed.State != models.StateDestroyed {
		t.Errorf("the failed deploy's %s is %s, want Destroyed", failed.Name, failed.State)
	} else if _, err := p.hv(failed); err == nil {
		t.Errorf("the failed deploy's %s is still on its hypervisor", failed.Name)
	}
	if hv, db := p.systemVMCounts(); hv != hv0 || db != db0 {
		t.Errorf("after the failed deploy: %d on hypervisors, %d rows, want %d and %d", hv, db, hv0, db0)
	}
	if done := p.wait(p.start("/api/v1/system-vms/"+rebuilt.ID+"/recreate"), 3*time.Minute); done.Status != models.OpFailed ||
		!strings.Contains(done.Error, cert.Name) {
		t.Fatalf("recreate with an unreadable certificate key ended %s: %s", done.Status, done.Error)
	}
	kept := p.vm(rebuilt.ID)
	if kept.HypervisorName() != rebuilt.HypervisorName() || kept.State != models.StateRunning {
		t.Errorf("after the failed recreate %s is %s as %s, want Running as %s", kept.Name, kept.State, kept.HypervisorName(), rebuilt.HypervisorName())
	}
	if left := p.instancesOf(kept); len(left) != 1 || left[0].Name != kept.HypervisorName() {
		t.Errorf("after the failed recreate the hypervisor has %+v, want only %s", left, kept.HypervisorName())
	}
	p.servesChain(kept, pki.Root.Cert, cert)
}
