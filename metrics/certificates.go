package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sysvm/sysvm/models"
)

// CertificateCollector exports the console proxy keystore's remaining validity from the
// database at each scrape: days until each current certificate (by name) expires, negative
// once expired, and the expiry buffer the watch warns within. Serve it from the API process,
// as FleetCollector.
type CertificateCollector struct {
	store        *models.Store
	log          *slog.Logger
	expiry, buf  *prometheus.Desc
	scrapeErrors *prometheus.Desc
	timeout      time.Duration
	now          func() time.Time
}

// NewCertificateCollector builds the collector over a store.
func NewCertificateCollector(store *models.Store, logger *slog.Logger) *CertificateCollector {
	if logger == nil {
		logger = slog.Default()
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
	}
	return &CertificateCollector{store: store, log: logger, timeout: 10 * time.Second, now: time.Now,
		expiry:       d("certificate_expiry_days", "Days until the current version of each console proxy keystore certificate expires (negative once expired), by name (CPVMCertificate, root1, ...) and kind (server, root, intermediate).", "name", "kind"),
		buf:          d("certificate_expiry_buffer_days", "consoleproxy.certificate.expiry.buffer: the expiry watch alerts for certificates expiring within this many days."),
		scrapeErrors: d("certificate_scrape_errors", "1 when reading the keystore for this scrape failed (see the log)."),
	}
}

// Describe sends the metrics' descriptions.
func (c *CertificateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.expiry
	ch <- c.buf
	ch <- c.scrapeErrors
}

// Collect reads the keystore.
func (c *CertificateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	failed := 0.0
	rows, err := c.store.ListCertificates(ctx, false)
	if err != nil {
		c.log.Warn("certificate metrics", "error", err)
		failed = 1
	}
	now := c.now()
	for _, r := range rows {
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, r.NotAfter.Sub(now).Hours()/24, r.Name, r.Kind)
	}
	if days, err := c.store.Settings.Int(ctx, "consoleproxy.certificate.expiry.buffer", models.Scope{}); err == nil {
		ch <- prometheus.MustNewConstMetric(c.buf, prometheus.GaugeValue, float64(days))
	} else {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(c.scrapeErrors, prometheus.GaugeValue, failed)
}
