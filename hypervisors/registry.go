package hypervisors

import (
	"context"
	"fmt"
)

// Registry maps each hypervisor type to the connector that opens its driver. It is built once
// at start-up (worker wiring, tests) and passed to whoever needs drivers: no global state.
type Registry struct {
	connectors map[Type]Connector
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{connectors: map[Type]Connector{}} }

// Register sets the connector for a type, replacing any earlier one.
func (r *Registry) Register(t Type, c Connector) *Registry {
	r.connectors[t] = c
	return r
}

// Open connects a driver for conn.
func (r *Registry) Open(ctx context.Context, conn Connection) (Driver, error) {
	c, ok := r.connectors[conn.Type]
	if !ok {
		return nil, &Error{Op: "connect", Object: conn.Endpoint, Kind: ErrUnsupported,
			Err: fmt.Errorf("no driver registered for hypervisor %q", conn.Type)}
	}
	return c(ctx, conn)
}

// Decorate wraps every registered connector, e.g. so a dev cloud can observe driver calls.
func (r *Registry) Decorate(wrap func(Type, Connector) Connector) *Registry {
	for t, c := range r.connectors {
		r.connectors[t] = wrap(t, c)
	}
	return r
}
