// Package metrics is sysvm's telemetry: the Prometheus registry a process serves at /metrics,
// the Temporal SDK's metrics (through the SDK's OpenTelemetry integration, exported into the
// same registry), sysvm's own figures (collectors that read the database and the SSH pool at
// scrape time, so no hot path carries a hook), the echo middleware that counts API requests by
// route template, and OpenTelemetry tracing from each API request into the workflow and its
// activities, exported over OTLP when an endpoint is configured.
//
// Metric names and labels are documented in docs/metrics.md; labels are low-cardinality
// (zone, hypervisor, check, operation kind, status), never a router ID or a secret.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
)

// Namespace prefixes every metric sysvm defines itself.
const Namespace = "sysvm"

// Options configure a process's telemetry.
type Options struct {
	// Service names the process in traces (sysvm-api, sysvm-worker, sysvm-dev).
	Service string
	// OTLPEndpoint turns tracing on and exports spans there over OTLP/HTTP: a base URL such
	// as http://collector:4318 (spans go to /v1/traces under it), a URL with a path (used as
	// it is), or host:port (plain HTTP). Empty leaves tracing off unless
	// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set.
	OTLPEndpoint string
	// SpanExporter, when set, receives the spans instead of OTLP (tests: an in-memory
	// exporter). It turns tracing on.
	SpanExporter sdktrace.SpanExporter
	// SyncSpans exports each span as it ends instead of in batches (tests).
	SyncSpans bool
	// Logger receives telemetry errors (slog.Default when nil).
	Logger *slog.Logger
}

// Telemetry is one process's metrics registry, Temporal metrics handler and tracing.
type Telemetry struct {
	// Registry holds every metric the process serves at /metrics.
	Registry *prometheus.Registry
	// TemporalMetrics is the Temporal client's MetricsHandler: the SDK's own metrics and the
	// metrics workflows record (workflow.GetMetricsHandler) land in Registry.
	TemporalMetrics client.MetricsHandler
	// Tracer provides the tracers; a no-op provider when tracing is off.
	Tracer trace.TracerProvider
	// Propagator carries trace context across HTTP and Temporal headers.
	Propagator propagation.TextMapPropagator
	// TemporalInterceptors continue traces into workflows and activities (empty when tracing
	// is off).
	TemporalInterceptors []interceptor.ClientInterceptor

	tracing  bool
	shutdown []func(context.Context) error
}

// New builds a process's telemetry: a registry with the Go runtime and process collectors,
// the Temporal metrics handler over it, and tracing when Options ask for it.
func New(ctx context.Context, o Options) (*Telemetry, error) {
	t := &Telemetry{Registry: prometheus.NewRegistry(), Tracer: noop.NewTracerProvider(),
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
	if err := t.Registry.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("metrics: register Go collector: %w", err)
	}
	if err := t.Registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("metrics: register process collector: %w", err)
	}
	h, stop, err := newTemporalMetrics(t.Registry, o.logger())
	if err != nil {
		return nil, err
	}
	t.TemporalMetrics = h
	t.shutdown = append(t.shutdown, stop)
	if err := t.setupTracing(ctx, o); err != nil {
		_ = t.Shutdown(ctx)
		return nil, err
	}
	return t, nil
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// Tracing reports whether spans are recorded and exported.
func (t *Telemetry) Tracing() bool { return t.tracing }

// ClientOptions sets the Temporal client options telemetry needs: the metrics handler and,
// with tracing on, the tracing interceptor (a worker built on the client inherits both).
func (t *Telemetry) ClientOptions(o *client.Options) {
	o.MetricsHandler = t.TemporalMetrics
	o.Interceptors = append(o.Interceptors, t.TemporalInterceptors...)
}

// Register adds collectors to the registry.
func (t *Telemetry) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := t.Registry.Register(c); err != nil {
			return fmt.Errorf("metrics: register collector: %w", err)
		}
	}
	return nil
}

// Handler serves the registry in the Prometheus text format (or OpenMetrics when asked).
func (t *Telemetry) Handler() http.Handler {
	return promhttp.InstrumentMetricHandler(t.Registry, promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{
		Registry: t.Registry, EnableOpenMetrics: true, Timeout: 30 * time.Second}))
}

// Shutdown flushes the spans and stops the exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for i := len(t.shutdown) - 1; i >= 0; i-- {
		errs = append(errs, t.shutdown[i](ctx))
	}
	t.shutdown = nil
	return errors.Join(errs...)
}
