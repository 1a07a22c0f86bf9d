package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/api"
	"github.com/sysvm/sysvm/metrics"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/worker"
)

// defaultWorkerMetricsAddr is where sysvm worker (and dev) serve /metrics by default.
const defaultWorkerMetricsAddr = ":9464"

// telemetryConfig is the metrics and tracing settings of a command.
type telemetryConfig struct {
	// MetricsAddr is the /metrics listener: for api, empty serves /metrics on the API port;
	// for worker and dev, a port of its own. "off" serves no metrics listener.
	MetricsAddr string
	// OTLPEndpoint turns tracing on (OTEL_EXPORTER_OTLP_ENDPOINT does too).
	OTLPEndpoint string
}

// flags registers the telemetry flags; def is the default metrics address of the command.
func (t *telemetryConfig) flags(fs *flag.FlagSet, def string) {
	where := "serve /metrics on the API port"
	if def != "" {
		where = def
	}
	fs.StringVar(&t.MetricsAddr, "metrics-listen", env("SYSVM_METRICS_ADDR", def),
		"address of the unauthenticated Prometheus /metrics listener; \"off\" for none (SYSVM_METRICS_ADDR; default "+where+")")
	fs.StringVar(&t.OTLPEndpoint, "otlp-endpoint", env("SYSVM_OTLP_ENDPOINT", ""),
		"OTLP/HTTP endpoint traces are exported to, e.g. http://collector:4318; tracing is off when neither this nor OTEL_EXPORTER_OTLP_ENDPOINT is set (SYSVM_OTLP_ENDPOINT)")
}

// start builds the process's telemetry and has the Temporal client of c use it.
func (t *telemetryConfig) start(ctx context.Context, logger *slog.Logger, service string, c *config) (*metrics.Telemetry, error) {
	tel, err := metrics.New(ctx, metrics.Options{Service: service, OTLPEndpoint: t.OTLPEndpoint, Logger: logger})
	if err != nil {
		return nil, err
	}
	c.Temporal.extra = append(c.Temporal.extra, tel.ClientOptions)
	if tel.Tracing() {
		logger.Info("tracing on: spans are exported over OTLP", "service", service)
	}
	return tel, nil
}

// stopTelemetry flushes the spans.
func stopTelemetry(logger *slog.Logger, tel *metrics.Telemetry) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		logger.Warn("telemetry shutdown", "error", err)
	}
}

// serveMetrics serves /metrics on addr until ctx ends ("" or "off": nothing) and returns the
// address it is bound to. It returns once the listener is bound, so a bad address fails the
// command at start.
func serveMetrics(ctx context.Context, logger *slog.Logger, addr string, tel *metrics.Telemetry) (string, error) {
	if addr == "" || addr == "off" {
		return "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+metrics.Path, tel.Handler())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics listener stopped", "addr", addr, "error", err)
		}
	}()
	context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	})
	logger.Info("metrics listening", "addr", ln.Addr().String(), "path", metrics.Path)
	return ln.Addr().String(), nil
}

// localURL turns a listen address into a URL to print.
func localURL(addr string) string {
	if addr != "" && addr[0] == ':' {
		return "http://localhost" + addr
	}
	return "http://" + addr
}

// instrumentAPI adds request metrics, tracing and the fleet collectors to the API, and serves
// /metrics on the API port (MetricsAddr empty) or on its own listener, whose address it
// returns. With a Temporal client (nil: none), running router upgrades are asked for their
// progress at each scrape.
func instrumentAPI(ctx context.Context, logger *slog.Logger, tel *metrics.Telemetry, tc telemetryConfig, srv *api.Server, store *models.Store,
	temporal client.Client) (string, error) {
	if err := tel.Register(apiCollectors(logger, store, temporal)...); err != nil {
		return "", err
	}
	if err := tel.InstrumentAPI(srv.Echo(), tc.MetricsAddr == ""); err != nil {
		return "", err
	}
	return serveMetrics(ctx, logger, tc.MetricsAddr, tel)
}

// apiCollectors are the collectors only the API process serves (they read the database, or
// ask Temporal, at scrape time: served once, not by every worker).
func apiCollectors(logger *slog.Logger, store *models.Store, temporal client.Client) []prometheus.Collector {
	cs := []prometheus.Collector{metrics.NewFleetCollector(store, logger), metrics.NewCertificateCollector(store, logger)}
	if temporal != nil {
		cs = append(cs, metrics.NewUpgradeProgressCollector(store, temporal, logger))
	}
	return cs
}

// instrumentWorker adds the SSH pool collector and serves the worker's /metrics.
func instrumentWorker(ctx context.Context, logger *slog.Logger, tel *metrics.Telemetry, tc telemetryConfig, p *worker.Platform) error {
	if err := tel.Register(metrics.NewSSHCollector(p.Exec)); err != nil {
		return err
	}
	_, err := serveMetrics(ctx, logger, tc.MetricsAddr, tel)
	return err
}

// instrumentDev is instrumentAPI and instrumentWorker in one process: /metrics on the API port
// and on the worker's metrics port, both serving the one registry.
func instrumentDev(ctx context.Context, logger *slog.Logger, tel *metrics.Telemetry, tc telemetryConfig, srv *api.Server,
	store *models.Store, p *worker.Platform, temporal client.Client) error {
	if err := tel.Register(append(apiCollectors(logger, store, temporal), metrics.NewSSHCollector(p.Exec))...); err != nil {
		return err
	}
	if err := tel.InstrumentAPI(srv.Echo(), true); err != nil {
		return err
	}
	_, err := serveMetrics(ctx, logger, tc.MetricsAddr, tel)
	return err
}

// workerMetricsURL is the worker metrics URL dev prints.
func workerMetricsURL(tc telemetryConfig) string {
	if tc.MetricsAddr == "" || tc.MetricsAddr == "off" {
		return "off"
	}
	return localURL(tc.MetricsAddr) + metrics.Path
}
