package workflows

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
)

// CertificateExpiryWorkflowName is the registered type of CertificateExpiryCheck.
const CertificateExpiryWorkflowName = "CertificateExpiryCheck"

// CertificateExpiryScheduleID is the Temporal Schedule of the expiry watch (also the
// workflow ID of its runs).
const CertificateExpiryScheduleID = "certificates:expiry"

// CertificateExpiryKind is the operation kind (search attribute) of the watch's runs.
const CertificateExpiryKind = "certificate.expiry"

// CertificateExpiryCheck checks every stored and served console proxy certificate against the
// expiry buffer and raises an alert for each one expiring within it or expired (once while
// the alert is open). A Temporal Schedule runs it every consoleproxy.certificate.check.interval
// minutes.
func CertificateExpiryCheck(ctx workflow.Context) ([]activities.CertExpiryFinding, error) {
	var out []activities.CertExpiryFinding
	err := workflow.ExecuteActivity(withShortActivity(ctx), a.CheckCertificateExpiry).Get(ctx, &out)
	return out, err
}

// SyncCertificateExpirySchedule creates or updates the expiry watch's schedule from
// consoleproxy.certificate.check.interval (minutes; 0 pauses it). Call it at worker start and
// after that setting changes; it is idempotent.
func SyncCertificateExpirySchedule(ctx context.Context, c client.Client, store *models.Store) (time.Duration, bool, error) {
	mins, err := store.Settings.Int(ctx, "consoleproxy.certificate.check.interval", models.Scope{})
	if err != nil {
		return 0, false, err
	}
	every, paused := time.Duration(mins)*time.Minute, mins == 0
	if paused {
		every = pausedPlaceholder
	}
	note := ""
	if paused {
		note = "consoleproxy.certificate.check.interval is 0"
	}
	t := ZoneTarget(CertificateExpiryScheduleID, "", CertificateExpiryKind)
	action := &client.ScheduleWorkflowAction{ID: CertificateExpiryScheduleID, Workflow: CertificateExpiryWorkflowName, TaskQueue: TaskQueue,
		WorkflowExecutionTimeout: 10 * time.Minute, TypedSearchAttributes: t.TypedSearchAttributes(),
		StaticSummary: "console proxy certificate expiry watch"}
	spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}}
	h := c.ScheduleClient().GetHandle(ctx, CertificateExpiryScheduleID)
	_, err = h.Describe(ctx)
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		_, err = c.ScheduleClient().Create(ctx, client.ScheduleOptions{ID: CertificateExpiryScheduleID, Spec: spec, Action: action,
			Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP, Paused: paused, Note: note, TypedSearchAttributes: t.TypedSearchAttributes()})
		if err == nil || !errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
			if err != nil {
				return 0, false, fmt.Errorf("create schedule %s: %w", CertificateExpiryScheduleID, err)
			}
			return every, paused, nil
		}
	} else if err != nil {
		return 0, false, fmt.Errorf("describe schedule %s: %w", CertificateExpiryScheduleID, err)
	}
	err = h.Update(ctx, client.ScheduleUpdateOptions{DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
		sched := in.Description.Schedule
		sched.Spec, sched.Action = &spec, action
		state := client.ScheduleState{}
		if sched.State != nil {
			state = *sched.State
		}
		state.Paused, state.Note = paused, note
		sched.State = &state
		return &client.ScheduleUpdate{Schedule: &sched}, nil
	}})
	if err != nil {
		return 0, false, fmt.Errorf("update schedule %s: %w", CertificateExpiryScheduleID, err)
	}
	return every, paused, nil
}
