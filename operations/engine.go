// Package operations is sysvm's operation engine, free of HTTP. It journals a long operation
// as a models.Operation row and runs it as a Temporal workflow whose ID is derived from what it
// acts on (workflows.Target), so one operation at a time runs on a VM or network. It starts
// operations (idempotent by workflow ID), reads their progress and result, reconciles the
// journal with Temporal and cancels them. The REST API, the schedules and the
// CloudStack-compatible API (whose async job IDs are operation IDs) all go through it.
//
// The workflow ID is the key between the journal and Temporal: a row is written before its
// start and is never dropped on an answer that leaves the start in doubt (a time-out, an
// unreachable server); the run is found again by describing the workflow ID and matching its
// memo's operationId. docs/operations.md describes the states and the rules.
package operations

import (
	"errors"
	"log/slog"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// Operation target types (models.Operation.TargetType).
const (
	TargetSystemVM = "systemvm"
	TargetRouter   = "router"
	TargetNetwork  = "network"
)

// MemoOperationID is the memo key naming the operation a run belongs to. Every run the engine
// starts carries it (as do the health checks' recreations), so a run is matched to its row by
// its workflow ID and this memo alone.
const MemoOperationID = "operationId"

// CancelReasonPrefix starts the termination reason of a run canceled before any worker picked
// it up; reconciliation reads it back as "canceled".
const CancelReasonPrefix = "sysvm: canceled"

// ProgressTimeout bounds the progress query (a busy or absent worker must not stall a read).
const ProgressTimeout = 2 * time.Second

// DefaultStartGrace is how long a row without a run ID is taken for a start still in flight
// before reconciliation decides its run never started.
const DefaultStartGrace = time.Minute

// Config is what New needs.
type Config struct {
	// Store is the journal (required).
	Store *models.Store
	// Temporal runs the workflows; nil makes every call that needs it return ErrUnavailable.
	Temporal client.Client
	// Namespace is the Temporal namespace of the runs ("default" when empty).
	Namespace string
	// Timeout bounds each call to Temporal (10 s when 0).
	Timeout time.Duration
	// DataConverter decodes run memos; it must be the client's (a codec included). The SDK's
	// default when nil.
	DataConverter converter.DataConverter
	// StartGrace is how long a row without a run ID counts as starting (DefaultStartGrace
	// when 0).
	StartGrace time.Duration
	// Logger logs starts, reconciliations and what goes wrong (slog.Default when nil).
	Logger *slog.Logger
}

// Engine starts, reads, reconciles and cancels operations. It is safe for concurrent use.
type Engine struct {
	store      *models.Store
	temporal   client.Client
	namespace  string
	timeout    time.Duration
	dc         converter.DataConverter
	startGrace time.Duration
	log        *slog.Logger
}

// New builds an engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil {
		return nil, errors.New("operations: Config.Store is required")
	}
	e := &Engine{store: cfg.Store, temporal: cfg.Temporal, namespace: cfg.Namespace, timeout: cfg.Timeout,
		dc: cfg.DataConverter, startGrace: cfg.StartGrace, log: cfg.Logger}
	if e.namespace == "" {
		e.namespace = "default"
	}
	if e.timeout <= 0 {
		e.timeout = 10 * time.Second
	}
	if e.dc == nil {
		e.dc = converter.GetDefaultDataConverter()
	}
	if e.startGrace <= 0 {
		e.startGrace = DefaultStartGrace
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	return e, nil
}

// Namespace is the Temporal namespace of the engine's runs.
func (e *Engine) Namespace() string { return e.namespace }

// Available reports whether the engine has a Temporal connection to start runs on.
func (e *Engine) Available() bool { return e.temporal != nil }

// Spec describes an operation to start: what it acts on and the workflow that runs it.
type Spec struct {
	// Target gives the workflow ID, the zone, the kind and the search attributes.
	Target workflows.Target
	// Workflow is the registered workflow type.
	Workflow string
	// TargetType is what the operation acts on (TargetSystemVM, TargetRouter, TargetNetwork).
	TargetType string
	// TargetID is the ID of what it acts on.
	TargetID string
	// TargetName names the target in messages (r-3-VM); TargetID when empty.
	TargetName string
	// Input builds the workflow's input once the operation's ID is known.
	Input func(operationID string) any
	// Memo is shown in the Web UI beside the run (operationId, target and requestedBy are
	// added).
	Memo map[string]any
	// RequestedBy names who asked (an API key's name, health-checks, ...).
	RequestedBy string
}

func (s Spec) name() string {
	if s.TargetName != "" {
		return s.TargetName
	}
	return s.TargetID
}

// what names the kind of target in messages.
func (s Spec) what() string {
	switch s.TargetType {
	case TargetSystemVM, TargetRouter, "":
		return "system VM"
	}
	return s.TargetType
}

// Operation is a journal row with what Temporal says of its run right now.
type Operation struct {
	models.Operation
	// Progress is the run's answer to the progress query while it runs (Get only; nil when
	// no worker answers).
	Progress any
	// CancelRequested is true while a requested cancellation is under way.
	CancelRequested bool
}

// Starting reports whether the operation's start is not confirmed yet: it is running and no
// run is known.
func (o Operation) Starting() bool {
	return o.Status == models.OpRunning && o.RunID == ""
}
