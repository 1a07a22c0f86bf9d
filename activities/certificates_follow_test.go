package activities

import (
	"context"
	"testing"
	"time"

	"github.com/sysvm/sysvm/internal/certtest"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// TestFollowedCertificate: the certificate a new or rebuilt VM is given (SQLite and MariaDB):
// none before any upload; a new CPVM or SSVM gets the current server certificate (the latest
// version once a second is uploaded); a VM recorded serving an earlier version keeps it (a
// recreate does not rotate); a router gets none.
func TestFollowedCertificate(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		a := &Activities{Store: s}
		zone, _ := deployZone(t, s)
		cpvm := models.SystemVM{Name: "v-50-VM", Type: models.TypeCPVM, State: models.StateRunning, ZoneID: zone.ID}
		ssvm := models.SystemVM{Name: "s-51-VM", Type: models.TypeSSVM, State: models.StateRunning, ZoneID: zone.ID}
		router := models.SystemVM{Name: "r-52-VM", Type: models.TypeRouter, State: models.StateRunning, ZoneID: zone.ID}
		for _, vm := range []*models.SystemVM{&cpvm, &ssvm, &router} {
			modelstest.Must(t, s.DB.Create(vm).Error, "vm")
		}
		if c, err := a.followedCertificate(ctx, &cpvm); err != nil || c != nil {
			t.Fatalf("before any upload: %+v, %v; want none", c, err)
		}

		const suffix = "*.consoleproxy.example.com"
		pki := certtest.NewPKI(suffix, certtest.P256)
		upload := func(up models.CertificateUpload) models.Certificate {
			t.Helper()
			res, err := s.UploadCertificate(ctx, up, "test", time.Now(), 14*24*time.Hour)
			modelstest.Must(t, err, "upload %s", up.Name)
			return res.Certificate
		}
		upload(models.CertificateUpload{Certificate: pki.Root.CertPEM(), Name: "root1", ChainPosition: 1})
		upload(models.CertificateUpload{Certificate: pki.Intermediate.CertPEM(), Name: "intermed1", ChainPosition: 2})
		srv1 := pki.ServerFor(certtest.Options{Algo: certtest.P256})
		v1 := upload(models.CertificateUpload{Certificate: srv1.CertPEM(), PrivateKey: srv1.KeyPEM(), DomainSuffix: suffix})
		for _, vm := range []*models.SystemVM{&cpvm, &ssvm} {
			if c, err := a.followedCertificate(ctx, vm); err != nil || c == nil || c.ID != v1.ID {
				t.Errorf("%s after the upload: %+v, %v; want %s v%d", vm.Name, c, err, v1.Name, v1.Version)
			}
		}
		if c, err := a.followedCertificate(ctx, &router); err != nil || c != nil {
			t.Errorf("router: %+v, %v; want none", c, err)
		}

		// The CPVM serves v1; v2 is uploaded (current) but not rotated in.
		modelstest.Must(t, s.SetServedCertificate(ctx, cpvm.ID, v1.ID, "op-rot"), "served")
		srv2 := pki.ServerFor(certtest.Options{Algo: certtest.P256})
		v2 := upload(models.CertificateUpload{Certificate: srv2.CertPEM(), PrivateKey: srv2.KeyPEM(), DomainSuffix: suffix})
		if v2.ID == v1.ID || v2.Version != v1.Version+1 {
			t.Fatalf("second upload %+v, want a new version of %s", v2, v1.Name)
		}
		if c, err := a.followedCertificate(ctx, &cpvm); err != nil || c == nil || c.ID != v1.ID {
			t.Errorf("recreate of a CPVM serving v1: %+v, %v; want v1 kept", c, err)
		}
		if c, err := a.followedCertificate(ctx, &ssvm); err != nil || c == nil || c.ID != v2.ID {
			t.Errorf("a VM serving nothing recorded: %+v, %v; want the current v2", c, err)
		}
	})
}
