package metrics

import (
	"errors"
	"net/http"

	"github.com/labstack/echo-contrib/echoprometheus"
	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/contrib/instrumentation/github.com/labstack/echo/otelecho"

	"github.com/sysvm/sysvm/api"
)

// Path is where metrics are served.
const Path = "/metrics"

// InstrumentAPI adds request metrics and tracing to the API's echo instance, and, when
// serveMetrics is set, mounts GET /metrics on it (unauthenticated, as Prometheus exporters
// are; bind it elsewhere with a separate listener instead when the API port is public).
//
// Request metrics are echo-contrib's Prometheus middleware: sysvm_api_requests_total,
// sysvm_api_request_duration_seconds, sysvm_api_request_size_bytes and
// sysvm_api_response_size_bytes, labelled by code, method and url — the route template
// (/api/v1/routers/:id), never the raw path; unknown paths share one url label and the host
// label is always empty (a client chooses the Host header). The status is the one the API
// answers, its error type included. Each request begins a span named after its route
// (otelecho), which the Temporal tracing interceptor continues into the workflow it starts.
func (t *Telemetry) InstrumentAPI(e *echo.Echo, serveMetrics bool) error {
	skip := func(c echo.Context) bool { return c.Path() == Path }
	mw, err := echoprometheus.MiddlewareConfig{
		Namespace:                 Namespace,
		Subsystem:                 "api",
		Registerer:                t.Registry,
		Skipper:                   skip,
		DoNotUseRequestPathFor404: true,
		LabelFuncs:                map[string]echoprometheus.LabelValueFunc{"host": func(echo.Context, error) string { return "" }},
		StatusCodeResolver:        statusOf,
	}.ToMiddleware()
	if err != nil {
		return err
	}
	if t.tracing {
		e.Use(otelecho.Middleware("sysvm-api", otelecho.WithTracerProvider(t.Tracer),
			otelecho.WithPropagators(t.Propagator), otelecho.WithSkipper(skip)))
	}
	e.Use(mw)
	if serveMetrics {
		h := t.Handler()
		e.GET(Path, func(c echo.Context) error {
			h.ServeHTTP(c.Response(), c.Request())
			return nil
		})
	}
	return nil
}

// statusOf is the status the API answers for a handler's result: its *api.Error's, echo's
// HTTP error's, 500 for any other error, the written status otherwise.
func statusOf(c echo.Context, err error) int {
	if err == nil {
		return c.Response().Status
	}
	if c.Response().Committed {
		return c.Response().Status
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Status
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		return he.Code
	}
	return http.StatusInternalServerError
}
