package metrics

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.temporal.io/sdk/client"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
)

// durationBuckets are the histogram boundaries (seconds) of the Temporal SDK's timers and of
// the timers workflows record: from a millisecond (a poll, a task) to an hour (a sweep of a
// large zone, a recreation).
var durationBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// newTemporalMetrics builds the Temporal client's metrics handler: the SDK's OpenTelemetry
// integration over a meter provider whose only reader is the OpenTelemetry Prometheus
// exporter registered on reg. SDK metrics come out as temporal_* (counters with _total,
// timers as histograms with _seconds); metrics workflows record keep the names they give.
func newTemporalMetrics(reg prometheus.Registerer, logger *slog.Logger) (client.MetricsHandler, func(context.Context) error, error) {
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutTargetInfo(), otelprom.WithoutScopeInfo(),
		otelprom.WithAggregationSelector(func(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
			if k == sdkmetric.InstrumentKindHistogram {
				return sdkmetric.AggregationExplicitBucketHistogram{Boundaries: durationBuckets}
			}
			return sdkmetric.DefaultAggregationSelector(k)
		}))
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: Temporal metrics exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	h := temporalotel.NewMetricsHandler(temporalotel.MetricsHandlerOptions{
		Meter:                mp.Meter("go.temporal.io/sdk"),
		UseMonotonicCounters: true,
		// A metric that cannot be created (a name clash) must not take the worker down.
		OnError: func(err error) { logger.Warn("Temporal metric not recorded", "error", err) },
	})
	return h, mp.Shutdown, nil
}
