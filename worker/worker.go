// Package worker builds sysvm's dependencies once and registers the workflows and activities
// on the task queue.
package worker

import (
	"context"
	"fmt"
	"log/slog"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/workflows"
)

// Config is what a worker needs.
type Config struct {
	Client     client.Client
	Activities *activities.Activities
	// Health holds the router health check activities (optional: without it the health
	// workflows' activities are not registered).
	Health *activities.Health
	Logger *slog.Logger
	// MaxConcurrentActivities bounds hypervisor and SSH calls in flight (0 = SDK default).
	MaxConcurrentActivities int
}

// New builds a worker with every workflow and activity registered; call Start or Run on it.
func New(cfg Config) worker.Worker {
	w := worker.New(cfg.Client, workflows.TaskQueue, worker.Options{
		MaxConcurrentActivityExecutionSize: cfg.MaxConcurrentActivities,
	})
	Register(w, cfg.Activities)
	if cfg.Health != nil {
		RegisterHealth(w, cfg.Health)
	}
	return w
}

// Registrar is the registering half of a worker (a worker.Worker or a test environment).
type Registrar interface {
	RegisterWorkflowWithOptions(w interface{}, options workflow.RegisterOptions)
	RegisterActivity(a interface{})
}

// Register registers every workflow under its stable name and every activity.
func Register(r Registrar, acts *activities.Activities) {
	r.RegisterWorkflowWithOptions(workflows.SystemVMLifecycle, workflow.RegisterOptions{Name: workflows.LifecycleWorkflowName})
	r.RegisterWorkflowWithOptions(workflows.NetworkRestart, workflow.RegisterOptions{Name: workflows.NetworkRestartWorkflowName})
	r.RegisterWorkflowWithOptions(workflows.HealthSweep, workflow.RegisterOptions{Name: workflows.HealthSweepWorkflowName})
	r.RegisterWorkflowWithOptions(workflows.RouterHealthCheck, workflow.RegisterOptions{Name: workflows.RouterHealthCheckWorkflowName})
	// template rollout (issue 9): one line to move into the explicit list; its activities are
	// methods of acts (activities/template*.go) and registered with it below.
	r.RegisterWorkflowWithOptions(workflows.TemplateRollout, workflow.RegisterOptions{Name: workflows.TemplateRolloutWorkflowName})
	r.RegisterActivity(acts)
}

// RegisterHealth registers the router health check activities (every method of h).
func RegisterHealth(r Registrar, h *activities.Health) { r.RegisterActivity(h) }

// EnsureSearchAttributes registers sysvm's custom search attributes (all Keyword) on a
// namespace; already registered ones are left as they are.
func EnsureSearchAttributes(ctx context.Context, c client.Client, namespace string) error {
	resp, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("list search attributes: %w", err)
	}
	missing := map[string]enumspb.IndexedValueType{}
	for _, name := range workflows.SearchAttributeNames() {
		if _, ok := resp.CustomAttributes[name]; !ok {
			missing[name] = enumspb.INDEXED_VALUE_TYPE_KEYWORD
		}
	}
	if len(missing) == 0 {
		return nil
	}
	_, err = c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: namespace, SearchAttributes: missing})
	var exists *serviceerror.AlreadyExists
	if err != nil && !asAlreadyExists(err, &exists) {
		return fmt.Errorf("add search attributes: %w", err)
	}
	return nil
}

func asAlreadyExists(err error, target **serviceerror.AlreadyExists) bool {
	e, ok := err.(*serviceerror.AlreadyExists)
	if ok {
		*target = e
	}
	return ok
}
