package workflows

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// rolloutEnv runs TemplateRollout over mocked activities: plan gives each template one zone
// with the pools listed; failing downloads and seeds are named.
type rolloutEnv struct {
	mu        sync.Mutex
	switched  []string // "<template> <zone>"
	failures  []activities.TemplateFailureInput
	finished  []activities.FinishInput
	minVer    int
	badDL     map[string]bool // template IDs whose download fails
	badPool   map[string]bool // pool IDs whose seed fails
	poolsOf   map[string][]string
	templates []string
}

func newRolloutEnv(t *testing.T, r *rolloutEnv) *testsuite.TestWorkflowEnvironment {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(TemplateRollout, workflow.RegisterOptions{Name: TemplateRolloutWorkflowName})
	env.RegisterActivity(&activities.Activities{})
	var plan activities.TemplatePlan
	for _, id := range r.templates {
		zp := activities.TemplateZonePlan{ZoneID: "z-1", Zone: "zone-1"}
		for _, p := range r.poolsOf[id] {
			zp.Pools = append(zp.Pools, activities.TemplatePoolPlan{PoolID: p, Name: "pool-" + p})
		}
		plan.Templates = append(plan.Templates, activities.TemplatePlanItem{TemplateID: id, Name: "tpl-" + id, Hypervisor: "hv-" + id,
			Version: "4.16.0", Zones: []activities.TemplateZonePlan{zp}})
	}
	env.OnActivity(a.TemplatePlan, mock.Anything, mock.Anything).Return(plan, nil)
	env.OnActivity(a.TemplateDownload, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.TemplateDownloadInput) (activities.TemplateDownloadResult, error) {
			if r.badDL[in.TemplateID] {
				return activities.TemplateDownloadResult{}, temporal.NewNonRetryableApplicationError("download x: HTTP 404 Not Found", activities.ErrTypeDownload, nil)
			}
			return activities.TemplateDownloadResult{Path: "/sec/" + in.TemplateID, Checksum: "sha256:00", SSVM: "s-1-VM"}, nil
		})
	env.OnActivity(a.TemplateSeedPool, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.TemplateSeedInput) (activities.TemplateSeedResult, error) {
			if r.badPool[in.PoolID] {
				return activities.TemplateSeedResult{}, temporal.NewNonRetryableApplicationError("seed: datastore full", "Invalid", nil)
			}
			return activities.TemplateSeedResult{PoolID: in.PoolID, State: models.TemplateReady}, nil
		})
	env.OnActivity(a.TemplateSwitch, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.TemplateSwitchInput) (activities.TemplateSwitchResult, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			require.Len(t, in.PoolIDs, len(r.poolsOf[in.TemplateID]), "a switch names every pool it needs")
			r.switched = append(r.switched, in.TemplateID+" "+in.ZoneID)
			return activities.TemplateSwitchResult{Setting: "router.template.x", Value: "tpl-" + in.TemplateID}, nil
		})
	env.OnActivity(a.TemplateMinVersion, mock.Anything, mock.Anything).Return(
		func(_ context.Context, id string) (activities.TemplateSwitchResult, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.minVer++
			return activities.TemplateSwitchResult{Setting: "minreq.sysvmtemplate.version", Value: "4.16.0"}, nil
		})
	env.OnActivity(a.TemplateRecordFailure, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.TemplateFailureInput) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.failures = append(r.failures, in)
			return nil
		})
	env.OnActivity(a.FinishOperation, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.FinishInput) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.finished = append(r.finished, in)
			return nil
		})
	return env
}

// TestTemplateRolloutFailuresStayApart: a template whose download fails and a template with one
// bad pool do not stop the third; only the fully seeded one switches; the run completes with
// each failure and its reason in the result.
func TestTemplateRolloutFailuresStayApart(t *testing.T) {
	r := &rolloutEnv{templates: []string{"kvm", "xen", "vmw"}, badDL: map[string]bool{"xen": true},
		badPool: map[string]bool{"kvm-2": true},
		poolsOf: map[string][]string{"kvm": {"kvm-1", "kvm-2"}, "xen": {"xen-1"}, "vmw": {"vmw-1", "vmw-2"}}}
	env := newRolloutEnv(t, r)
	env.ExecuteWorkflow(TemplateRollout, TemplateRolloutInput{OperationID: "op-1", TemplateIDs: r.templates, SetMinVersion: true})
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var res TemplateRolloutResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, []string{"vmw z-1"}, r.switched, "only the template with every pool Ready switches")
	require.Equal(t, 1, res.Ready)
	require.Equal(t, 2, res.Failed)
	require.Equal(t, "4.16.0", res.MinVersion)
	require.Equal(t, 1, r.minVer)
	byID := map[string]TemplateOutcome{}
	for _, o := range res.Templates {
		byID[o.TemplateID] = o
	}
	require.Contains(t, byID["xen"].Zones[0].Status, "Failed: download: download x: HTTP 404")
	require.Equal(t, "NotStarted", byID["xen"].Zones[0].Pools[0].State)
	kz := byID["kvm"].Zones[0]
	require.False(t, kz.Switched)
	require.Contains(t, kz.Status, "pools not seeded: pool-kvm-2")
	require.Equal(t, models.TemplateReady, kz.Pools[0].State)
	require.Equal(t, models.TemplateFailed, kz.Pools[1].State)
	require.Contains(t, kz.Pools[1].Error, "datastore full")
	require.True(t, byID["vmw"].Zones[0].Switched)
	var poolFailure bool
	for _, f := range r.failures {
		if f.PoolID == "kvm-2" && strings.Contains(f.Reason, "datastore full") {
			poolFailure = true
		}
	}
	require.True(t, poolFailure, "the pool's failure is recorded on its row: %+v", r.failures)
	require.Len(t, r.finished, 1)
	require.Equal(t, models.OpCompleted, r.finished[0].Status)
}

// TestTemplateRolloutNothingDone fails the run when no zone of any template became Ready.
func TestTemplateRolloutNothingDone(t *testing.T) {
	r := &rolloutEnv{templates: []string{"xen"}, badDL: map[string]bool{"xen": true}, poolsOf: map[string][]string{"xen": {"xen-1"}}}
	env := newRolloutEnv(t, r)
	env.ExecuteWorkflow(TemplateRollout, TemplateRolloutInput{OperationID: "op-2", TemplateIDs: r.templates})
	require.True(t, env.IsWorkflowCompleted())
	err := env.GetWorkflowError()
	require.Error(t, err)
	require.Contains(t, err.Error(), "nothing could be rolled out")
	require.Contains(t, err.Error(), "404")
	require.Empty(t, r.switched)
	require.Len(t, r.finished, 1)
	require.Equal(t, models.OpFailed, r.finished[0].Status)
}

// TestTemplateRolloutWorkflowID derives the ID from the templates, whatever their order.
func TestTemplateRolloutWorkflowID(t *testing.T) {
	require.Equal(t, "template:t-1", TemplateRolloutWorkflowID([]string{"t-1"}))
	require.Equal(t, TemplateRolloutWorkflowID([]string{"a", "b"}), TemplateRolloutWorkflowID([]string{"b", "a"}))
	require.NotEqual(t, TemplateRolloutWorkflowID([]string{"a", "b"}), TemplateRolloutWorkflowID([]string{"a", "c"}))
	tg := TemplateTarget([]string{"t-1"}, "z-1")
	require.Equal(t, TemplateRolloutOperationKind, tg.Kind)
	require.Equal(t, "z-1", tg.ZoneID)
}

// TestTemplateRolloutRollOn recreates the zone's SSVM and CPVM after the switch, one at a time,
// each a lifecycle recreate child with its own workflow ID and derived operation ID; a child
// that fails stops the roll-on and is reported, the rollout still completes.
func TestTemplateRolloutRollOn(t *testing.T) {
	r := &rolloutEnv{templates: []string{"vmw"}, poolsOf: map[string][]string{"vmw": {"vmw-1"}}}
	env := newRolloutEnv(t, r)
	var mu sync.Mutex
	var order []string
	running, maxRunning := 0, 0
	env.RegisterWorkflowWithOptions(func(ctx workflow.Context, in LifecycleInput) (LifecycleResult, error) {
		mu.Lock()
		running++
		maxRunning = max(maxRunning, running)
		order = append(order, in.VMID+" "+string(in.Action)+" "+workflow.GetInfo(ctx).WorkflowExecution.ID)
		mu.Unlock()
		_ = workflow.Sleep(ctx, time.Second)
		mu.Lock()
		running--
		mu.Unlock()
		if in.VMID == "v-3" {
			return LifecycleResult{}, temporal.NewNonRetryableApplicationError("no host", "BadState", nil)
		}
		return LifecycleResult{VMID: in.VMID, Name: in.VMID, Action: string(in.Action), State: models.StateRunning}, nil
	}, workflow.RegisterOptions{Name: LifecycleWorkflowName})
	env.OnActivity(a.TemplateRollOnVMs, mock.Anything, mock.Anything).Return([]activities.TemplateRollOnVM{
		{ID: "s-1", Name: "s-1-VM", Type: models.TypeSSVM}, {ID: "v-2", Name: "v-2-VM", Type: models.TypeCPVM},
		{ID: "v-3", Name: "v-3-VM", Type: models.TypeCPVM}, {ID: "v-4", Name: "v-4-VM", Type: models.TypeCPVM}}, nil)
	env.ExecuteWorkflow(TemplateRollout, TemplateRolloutInput{OperationID: "op-3", TemplateIDs: r.templates, RollOn: true})
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var res TemplateRolloutResult
	require.NoError(t, env.GetWorkflowResult(&res))
	z := res.Templates[0].Zones[0]
	require.True(t, z.Switched)
	require.Equal(t, []string{"s-1 recreate systemvm:s-1", "v-2 recreate systemvm:v-2", "v-3 recreate systemvm:v-3"}, order)
	require.Equal(t, 1, maxRunning, "one system VM at a time")
	require.Len(t, z.Recreated, 2)
	require.Contains(t, z.RollOnError, "recreate v-3-VM: no host")
	require.NotEqual(t, TemplateRollOnOperationID("op-3", "s-1"), TemplateRollOnOperationID("op-3", "v-2"))
}
