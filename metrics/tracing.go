package metrics

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/interceptor"
)

// TracerName names the tracer of sysvm's own spans (the API requests).
const TracerName = "github.com/sysvm/sysvm"

// otlpFromEnv reports whether the standard OpenTelemetry variables name an OTLP endpoint.
func otlpFromEnv() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// setupTracing turns tracing on when an exporter is given or an OTLP endpoint is configured:
// a tracer provider over it, and the Temporal SDK's tracing interceptor, which carries the
// span of the caller (an API request) in the workflow's headers and continues it in the
// workflow and in each activity.
func (t *Telemetry) setupTracing(ctx context.Context, o Options) error {
	exp := o.SpanExporter
	if exp == nil {
		if o.OTLPEndpoint == "" && !otlpFromEnv() {
			return nil
		}
		var opts []otlptracehttp.Option
		if ep := o.OTLPEndpoint; ep != "" {
			if strings.Contains(ep, "://") {
				// A base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is: traces go to /v1/traces
				// under it; a URL with a path is used as it is.
				u, err := url.Parse(ep)
				if err != nil {
					return fmt.Errorf("tracing: OTLP endpoint %q: %w", ep, err)
				}
				if u.Path == "" || u.Path == "/" {
					u.Path = "/v1/traces"
				}
				opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
			} else {
				opts = append(opts, otlptracehttp.WithEndpoint(ep), otlptracehttp.WithInsecure())
			}
		}
		var err error
		if exp, err = otlptracehttp.New(ctx, opts...); err != nil {
			return fmt.Errorf("tracing: OTLP exporter: %w", err)
		}
	}
	service := o.Service
	if service == "" {
		service = "sysvm"
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		res = resource.Default()
	}
	var sp sdktrace.SpanProcessor = sdktrace.NewBatchSpanProcessor(exp)
	if o.SyncSpans {
		sp = sdktrace.NewSimpleSpanProcessor(exp)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sp), sdktrace.WithResource(res))
	t.shutdown = append(t.shutdown, tp.Shutdown)
	it, err := temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{
		Tracer: tp.Tracer("go.temporal.io/sdk"), TextMapPropagator: t.Propagator})
	if err != nil {
		return fmt.Errorf("tracing: Temporal interceptor: %w", err)
	}
	t.Tracer, t.tracing = tp, true
	t.TemporalInterceptors = []interceptor.ClientInterceptor{it}
	return nil
}
