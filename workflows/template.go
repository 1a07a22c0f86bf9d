package workflows

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// TemplateRolloutWorkflowName is the registered workflow type name of TemplateRollout.
const TemplateRolloutWorkflowName = "TemplateRollout"

// TemplateRolloutOperationKind is the operation kind of a template rollout.
const TemplateRolloutOperationKind = "template.rollout"

// TemplateRolloutWorkflowID is the workflow ID of a rollout of these templates: derived from
// the template IDs (sorted), so a second rollout of the same templates is refused while one
// runs. One template: template:<id>.
func TemplateRolloutWorkflowID(templateIDs []string) string {
	ids := append([]string(nil), templateIDs...)
	sort.Strings(ids)
	if len(ids) == 1 {
		return "template:" + ids[0]
	}
	return "template:" + uuid.NewSHA1(uuid.NameSpaceURL, []byte("sysvm:templates:"+strings.Join(ids, ","))).String()
}

// TemplateTarget is the target of a rollout: its workflow ID, the ZoneId search attribute
// (set when every template is for one zone) and OperationKind.
func TemplateTarget(templateIDs []string, zoneID string) Target {
	return ZoneTarget(TemplateRolloutWorkflowID(templateIDs), zoneID, TemplateRolloutOperationKind)
}

// TemplateRolloutInput starts a TemplateRollout.
type TemplateRolloutInput struct {
	OperationID string   `json:"operationId"`
	TemplateIDs []string `json:"templateIds"`
	// SetMinVersion also sets minreq.sysvmtemplate.version to the templates' version once a
	// zone switched (routers below it then require upgrade).
	SetMinVersion bool `json:"setMinVersion,omitempty"`
	// NoSwitch downloads and seeds but leaves router.template.<hypervisor> as it is.
	NoSwitch bool `json:"noSwitch,omitempty"`
	// RollOn recreates each switched zone's SSVMs and CPVMs of the hypervisor on the new
	// template, one at a time (a SystemVMLifecycle recreate child each), so the zone always
	// keeps the others serving; the first failure stops that zone's roll-on.
	RollOn bool `json:"rollOn,omitempty"`
}

// TemplateRolloutResult is the rollout's outcome per template (hypervisor), zone and pool.
type TemplateRolloutResult struct {
	Templates []TemplateOutcome `json:"templates"`
	// Ready and Failed count the zones switched (or ready) and those that failed.
	Ready  int `json:"ready"`
	Failed int `json:"failed"`
	// MinVersion is set when minreq.sysvmtemplate.version was set.
	MinVersion string `json:"minVersion,omitempty"`
}

// TemplateOutcome is one template's part of a rollout.
type TemplateOutcome struct {
	TemplateID string        `json:"templateId"`
	Name       string        `json:"name"`
	Hypervisor string        `json:"hypervisor"`
	Zones      []ZoneOutcome `json:"zones"`
	Error      string        `json:"error,omitempty"`
}

// ZoneOutcome is one zone of a template's rollout.
type ZoneOutcome struct {
	ZoneID string `json:"zoneId"`
	Zone   string `json:"zone"`
	// Status is Ready or "Failed: <reason>" (as the zone's row shows it).
	Status string `json:"status"`
	// Downloaded: the image is in the zone's secondary store (Resumed from that offset).
	Downloaded bool          `json:"downloaded"`
	Resumed    int64         `json:"resumed,omitempty"`
	SSVM       string        `json:"ssvm,omitempty"`
	Switched   bool          `json:"switched"`
	Setting    string        `json:"setting,omitempty"`
	Previous   string        `json:"previous,omitempty"`
	Pools      []PoolOutcome `json:"pools"`
	// Recreated lists the SSVMs and CPVMs rolled onto the template (RollOn), in order;
	// RollOnError says why the roll-on stopped.
	Recreated   []LifecycleResult `json:"recreated,omitempty"`
	RollOnError string            `json:"rollOnError,omitempty"`
}

// PoolOutcome is one pool's seed.
type PoolOutcome struct {
	PoolID  string `json:"poolId"`
	Pool    string `json:"pool"`
	State   string `json:"state"`
	Skipped bool   `json:"skipped,omitempty"`
	Error   string `json:"error,omitempty"`
}

// withDownloadActivity is for downloads: a dead worker is noticed by the heartbeat within
// 15 s and the download resumes on another attempt from the heartbeat's offset.
func withDownloadActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 6 * time.Hour,
		HeartbeatTimeout:    15 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2,
			MaximumInterval: 30 * time.Second, MaximumAttempts: 6},
	})
}

// withSeedActivity is for pool seeds (driver uploads and imports).
func withSeedActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 2 * time.Hour,
		HeartbeatTimeout:    30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: 30 * time.Second, MaximumAttempts: 4},
	})
}

// TemplateRollout rolls system VM templates out (SPEC §4.1): for each template and each of
// its zones, at once, the zone's SSVM role downloads the image into the zone's secondary
// store, every primary storage pool of the template's hypervisor in the zone is seeded from
// it (in parallel), and once every one of those pools is Ready the zone's
// router.template.<hypervisor> names the template, so new system VMs use it at once. One
// template's, zone's or pool's failure never stops the others: the result lists per template,
// zone and pool what is Ready and what failed and why. The run fails only when nothing could
// be done (no zone of any template became Ready); otherwise it completes with the failures in
// its result.
func TemplateRollout(ctx workflow.Context, in TemplateRolloutInput) (TemplateRolloutResult, error) {
	var res TemplateRolloutResult
	progress := Progress{Step: "plan"}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return progress, nil }); err != nil {
		return res, finishOperation(ctx, in.OperationID, res, err)
	}
	err := rollout(ctx, in, &res, &progress)
	if err == nil {
		progress.Step, progress.Done, progress.Percent = "done", progress.Total, 100
	}
	return res, finishOperation(ctx, in.OperationID, res, err)
}

func rollout(ctx workflow.Context, in TemplateRolloutInput, res *TemplateRolloutResult, progress *Progress) error {
	var plan activities.TemplatePlan
	if err := workflow.ExecuteActivity(withShortActivity(ctx), a.TemplatePlan, activities.TemplatePlanInput{TemplateIDs: in.TemplateIDs}).
		Get(ctx, &plan); err != nil {
		return fmt.Errorf("plan the rollout: %w", err)
	}
	res.Templates = make([]TemplateOutcome, len(plan.Templates))
	type unit struct{ t, z int }
	var units []unit
	for i, t := range plan.Templates {
		res.Templates[i] = TemplateOutcome{TemplateID: t.TemplateID, Name: t.Name, Hypervisor: t.Hypervisor, Error: t.Error,
			Zones: make([]ZoneOutcome, len(t.Zones))}
		for j := range t.Zones {
			units = append(units, unit{i, j})
		}
	}
	progress.Total = len(units)
	progress.Step = "roll out"
	progress.update()
	wg := workflow.NewWaitGroup(ctx)
	for _, u := range units {
		wg.Add(1)
		workflow.Go(ctx, func(gctx workflow.Context) {
			defer wg.Done()
			t := plan.Templates[u.t]
			res.Templates[u.t].Zones[u.z] = rolloutZone(gctx, in, t, t.Zones[u.z])
			progress.advance(t.Name + " in " + t.Zones[u.z].Zone + " done")
		})
	}
	wg.Wait(ctx)
	var failures []string
	for _, t := range res.Templates {
		if t.Error != "" {
			failures = append(failures, t.Name+t.TemplateID+": "+t.Error)
		}
		for _, z := range t.Zones {
			if z.Status == models.TemplateReady {
				res.Ready++
			} else {
				res.Failed++
				failures = append(failures, fmt.Sprintf("%s (%s) in zone %s: %s", t.Name, t.Hypervisor, z.Zone, z.Status))
			}
		}
	}
	if in.SetMinVersion && res.Ready > 0 && !in.NoSwitch {
		// The version of the first template that got Ready somewhere (templates of one release
		// share it).
		for _, t := range res.Templates {
			if !anyReady(t) {
				continue
			}
			var sw activities.TemplateSwitchResult
			if err := workflow.ExecuteActivity(withShortActivity(ctx), a.TemplateMinVersion, t.TemplateID).Get(ctx, &sw); err != nil {
				return fmt.Errorf("set minreq.sysvmtemplate.version: %w", err)
			}
			res.MinVersion = sw.Value
			break
		}
	}
	if res.Ready == 0 {
		return temporal.NewNonRetryableApplicationError("nothing could be rolled out: "+strings.Join(failures, "; "), "RolloutFailed", nil)
	}
	return nil
}

func anyReady(t TemplateOutcome) bool {
	for _, z := range t.Zones {
		if z.Status == models.TemplateReady {
			return true
		}
	}
	return false
}

// rolloutZone downloads, seeds every pool and switches one template in one zone; it never
// fails, it reports.
func rolloutZone(ctx workflow.Context, in TemplateRolloutInput, t activities.TemplatePlanItem, z activities.TemplateZonePlan) ZoneOutcome {
	out := ZoneOutcome{ZoneID: z.ZoneID, Zone: z.Zone, Pools: make([]PoolOutcome, len(z.Pools))}
	fail := func(poolID, reason string) {
		_ = workflow.ExecuteActivity(withShortActivity(ctx), a.TemplateRecordFailure, activities.TemplateFailureInput{
			TemplateID: t.TemplateID, ZoneID: z.ZoneID, PoolID: poolID, Reason: reason}).Get(ctx, nil)
	}
	dctx := withDownloadActivity(ctx)
	opts := workflow.GetActivityOptions(dctx)
	opts.Summary = "download " + t.Name + " into zone " + z.Zone
	var dl activities.TemplateDownloadResult
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(dctx, opts), a.TemplateDownload, activities.TemplateDownloadInput{
		OperationID: in.OperationID, TemplateID: t.TemplateID, ZoneID: z.ZoneID}).Get(ctx, &dl); err != nil {
		reason := cause(err)
		fail("", "download: "+reason)
		out.Status = models.TemplateFailed + ": download: " + reason
		for i, p := range z.Pools {
			out.Pools[i] = PoolOutcome{PoolID: p.PoolID, Pool: p.Name, State: "NotStarted", Error: "the download failed"}
		}
		return out
	}
	out.Downloaded, out.Resumed, out.SSVM = true, dl.Resumed, dl.SSVM

	futures := make([]workflow.Future, len(z.Pools))
	for i, p := range z.Pools {
		sctx := withSeedActivity(ctx)
		so := workflow.GetActivityOptions(sctx)
		so.Summary = "seed " + t.Name + " into " + p.Name
		futures[i] = workflow.ExecuteActivity(workflow.WithActivityOptions(sctx, so), a.TemplateSeedPool, activities.TemplateSeedInput{
			OperationID: in.OperationID, TemplateID: t.TemplateID, ZoneID: z.ZoneID, PoolID: p.PoolID,
			Path: dl.Path, Checksum: dl.Checksum})
	}
	ready := true
	var failed []string
	for i, p := range z.Pools {
		var sr activities.TemplateSeedResult
		if err := futures[i].Get(ctx, &sr); err != nil {
			reason := cause(err)
			fail(p.PoolID, reason)
			out.Pools[i] = PoolOutcome{PoolID: p.PoolID, Pool: p.Name, State: models.TemplateFailed, Error: reason}
			ready = false
			failed = append(failed, p.Name)
			continue
		}
		out.Pools[i] = PoolOutcome{PoolID: p.PoolID, Pool: p.Name, State: sr.State, Skipped: sr.Skipped}
	}
	if !ready {
		out.Status = fmt.Sprintf("%s: pools not seeded: %s (router.template not switched)", models.TemplateFailed, strings.Join(failed, ", "))
		fail("", strings.TrimPrefix(out.Status, models.TemplateFailed+": "))
		return out
	}
	if in.NoSwitch {
		out.Status = models.TemplateReady
		return out
	}
	poolIDs := make([]string, len(z.Pools))
	for i, p := range z.Pools {
		poolIDs[i] = p.PoolID
	}
	var sw activities.TemplateSwitchResult
	if err := workflow.ExecuteActivity(withShortActivity(ctx), a.TemplateSwitch, activities.TemplateSwitchInput{
		OperationID: in.OperationID, TemplateID: t.TemplateID, ZoneID: z.ZoneID, PoolIDs: poolIDs}).Get(ctx, &sw); err != nil {
		reason := cause(err)
		fail("", "switch: "+reason)
		out.Status = models.TemplateFailed + ": switch: " + reason
		return out
	}
	out.Status, out.Switched, out.Setting, out.Previous = models.TemplateReady, true, sw.Setting, sw.Previous
	if in.RollOn {
		rollOn(ctx, in, t, z, &out)
	}
	return out
}

// TemplateRollOnOperationID is the operation ID a rollout gives the recreate of one system VM:
// derived from the rollout's and the VM's IDs, so a replayed or retried rollout journals the
// same steps.
func TemplateRollOnOperationID(parentOperationID, vmID string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("sysvm:template.rollout:"+parentOperationID+"/"+vmID)).String()
}

// rollOn recreates the zone's SSVMs and CPVMs on the new template one at a time, each as a
// SystemVMLifecycle child through its contract (its own workflow ID, so it never overlaps
// another operation on that VM).
func rollOn(ctx workflow.Context, in TemplateRolloutInput, t activities.TemplatePlanItem, z activities.TemplateZonePlan, out *ZoneOutcome) {
	var vms []activities.TemplateRollOnVM
	if err := workflow.ExecuteActivity(withShortActivity(ctx), a.TemplateRollOnVMs, activities.TemplateRollOnInput{
		TemplateID: t.TemplateID, ZoneID: z.ZoneID}).Get(ctx, &vms); err != nil {
		out.RollOnError = "list system VMs: " + cause(err)
		return
	}
	for _, vm := range vms {
		opID := TemplateRollOnOperationID(in.OperationID, vm.ID)
		cctx := workflow.WithChildOptions(ctx, VMTarget(vm.ID, vm.Type, z.ZoneID, ActionRecreate.OperationKind()).
			ChildOptions(map[string]any{"operationId": opID, "target": vm.Name, "parentOperationId": in.OperationID}))
		var res LifecycleResult
		err := workflow.ExecuteChildWorkflow(cctx, LifecycleWorkflowName, LifecycleInput{OperationID: opID, VMID: vm.ID,
			Action: ActionRecreate, Reason: "template rollout to " + t.Name}).Get(ctx, &res)
		if err != nil {
			out.RollOnError = fmt.Sprintf("recreate %s: %s; the remaining system VMs are left as they are", vm.Name, cause(err))
			return
		}
		out.Recreated = append(out.Recreated, res)
		if res.State != models.StateRunning {
			out.RollOnError = fmt.Sprintf("recreate %s: it is %s afterwards, not Running; the remaining system VMs are left as they are", vm.Name, res.State)
			return
		}
	}
}

// cause is the activity's own words for why it failed.
func cause(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Error()
	}
	return err.Error()
}
