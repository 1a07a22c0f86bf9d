package activities

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/models"
)

// HealthSweepSettings reads a zone's health check sweep settings.
func (h *Health) HealthSweepSettings(ctx context.Context, zoneID string) (SweepSettings, error) {
	return readSweepSettings(ctx, h.Store.Settings, zoneID)
}

// ListRoutersInput asks for one page of a zone's running routers, by ID order.
type ListRoutersInput struct {
	ZoneID string `json:"zoneId"`
	// After is the last ID of the previous page ("" for the first).
	After string `json:"after,omitempty"`
	Limit int    `json:"limit"`
}

// RouterPage is a page of router IDs; Done when it is the last.
type RouterPage struct {
	IDs  []string `json:"ids"`
	Done bool     `json:"done"`
}

// MaxRouterPage bounds a page of router IDs (about 37 bytes each in the workflow history).
const MaxRouterPage = 5000

// HealthListRouters lists the IDs of a zone's running routers after a cursor. Only IDs travel
// through the workflow history; batches load the rows themselves.
func (h *Health) HealthListRouters(ctx context.Context, in ListRoutersInput) (RouterPage, error) {
	limit := min(max(in.Limit, 1), MaxRouterPage)
	var ids []string
	q := h.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).
		Where("type = ? AND zone_id = ? AND state = ?", models.TypeRouter, in.ZoneID, models.StateRunning)
	if in.After != "" {
		q = q.Where("id > ?", in.After)
	}
	if err := q.Order("id").Limit(limit).Pluck("id", &ids).Error; err != nil {
		return RouterPage{}, fmt.Errorf("list running routers of zone %s: %w", in.ZoneID, err)
	}
	return RouterPage{IDs: ids, Done: len(ids) < limit}, nil
}

// BatchInput asks for one kind of health task on a batch of routers.
type BatchInput struct {
	ZoneID    string     `json:"zoneId"`
	Kind      HealthKind `json:"kind"`
	RouterIDs []string   `json:"routerIds"`
	// Parallel routers are visited at once (default 16).
	Parallel int `json:"parallel"`
	// At is the sweep's time: it stamps connectivity.test, so a retried batch records it once.
	At       time.Time     `json:"at"`
	Settings SweepSettings `json:"settings"`
	// SweepKey names the sweep and kind (SweepKey()): a check's failure is counted into its
	// consecutive failures once per key, so a retried batch counts it once. Empty (batches
	// scheduled before the key existed): the activity's workflow and run ID and the kind.
	SweepKey string `json:"sweepKey,omitempty"`
}

// SweepKey is the key a sweep counts failures under: its workflow ID and first run ID (the
// same across continue-as-new) and the kind.
func SweepKey(workflowID, firstRunID string, kind HealthKind) string {
	return workflowID + "/" + firstRunID + "/" + string(kind)
}

// Candidate is a router that failed a recreate-listed check in enough consecutive runs.
type Candidate struct {
	RouterID   string `json:"routerId"`
	RouterName string `json:"routerName"`
	Check      string `json:"check"`
	Failures   int    `json:"failures"`
	Details    string `json:"details,omitempty"`
}

// BatchSummary is the compact answer of a batch: counts, a few error samples and the
// recreation candidates; the results themselves are in the database.
type BatchSummary struct {
	// Routers is how many routers of the batch were visited (still running routers).
	Routers int `json:"routers"`
	// Reachable answered over SSH; Unreachable did not (connectivity.test failed).
	Reachable   int `json:"reachable"`
	Unreachable int `json:"unreachable"`
	// Failing routers have some failing check after this batch; RecreateFailing fail a
	// recreate-listed check (they count for the circuit breaker).
	Failing         int `json:"failing"`
	RecreateFailing int `json:"recreateFailing"`
	// NewlyFailed raised an alert; Recovered had their alerts cleared.
	NewlyFailed int `json:"newlyFailed"`
	Recovered   int `json:"recovered"`
	// Errors are platform-side failures (no access path, an agent error).
	Errors       int         `json:"errors"`
	ErrorSamples []string    `json:"errorSamples,omitempty"`
	Candidates   []Candidate `json:"candidates,omitempty"`
}

// maxErrorSamples bounds the error messages a summary carries.
const maxErrorSamples = 5

// Add merges another summary into s (error samples stay bounded).
func (s *BatchSummary) Add(o BatchSummary) {
	s.Routers += o.Routers
	s.Reachable += o.Reachable
	s.Unreachable += o.Unreachable
	s.Failing += o.Failing
	s.RecreateFailing += o.RecreateFailing
	s.NewlyFailed += o.NewlyFailed
	s.Recovered += o.Recovered
	s.Errors += o.Errors
	for _, e := range o.ErrorSamples {
		if len(s.ErrorSamples) < maxErrorSamples {
			s.ErrorSamples = append(s.ErrorSamples, e)
		}
	}
	s.Candidates = append(s.Candidates, o.Candidates...)
}

// batchProgress is a batch's heartbeat: which routers are done and what they gave, so a retried
// batch does not visit them again.
type batchProgress struct {
	Done    []bool       `json:"done"`
	Summary BatchSummary `json:"summary"`
}

func (p batchProgress) clone() batchProgress {
	c := p
	c.Done = slices.Clone(p.Done)
	c.Summary.ErrorSamples = slices.Clone(p.Summary.ErrorSamples)
	c.Summary.Candidates = slices.Clone(p.Summary.Candidates)
	return c
}

// DefaultBatchParallel is how many routers one batch visits at once when the input says 0.
const DefaultBatchParallel = 16

// HealthCheckBatch does one kind of health task on a batch of routers, Parallel at a time:
// pushes the configuration (config), runs the checks (basic, advanced) or reads the last results
// files (fetch), stores the results, raises alerts, and answers with a compact summary and the
// recreation candidates. It heartbeats after every router; a retry skips the routers done.
func (h *Health) HealthCheckBatch(ctx context.Context, in BatchInput) (BatchSummary, error) {
	if h.Exec == nil {
		return BatchSummary{}, fmt.Errorf("health checks: no SSH executor configured")
	}
	var vms []models.SystemVM
	if err := h.Store.DB.WithContext(ctx).Where("id IN ? AND type = ?", in.RouterIDs, models.TypeRouter).
		Find(&vms).Error; err != nil {
		return BatchSummary{}, fmt.Errorf("load routers of batch: %w", err)
	}
	byID := make(map[string]models.SystemVM, len(vms))
	for _, vm := range vms {
		byID[vm.ID] = vm
	}
	prog := batchProgress{Done: make([]bool, len(in.RouterIDs))}
	if activity.IsActivity(ctx) && activity.HasHeartbeatDetails(ctx) {
		var p batchProgress
		if err := activity.GetHeartbeatDetails(ctx, &p); err == nil && len(p.Done) == len(in.RouterIDs) {
			prog = p
		}
	}
	if in.SweepKey == "" && activity.IsActivity(ctx) {
		info := activity.GetInfo(ctx)
		in.SweepKey = SweepKey(info.WorkflowExecution.ID, info.WorkflowExecution.RunID, in.Kind)
	}
	cs, err := readCheckSettings(ctx, h.Store.Settings, in.ZoneID)
	if err != nil {
		return BatchSummary{}, err
	}
	cfgFor := func(vm models.SystemVM) func() (agent.Config, error) {
		return func() (agent.Config, error) { return h.configFor(ctx, vm, cs) }
	}
	parallel := in.Parallel
	if parallel <= 0 {
		parallel = DefaultBatchParallel
	}
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	if activity.IsActivity(ctx) {
		// One router may take a while (connect and run timeouts): heartbeat on a clock too.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(5 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				case <-t.C:
					mu.Lock()
					activity.RecordHeartbeat(ctx, prog.clone())
					mu.Unlock()
				}
			}
		}()
	}
	for i, id := range in.RouterIDs {
		if prog.Done[i] {
			continue
		}
		vm, ok := byID[id]
		if !ok || vm.State != models.StateRunning {
			// Gone or no longer running since the listing: nothing to check.
			mu.Lock()
			prog.Done[i] = true
			mu.Unlock()
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			sum, err := h.checkRouter(ctx, vm, in, cs.exclude, cfgFor(vm))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			prog.Done[i] = true
			prog.Summary.Add(sum)
			if activity.IsActivity(ctx) {
				activity.RecordHeartbeat(ctx, prog.clone())
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return BatchSummary{}, firstErr
	}
	if err := ctx.Err(); err != nil {
		return BatchSummary{}, err
	}
	return prog.Summary, nil
}

// checkRouter visits one router and stores what it gave; an error means the batch must stop
// (the context ended, or the database failed).
func (h *Health) checkRouter(ctx context.Context, vm models.SystemVM, in BatchInput, exclude []string, cfg func() (agent.Config, error)) (BatchSummary, error) {
	var sum BatchSummary
	sum.Routers = 1
	c, err := h.visit(ctx, vm, in.Kind, in.At, cfg)
	if err != nil {
		return sum, err
	}
	if c.err != nil {
		sum.Errors = 1
		sum.ErrorSamples = []string{c.err.Error()}
		h.log().Warn("health check of router failed on the platform side", "router", vm.Name, "kind", in.Kind, "error", c.err)
	}
	if len(c.results) > 0 || c.reachable {
		if c.reachable {
			sum.Reachable = 1
		} else {
			sum.Unreachable = 1
		}
	}
	if len(c.results) == 0 {
		return sum, nil
	}
	st, err := h.storeResults(ctx, vm, c.results, storeOptions{countFailures: true, countedBy: in.SweepKey, onlyNewer: in.Kind == HealthFetch,
		fullTypes: c.fullTypes, excluded: exclude})
	if err != nil {
		return sum, err
	}
	if len(st.failing) > 0 {
		sum.Failing = 1
	}
	if st.newlyFailed {
		sum.NewlyFailed = 1
	}
	if st.recovered {
		sum.Recovered = 1
	}
	// Only the checks this visit ran (or read) decide recreation: a stored result it did not
	// refresh may describe the VM as it was before a recreation (an advanced or fetch sweep
	// right after one still holds the old VM's basic failure) and must not recreate it again.
	ran := make(map[string]bool, len(c.results))
	for _, r := range c.results {
		ran[r.CheckName] = true
	}
	current := slices.DeleteFunc(slices.Clone(st.results), func(r models.HealthCheckResult) bool { return !ran[r.CheckName] })
	best, found, failing := recreateCandidate(current, in.Settings.RecreateChecks, in.Settings.FailuresBeforeRecreate)
	if failing {
		sum.RecreateFailing = 1
	}
	if found {
		sum.Candidates = []Candidate{{RouterID: vm.ID, RouterName: vm.Name, Check: best.CheckName,
			Failures: best.ConsecutiveFailures, Details: clip(best.Details, 512)}}
	}
	return sum, nil
}

// SortCandidates orders candidates by consecutive failures (most first), then router ID.
func SortCandidates(cs []Candidate) {
	slices.SortFunc(cs, func(a, b Candidate) int {
		if a.Failures != b.Failures {
			return b.Failures - a.Failures
		}
		if a.RouterID < b.RouterID {
			return -1
		}
		if a.RouterID > b.RouterID {
			return 1
		}
		return 0
	})
}
