package api

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysvm/sysvm/internal/certtest"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// syncBuffer collects a logger's output across goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Upload root, intermediate and server certificate through the API (validated against the
// document), list them with subject, names, validity, fingerprint and chain, and never see
// a key: not in any answer, not in the log.
func TestCertificatesUploadAndList(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		logs := &syncBuffer{}
		e := newEnv(t, s, Config{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		admin, ro := models.RoleAdmin, models.RoleReadOnly
		const suffix = "*.consoleproxy.example.com"
		p := certtest.NewPKIWithPlus(suffix, certtest.P256)

		// The operator role may not upload a key.
		e.wantErr(e.do("POST", "/certificates", models.RoleOperator, map[string]any{"certificate": p.Root.CertPEM(), "name": "root1", "id": 1}),
			403, CodeForbidden, "", "operator upload")
		// Before the root, an intermediate is refused, naming the field.
		e.wantErr(e.do("POST", "/certificates", admin, map[string]any{"certificate": p.Intermediate.CertPEM(), "name": "intermed1", "id": 2}),
			400, CodeBadRequest, "certificate", "intermediate before root")

		root := e.want(e.do("POST", "/certificates", admin, map[string]any{"certificate": p.Root.CertPEM(), "name": "root1", "id": 1,
			"domainsuffix": suffix}), 201, "root")
		if c := root.JSON["certificate"].(map[string]any); c["kind"] != "root" || c["chainposition"].(float64) != 1 || c["haskey"] != false {
			t.Errorf("root = %v", c)
		}
		e.want(e.do("POST", "/certificates", admin, map[string]any{"certificate": p.Intermediate.CertPEM(), "name": "intermed1", "id": 2}), 201, "intermediate")

		// A PKCS#1 key: refused with the conversion.
		r := e.do("POST", "/certificates", admin, map[string]any{"certificate": p.Server.CertPEM(), "privatekey": certtest.Issue(certtest.Options{}, nil).PKCS1PEM(),
			"domainsuffix": suffix})
		e.wantErr(r, 400, CodeBadRequest, "privatekey", "PKCS#1 key")
		if _, msg, _ := r.errParts(); !strings.Contains(msg, "openssl pkcs8 -topk8 -nocrypt") {
			t.Errorf("PKCS#1 refusal does not give the conversion: %s", msg)
		}
		// '+' turned into spaces.
		r = e.do("POST", "/certificates", admin, map[string]any{"certificate": strings.ReplaceAll(p.Server.CertPEM(), "+", " "),
			"privatekey": p.Server.KeyPEM(), "domainsuffix": suffix})
		e.wantErr(r, 400, CodeBadRequest, "certificate", "plus to space")
		if _, msg, _ := r.errParts(); !strings.Contains(msg, "URL-decoded") {
			t.Errorf("plus-space refusal: %s", msg)
		}
		e.wantErr(e.do("POST", "/certificates", admin, map[string]any{"certificate": p.Server.CertPEM(), "privatekey": p.Server.KeyPEM(),
			"domainsuffix": "*.other.example.org"}), 400, CodeBadRequest, "domainsuffix", "suffix not covered")
		e.wantErr(e.do("POST", "/certificates", admin, map[string]any{"certificate": p.Server.CertPEM(), "id": "two"}),
			400, CodeBadRequest, "id", "id not a number")

		e.wantErr(e.do("POST", "/certificates/rotate", models.RoleOperator, nil), 400, CodeBadRequest, "certificateid", "rotate before a server certificate")
		up := e.want(e.do("POST", "/certificates", admin, map[string]any{"certificate": p.Server.CertPEM(), "privatekey": p.Server.KeyPEM(),
			"domainsuffix": suffix}), 201, "server")
		srv := up.JSON["certificate"].(map[string]any)
		if srv["name"] != models.ServerCertificateName || srv["haskey"] != true || srv["fingerprint"] != models.Fingerprint(p.Server.Cert.Raw) {
			t.Errorf("server = %v", srv)
		}
		chain, _ := srv["chain"].([]any)
		if len(chain) != 2 || chain[0].(map[string]any)["name"] != "intermed1" || chain[1].(map[string]any)["name"] != "root1" {
			t.Errorf("server chain = %v", chain)
		}

		e.wantErr(e.do("POST", "/certificates/rotate", models.RoleOperator, map[string]any{"certificateid": root.JSON["certificate"].(map[string]any)["id"]}),
			400, CodeBadRequest, "certificateid", "rotate a root")
		e.wantErr(e.do("POST", "/certificates/rotate", models.RoleOperator, nil), 503, CodeUnavailable, "", "rotate without Temporal")

		// Replace the server certificate: the list shows the new one current, all=true both.
		p2 := p.ServerFor(certtest.Options{Algo: certtest.RSA2048})
		up2 := e.want(e.do("POST", "/certificates", admin, map[string]any{"certificate": p2.CertPEM(), "privatekey": p2.KeyPEM(),
			"domainsuffix": suffix}), 201, "server v2")
		if up2.JSON["replaced"] != srv["id"] {
			t.Errorf("replaced = %v, want %v", up2.JSON["replaced"], srv["id"])
		}
		list := e.want(e.do("GET", "/certificates", ro, nil), 200, "list")
		if list.JSON["count"].(float64) != 3 {
			t.Errorf("current certificates = %v", list.JSON["count"])
		}
		all := e.want(e.do("GET", "/certificates?all=true", ro, nil), 200, "list all")
		if all.JSON["count"].(float64) != 4 {
			t.Errorf("all certificates = %v", all.JSON["count"])
		}
		one := e.want(e.do("GET", "/certificates/"+srv["id"].(string), ro, nil), 200, "get v1")
		if one.JSON["current"] != false || one.JSON["version"].(float64) != 1 {
			t.Errorf("v1 = %v", one.JSON)
		}
		e.wantErr(e.do("GET", "/certificates/nope", ro, nil), 404, CodeNotFound, "", "unknown certificate")

		// No key material anywhere: answers and logs.
		for _, raw := range [][]byte{up.Raw, up2.Raw, list.Raw, all.Raw, one.Raw} {
			if bytes.Contains(raw, []byte("PRIVATE KEY")) {
				t.Errorf("an answer holds a private key: %s", raw)
			}
		}
		keyBody := strings.Split(p2.KeyPEM(), "\n")[1]
		if strings.Contains(logs.String(), "PRIVATE KEY") || strings.Contains(logs.String(), keyBody) {
			t.Errorf("the log holds key material")
		}
		var n int64
		modelstest.Must(t, s.DB.Model(&models.Event{}).Where("type = ?", EventCertificateUpload).Count(&n).Error, "count events")
		if n != 4 {
			t.Errorf("upload events = %d, want 4", n)
		}
	})
}

// seedCertificate stores a self-signed server certificate (for the document tests) and returns
// its ID.
func seedCertificate(t *testing.T, s *models.Store) string {
	t.Helper()
	self := certtest.Issue(certtest.Options{CN: "seed", DNSNames: []string{"*.seed.example.com"}}, nil)
	res, err := s.UploadCertificate(context.Background(), models.CertificateUpload{Certificate: self.CertPEM(), PrivateKey: self.KeyPEM(),
		DomainSuffix: "*.seed.example.com"}, "seed", time.Now(), 0)
	modelstest.Must(t, err, "seed certificate")
	return res.Certificate.ID
}
