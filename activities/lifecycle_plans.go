package activities

// Journaled recreate plans as a record of what is built but not yet the row's: a plan
// reserves its replacement's control address until its commit or the replacement's destroy is
// journaled (so two recreates never pick one address), and a replacement whose old VM was
// destroyed but whose commit never happened is found again (by the settle step, which commits
// it, and by the next recreate, which replaces it instead of orphaning it).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
)

// openPlan is a journaled recreate plan of an operation whose commit is not journaled.
type openPlan struct {
	OperationID string
	Plan        RecreatePlan
	// OldDestroyed: destroy-old is journaled (the replacement is all there is).
	OldDestroyed bool
}

// openPlanWindow bounds how far back open plans are looked for (the journal's completed_at
// index keeps the search short): a plan older than this is a run that ended long ago.
const openPlanWindow = 30 * 24 * time.Hour

// openPlans lists the journaled plans (of the last openPlanWindow) whose commit and
// destroy-replacement are both not journaled, newest first: replacements that may exist and
// are not the row's instance.
func openPlans(ctx context.Context, db *gorm.DB) ([]openPlan, error) {
	type row struct {
		OperationID  string
		Detail       string
		OldDestroyed bool
	}
	var rows []row
	err := db.WithContext(ctx).Raw(`SELECT p.operation_id AS operation_id, p.detail AS detail,
		EXISTS (SELECT 1 FROM operation_steps d WHERE d.operation_id = p.operation_id AND d.step = ?) AS old_destroyed
		FROM operation_steps p
		WHERE p.step = ? AND p.completed_at > ? AND NOT EXISTS (SELECT 1 FROM operation_steps c WHERE c.operation_id = p.operation_id AND c.step IN ?)
		ORDER BY p.completed_at DESC`,
		StepDestroyOld.JournalKey(), StepPrepare.JournalKey(), time.Now().UTC().Add(-openPlanWindow),
		[]string{StepCommit.JournalKey(), StepDestroyReplacement.JournalKey()}).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("open recreate plans: %w", err)
	}
	out := make([]openPlan, 0, len(rows))
	for _, r := range rows {
		var p RecreatePlan
		if json.Unmarshal([]byte(r.Detail), &p) != nil || p.InstanceName == "" {
			continue
		}
		out = append(out, openPlan{OperationID: r.OperationID, Plan: p, OldDestroyed: r.OldDestroyed})
	}
	return out, nil
}

// uncommittedReplacement finds the replacement an earlier recreate of vm built, switched to
// and left uncommitted (its commit failed after the old VM was destroyed): the row still names
// the destroyed instance.
func (a *Activities) uncommittedReplacement(ctx context.Context, vm *models.SystemVM) (openPlan, bool, error) {
	plans, err := openPlans(ctx, a.Store.DB)
	if err != nil {
		return openPlan{}, false, err
	}
	for _, op := range plans {
		if op.OldDestroyed && op.Plan.OldInstanceName == vm.HypervisorName() && op.Plan.InstanceName != vm.HypervisorName() {
			return op, true, nil
		}
	}
	return openPlan{}, false, nil
}

// commitUncommitted commits the replacement an earlier recreate left uncommitted, if it is on
// the hypervisor: the row then names it, and the commit is journaled under that operation.
func (a *Activities) commitUncommitted(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM) (RecreateResult, bool, error) {
	op, ok, err := a.uncommittedReplacement(ctx, vm)
	if err != nil || !ok {
		return RecreateResult{}, false, err
	}
	if _, err := d.GetVM(ctx, op.Plan.InstanceName); err != nil {
		if errors.Is(err, hypervisors.ErrNotFound) {
			return RecreateResult{}, false, nil
		}
		return RecreateResult{}, false, fmt.Errorf("inspect uncommitted replacement %s: %w", op.Plan.InstanceName, err)
	}
	res, err := a.commit(ctx, d, vm, op.Plan, op.OperationID)
	if err != nil {
		return RecreateResult{}, false, err
	}
	if err := a.markStep(ctx, op.OperationID, StepCommit.JournalKey(), res.Detail+" (committed later by operation repair)"); err != nil {
		return RecreateResult{}, false, err
	}
	return res, true, nil
}

// reservedControlIPs are the control addresses of open plans (replacements being built or
// built and not yet the row's), by path: link-local or private.
func reservedControlIPs(ctx context.Context, db *gorm.DB, linkLocal bool) (map[string]bool, error) {
	plans, err := openPlans(ctx, db)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, op := range plans {
		if op.Plan.LinkLocal == linkLocal && op.Plan.ControlIP != "" {
			out[op.Plan.ControlIP] = true
		}
	}
	return out, nil
}

// lockZone serializes control-address choices in one zone: on MariaDB a locking read of the
// zone row, held until tx ends; SQLite serializes writing transactions itself.
func (a *Activities) lockZone(tx *gorm.DB, zoneID string) error {
	if a.Store.Dialect() != "mysql" || zoneID == "" {
		return nil
	}
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Select("id").First(&models.Zone{}, "id = ?", zoneID).Error
	if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
		return fmt.Errorf("lock zone %s: %w", zoneID, err)
	}
	return nil
}
