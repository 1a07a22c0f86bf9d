// Package api is sysvm's REST API (echo): reads of the inventory and its records with filters
// and paging, settings, API keys, and the long operations, each started as a Temporal workflow
// and journaled as a models.Operation that links to the Temporal Web UI. Every route is
// described in the OpenAPI document served at /api/v1/openapi.json, which the tests keep true.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
)

// Prefix is where the API is mounted.
const Prefix = "/api/v1"

// maxBody is the request body limit.
const maxBody = "1M"

// Config is what New needs.
type Config struct {
	// Store is the inventory database (required).
	Store *models.Store
	// Temporal starts and inspects workflows; nil serves reads only (operations answer 503).
	Temporal client.Client
	// Namespace is the Temporal namespace of the runs ("default" when empty).
	Namespace string
	// TemporalUI is the Web UI base URL (http://localhost:8233) operation links point at;
	// empty omits the links.
	TemporalUI string
	// DevMode mounts the dev-only endpoints (with Dev set).
	DevMode bool
	// Logger logs requests and errors (slog.Default when nil).
	Logger *slog.Logger
	// Dev implements the dev-only endpoints; used only when DevMode is set.
	Dev DevHooks
	// TemporalTimeout bounds each call to Temporal made while serving a request (10 s when 0).
	TemporalTimeout time.Duration
	// Operations is the operation engine the long operations go through; when nil one is
	// built from Store, Temporal, Namespace, TemporalTimeout and Logger (a codec's data
	// converter needs an engine built with it: operations.Config.DataConverter).
	Operations *operations.Engine
	// DataConverter is the Temporal client's data converter (the encrypting codec), so the
	// engine built when Operations is nil reads the runs' memos. Optional.
	DataConverter converter.DataConverter
	// OnSettingChanged is called after a setting is changed or reset, so what depends on it
	// (the health check schedules) follows at once. Optional.
	OnSettingChanged func(ctx context.Context, name string)
	// ConsoleTokenKey signs console session tokens (consoles.TokenKey of the master key);
	// without it POST /consoles answers 503.
	ConsoleTokenKey []byte
}

// DevHooks are the dev cloud's fault injection, behind the admin-only /dev endpoints.
type DevHooks interface {
	// InjectFault makes a router misbehave: fault is one of DevFaults, service names the
	// daemon for service-down.
	InjectFault(ctx context.Context, routerID, fault, service string) error
	// ClearFaults removes every fault injected into a router.
	ClearFaults(ctx context.Context, routerID string) error
}

// Server is the API: an echo instance with sysvm's routes and their OpenAPI document.
type Server struct {
	store      *models.Store
	temporal   client.Client
	ops        *operations.Engine
	namespace  string
	temporalUI string
	tTimeout   time.Duration
	dev        DevHooks
	onSetting  func(ctx context.Context, name string)
	consoleKey []byte
	log        *slog.Logger
	e          *echo.Echo

	mu      sync.Mutex
	routes  []Route
	schemas map[string]any

	// csOnce builds csTable, the CloudStack command table (cloudstack.go).
	csOnce  sync.Once
	csTable map[string]*csCommand
}

// New builds the API server and mounts every route.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("api: Config.Store is required")
	}
	s := &Server{
		store:      cfg.Store,
		temporal:   cfg.Temporal,
		namespace:  cfg.Namespace,
		temporalUI: strings.TrimRight(cfg.TemporalUI, "/"),
		log:        cfg.Logger,
		tTimeout:   cfg.TemporalTimeout,
		onSetting:  cfg.OnSettingChanged,
		consoleKey: cfg.ConsoleTokenKey,
		schemas:    componentSchemas(),
	}
	if s.tTimeout <= 0 {
		s.tTimeout = 10 * time.Second
	}
	if s.namespace == "" {
		s.namespace = "default"
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.ops = cfg.Operations
	if s.ops == nil {
		ops, err := operations.New(operations.Config{Store: cfg.Store, Temporal: cfg.Temporal, Namespace: s.namespace,
			Timeout: s.tTimeout, Logger: s.log, DataConverter: cfg.DataConverter})
		if err != nil {
			return nil, fmt.Errorf("api: operation engine: %w", err)
		}
		s.ops = ops
	}
	if cfg.DevMode && cfg.Dev != nil {
		s.dev = cfg.Dev
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	e.Pre(middleware.RemoveTrailingSlash())
	e.Use(s.recoverMiddleware, middleware.RequestID(), s.logMiddleware, middleware.BodyLimit(maxBody))
	s.e = e
	for _, r := range s.coreRoutes() {
		if err := s.Handle(r); err != nil {
			return nil, err
		}
	}
	if err := s.mountHealthChecks(); err != nil {
		return nil, err
	}
	if err := s.mountCloudStack(); err != nil {
		return nil, err
	}
	if err := s.mountTemplates(); err != nil {
		return nil, err
	}
	if err := s.mountDiagnostics(); err != nil {
		return nil, err
	}
	if s.dev != nil {
		for _, r := range append(s.devRoutes(), s.devConsoleRoutes()...) {
			if err := s.Handle(r); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Handler is the API as an http.Handler.
func (s *Server) Handler() http.Handler { return s.e }

// Echo is the underlying echo instance (to serve it, or to add middleware).
func (s *Server) Echo() *echo.Echo { return s.e }

// Route is one API endpoint: where it is, who may call it, what runs, and how the OpenAPI
// document describes it. Routes added with Handle get authentication, the role check, the
// refusal of undocumented query parameters, and their place in the document.
type Route struct {
	// Method is the HTTP method.
	Method string
	// Path is relative to /api/v1, in OpenAPI form: /routers/{id}/start.
	Path string
	// Role is the least role that may call it (models.RoleReadOnly, RoleOperator, RoleAdmin);
	// empty is public (no key needed).
	Role string
	// Handler serves it.
	Handler echo.HandlerFunc
	// Doc describes it in the OpenAPI document.
	Doc Doc
}

// Doc is a route's OpenAPI description.
type Doc struct {
	// OperationID is unique over the API (listRouters, startRouter...).
	OperationID string
	Summary     string
	Description string
	// Tag groups operations (Inventory, Routers, Settings, Operations, ...).
	Tag string
	// Query lists the query parameters; any other parameter is refused with a 400.
	Query []Param
	// Paged adds page and pagesize.
	Paged bool
	// Body names the component schema of the JSON request body ("" for none).
	Body string
	// BodyRequired refuses an empty body.
	BodyRequired bool
	// Responses lists the success and the route-specific error responses; 400, 401, 403,
	// 404 (for paths with parameters) and 500 are added as they apply.
	Responses []Response
	// DevOnly marks routes mounted only in dev mode (x-dev-only in the document).
	DevOnly bool
}

// Param is a query parameter.
type Param struct {
	Name        string
	Description string
	// Type is string, integer or boolean.
	Type string
	// Format is date-time for timestamps.
	Format string
	// Enum lists the accepted values (matched without regard to case).
	Enum     []string
	Required bool
}

// Response is one documented response.
type Response struct {
	Status      int
	Description string
	// Schema names a component schema; "" means no body.
	Schema string
}

// Handle mounts a route and adds it to the OpenAPI document. Call it before serving (echo's
// router is not safe to change while it serves).
func (s *Server) Handle(r Route) error {
	if !strings.HasPrefix(r.Path, "/") {
		return fmt.Errorf("api: route path %q must start with /", r.Path)
	}
	if r.Role != "" && !models.ValidRole(r.Role) {
		return fmt.Errorf("api: route %s %s: unknown role %q", r.Method, r.Path, r.Role)
	}
	if r.Doc.OperationID == "" {
		return fmt.Errorf("api: route %s %s has no operation ID", r.Method, r.Path)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.routes {
		if o.Method == r.Method && o.Path == r.Path {
			return fmt.Errorf("api: route %s %s mounted twice", r.Method, r.Path)
		}
		if o.Doc.OperationID == r.Doc.OperationID {
			return fmt.Errorf("api: operation ID %s used twice", r.Doc.OperationID)
		}
	}
	mw := []echo.MiddlewareFunc{s.queryGuard(r.Doc)}
	if r.Role != "" {
		mw = append([]echo.MiddlewareFunc{s.authenticate(r.Role)}, mw...)
	}
	s.e.Add(r.Method, Prefix+echoPath(r.Path), r.Handler, mw...)
	s.routes = append(s.routes, r)
	return nil
}

// AddSchema adds (or replaces) a component schema of the OpenAPI document, for routes added
// with Handle; schema is its JSON form.
func (s *Server) AddSchema(name string, schema map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.schemas[name] = schema
}

// echoPath turns /routers/{id}/start into /routers/:id/start.
func echoPath(p string) string {
	parts := strings.Split(p, "/")
	for i, part := range parts {
		if strings.HasPrefix(part, "{") && strings.HasSuffix(part, "}") {
			parts[i] = ":" + strings.TrimSuffix(strings.TrimPrefix(part, "{"), "}")
		}
	}
	return strings.Join(parts, "/")
}

// queryGuard refuses query parameters the route does not document: a misspelt filter would
// otherwise be ignored and the caller would act on the whole list.
func (s *Server) queryGuard(d Doc) echo.MiddlewareFunc {
	allowed := map[string]bool{}
	var names []string
	for _, p := range d.Query {
		allowed[p.Name] = true
		names = append(names, p.Name)
	}
	if d.Paged {
		allowed["page"], allowed["pagesize"] = true, true
		names = append(names, "page", "pagesize")
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			for name, vals := range c.QueryParams() {
				if !allowed[name] {
					if len(names) == 0 {
						return BadRequest(name, "unknown query parameter %q: this endpoint takes none", name)
					}
					return BadRequest(name, "unknown query parameter %q (accepted: %s)", name, strings.Join(names, ", "))
				}
				if len(vals) > 1 {
					return BadRequest(name, "query parameter %q given %d times; give it once", name, len(vals))
				}
			}
			return next(c)
		}
	}
}

// logMiddleware logs each request once it is served (never its Authorization header).
func (s *Server) logMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		status := c.Response().Status
		if err != nil {
			status = toAPIError(err).Status
		}
		attrs := []any{"method", c.Request().Method, "path", c.Request().URL.Path, "status", status,
			"duration", time.Since(start).Round(time.Microsecond),
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID)}
		if k, ok := Caller(c); ok {
			attrs = append(attrs, "caller", k.Name)
		}
		s.log.Info("api request", attrs...)
		return err
	}
}
