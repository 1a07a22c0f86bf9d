package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sysvm/sysvm/internal/certtest"
	"github.com/sysvm/sysvm/metrics"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// The gauge reads days until each current certificate expires, by name, from the keystore.
func TestCertificateCollector(t *testing.T) {
	s := modelstest.SQLite(t)
	self := certtest.Issue(certtest.Options{CN: "m", DNSNames: []string{"*.m.example.com"}, NotAfter: time.Now().Add(5*24*time.Hour + time.Hour)}, nil)
	if _, err := s.UploadCertificate(context.Background(), models.CertificateUpload{Certificate: self.CertPEM(), PrivateKey: self.KeyPEM(),
		DomainSuffix: "*.m.example.com"}, "t", time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	c := metrics.NewCertificateCollector(s, nil)
	want := `
# HELP sysvm_certificate_expiry_buffer_days consoleproxy.certificate.expiry.buffer: the expiry watch alerts for certificates expiring within this many days.
# TYPE sysvm_certificate_expiry_buffer_days gauge
sysvm_certificate_expiry_buffer_days 14
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "sysvm_certificate_expiry_buffer_days"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "sysvm_certificate_expiry_days"); n != 1 {
		t.Fatalf("%d expiry series, want 1", n)
	}
	v := testutil.ToFloat64(filtered{c})
	if v < 5 || v > 5.1 {
		t.Errorf("days to expiry = %v, want about 5.04", v)
	}
}

// filtered collects only the expiry gauge (ToFloat64 needs a single metric).
type filtered struct{ c *metrics.CertificateCollector }

func (f filtered) Describe(ch chan<- *prometheus.Desc) { f.c.Describe(ch) }

func (f filtered) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric, 16)
	f.c.Collect(all)
	close(all)
	for m := range all {
		if strings.Contains(m.Desc().String(), `"sysvm_certificate_expiry_days"`) {
			ch <- m
		}
	}
}
