package workflows

import (
	"context"
	"fmt"
	"sort"
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

// capacitySim is a zone's CPVM pool across scans: the mocked measure reads it, the mocked
// deploy and destroy children change it, and the mocked record keeps the surplus streak, as
// the database does between scheduled scans.
type capacitySim struct {
	mu       sync.Mutex
	settings activities.CapacitySettings
	vms      []activities.PoolVM
	surplus  int
	n        int
	// failDeploys makes that many deploys fail.
	failDeploys int
	deploys     int
	destroyed   []string
	records     []activities.CapacityRecordInput
}

func newCapacitySim(s activities.CapacitySettings, sessions ...int) *capacitySim {
	sim := &capacitySim{settings: s}
	for _, n := range sessions {
		sim.add(n)
	}
	return sim
}

func (s *capacitySim) add(sessions int) activities.PoolVM {
	s.n++
	v := activities.PoolVM{ID: fmt.Sprintf("vm-%d", s.n), Name: fmt.Sprintf("v-%d-VM", s.n), State: models.StateRunning,
		Created: time.Date(2026, 1, 1, 0, s.n, 0, 0, time.UTC), Sessions: sessions, Measured: true}
	s.vms = append(s.vms, v)
	return v
}

// setSessions spreads total sessions over the pool, the first VMs first.
func (s *capacitySim) setSessions(per ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.vms {
		s.vms[i].Sessions = 0
		if i < len(per) {
			s.vms[i].Sessions = per[i]
		}
	}
}

func (s *capacitySim) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.vms)
}

// scan runs one CapacityScan over the sim.
func (s *capacitySim) scan(t *testing.T) CapacityScanResult {
	t.Helper()
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(CapacityScan, workflow.RegisterOptions{Name: CapacityScanWorkflowName})
	env.RegisterWorkflowWithOptions(SystemVMDeploy, workflow.RegisterOptions{Name: SystemVMDeployWorkflowName})
	env.RegisterWorkflowWithOptions(SystemVMLifecycle, workflow.RegisterOptions{Name: LifecycleWorkflowName})
	env.RegisterActivity(&activities.Activities{})
	env.OnActivity(a.CapacityMeasure, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.CapacityMeasureInput) (activities.CapacityMeasurement, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			pm := activities.PoolMeasure{Type: models.TypeCPVM, Settings: s.settings, VMs: append([]activities.PoolVM(nil), s.vms...), SurplusScans: s.surplus}
			for _, v := range s.vms {
				pm.Demand += v.Sessions
			}
			ssvm := activities.PoolMeasure{Type: models.TypeSSVM, Settings: activities.CapacitySettings{SessionMax: 50, Standby: 10, LaunchMax: 10, ShrinkScans: 3},
				VMs: []activities.PoolVM{{ID: "ss-1", Name: "s-1-VM", State: models.StateRunning, Measured: true}}}
			return activities.CapacityMeasurement{ZoneID: in.ZoneID, ZoneName: "zone-1", Pools: []activities.PoolMeasure{pm, ssvm}}, nil
		})
	env.OnActivity(a.CapacityBeginOps, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.CapacityRecord, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.CapacityRecordInput) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.records = append(s.records, in)
		for _, p := range in.Pools {
			if p.Type == models.TypeCPVM {
				s.surplus = p.SurplusScans
			}
		}
		return nil
	})
	env.OnWorkflow(SystemVMDeployWorkflowName, mock.Anything, mock.Anything).Return(func(_ workflow.Context, in DeployInput) (DeployResult, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.deploys++
		if in.Type != models.TypeCPVM {
			return DeployResult{}, fmt.Errorf("unexpected %s deploy", in.Type)
		}
		if s.failDeploys > 0 {
			s.failDeploys--
			return DeployResult{}, temporal.NewNonRetryableApplicationError("deploy-verify v-99-VM: injected", "Injected", nil)
		}
		v := s.add(0)
		return DeployResult{VMID: v.ID, Name: v.Name, Type: in.Type, State: models.StateRunning}, nil
	})
	env.OnWorkflow(LifecycleWorkflowName, mock.Anything, mock.Anything).Return(func(_ workflow.Context, in LifecycleInput) (LifecycleResult, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if in.Action != ActionDestroy {
			return LifecycleResult{}, fmt.Errorf("unexpected %s", in.Action)
		}
		for i, v := range s.vms {
			if v.ID == in.VMID {
				if v.Sessions > 0 {
					return LifecycleResult{}, fmt.Errorf("destroyed %s with %d sessions", v.Name, v.Sessions)
				}
				s.vms = append(s.vms[:i], s.vms[i+1:]...)
				s.destroyed = append(s.destroyed, v.Name)
				return LifecycleResult{VMID: v.ID, Name: v.Name, State: models.StateDestroyed}, nil
			}
		}
		return LifecycleResult{}, fmt.Errorf("no VM %s", in.VMID)
	})
	env.ExecuteWorkflow(CapacityScan, CapacityScanInput{ZoneID: "z-1"})
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var res CapacityScanResult
	require.NoError(t, env.GetWorkflowResult(&res))
	return res
}

func TestCapacityTarget(t *testing.T) {
	for _, c := range []struct{ demand, max, standby, launch, want int }{
		{0, 50, 10, 10, 1}, {40, 50, 10, 10, 2}, {39, 50, 10, 10, 1}, {7, 2, 1, 10, 5}, {7, 2, 1, 3, 3}, {0, 1, 0, 10, 1}, {100, 1, 0, 0, 1},
	} {
		require.Equal(t, c.want, CapacityTarget(c.demand, c.max, c.standby, c.launch), "%+v", c)
	}
}

// TestCapacityGrowsToTargetInOneScan: 7 sessions with 2 per CPVM and a standby of 1 need 5
// CPVMs; one scan deploys all 4 missing, in parallel, and a second scan deploys none.
func TestCapacityGrowsToTargetInOneScan(t *testing.T) {
	sim := newCapacitySim(activities.CapacitySettings{SessionMax: 2, Standby: 1, LaunchMax: 10, ShrinkScans: 3}, 7)
	res := sim.scan(t)
	require.Equal(t, 5, sim.size(), "one scan reaches the target")
	require.Equal(t, 4, sim.deploys)
	cp := res.Pools[0]
	require.Equal(t, 5, cp.Target)
	require.Equal(t, 4, cp.Deploy)
	require.Len(t, cp.Deployed, 4)
	require.Equal(t, 0, res.Pools[1].Deploy, "the SSVM pool has room")
	sim.scan(t)
	require.Equal(t, 4, sim.deploys, "at target: nothing more")
}

func TestCapacityLaunchMaxCaps(t *testing.T) {
	sim := newCapacitySim(activities.CapacitySettings{SessionMax: 2, Standby: 1, LaunchMax: 3, ShrinkScans: 3}, 20)
	res := sim.scan(t)
	require.Equal(t, 3, sim.size())
	require.Equal(t, 3, res.Pools[0].Target)
}

// TestCapacityShrinksWithHysteresis: surplus must be seen on ShrinkScans consecutive scans;
// then only idle VMs go, the newest first, never below the target; the streak starts again.
func TestCapacityShrinksWithHysteresis(t *testing.T) {
	sim := newCapacitySim(activities.CapacitySettings{SessionMax: 2, Standby: 1, LaunchMax: 10, ShrinkScans: 3}, 0, 0, 0, 1, 0)
	// 1 session: target 2 ((1+1)/2+1); 5 running.
	for i := 1; i <= 2; i++ {
		res := sim.scan(t)
		require.Equal(t, 5, sim.size(), "scan %d: no shrink before 3 scans of surplus", i)
		require.Equal(t, i, res.Pools[0].SurplusScans)
	}
	// Demand back up for one scan: the streak is broken.
	sim.setSessions(2, 2, 2, 1) // 7 sessions: target 5
	res := sim.scan(t)
	require.Equal(t, 5, sim.size())
	require.Equal(t, 0, res.Pools[0].SurplusScans)
	sim.setSessions(0, 0, 0, 1)
	for i := 1; i <= 2; i++ {
		sim.scan(t)
		require.Equal(t, 5, sim.size())
	}
	res = sim.scan(t)
	require.Equal(t, 2, sim.size(), "third scan of surplus: down to the target")
	require.ElementsMatch(t, []string{"v-5-VM", "v-3-VM", "v-2-VM"}, sim.destroyed, "idle ones, newest first; v-4-VM has a session")
	require.Equal(t, 0, res.Pools[0].SurplusScans, "the streak starts again after a shrink")
	var names []string
	for _, v := range sim.vms {
		names = append(names, v.Name)
	}
	sort.Strings(names)
	require.Equal(t, []string{"v-1-VM", "v-4-VM"}, names)
}

// TestCapacityNeverBelowOne: an idle zone keeps one CPVM however long it stays idle.
func TestCapacityNeverBelowOne(t *testing.T) {
	sim := newCapacitySim(activities.CapacitySettings{SessionMax: 50, Standby: 0, LaunchMax: 10, ShrinkScans: 1}, 0, 0, 0)
	for i := 0; i < 3; i++ {
		sim.scan(t)
	}
	require.Equal(t, 1, sim.size())
	require.Equal(t, "v-1-VM", sim.vms[0].Name, "the oldest stays")
}

// TestCapacityDeployFailureAlertsAndRetries: a failed deploy is in the recorded outcome (the
// record raises the alert from it) and the next scan deploys again.
func TestCapacityDeployFailureAlertsAndRetries(t *testing.T) {
	sim := newCapacitySim(activities.CapacitySettings{SessionMax: 2, Standby: 0, LaunchMax: 10, ShrinkScans: 3}, 5)
	sim.failDeploys = 1
	res := sim.scan(t)
	require.Equal(t, 3, res.Pools[0].Target)
	require.Equal(t, 2, sim.size(), "one of two deploys failed")
	require.Len(t, res.Pools[0].Failures, 1)
	require.Contains(t, res.Pools[0].Failures[0], "injected")
	require.Len(t, sim.records[0].Pools[0].Failures, 1, "the failure reaches CapacityRecord, which alerts")
	res = sim.scan(t)
	require.Equal(t, 3, sim.size(), "the next scan retries")
	require.Empty(t, res.Pools[0].Failures)
	require.Equal(t, 3, sim.deploys)
}

// TestCapacityPlanOnlyIdleMeasured: an unmeasured VM (its agent did not answer) is never
// taken for idle.
func TestCapacityPlanOnlyIdleMeasured(t *testing.T) {
	pm := activities.PoolMeasure{Type: models.TypeCPVM, SurplusScans: 5,
		Settings: activities.CapacitySettings{SessionMax: 50, Standby: 0, LaunchMax: 10, ShrinkScans: 1},
		VMs: []activities.PoolVM{{ID: "a", Name: "v-1-VM", State: models.StateRunning, Measured: true},
			{ID: "b", Name: "v-2-VM", State: models.StateRunning, Measured: false}}}
	p := planPool(pm)
	require.Empty(t, p.destroy, "v-2-VM is not known idle; v-1-VM is the last known one")
	pm.VMs = append(pm.VMs, activities.PoolVM{ID: "c", Name: "v-3-VM", State: models.StateStarting})
	p = planPool(pm)
	require.Empty(t, p.destroy, "no shrink while a deploy is still starting")
	require.Equal(t, 0, p.decision.Deploy)
}
