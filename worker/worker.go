// Package worker builds sysvm's dependencies once and registers the workflows and activities
// on the task queue.
package worker

import (
	"cmp"
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
	// Client is the worker's connection; New also gives it to Activities when their Temporal
	// is nil (AwaitRecreate reads runs through it).
	Client     client.Client
	Activities *activities.Activities
	// Health holds the router health check activities (optional: without it the health
	// workflows' activities are not registered).
	Health *activities.Health
	Logger *slog.Logger
	// MaxConcurrentActivities bounds hypervisor and SSH calls in flight (0 = SDK default).
	MaxConcurrentActivities int
	// WorkflowTaskPollers and ActivityTaskPollers are the long polls the worker keeps open on
	// the task queue for each kind of task (0 = DefaultWorkflowTaskPollers,
	// DefaultActivityTaskPollers).
	WorkflowTaskPollers, ActivityTaskPollers int
}

// DefaultWorkflowTaskPollers and DefaultActivityTaskPollers are the worker's pollers when
// Config leaves them 0. The SDK's default of 2 each is too few for an upgrade of 50 routers
// in flight: each router's recreate is a chain of a dozen activities, each a workflow task
// and an activity task in turn, and with 2 pollers (the workflow ones split between the
// sticky and the shared queue) over the task queue's 4 partitions a task waits for a poller
// to come back or for the server's forwarding between partitions (10 a second); measured on
// bench:upgrade at 200 routers, parallelism 50, tasks waited on average 500 ms (workflow) and
// 270 ms (activity) against about 10 ms with one router in flight.
const (
	DefaultWorkflowTaskPollers = 8
	DefaultActivityTaskPollers = 8
)

// New builds a worker with every workflow and activity registered, the activities reading
// runs through cfg.Client unless they have a client of their own; call Start or Run on it.
func New(cfg Config) worker.Worker {
	w := worker.New(cfg.Client, workflows.TaskQueue, worker.Options{
		MaxConcurrentActivityExecutionSize: cfg.MaxConcurrentActivities,
		MaxConcurrentWorkflowTaskPollers:   cmp.Or(cfg.WorkflowTaskPollers, DefaultWorkflowTaskPollers),
		MaxConcurrentActivityTaskPollers:   cmp.Or(cfg.ActivityTaskPollers, DefaultActivityTaskPollers),
	})
	if cfg.Activities != nil && cfg.Activities.Temporal == nil {
		cfg.Activities.Temporal = cfg.Client
	}
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

// Workflow is a workflow type the worker runs: its stable registered name and its function.
type Workflow struct {
	Name string
	Fn   any
}

// Workflows is every workflow type sysvm runs, under its stable name. Register registers these;
// the replay test in workflows replays a recorded history of each.
func Workflows() []Workflow {
	return []Workflow{
		{workflows.LifecycleWorkflowName, workflows.SystemVMLifecycle},
		{workflows.NetworkRestartWorkflowName, workflows.NetworkRestart},
		{workflows.HealthSweepWorkflowName, workflows.HealthSweep},
		{workflows.RouterHealthCheckWorkflowName, workflows.RouterHealthCheck},
		{workflows.RouterUpgradeWorkflowName, workflows.RouterUpgrade},
		{workflows.SystemVMUpgradeWorkflowName, workflows.SystemVMUpgrade},
		{workflows.NetworkRulesWorkflowName, workflows.NetworkRulesPush},
		{workflows.TemplateRolloutWorkflowName, workflows.TemplateRollout},
		{workflows.DiagnosticsWorkflowName, workflows.SystemVMDiagnostics},
		{workflows.DiagnosticsDataWorkflowName, workflows.SystemVMDiagnosticsData},
		{workflows.MigrateWorkflowName, workflows.SystemVMMigrate},
		{workflows.ScaleWorkflowName, workflows.SystemVMScale},
		{workflows.CertificateRotationWorkflowName, workflows.CertificateRotation},
		{workflows.CertificateExpiryWorkflowName, workflows.CertificateExpiryCheck},
		{workflows.SystemVMDeployWorkflowName, workflows.SystemVMDeploy},
		{workflows.CapacityScanWorkflowName, workflows.CapacityScan},
	}
}

// WorkflowActivities is the one list of the activities workflows call, by method value, and
// only those: an exported method of activities.Activities or activities.Health that no
// workflow calls is not an activity. Add a line here when a workflow calls a new activity;
// TestActivitiesMatchWorkflows fails while a workflow calls an activity missing here, or an
// activity here is called by no workflow. a and h may be nil (the method values then only name
// the activities).
func WorkflowActivities(a *activities.Activities, h *activities.Health) (lifecycle, health []any) {
	lifecycle = []any{
		// SystemVMLifecycle
		a.LoadVM, a.CheckDestroyAllowed, a.SetVMState, a.HypervisorStep, a.RecordEvent, a.FinishOperation,
		a.AdmitDestroy, a.PrepareRecreate, a.RecreateStep, a.SettleVM,
		// CertificateRotation
		a.PlanCertificateRotation, a.InstallCertificate, a.VerifyConsoleCertificate, a.RecordServedCertificate,
		a.RaiseCertificateAlert,
		// CertificateExpiryCheck
		a.CheckCertificateExpiry,
		// NetworkRestart
		a.NetworkRouters,
		// RouterUpgrade
		a.PlanRouterUpgrade, a.RouterUpgradeCheck, a.RaiseUpgradeAlert, a.ResolveUpgradeAlert, a.AwaitRecreate,
		// SystemVMUpgrade (RaiseUpgradeAlert, ResolveUpgradeAlert above)
		a.PlanSystemVMUpgrade, a.SystemVMUpgradeCheck, a.SystemVMUpgradeGate,
		// TemplateRollout
		a.TemplatePlan, a.TemplateDownload, a.TemplateSeedPool, a.TemplateRecordFailure, a.TemplateSwitch,
		a.TemplateMinVersion, a.TemplateRollOnVMs,
		// SystemVMDiagnostics (LoadVM, FinishOperation above)
		a.RunDiagnostics,
		// SystemVMDiagnosticsData (LoadVM, FinishOperation above)
		a.CollectDiagnosticsData,
		// SystemVMMigrate, SystemVMScale (SetVMState, HypervisorStep, SettleVM, RecordEvent,
		// FinishOperation above)
		a.PlanMove, a.MoveVM,
		// SystemVMDeploy (RecordEvent, SettleVM, FinishOperation above)
		a.AllocateSystemVM, a.DeployStep,
		// CapacityScan (its children are SystemVMDeploy and SystemVMLifecycle)
		a.CapacityMeasure, a.CapacityBeginOps, a.CapacityRecord,
	}
	health = []any{
		// HealthSweep
		h.HealthSweepSettings, h.HealthListRouters, h.HealthCheckBatch, h.HealthPlanRecreations,
		h.HealthReleaseRecreation, h.HealthRecreationStarted,
		// RouterHealthCheck
		h.HealthCheckNow,
		// RouterUpgrade, NetworkRulesPush
		h.UpgradeHealthGate, h.PushNetworkRules,
		// RouterUpgrade with mode patch
		h.PatchRouter,
	}
	return lifecycle, health
}

// Register registers every workflow under its stable name and the lifecycle and network
// activities workflows call (WorkflowActivities).
func Register(r Registrar, acts *activities.Activities) {
	for _, w := range Workflows() {
		r.RegisterWorkflowWithOptions(w.Fn, workflow.RegisterOptions{Name: w.Name})
	}
	lifecycle, _ := WorkflowActivities(acts, nil)
	for _, fn := range lifecycle {
		r.RegisterActivity(fn)
	}
}

// RegisterHealth registers the router health check activities workflows call
// (WorkflowActivities).
func RegisterHealth(r Registrar, h *activities.Health) {
	_, health := WorkflowActivities(nil, h)
	for _, fn := range health {
		r.RegisterActivity(fn)
	}
}

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
