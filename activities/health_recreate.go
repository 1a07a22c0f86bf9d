package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/sysvm/sysvm/models"
)

// OperationKindRecreate is the operation kind of a recreation (workflows.ActionRecreate).
const OperationKindRecreate = "systemvm.recreate"

// recreationStaleAfter: a recreation still "running" in the journal after this long no longer
// holds one of the zone's recreation slots (its run was lost without recording its end).
const recreationStaleAfter = 2 * time.Hour

// CircuitBreakerTripped reports whether too many of a zone's routers fail a recreate-listed
// check at once: more than percent of the routers, and at least two (one router failing is
// never "too many at once", whatever the size of the zone).
func CircuitBreakerTripped(routers, failing, percent int) bool {
	return routers > 0 && failing >= 2 && failing*100 > percent*routers
}

// RecreationOperationID is the operation ID of a sweep's recreation of a router: the same on
// every retry of the sweep's plan, so the plan is idempotent.
func RecreationOperationID(sweepID, routerID string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("sysvm:health-recreate:"+sweepID+":"+routerID)).String()
}

// PlanInput is a sweep's end: what it saw and its recreation candidates.
type PlanInput struct {
	ZoneID string `json:"zoneId"`
	// SweepID names the sweep (workflow ID and first run ID), for operation IDs.
	SweepID string     `json:"sweepId"`
	Kind    HealthKind `json:"kind"`
	// Routers the sweep visited; RecreateFailing of them fail a recreate-listed check.
	Routers         int           `json:"routers"`
	RecreateFailing int           `json:"recreateFailing"`
	Candidates      []Candidate   `json:"candidates,omitempty"`
	Settings        SweepSettings `json:"settings"`
	// WorkflowIDPrefix makes a recreation's workflow ID from the router ID
	// (workflows.LifecycleWorkflowID: "systemvm:").
	WorkflowIDPrefix string `json:"workflowIdPrefix"`
}

// PlannedRecreation is a recreation to start: its operation is journaled (status running,
// requested by health-checks) and counted in the zone's slots and the router's window.
type PlannedRecreation struct {
	OperationID string `json:"operationId"`
	RouterID    string `json:"routerId"`
	RouterName  string `json:"routerName"`
	Check       string `json:"check"`
	Failures    int    `json:"failures"`
	WorkflowID  string `json:"workflowId"`
	Reason      string `json:"reason"`
}

// PlanResult says what the sweep's end decided.
type PlanResult struct {
	// BreakerTripped: too many routers fail at once; nothing is recreated (an alert is open).
	BreakerTripped bool                `json:"breakerTripped"`
	Recreate       []PlannedRecreation `json:"recreate,omitempty"`
	// Refused hit router.health.checks.recreate.limit (an alert is open for each).
	Refused []Candidate `json:"refused,omitempty"`
	// Deferred found no free recreation slot in the zone; they are candidates again next sweep.
	Deferred int `json:"deferred"`
	// Busy routers have another operation running.
	Busy int `json:"busy"`
	// PeerBusy are routers of a redundant pair whose peer is being recreated or has an
	// operation running: the pair is never down together, the peer keeps serving.
	PeerBusy int `json:"peerBusy"`
}

// redundantPeers maps each redundant router among ids to the other routers of its network or
// VPC.
func redundantPeers(tx *gorm.DB, ids []string) (map[string][]string, error) {
	var vms []models.SystemVM
	if err := tx.Where("id IN ? AND is_redundant = ?", ids, true).Find(&vms).Error; err != nil {
		return nil, fmt.Errorf("load redundant candidates: %w", err)
	}
	out := map[string][]string{}
	for _, vm := range vms {
		q := tx.Model(&models.SystemVM{}).Where("type = ? AND id <> ? AND state <> ?", models.TypeRouter, vm.ID, models.StateDestroyed)
		switch {
		case vm.VPCID != "":
			q = q.Where("vpc_id = ?", vm.VPCID)
		case vm.NetworkID != "":
			q = q.Where("network_id = ?", vm.NetworkID)
		default:
			continue
		}
		var peers []string
		if err := q.Pluck("id", &peers).Error; err != nil {
			return nil, fmt.Errorf("peers of %s: %w", vm.Name, err)
		}
		out[vm.ID] = peers
	}
	return out, nil
}

// HealthPlanRecreations applies the recreation rules at the end of a sweep: the circuit breaker
// (too many routers failing at once: alert, recreate nothing; cleared when the zone is back
// under it), the limit of recreations per router and check within the window (alert, no
// recreation), and the zone's concurrent recreations (router.health.checks.max.concurrent.
// recreations, counting health recreations still running from earlier sweeps); a router with
// an operation running is skipped, and so is a router of a redundant pair whose peer is being
// recreated or acted on, so the peer keeps serving. For each
// recreation it allows it journals the Operation (requested by health-checks) and a
// HealthRecreation row, in one transaction with the zone locked, so sweeps of the same zone
// never exceed the limit together. Retrying it returns the same plan.
func (h *Health) HealthPlanRecreations(ctx context.Context, in PlanInput) (PlanResult, error) {
	var out PlanResult
	err := h.Store.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		out = PlanResult{}
		now := time.Now().UTC()
		if CircuitBreakerTripped(in.Routers, in.RecreateFailing, in.Settings.CircuitBreakerPercent) {
			out.BreakerTripped = true
			return h.tripBreaker(tx, in)
		}
		if err := h.resetBreaker(tx, in.ZoneID, now); err != nil {
			return err
		}
		if len(in.Candidates) == 0 {
			return nil
		}
		// Serialise the zone's plans (MySQL; SQLite transactions are serial already).
		var zone models.Zone
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", in.ZoneID).Take(&zone).Error; err != nil &&
			!errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("lock zone %s: %w", in.ZoneID, err)
		}
		var running int64
		if err := tx.Model(&models.Operation{}).Where("kind = ? AND requested_by = ? AND zone_id = ? AND status = ? AND created_at >= ?",
			OperationKindRecreate, RequestedByHealthChecks, in.ZoneID, models.OpRunning, now.Add(-recreationStaleAfter)).
			Count(&running).Error; err != nil {
			return fmt.Errorf("count running recreations of zone %s: %w", in.ZoneID, err)
		}
		ids := make([]string, 0, len(in.Candidates))
		ours := map[string]bool{}
		for _, c := range in.Candidates {
			ids = append(ids, c.RouterID)
			ours[RecreationOperationID(in.SweepID, c.RouterID)] = true
		}
		peers, err := redundantPeers(tx, ids)
		if err != nil {
			return err
		}
		targets := append([]string(nil), ids...)
		for _, ps := range peers {
			targets = append(targets, ps...)
		}
		var busyOps []models.Operation
		if err := tx.Where("target_id IN ? AND status = ?", targets, models.OpRunning).Find(&busyOps).Error; err != nil {
			return fmt.Errorf("running operations of candidates: %w", err)
		}
		recreating := map[string]bool{}
		busy := map[string]bool{}
		planned := map[string]bool{}
		for _, op := range busyOps {
			if ours[op.ID] {
				planned[op.ID] = true
			} else if op.CreatedAt.After(now.Add(-recreationStaleAfter)) {
				busy[op.TargetID] = true
			}
		}
		window := time.Duration(in.Settings.RecreateWindowMinutes) * time.Minute
		for _, c := range in.Candidates {
			opID := RecreationOperationID(in.SweepID, c.RouterID)
			p := PlannedRecreation{OperationID: opID, RouterID: c.RouterID, RouterName: c.RouterName, Check: c.Check,
				Failures: c.Failures, WorkflowID: in.WorkflowIDPrefix + c.RouterID,
				Reason: fmt.Sprintf("health check %s failed %d consecutive runs: %s", c.Check, c.Failures, clip(c.Details, 300))}
			if planned[opID] {
				out.Recreate = append(out.Recreate, p)
				recreating[c.RouterID] = true
				continue
			}
			if busy[c.RouterID] {
				out.Busy++
				continue
			}
			if slices.ContainsFunc(peers[c.RouterID], func(id string) bool { return busy[id] || recreating[id] }) {
				out.PeerBusy++
				continue
			}
			var recent int64
			if err := tx.Model(&models.HealthRecreation{}).Where("router_id = ? AND check_name = ? AND created_at >= ?",
				c.RouterID, c.Check, now.Add(-window)).Count(&recent).Error; err != nil {
				return fmt.Errorf("count recreations of %s: %w", c.RouterName, err)
			}
			if int(recent) >= in.Settings.RecreateLimit {
				out.Refused = append(out.Refused, c)
				if err := h.refuseRecreation(tx, in, c, int(recent), now); err != nil {
					return err
				}
				continue
			}
			if int(running) >= in.Settings.MaxConcurrentRecreations {
				out.Deferred++
				continue
			}
			op := models.Operation{Base: models.Base{ID: opID}, Kind: OperationKindRecreate, TargetType: "router",
				TargetID: c.RouterID, ZoneID: in.ZoneID, WorkflowID: p.WorkflowID, Status: models.OpRunning,
				RequestedBy: RequestedByHealthChecks}
			if err := tx.Create(&op).Error; err != nil {
				return fmt.Errorf("journal recreation of %s: %w", c.RouterName, err)
			}
			if err := tx.Create(&models.HealthRecreation{OperationID: opID, RouterID: c.RouterID, CheckName: c.Check,
				ZoneID: in.ZoneID, Failures: c.Failures}).Error; err != nil {
				return fmt.Errorf("record recreation of %s: %w", c.RouterName, err)
			}
			if err := tx.Create(&models.Event{Type: EventRecreate, Level: "WARN", ResourceType: ResourceRouter,
				ResourceID: c.RouterID, ZoneID: in.ZoneID, OperationID: opID,
				Description: fmt.Sprintf("Recreating router %s (restartNetwork cleanup=true path): %s", c.RouterName, p.Reason)}).Error; err != nil {
				return fmt.Errorf("record recreation event of %s: %w", c.RouterName, err)
			}
			running++
			recreating[c.RouterID] = true
			out.Recreate = append(out.Recreate, p)
		}
		return nil
	})
	return out, err
}

// tripBreaker raises the zone's circuit breaker alert and event, once while it stays open.
func (h *Health) tripBreaker(tx *gorm.DB, in PlanInput) error {
	var open int64
	if err := tx.Model(&models.Alert{}).Where("type = ? AND zone_id = ? AND cleared_at IS NULL", AlertCircuitBreaker, in.ZoneID).
		Count(&open).Error; err != nil {
		return fmt.Errorf("read circuit breaker alerts of zone %s: %w", in.ZoneID, err)
	}
	if open > 0 {
		return nil
	}
	var names []string
	for i, c := range in.Candidates {
		if i == 10 {
			names = append(names, fmt.Sprintf("and %d more", len(in.Candidates)-10))
			break
		}
		names = append(names, c.RouterName+" ("+c.Check+")")
	}
	desc := fmt.Sprintf("%d of the %d routers of zone %s fail a check of router.health.checks.failures.to.recreate.vr at once "+
		"(more than router.health.checks.circuit.breaker.percent = %d%%): this is the network or the checks, not the routers. "+
		"No router of the zone is recreated until fewer fail.", in.RecreateFailing, in.Routers, in.ZoneID, in.Settings.CircuitBreakerPercent)
	if len(names) > 0 {
		desc += " Routers that would have been recreated: " + strings.Join(names, ", ") + "."
	}
	if err := tx.Create(&models.Alert{Type: AlertCircuitBreaker, Severity: "CRITICAL", ResourceType: ResourceZone,
		ResourceID: in.ZoneID, ZoneID: in.ZoneID,
		Subject:     clip(fmt.Sprintf("Router recreation stopped in zone %s: %d of %d routers failing at once", in.ZoneID, in.RecreateFailing, in.Routers), 512),
		Description: desc}).Error; err != nil {
		return fmt.Errorf("raise circuit breaker alert: %w", err)
	}
	return tx.Create(&models.Event{Type: AlertCircuitBreaker, Level: "ERROR", ResourceType: ResourceZone,
		ResourceID: in.ZoneID, ZoneID: in.ZoneID, Description: desc}).Error
}

// resetBreaker clears the zone's open circuit breaker alert.
func (h *Health) resetBreaker(tx *gorm.DB, zoneID string, now time.Time) error {
	res := tx.Model(&models.Alert{}).Where("type = ? AND zone_id = ? AND cleared_at IS NULL", AlertCircuitBreaker, zoneID).
		Update("cleared_at", &now)
	if res.Error != nil {
		return fmt.Errorf("clear circuit breaker alert of zone %s: %w", zoneID, res.Error)
	}
	if res.RowsAffected > 0 {
		return tx.Create(&models.Event{Type: AlertCircuitBreaker, Level: "INFO", ResourceType: ResourceZone,
			ResourceID: zoneID, ZoneID: zoneID,
			Description: fmt.Sprintf("Router recreation in zone %s resumes: fewer routers fail at once", zoneID)}).Error
	}
	return nil
}

// refuseRecreation raises the alert of a router recreated too often for one check, once per
// router and check while it stays open within the window.
func (h *Health) refuseRecreation(tx *gorm.DB, in PlanInput, c Candidate, recent int, now time.Time) error {
	subject := clip(fmt.Sprintf("Router %s is no longer recreated for %s: recreated %d times within %d minutes",
		c.RouterName, c.Check, recent, in.Settings.RecreateWindowMinutes), 512)
	window := time.Duration(in.Settings.RecreateWindowMinutes) * time.Minute
	var open int64
	if err := tx.Model(&models.Alert{}).Where("type = ? AND resource_id = ? AND cleared_at IS NULL AND created_at >= ? AND subject LIKE ?",
		AlertRecreateLimit, c.RouterID, now.Add(-window), "%for "+c.Check+":%").Count(&open).Error; err != nil {
		return fmt.Errorf("read recreate limit alerts of %s: %w", c.RouterName, err)
	}
	if open > 0 {
		return nil
	}
	desc := fmt.Sprintf("Router %s (%s) was recreated %d times within %d minutes for the failing health check %s "+
		"(router.health.checks.recreate.limit = %d) and it still fails (%d runs in a row): recreating it again does not help. "+
		"Look at the router and the check; it is recreated again for this check once the window has passed. Last details: %s",
		c.RouterName, c.RouterID, recent, in.Settings.RecreateWindowMinutes, c.Check, in.Settings.RecreateLimit, c.Failures, c.Details)
	if err := tx.Create(&models.Alert{Type: AlertRecreateLimit, Severity: "CRITICAL", ResourceType: ResourceRouter,
		ResourceID: c.RouterID, ZoneID: in.ZoneID, Subject: subject, Description: desc}).Error; err != nil {
		return fmt.Errorf("raise recreate limit alert for %s: %w", c.RouterName, err)
	}
	return tx.Create(&models.Event{Type: AlertRecreateLimit, Level: "ERROR", ResourceType: ResourceRouter,
		ResourceID: c.RouterID, ZoneID: in.ZoneID, Description: desc}).Error
}

// HealthRecreationStarted records the run ID of a started recreation on its operation.
func (h *Health) HealthRecreationStarted(ctx context.Context, operationID, runID string) error {
	return h.Store.DB.WithContext(ctx).Model(&models.Operation{}).Where("id = ?", operationID).
		Update("run_id", runID).Error
}

// HealthReleaseRecreation forgets a planned recreation that did not start (another operation
// took the router's workflow ID first): its journal row and its count in the window go.
func (h *Health) HealthReleaseRecreation(ctx context.Context, operationID, reason string) error {
	return h.Store.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var hr models.HealthRecreation
		if err := tx.Where("operation_id = ?", operationID).Take(&hr).Error; err == nil {
			h.log().Info("health recreation not started", "router", hr.RouterID, "check", hr.CheckName, "reason", reason)
		}
		if err := tx.Where("operation_id = ?", operationID).Delete(&models.HealthRecreation{}).Error; err != nil {
			return fmt.Errorf("release recreation %s: %w", operationID, err)
		}
		if err := tx.Where("operation_id = ?", operationID).Delete(&models.Event{}).Error; err != nil {
			return fmt.Errorf("release recreation %s: %w", operationID, err)
		}
		return tx.Where("id = ? AND status = ?", operationID, models.OpRunning).Delete(&models.Operation{}).Error
	})
}
