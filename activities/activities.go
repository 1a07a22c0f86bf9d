// Package activities holds the small, idempotent steps workflows are made of. Each group of
// steps is a method set on a struct that holds its dependencies (store, hypervisor drivers);
// every step is safe to retry: hypervisor calls follow the driver's idempotency rules and
// completed steps of an operation are journaled by operation ID.
package activities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm/clause"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
)

// Activities is the set of steps the worker registers.
type Activities struct {
	Store   *models.Store
	Drivers *DriverPool
	Logger  *slog.Logger
	// SystemVMKey returns the authorized_keys line given to new system VMs (may be nil).
	SystemVMKey func(ctx context.Context) (string, error)
	// Exec reaches system VMs over SSH, to verify a recreate's replacement answers on 3922
	// (nil: the replacement is verified on its hypervisor only).
	Exec Exec
	// TemplateHTTP downloads system VM templates (nil: a client trusting the system's roots).
	TemplateHTTP *http.Client
	// Temporal reads other runs: AwaitRecreate waits for a recreate child run through it
	// (worker.New sets it to the worker's client when nil).
	Temporal client.Client
}

// stepDone reports whether a step of an operation is already journaled.
func (a *Activities) stepDone(ctx context.Context, opID, step string) (bool, error) {
	if opID == "" {
		return false, nil
	}
	var n int64
	err := a.Store.DB.WithContext(ctx).Model(&models.OperationStep{}).
		Where("operation_id = ? AND step = ?", opID, step).Count(&n).Error
	return n > 0, err
}

// markStep journals a completed step.
func (a *Activities) markStep(ctx context.Context, opID, step, detail string) error {
	if opID == "" {
		return nil
	}
	return a.Store.DB.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).
		Create(&models.OperationStep{OperationID: opID, Step: step, CompletedAt: time.Now().UTC(), Detail: detail}).Error
}

// OperationSteps lists the journaled steps of an operation, oldest first.
func OperationSteps(ctx context.Context, s *models.Store, opID string) ([]models.OperationStep, error) {
	var steps []models.OperationStep
	err := s.DB.WithContext(ctx).Where("operation_id = ?", opID).Order("completed_at").Find(&steps).Error
	return steps, err
}

// classify turns a driver error into a Temporal error: final kinds become non-retryable
// application errors typed by kind, so workflows stop at once instead of retrying.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if hypervisors.Retryable(err) {
		return err
	}
	return temporal.NewNonRetryableApplicationError(err.Error(), hypervisors.KindName(err), err)
}

// heartbeatWhile runs f while heartbeating every few seconds, so a long hypervisor call on a
// dead worker is noticed by its heartbeat timeout instead of its whole run time.
func heartbeatWhile(ctx context.Context, details any, f func() error) error {
	if !activity.IsActivity(ctx) {
		return f()
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx, details)
			}
		}
	}()
	return f()
}

// DriverPool opens and caches one driver per cluster, from the inventory and its encrypted
// credentials.
type DriverPool struct {
	store    *models.Store
	registry *hypervisors.Registry
	mu       sync.Mutex
	drivers  map[string]hypervisors.Driver
}

// NewDriverPool builds a pool over a registry.
func NewDriverPool(store *models.Store, registry *hypervisors.Registry) *DriverPool {
	return &DriverPool{store: store, registry: registry, drivers: map[string]hypervisors.Driver{}}
}

// Connection builds the connection of a cluster (decrypting its password).
func (p *DriverPool) Connection(ctx context.Context, clusterID string) (hypervisors.Connection, error) {
	var cl models.Cluster
	if err := p.store.Get(ctx, &cl, clusterID); err != nil {
		return hypervisors.Connection{}, fmt.Errorf("cluster %s: %w", clusterID, err)
	}
	t, err := hypervisors.ParseType(cl.HypervisorType)
	if err != nil {
		return hypervisors.Connection{}, fmt.Errorf("cluster %s: %w", cl.Name, err)
	}
	conn := hypervisors.Connection{Type: t, Endpoint: cl.Endpoint, Username: cl.Username,
		Insecure: cl.Insecure, Datacenter: cl.Datacenter}
	if cl.CredentialRef != "" {
		pw, err := p.store.Secrets.GetSecret(ctx, cl.CredentialRef)
		if err != nil {
			return hypervisors.Connection{}, fmt.Errorf("cluster %s credentials: %w", cl.Name, err)
		}
		conn.Password = string(pw)
	}
	var hosts []models.Host
	if err := p.store.DB.WithContext(ctx).Where("cluster_id = ?", clusterID).Find(&hosts).Error; err != nil {
		return hypervisors.Connection{}, err
	}
	for _, h := range hosts {
		if h.Endpoint != "" {
			if conn.Hosts == nil {
				conn.Hosts = map[string]string{}
			}
			conn.Hosts[h.Name] = h.Endpoint
		}
	}
	return conn, nil
}

// For returns the driver of a cluster, connecting on first use.
func (p *DriverPool) For(ctx context.Context, clusterID string) (hypervisors.Driver, error) {
	p.mu.Lock()
	d, ok := p.drivers[clusterID]
	p.mu.Unlock()
	if ok {
		return d, nil
	}
	conn, err := p.Connection(ctx, clusterID)
	if err != nil {
		return nil, err
	}
	d, err = p.registry.Open(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("connect to cluster %s (%s): %w", clusterID, conn, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.drivers[clusterID]; ok {
		_ = d.Close()
		return old, nil
	}
	p.drivers[clusterID] = d
	return d, nil
}

// Forget drops a cached driver (after the endpoint became unreachable).
func (p *DriverPool) Forget(clusterID string) {
	p.mu.Lock()
	d, ok := p.drivers[clusterID]
	delete(p.drivers, clusterID)
	p.mu.Unlock()
	if ok {
		_ = d.Close()
	}
}

// Close closes every cached driver.
func (p *DriverPool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, d := range p.drivers {
		_ = d.Close()
		delete(p.drivers, id)
	}
}

// driverFor returns the driver of a cluster, forgetting it when the endpoint is unreachable.
func (a *Activities) driverFor(ctx context.Context, clusterID string) (hypervisors.Driver, error) {
	d, err := a.Drivers.For(ctx, clusterID)
	if err != nil {
		if errors.Is(err, hypervisors.ErrUnreachable) {
			a.Drivers.Forget(clusterID)
		}
		return nil, classify(err)
	}
	return d, nil
}
