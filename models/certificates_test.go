package models_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sysvm/sysvm/internal/certtest"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

const suffix = "*.consoleproxy.example.com"

const buffer = 14 * 24 * time.Hour

func upload(t *testing.T, s *models.Store, up models.CertificateUpload) (*models.CertificateUploadResult, error) {
	t.Helper()
	return s.UploadCertificate(context.Background(), up, "test", time.Now(), buffer)
}

func mustUpload(t *testing.T, s *models.Store, up models.CertificateUpload) *models.CertificateUploadResult {
	t.Helper()
	res, err := upload(t, s, up)
	require.NoError(t, err, "upload %s", up.Name)
	return res
}

// wantRefused asserts a *CertificateError on field whose message has every part.
func wantRefused(t *testing.T, err error, field string, parts ...string) {
	t.Helper()
	var ce *models.CertificateError
	if !assert.True(t, errors.As(err, &ce), "want a CertificateError, got %v", err) {
		return
	}
	assert.Equal(t, field, ce.Field, "field of %q", ce.Message)
	for _, p := range parts {
		assert.Contains(t, ce.Message, p)
	}
}

func uploadChain(t *testing.T, s *models.Store, p *certtest.PKI) {
	t.Helper()
	mustUpload(t, s, models.CertificateUpload{Certificate: p.Root.CertPEM(), Name: "root1", ChainPosition: 1, DomainSuffix: p.Suffix})
	mustUpload(t, s, models.CertificateUpload{Certificate: p.Intermediate.CertPEM(), Name: "intermed1", ChainPosition: 2, DomainSuffix: p.Suffix})
}

// A three-level chain (root, intermediate, server) of RSA and of ECDSA keys is accepted and
// stored: the key sealed in Secrets and never in the row, a second upload under a name
// replacing the first and keeping it.
func TestCertificateUploadThreeLevelChain(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		for _, algo := range []certtest.Algo{certtest.RSA2048, certtest.P256} {
			t.Run(string(algo), func(t *testing.T) {
				ctx := context.Background()
				require.NoError(t, s.DB.Exec("DELETE FROM certificates").Error)
				p := certtest.NewPKI(suffix, algo)
				uploadChain(t, s, p)
				res := mustUpload(t, s, models.CertificateUpload{Certificate: p.Server.CertPEM(), PrivateKey: p.Server.KeyPEM(), DomainSuffix: suffix})
				c := res.Certificate
				assert.Equal(t, models.ServerCertificateName, c.Name)
				assert.Equal(t, models.CertServer, c.Kind)
				assert.Equal(t, []string{suffix}, c.Names())
				assert.Empty(t, res.Warnings)
				assert.Equal(t, models.Fingerprint(p.Server.Cert.Raw), c.Fingerprint)
				assert.Equal(t, models.Fingerprint(p.Intermediate.Cert.Raw)+","+models.Fingerprint(p.Root.Cert.Raw), c.ChainFingerprints)

				// The key: in Secrets, sealed; the row and its ciphertext do not hold it.
				var sec models.Secret
				require.NoError(t, s.DB.First(&sec, "name = ?", c.KeyRef).Error)
				assert.Equal(t, models.SecretKindCertificateKey, sec.Kind)
				assert.False(t, bytes.Contains(sec.Ciphertext, []byte("PRIVATE KEY")), "key stored in clear")
				assert.NotContains(t, c.PEM, "PRIVATE KEY")
				key, err := s.CertificateKeyPEM(ctx, &c)
				require.NoError(t, err)
				assert.Equal(t, p.Server.KeyPEM(), string(key))

				bundle, _, _, err := s.CertificateBundle(ctx, c.ID)
				require.NoError(t, err)
				assert.Equal(t, 3, strings.Count(string(bundle), "BEGIN CERTIFICATE"), "server + intermediate + root")

				// Replacing under the same name: version 2 current, version 1 kept.
				p2 := p.ServerFor(certtest.Options{Algo: algo})
				res2 := mustUpload(t, s, models.CertificateUpload{Certificate: p2.CertPEM(), PrivateKey: p2.KeyPEM(), DomainSuffix: suffix})
				assert.Equal(t, 2, res2.Certificate.Version)
				require.NotNil(t, res2.Replaced)
				assert.Equal(t, c.ID, res2.Replaced.ID)
				all, err := s.ListCertificates(ctx, true)
				require.NoError(t, err)
				assert.Len(t, all, 4)
				cur, err := s.ListCertificates(ctx, false)
				require.NoError(t, err)
				assert.Len(t, cur, 3)
				srv, err := s.CurrentServerCertificate(ctx)
				require.NoError(t, err)
				assert.Equal(t, res2.Certificate.ID, srv.ID)
			})
		}
	})
}

// Every bad upload is refused before anything is stored, naming the field and what is wrong.
func TestCertificateUploadRefusals(t *testing.T) {
	s := modelstest.SQLite(t)
	p := certtest.NewPKIWithPlus(suffix, certtest.RSA2048)
	uploadChain(t, s, p)
	srv := func(cert, key string) models.CertificateUpload {
		return models.CertificateUpload{Certificate: cert, PrivateKey: key, DomainSuffix: suffix}
	}
	good := srv(p.Server.CertPEM(), p.Server.KeyPEM())
	certLines := strings.Split(p.Server.CertPEM(), "\n")
	otherPKI := certtest.NewPKI(suffix, certtest.RSA2048)

	cases := []struct {
		name  string
		up    models.CertificateUpload
		field string
		parts []string
	}{
		{"empty certificate", srv("", p.Server.KeyPEM()), "certificate", []string{"required"}},
		{"not PEM", srv("hello", p.Server.KeyPEM()), "certificate", []string{"no PEM block"}},
		{"truncated: no END", srv(strings.Join(certLines[:10], "\n"), p.Server.KeyPEM()), "certificate",
			[]string{"block 1 (CERTIFICATE, begun at line 1)", "no -----END CERTIFICATE----- line", "truncated"}},
		{"truncated body", srv(strings.Join(append(certLines[:6:6], certLines[len(certLines)-2:]...), "\n"), p.Server.KeyPEM()), "certificate",
			[]string{"block 1 (CERTIFICATE, lines 1-"}},
		{"bad character", srv(strings.Replace(p.Server.CertPEM(), "\n", "\n!", 3), p.Server.KeyPEM()), "certificate",
			[]string{"line 2, column 1", "'!' is not base64"}},
		{"plus became space", srv(plusToSpace(p.Server.CertPEM()), p.Server.KeyPEM()), "certificate",
			[]string{"URL-decoded", "'+' into a space", "line "}},
		{"plus became space in key", srv(p.Server.CertPEM(), plusToSpace(p.Server.KeyPEM())), "privatekey", []string{"URL-decoded"}},
		{"PKCS#1 key", srv(p.Server.CertPEM(), p.Server.PKCS1PEM()), "privatekey",
			[]string{"PKCS#1", "openssl pkcs8 -topk8 -nocrypt"}},
		{"encrypted key", srv(p.Server.CertPEM(), strings.ReplaceAll(p.Server.KeyPEM(), "PRIVATE KEY", "ENCRYPTED PRIVATE KEY")), "privatekey",
			[]string{"encrypted", "openssl pkcs8 -topk8 -nocrypt"}},
		{"legacy encrypted key", srv(p.Server.CertPEM(), strings.Replace(p.Server.PKCS1PEM(), "-----\n", "-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n", 1)), "privatekey",
			[]string{"encrypted"}},
		{"key of another certificate", srv(p.Server.CertPEM(), otherPKI.Server.KeyPEM()), "privatekey", []string{"does not match"}},
		{"certificate in key field", srv(p.Server.CertPEM(), p.Server.CertPEM()), "privatekey", []string{"a certificate, not a key"}},
		{"key in certificate field", srv(p.Server.KeyPEM(), p.Server.KeyPEM()), "certificate", []string{"privatekey"}},
		{"no suffix", models.CertificateUpload{Certificate: p.Server.CertPEM(), PrivateKey: p.Server.KeyPEM()}, "domainsuffix", []string{"required"}},
		{"suffix without *.", srv2(good, "consoleproxy.example.com"), "domainsuffix", []string{"must start with *."}},
		{"names do not cover suffix", srv2(good, "*.console.other.com"), "domainsuffix",
			[]string{"do not cover *.console.other.com", "1-2-3-4.console.other.com", suffix}},
		{"chain from another root", srv(otherPKI.Server.CertPEM(), otherPKI.Server.KeyPEM()), "certificate",
			[]string{"does not lead to the uploaded root"}},
	}
	for _, algo := range []certtest.Algo{certtest.RSA1024, certtest.P224} {
		weak := p.ServerFor(certtest.Options{Algo: algo})
		cases = append(cases, struct {
			name  string
			up    models.CertificateUpload
			field string
			parts []string
		}{"weak " + string(algo), srv(weak.CertPEM(), weak.KeyPEM()), "certificate", []string{"needed"}})
	}
	expired := p.ServerFor(certtest.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	future := p.ServerFor(certtest.Options{NotBefore: time.Now().Add(24 * time.Hour)})
	cases = append(cases,
		struct {
			name  string
			up    models.CertificateUpload
			field string
			parts []string
		}{"expired", srv(expired.CertPEM(), expired.KeyPEM()), "certificate", []string{"expired on"}},
		struct {
			name  string
			up    models.CertificateUpload
			field string
			parts []string
		}{"not yet valid", srv(future.CertPEM(), future.KeyPEM()), "certificate", []string{"not valid yet"}},
	)
	before, err := s.ListCertificates(context.Background(), true)
	require.NoError(t, err)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := upload(t, s, c.up)
			wantRefused(t, err, c.field, c.parts...)
			if err != nil {
				assert.NotContains(t, err.Error(), "MII", "an error quotes key or certificate material")
			}
		})
	}
	after, err := s.ListCertificates(context.Background(), true)
	require.NoError(t, err)
	assert.Len(t, after, len(before), "a refused upload stored something")
	var secrets int64
	require.NoError(t, s.DB.Model(&models.Secret{}).Where("kind = ?", models.SecretKindCertificateKey).Count(&secrets).Error)
	assert.Zero(t, secrets, "a refused upload stored a key")

	// Expiring within the buffer is accepted with a warning.
	soon := p.ServerFor(certtest.Options{NotAfter: time.Now().Add(3 * 24 * time.Hour)})
	res := mustUpload(t, s, srv(soon.CertPEM(), soon.KeyPEM()))
	require.Len(t, res.Warnings, 1)
	assert.Contains(t, res.Warnings[0], "within the expiry buffer")
}

func srv2(up models.CertificateUpload, suffix string) models.CertificateUpload {
	up.DomainSuffix = suffix
	return up
}

// plusToSpace corrupts PEM text as URL decoding does. Base64 of random DER almost always has
// a '+'; the test fails loudly if not.
func plusToSpace(s string) string {
	if !strings.Contains(s, "+") {
		panic("no + in the PEM")
	}
	return strings.ReplaceAll(s, "+", " ")
}

// Root and intermediate uploads: a root must be a self-signed CA, a truncated or invalid root
// is refused, an intermediate must chain to the stored root, and a position belongs to one name.
func TestCertificateChainUploads(t *testing.T) {
	s := modelstest.SQLite(t)
	p := certtest.NewPKI(suffix, certtest.P256)
	_, err := upload(t, s, models.CertificateUpload{Certificate: p.Intermediate.CertPEM(), Name: "intermed1", ChainPosition: 2})
	wantRefused(t, err, "certificate", "no root CA certificate is stored")
	_, err = upload(t, s, models.CertificateUpload{Certificate: p.Intermediate.CertPEM(), Name: "root1", ChainPosition: 1})
	wantRefused(t, err, "certificate", "not a valid root", "not self-signed")
	_, err = upload(t, s, models.CertificateUpload{Certificate: p.Server.CertPEM(), Name: "root1", ChainPosition: 1})
	wantRefused(t, err, "certificate", "not a CA certificate")
	lines := strings.Split(p.Root.CertPEM(), "\n")
	truncated := strings.Join(lines[:len(lines)-3], "\n") + "\n" + lines[len(lines)-2]
	_, err = upload(t, s, models.CertificateUpload{Certificate: truncated, Name: "root1", ChainPosition: 1})
	wantRefused(t, err, "certificate", "block 1")
	_, err = upload(t, s, models.CertificateUpload{Certificate: p.Root.CertPEM(), ChainPosition: 1})
	wantRefused(t, err, "name", "required")
	_, err = upload(t, s, models.CertificateUpload{Certificate: p.Root.CertPEM(), Name: "root1"})
	wantRefused(t, err, "id", "position in the chain")

	mustUpload(t, s, models.CertificateUpload{Certificate: p.Root.CertPEM(), Name: "root1", ChainPosition: 1})
	other := certtest.NewPKI(suffix, certtest.P256)
	_, err = upload(t, s, models.CertificateUpload{Certificate: other.Intermediate.CertPEM(), Name: "intermed1", ChainPosition: 2})
	wantRefused(t, err, "certificate", "does not lead to the uploaded root")
	_, err = upload(t, s, models.CertificateUpload{Certificate: other.Root.CertPEM(), Name: "root2", ChainPosition: 1})
	wantRefused(t, err, "id", "held by root1")
	mustUpload(t, s, models.CertificateUpload{Certificate: p.Intermediate.CertPEM(), Name: "intermed1", ChainPosition: 2})

	// A server certificate with its intermediate bundled and no intermediate stored verifies too.
	s2 := modelstest.SQLite(t)
	mustUpload(t, s2, models.CertificateUpload{Certificate: p.Root.CertPEM(), Name: "root1", ChainPosition: 1})
	mustUpload(t, s2, models.CertificateUpload{Certificate: p.Server.CertPEM() + p.Intermediate.CertPEM(), PrivateKey: p.Server.KeyPEM(), DomainSuffix: suffix})

	// A self-signed server certificate with no root is accepted for dev, with a warning.
	s3 := modelstest.SQLite(t)
	self := certtest.Issue(certtest.Options{CN: "dev", DNSNames: []string{suffix}}, nil)
	res := mustUpload(t, s3, models.CertificateUpload{Certificate: self.CertPEM(), PrivateKey: self.KeyPEM(), DomainSuffix: suffix})
	require.Len(t, res.Warnings, 1)
	assert.Contains(t, res.Warnings[0], "self-signed")
}
