package metrics_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/metrics"
)

// Tracing is off by default; with an OTLP endpoint, spans are exported there over OTLP/HTTP
// and the Temporal client gets the tracing interceptor.
func TestTracingOffByDefaultAndExportedOverOTLP(t *testing.T) {
	ctx := context.Background()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	off, err := metrics.New(ctx, metrics.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	var o client.Options
	off.ClientOptions(&o)
	if off.Tracing() || len(o.Interceptors) != 0 || o.MetricsHandler == nil {
		t.Errorf("default: tracing %v, interceptors %d, metrics handler %v; want off, none, set", off.Tracing(), len(o.Interceptors), o.MetricsHandler)
	}
	_ = off.Shutdown(ctx)

	var mu sync.Mutex
	var posts []string
	var bytes int
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		posts = append(posts, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		bytes += len(b)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()
	on, err := metrics.New(ctx, metrics.Options{Service: "sysvm-test", OTLPEndpoint: collector.URL, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	o = client.Options{}
	on.ClientOptions(&o)
	if !on.Tracing() || len(o.Interceptors) != 1 {
		t.Fatalf("with an endpoint: tracing %v, interceptors %d", on.Tracing(), len(o.Interceptors))
	}
	_, span := on.Tracer.Tracer(metrics.TracerName).Start(ctx, "test span")
	span.End()
	if err := on.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown (flushes the spans): %v", err)
	}
	mu.Lock()
	if len(posts) != 1 || posts[0] != "POST /v1/traces application/x-protobuf" || bytes == 0 {
		t.Errorf("collector got %v (%d bytes), want the span POSTed to /v1/traces", posts, bytes)
	}
	mu.Unlock()

	// The standard variable alone turns it on too.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	env, err := metrics.New(ctx, metrics.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	_, span = env.Tracer.Tracer(metrics.TracerName).Start(ctx, "env span")
	span.End()
	if err := env.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !env.Tracing() || len(posts) != 2 || posts[1] != "POST /v1/traces application/x-protobuf" {
		t.Errorf("with OTEL_EXPORTER_OTLP_ENDPOINT: tracing %v, collector got %v", env.Tracing(), posts)
	}
}
