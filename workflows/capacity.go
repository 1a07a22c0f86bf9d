package workflows

import (
	"fmt"
	"sort"
	"strings"

	"github.com/google/uuid"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// CapacityScanWorkflowName is the registered workflow type name of CapacityScan.
const CapacityScanWorkflowName = "CapacityScan"

// CapacityScanKind is the operation kind (search attribute) of capacity scans.
const CapacityScanKind = "capacity.scan"

// CapacityScheduleID is the ID of a zone's capacity scan schedule (and the prefix of its runs'
// workflow IDs).
func CapacityScheduleID(zoneID string) string { return "capacity:" + zoneID }

// CapacityScanInput starts a CapacityScan of one zone.
type CapacityScanInput struct {
	ZoneID string `json:"zoneId"`
}

// CapacityScanResult is what one scan measured, decided and did, per pool (CPVM, SSVM).
type CapacityScanResult struct {
	ZoneID string                    `json:"zoneId"`
	Pools  []activities.PoolDecision `json:"pools"`
}

// CapacityTarget is the pool size the settings ask for: the smallest n with
// n*sessionMax - demand > standby (free session slots above the standby capacity), at most
// launchMax and never below one.
func CapacityTarget(demand, sessionMax, standby, launchMax int) int {
	if sessionMax < 1 {
		sessionMax = 1
	}
	n := (demand+standby)/sessionMax + 1
	if n > launchMax {
		n = launchMax
	}
	return max(n, 1)
}

// poolPlan is one pool's decision before the scan acts on it.
type poolPlan struct {
	decision activities.PoolDecision
	destroy  []activities.PoolVM
}

// planPool decides one pool: deploy every missing VM at once (running and starting VMs count,
// so a deploy still in flight is not doubled); shrink only after SurplusScans consecutive scans
// of surplus, only idle measured VMs (0 sessions), newest first, never below the target or one;
// the streak starts again after each shrink.
func planPool(pm activities.PoolMeasure) poolPlan {
	d := activities.PoolDecision{Type: pm.Type, Demand: pm.Demand, Settings: pm.Settings}
	for _, v := range pm.VMs {
		if v.State == models.StateStarting {
			d.Starting++
		} else {
			d.Running++
		}
	}
	s := pm.Settings
	d.Target = CapacityTarget(pm.Demand, s.SessionMax, s.Standby, s.LaunchMax)
	have := d.Running + d.Starting
	free := have*s.SessionMax - pm.Demand
	switch {
	case have < d.Target:
		d.Deploy = d.Target - have
		d.Note = fmt.Sprintf("%d sessions leave %d free slots of %d VMs, standby %d: deploying %d", pm.Demand, free, have, s.Standby, d.Deploy)
		return poolPlan{decision: d}
	case d.Starting > 0 || have == d.Target:
		d.Note = fmt.Sprintf("at target %d (%d sessions, %d free slots, standby %d)", d.Target, pm.Demand, free, s.Standby)
		return poolPlan{decision: d}
	}
	// Surplus: more running than the target.
	d.SurplusScans = pm.SurplusScans + 1
	if d.SurplusScans < s.ShrinkScans {
		d.Note = fmt.Sprintf("%d running above target %d for %d of %d scans before shrinking", d.Running, d.Target, d.SurplusScans, s.ShrinkScans)
		return poolPlan{decision: d}
	}
	idle := make([]activities.PoolVM, 0, len(pm.VMs))
	measured := 0
	for _, v := range pm.VMs {
		if v.State == models.StateRunning && v.Measured {
			measured++
			if v.Sessions == 0 {
				idle = append(idle, v)
			}
		}
	}
	// Newest first: the VMs the scans added go before the zone's original ones.
	sort.SliceStable(idle, func(i, j int) bool {
		if !idle[i].Created.Equal(idle[j].Created) {
			return idle[i].Created.After(idle[j].Created)
		}
		return idle[i].Name > idle[j].Name
	})
	// Never below the target, and as many VMs known to serve stay (an unreachable one does
	// not count).
	n := min(d.Running-max(d.Target, 1), len(idle), measured-max(d.Target, 1))
	p := poolPlan{decision: d, destroy: idle[:max(n, 0)]}
	for _, v := range p.destroy {
		p.decision.Destroy = append(p.decision.Destroy, v.Name)
	}
	if n <= 0 {
		p.decision.Note = fmt.Sprintf("%d running above target %d, but none is idle", d.Running, d.Target)
		return p
	}
	p.decision.SurplusScans = 0
	p.decision.Note = fmt.Sprintf("%d running above target %d for %d scans: destroying idle %s", d.Running, d.Target, s.ShrinkScans,
		strings.Join(p.decision.Destroy, ", "))
	return p
}

// capacityChild is one deploy or destroy child a scan runs.
type capacityChild struct {
	pool   int
	deploy bool
	op     activities.CapacityOp
	name   string
	future workflow.ChildWorkflowFuture
}

// CapacityScan keeps a zone's CPVM and SSVM pools in line with demand. It measures each pool
// (CPVM: the active console sessions of every running CPVM; SSVM: the zone's running template
// downloads and copies), computes the target (the smallest n with n*session.max - demand >
// capacity.standby, at most launch.max, at least one), deploys every missing VM at once as
// parallel SystemVMDeploy children (one scan reaches the target), and destroys idle surplus
// VMs (SystemVMLifecycle destroy children) only after systemvm.capacity.shrink.scans
// consecutive scans of surplus. It records the pools' state, an event per scaling step and an
// alert when a step failed; the next scan retries. A Temporal Schedule per zone runs it every
// consoleproxy.capacityscan.interval seconds, skipping a scan while one runs.
func CapacityScan(ctx workflow.Context, in CapacityScanInput) (CapacityScanResult, error) {
	res := CapacityScanResult{ZoneID: in.ZoneID}
	progress := Progress{Step: "measure", Total: 3}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return progress, nil }); err != nil {
		return res, err
	}
	short := withShortActivity(ctx)
	var m activities.CapacityMeasurement
	if err := workflow.ExecuteActivity(withHypervisorActivity(ctx), a.CapacityMeasure, activities.CapacityMeasureInput{ZoneID: in.ZoneID}).Get(ctx, &m); err != nil {
		return res, fmt.Errorf("measure capacity of zone %s: %w", in.ZoneID, err)
	}
	progress.advance("measured")
	plans := make([]poolPlan, len(m.Pools))
	var children []*capacityChild
	newID := func() string {
		var id string
		_ = workflow.SideEffect(ctx, func(workflow.Context) any { return uuid.NewString() }).Get(&id)
		return id
	}
	for i, pm := range m.Pools {
		plans[i] = planPool(pm)
		for k := 0; k < plans[i].decision.Deploy; k++ {
			opID := newID()
			vmID := activities.DeployVMID(opID)
			children = append(children, &capacityChild{pool: i, deploy: true, op: activities.CapacityOp{OperationID: opID,
				Kind: OperationKindDeploy, VMID: vmID, ZoneID: in.ZoneID, WorkflowID: LifecycleWorkflowID(vmID)}})
		}
		for _, v := range plans[i].destroy {
			children = append(children, &capacityChild{pool: i, name: v.Name, op: activities.CapacityOp{OperationID: newID(),
				Kind: ActionDestroy.OperationKind(), VMID: v.ID, ZoneID: in.ZoneID, WorkflowID: LifecycleWorkflowID(v.ID)}})
		}
	}
	if len(children) > 0 {
		progress.Step = fmt.Sprintf("scaling: %d deploys and destroys", len(children))
		ops := make([]activities.CapacityOp, len(children))
		for i, c := range children {
			ops[i] = c.op
		}
		if err := workflow.ExecuteActivity(short, a.CapacityBeginOps, ops).Get(ctx, nil); err != nil {
			return res, fmt.Errorf("journal the scaling operations of zone %s: %w", in.ZoneID, err)
		}
		for _, c := range children {
			typ := m.Pools[c.pool].Type
			d := plans[c.pool].decision
			reason := fmt.Sprintf("capacity scan: %d sessions, target %d", d.Demand, d.Target)
			if c.deploy {
				cctx := workflow.WithChildOptions(ctx, DeployTarget(c.op.VMID, typ, in.ZoneID).ChildOptions(nil))
				c.future = workflow.ExecuteChildWorkflow(cctx, SystemVMDeployWorkflowName, DeployInput{OperationID: c.op.OperationID,
					VMID: c.op.VMID, ZoneID: in.ZoneID, Type: typ, Reason: reason})
			} else {
				cctx := workflow.WithChildOptions(ctx, VMTarget(c.op.VMID, typ, in.ZoneID, c.op.Kind).ChildOptions(nil))
				c.future = workflow.ExecuteChildWorkflow(cctx, LifecycleWorkflowName, LifecycleInput{OperationID: c.op.OperationID,
					VMID: c.op.VMID, Action: ActionDestroy, Reason: reason + " (idle surplus)"})
			}
		}
		for _, c := range children {
			p := &plans[c.pool].decision
			if c.deploy {
				var out DeployResult
				if err := c.future.Get(ctx, &out); err != nil {
					p.Failures = append(p.Failures, fmt.Sprintf("deploy of a %s failed: %s", p.Type, rootMessage(err)))
					continue
				}
				p.Deployed = append(p.Deployed, out.Name)
				continue
			}
			var out LifecycleResult
			if err := c.future.Get(ctx, &out); err != nil {
				p.Failures = append(p.Failures, fmt.Sprintf("destroy of %s failed: %s", c.name, rootMessage(err)))
				continue
			}
			p.Destroyed = append(p.Destroyed, c.name)
		}
	}
	progress.advance("scaled")
	for _, p := range plans {
		res.Pools = append(res.Pools, p.decision)
	}
	info := workflow.GetInfo(ctx)
	if err := workflow.ExecuteActivity(short, a.CapacityRecord, activities.CapacityRecordInput{ZoneID: in.ZoneID, ZoneName: m.ZoneName,
		WorkflowID: info.WorkflowExecution.ID + "/" + info.WorkflowExecution.RunID, Pools: res.Pools}).Get(ctx, nil); err != nil {
		return res, fmt.Errorf("record capacity of zone %s: %w", in.ZoneID, err)
	}
	progress.advance("recorded")
	progress.Step, progress.Percent = "done", 100
	return res, nil
}
