package activities

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/sysvm/sysvm/models"
)

// storeOptions say how fresh results are merged into the stored last results.
type storeOptions struct {
	// countFailures increments ConsecutiveFailures of failed checks (scheduled runs); an
	// on-demand run leaves the counts of failed checks as they are (a pass still resets).
	countFailures bool
	// countedBy is the sweep key of the run (BatchInput.SweepKey): a failure is counted once
	// per key, so a retried batch of the same sweep does not count it again. "" counts every
	// call.
	countedBy string
	// onlyNewer keeps a stored result unless the fresh one is newer (a fetched results file
	// may hold the run that is already stored). connectivity.test is always merged this way,
	// so a retried batch of the same sweep does not count its failure twice.
	onlyNewer bool
	// fullTypes are the check types (basic, advanced) the fresh results are a complete run of:
	// stored results of those types that the run no longer has (an excluded check) are removed,
	// so healthchecksfailed never sticks on a check that is not run any more.
	fullTypes []string
	// excluded are the check names of router.health.checks.to.exclude: the agent does not run
	// them, and the platform's own (connectivity.test, a read-only push) are not kept either;
	// stored results of them are removed.
	excluded []string
}

// storedState is a router's stored results after a merge.
type storedState struct {
	results []models.HealthCheckResult
	failing []models.HealthCheckResult
	// newlyFailed: some check failed that had not failed before (an alert was raised).
	newlyFailed bool
	// recovered: the router had failing checks and has none now (its alerts were cleared).
	recovered bool
}

// timestampPrecision is what both databases keep of a timestamp (MySQL DATETIME(3)).
const timestampPrecision = time.Millisecond

// maxDetails bounds the details kept per check.
const maxDetails = 4096

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len(" …")
	for cut > 0 && !utf8Start(s[cut]) {
		cut--
	}
	return s[:cut] + " …"
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// storeResults merges fresh results into the router's last results, keeps its
// healthchecksfailed flag true exactly when one of them failed, and raises one alert and one
// event naming every failing check with its details when a check newly fails (and clears the
// router's health alerts when none fails any more), all in one transaction.
func (h *Health) storeResults(ctx context.Context, vm models.SystemVM, fresh []models.HealthCheckResult, opt storeOptions) (storedState, error) {
	var out storedState
	err := h.Store.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		out = storedState{}
		var prev []models.HealthCheckResult
		if err := tx.Where("router_id = ?", vm.ID).Find(&prev).Error; err != nil {
			return fmt.Errorf("read results of %s: %w", vm.Name, err)
		}
		state := make(map[string]models.HealthCheckResult, len(prev)+len(fresh))
		// A recreated router has no results yet but still carries its flag and open alert.
		prevFailed := vm.HealthChecksFailed
		for _, p := range prev {
			state[p.CheckName] = p
			prevFailed = prevFailed || !p.Success
		}
		var upserts []models.HealthCheckResult
		var dropped []string
		for name := range state {
			if slices.Contains(opt.excluded, name) {
				dropped = append(dropped, name)
			}
		}
		if len(dropped) > 0 {
			if err := tx.Where("router_id = ? AND check_name IN ?", vm.ID, dropped).Delete(&models.HealthCheckResult{}).Error; err != nil {
				return fmt.Errorf("remove results of excluded checks of %s: %w", vm.Name, err)
			}
			for _, name := range dropped {
				delete(state, name)
			}
		}
		for _, r := range fresh {
			if slices.Contains(opt.excluded, r.CheckName) {
				continue
			}
			r.RouterID = vm.ID
			r.LastUpdated = r.LastUpdated.UTC().Truncate(timestampPrecision)
			r.Details = clip(r.Details, maxDetails)
			p, had := state[r.CheckName]
			if had && (opt.onlyNewer || r.CheckName == CheckConnectivity) && !r.LastUpdated.After(p.LastUpdated) {
				continue
			}
			switch {
			case r.Success:
				r.ConsecutiveFailures, r.FailureCountedBy = 0, ""
			case opt.countFailures && had && opt.countedBy != "" && p.FailureCountedBy == opt.countedBy:
				// This sweep counted the failure already (its batch is being retried).
				r.ConsecutiveFailures, r.FailureCountedBy = p.ConsecutiveFailures, p.FailureCountedBy
			case opt.countFailures:
				r.ConsecutiveFailures, r.FailureCountedBy = p.ConsecutiveFailures+1, opt.countedBy
			default:
				r.ConsecutiveFailures, r.FailureCountedBy = p.ConsecutiveFailures, p.FailureCountedBy
			}
			if !r.Success && (!had || p.Success) {
				out.newlyFailed = true
			}
			state[r.CheckName] = r
			upserts = slices.DeleteFunc(upserts, func(u models.HealthCheckResult) bool { return u.CheckName == r.CheckName })
			upserts = append(upserts, r)
		}
		for _, typ := range opt.fullTypes {
			keep := []string{CheckConnectivity}
			for _, r := range fresh {
				if r.CheckType == typ {
					keep = append(keep, r.CheckName)
				}
			}
			var gone []string
			for name, r := range state {
				if r.CheckType == typ && !slices.Contains(keep, name) {
					gone = append(gone, name)
				}
			}
			if len(gone) > 0 {
				if err := tx.Where("router_id = ? AND check_name IN ?", vm.ID, gone).Delete(&models.HealthCheckResult{}).Error; err != nil {
					return fmt.Errorf("remove results of checks %s no longer runs: %w", vm.Name, err)
				}
				for _, name := range gone {
					delete(state, name)
				}
			}
		}
		if len(upserts) > 0 {
			err := tx.Clauses(clause.OnConflict{
				Columns:   []clause.Column{{Name: "router_id"}, {Name: "check_name"}},
				DoUpdates: clause.AssignmentColumns([]string{"check_type", "success", "last_updated", "details", "consecutive_failures", "failure_counted_by"}),
			}).Create(&upserts).Error
			if err != nil {
				return fmt.Errorf("store results of %s: %w", vm.Name, err)
			}
		}
		for _, r := range state {
			out.results = append(out.results, r)
			if !r.Success {
				out.failing = append(out.failing, r)
			}
		}
		sortResults(out.results)
		sortResults(out.failing)
		failed := len(out.failing) > 0
		if err := tx.Model(&models.SystemVM{}).Where("id = ? AND health_checks_failed <> ?", vm.ID, failed).
			Update("health_checks_failed", failed).Error; err != nil {
			return fmt.Errorf("record healthchecksfailed of %s: %w", vm.Name, err)
		}
		if !failed {
			out.newlyFailed = false
		}
		if out.newlyFailed {
			desc := failureDescription(vm, out.failing)
			names := checkNames(out.failing)
			if err := tx.Create(&models.Alert{Type: AlertHealthChecks, Severity: "WARN",
				Subject:     clip(fmt.Sprintf("Health checks failed on router %s: %s", vm.Name, strings.Join(names, ", ")), 512),
				Description: desc, ResourceType: ResourceRouter, ResourceID: vm.ID, ZoneID: vm.ZoneID}).Error; err != nil {
				return fmt.Errorf("raise health alert for %s: %w", vm.Name, err)
			}
			if err := tx.Create(&models.Event{Type: EventHealthChecks, Level: "WARN", Description: desc,
				ResourceType: ResourceRouter, ResourceID: vm.ID, ZoneID: vm.ZoneID}).Error; err != nil {
				return fmt.Errorf("record health event for %s: %w", vm.Name, err)
			}
		}
		if prevFailed && !failed {
			out.recovered = true
			now := time.Now().UTC()
			if err := tx.Model(&models.Alert{}).Where("type = ? AND resource_id = ? AND cleared_at IS NULL", AlertHealthChecks, vm.ID).
				Update("cleared_at", &now).Error; err != nil {
				return fmt.Errorf("clear health alerts of %s: %w", vm.Name, err)
			}
			if err := tx.Create(&models.Event{Type: EventHealthChecks, Level: "INFO",
				Description:  fmt.Sprintf("All health checks of router %s (%s) pass again", vm.Name, vm.ID),
				ResourceType: ResourceRouter, ResourceID: vm.ID, ZoneID: vm.ZoneID}).Error; err != nil {
				return fmt.Errorf("record health event for %s: %w", vm.Name, err)
			}
		}
		return nil
	})
	return out, err
}

func sortResults(rs []models.HealthCheckResult) {
	slices.SortFunc(rs, func(a, b models.HealthCheckResult) int {
		if c := strings.Compare(a.CheckType, b.CheckType); c != 0 {
			return c
		}
		return strings.Compare(a.CheckName, b.CheckName)
	})
}

func checkNames(rs []models.HealthCheckResult) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.CheckName)
	}
	return out
}

// failureDescription names every failing check with its type, how many runs in a row it
// failed, and its details.
func failureDescription(vm models.SystemVM, failing []models.HealthCheckResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Router %s (%s) has %d failing health check(s): %s", vm.Name, vm.ID, len(failing),
		strings.Join(checkNames(failing), ", "))
	for _, r := range failing {
		fmt.Fprintf(&b, "\n- %s (%s", r.CheckName, r.CheckType)
		if r.ConsecutiveFailures > 1 {
			fmt.Fprintf(&b, ", failed %d runs in a row", r.ConsecutiveFailures)
		}
		fmt.Fprintf(&b, "): %s", clip(r.Details, 1024))
	}
	return b.String()
}

// recreateCandidate returns the recreate-listed check (exact name) of a router that failed at
// least n runs in a row, the one with the most failures first, and whether the router fails a
// recreate-listed check at all.
func recreateCandidate(results []models.HealthCheckResult, recreate []string, n int) (best models.HealthCheckResult, found, failing bool) {
	for _, r := range results {
		if r.Success || !slices.Contains(recreate, r.CheckName) {
			continue
		}
		failing = true
		if r.ConsecutiveFailures >= n && (!found || r.ConsecutiveFailures > best.ConsecutiveFailures) {
			best, found = r, true
		}
	}
	return best, found, failing
}
