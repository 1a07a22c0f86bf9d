package workflows

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sysvm/sysvm/activities"
)

// RouterUpgradeWorkflowName is the registered workflow type name of RouterUpgrade.
const RouterUpgradeWorkflowName = "RouterUpgrade"

// RouterUpgradeOperationKind is the operation kind of a batched router upgrade; each router's
// child run carries it in OperationKind until the lifecycle's own kind replaces it.
const RouterUpgradeOperationKind = "router.upgrade"

// Signals a running RouterUpgrade answers.
const (
	// SignalUpgradePause stops starting routers (those in flight finish); its argument is a
	// reason (a string, may be empty).
	SignalUpgradePause = "upgrade.pause"
	// SignalUpgradeResume starts routers again; the failure budget counts anew from here.
	SignalUpgradeResume = "upgrade.resume"
	// SignalUpgradeParallelism changes how many routers are in flight at most (an int ≥ 1).
	SignalUpgradeParallelism = "upgrade.parallelism"
)

// Upgrade modes.
const (
	UpgradeModeRecreate = "recreate"
	UpgradeModePatch    = "patch"
)

// Router states in an upgrade's progress.
const (
	UpgradePending       = "pending"
	UpgradeWaitingWindow = "waiting-window"
	UpgradeUpgrading     = "upgrading"
	UpgradeHealthCheck   = "health-check"
	UpgradeDone          = "done"
	UpgradeFailed        = "failed"
	UpgradeSkipped       = "skipped"
)

// UpgradeStates lists the router states in the order progress counts them.
func UpgradeStates() []string {
	return []string{UpgradePending, UpgradeWaitingWindow, UpgradeUpgrading, UpgradeHealthCheck, UpgradeDone, UpgradeFailed, UpgradeSkipped}
}

// Limits of an upgrade request.
const (
	MaxUpgradeParallelism = 1000
	// DefaultUpgradeParallelism is the parallelism when none is asked.
	DefaultUpgradeParallelism = 5
	// DefaultUpgradeRoutersPerRun is how many routers one run of the workflow finishes before
	// it continues as new (history stays bounded at any fleet size).
	DefaultUpgradeRoutersPerRun = 500
	// DefaultGateTimeout is the health gate's timeout when none is asked.
	DefaultGateTimeout = 5 * time.Minute
)

// UpgradeWindow is when a group's routers may start: between NotBefore and NotAfter (either
// may be absent), and, when DailyStart and DailyEnd are set ("22:00", "04:00": an end before
// the start crosses midnight), only in that daily window in TimeZone (IANA name, UTC when
// empty). A router started in the window finishes even if the window closes meanwhile.
type UpgradeWindow struct {
	NotBefore  *time.Time `json:"notBefore,omitempty"`
	NotAfter   *time.Time `json:"notAfter,omitempty"`
	DailyStart string     `json:"dailyStart,omitempty"`
	DailyEnd   string     `json:"dailyEnd,omitempty"`
	TimeZone   string     `json:"timeZone,omitempty"`
}

// IsZero reports whether the window allows any time.
func (w UpgradeWindow) IsZero() bool {
	return w.NotBefore == nil && w.NotAfter == nil && w.DailyStart == "" && w.DailyEnd == ""
}

func parseClock(field, s string) (time.Duration, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 || len(m) != 2 {
		return 0, fmt.Errorf("%s: %q is not a time of day HH:MM", field, s)
	}
	return time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute, nil
}

// Validate checks the window; field prefixes the names in errors.
func (w UpgradeWindow) Validate(field string) error {
	if w.NotBefore != nil && w.NotAfter != nil && !w.NotAfter.After(*w.NotBefore) {
		return fmt.Errorf("%s.notAfter: must be after notBefore", field)
	}
	if (w.DailyStart == "") != (w.DailyEnd == "") {
		return fmt.Errorf("%s: dailyStart and dailyEnd go together", field)
	}
	if w.DailyStart != "" {
		s, err := parseClock(field+".dailyStart", w.DailyStart)
		if err != nil {
			return err
		}
		e, err := parseClock(field+".dailyEnd", w.DailyEnd)
		if err != nil {
			return err
		}
		if s == e {
			return fmt.Errorf("%s: dailyStart and dailyEnd are equal (an empty window)", field)
		}
	}
	if w.TimeZone != "" {
		if _, err := time.LoadLocation(w.TimeZone); err != nil {
			return fmt.Errorf("%s.timeZone: %q is not an IANA time zone: %v", field, w.TimeZone, err)
		}
	}
	return nil
}

// Next says whether the window is open at now; when it is not, how long until it opens
// (wait > 0), or that it never opens again (ended).
func (w UpgradeWindow) Next(now time.Time) (open bool, wait time.Duration, ended bool) {
	if w.NotAfter != nil && !now.Before(*w.NotAfter) {
		return false, 0, true
	}
	if w.NotBefore != nil && now.Before(*w.NotBefore) {
		// Open then, unless the daily window is closed at that moment: computed then.
		return false, w.NotBefore.Sub(now), false
	}
	if w.DailyStart == "" {
		return true, 0, false
	}
	loc := time.UTC
	if w.TimeZone != "" {
		if l, err := time.LoadLocation(w.TimeZone); err == nil {
			loc = l
		}
	}
	start, _ := parseClock("dailyStart", w.DailyStart)
	end, _ := parseClock("dailyEnd", w.DailyEnd)
	local := now.In(loc)
	midnight := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, loc)
	tod := local.Sub(midnight)
	in := false
	if start < end {
		in = tod >= start && tod < end
	} else { // crosses midnight
		in = tod >= start || tod < end
	}
	if in {
		return true, 0, false
	}
	next := midnight.Add(start)
	if !next.After(local) {
		next = time.Date(local.Year(), local.Month(), local.Day()+1, 0, 0, 0, 0, loc).Add(start)
	}
	wait = next.Sub(local)
	if w.NotAfter != nil && !now.Add(wait).Before(*w.NotAfter) {
		return false, 0, true
	}
	return false, wait, false
}

// FailureBudget is how many failed routers an upgrade tolerates: a count, or a percent of its
// routers (rounded down).
type FailureBudget struct {
	Count   int `json:"count,omitempty"`
	Percent int `json:"percent,omitempty"`
}

// ParseFailureBudget reads "3" or "10%" ("" is 0: the first failure pauses).
func ParseFailureBudget(s string) (FailureBudget, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return FailureBudget{}, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 || n > 100 {
			return FailureBudget{}, fmt.Errorf("failureBudget: %q is not a percent from 0%% to 100%%", s)
		}
		return FailureBudget{Percent: n}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return FailureBudget{}, fmt.Errorf("failureBudget: %q is neither a count (3) nor a percent (10%%)", s)
	}
	return FailureBudget{Count: n}, nil
}

// Allowed is how many failures of total routers the budget tolerates.
func (b FailureBudget) Allowed(total int) int {
	if b.Percent > 0 {
		return total * b.Percent / 100
	}
	return b.Count
}

// String is the budget as it was asked.
func (b FailureBudget) String() string {
	if b.Percent > 0 {
		return strconv.Itoa(b.Percent) + "%"
	}
	return strconv.Itoa(b.Count)
}

// RouterUpgradeRequest is what an operator asks of an upgrade.
type RouterUpgradeRequest struct {
	Selection   activities.UpgradeSelection `json:"selection"`
	Parallelism int                         `json:"parallelism"`
	Budget      FailureBudget               `json:"failureBudget"`
	// Window applies to every group without one of its own in Windows (by group key).
	Window  *UpgradeWindow           `json:"window,omitempty"`
	Windows map[string]UpgradeWindow `json:"windows,omitempty"`
	Mode    string                   `json:"mode"`
	// PatchForce (mode patch) re-installs the bundle on routers that run it already
	// (patchSystemVm's forced); otherwise such a router's patch is a no-op.
	PatchForce bool `json:"patchForce,omitempty"`
	// GateTimeout bounds each router's health gate (DefaultGateTimeout when 0).
	GateTimeout time.Duration `json:"gateTimeout,omitempty"`
	// GatePoll is the pause between the gate's fresh checks (the activity's default when 0).
	GatePoll time.Duration `json:"gatePoll,omitempty"`
	// RoutersPerRun is how many routers a run finishes before it continues as new
	// (DefaultUpgradeRoutersPerRun when 0).
	RoutersPerRun int `json:"routersPerRun,omitempty"`
}

// RouterUpgradeInput starts (or, with State, continues) a RouterUpgrade.
type RouterUpgradeInput struct {
	OperationID string               `json:"operationId"`
	Request     RouterUpgradeRequest `json:"request"`
	// State is carried across continue-as-new; nil on the first run.
	State *RouterUpgradeState `json:"state,omitempty"`
}

// UpgradeRouter is one router's place and progress in an upgrade. Times are Unix
// milliseconds (0: not yet), kept small because 10,000 of them travel with continue-as-new.
type UpgradeRouter struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	ZoneID         string `json:"zoneid"`
	Group          int    `json:"group"`
	RedundantState string `json:"redundantstate,omitempty"`
	// Type is the system VM type in an SSVM and CPVM upgrade (empty for routers).
	Type string `json:"type,omitempty"`
	// ReplacedBy is the ID of the new VM that replaced this one (an SSVM or CPVM upgrade of a
	// zone's only VM of its kind deploys a new one, then retires this one).
	ReplacedBy string `json:"replacedby,omitempty"`
	// After is the index (+1) in Routers of the redundant peer that must pass its gate first.
	After       int    `json:"after,omitempty"`
	State       string `json:"state"`
	FromVersion string `json:"fromversion,omitempty"`
	ToVersion   string `json:"toversion,omitempty"`
	// SoftwareVersion is the live patch bundle a patch-mode upgrade installed (its template
	// version, ToVersion, stays FromVersion: the VM was not rebuilt).
	SoftwareVersion string `json:"softwareversion,omitempty"`
	Started         int64  `json:"started,omitempty"`
	GateStarted     int64  `json:"gatestarted,omitempty"`
	Ended           int64  `json:"ended,omitempty"`
	Reason          string `json:"reason,omitempty"`
}

// UpgradeGroup is one group's place and state in an upgrade.
type UpgradeGroup struct {
	Key    string         `json:"key"`
	Name   string         `json:"name"`
	Window *UpgradeWindow `json:"window,omitempty"`
	// WaitingUntil is when its window opens (Unix ms) while the group waits for it.
	WaitingUntil int64 `json:"waitinguntil,omitempty"`
}

// RouterUpgradeState is the whole state of an upgrade, carried across continue-as-new.
type RouterUpgradeState struct {
	GroupBy     string          `json:"groupBy"`
	Groups      []UpgradeGroup  `json:"groups"`
	Routers     []UpgradeRouter `json:"routers"`
	Parallelism int             `json:"parallelism"`
	Paused      bool            `json:"paused,omitempty"`
	PauseReason string          `json:"pauseReason,omitempty"`
	// FailedAtResume is the failure count at the last resume: the budget counts from there.
	FailedAtResume int `json:"failedAtResume,omitempty"`
	// Pauses counts the budget's pauses (each raises one alert).
	Pauses int `json:"pauses,omitempty"`
	// BudgetAlertOpen: the last budget pause's alert is raised and not resolved yet (the
	// operator's resume or the upgrade's end resolves it).
	BudgetAlertOpen bool  `json:"budgetAlertOpen,omitempty"`
	Runs            int   `json:"runs"`
	Started         int64 `json:"started"`
	// MaxInFlight is the most routers ever in flight at once (for tests and benchmarks).
	MaxInFlight int `json:"maxInFlight"`
	// Carried lists the routers in flight when the last run continued as new without waiting
	// for them (a recreate-mode RouterUpgrade); the next run takes them over before it starts
	// others. Empty when the last run drained, and in the first run.
	Carried []UpgradeCarried `json:"carried,omitempty"`
}

// Phases of a router carried across continue-as-new (UpgradeCarried.Phase).
const (
	// CarriedRecreate: its recreate child run has started; the next run waits for its result
	// (Activities.AwaitRecreate), then runs its health gate.
	CarriedRecreate = "recreate"
	// CarriedGate: it was in its health gate; the next run runs the gate again (config push
	// and read-only checks: the abandoned one of the last run does no harm).
	CarriedGate = "gate"
)

// UpgradeCarried is one router a run handed over to the next one in flight: where it was and,
// in the recreate phase, which child run recreates it (the next run waits for that run and
// never starts another).
type UpgradeCarried struct {
	// Router is its index in RouterUpgradeState.Routers.
	Router int `json:"router"`
	// Phase is CarriedRecreate or CarriedGate.
	Phase string `json:"phase"`
	// WorkflowID and RunID are those of its recreate child (phase recreate).
	WorkflowID string `json:"workflowId,omitempty"`
	RunID      string `json:"runId,omitempty"`
}

// RouterUpgradeProgress is the answer of the progress query (and the operation's progress).
type RouterUpgradeProgress struct {
	Progress
	// Status: running, paused, waiting-window, canceling, draining (before continue-as-new:
	// letting the routers in flight finish, or in recreate mode only waiting until each is
	// past its check and its recreate child's start, a moment).
	Status      string `json:"status"`
	PauseReason string `json:"pauseReason,omitempty"`
	// Mode is how routers are upgraded: recreate or patch.
	Mode        string         `json:"mode,omitempty"`
	Counts      map[string]int `json:"counts"`
	InFlight    int            `json:"inFlight"`
	MaxInFlight int            `json:"maxInFlight"`
	Parallelism int            `json:"parallelism"`
	Budget      string         `json:"failureBudget"`
	// ETA is the estimated end, from the mean time of the routers done so far (omitted
	// before the first one or while waiting for a window).
	ETA     *time.Time      `json:"eta,omitempty"`
	Run     int             `json:"run"`
	GroupBy string          `json:"groupBy"`
	Groups  []UpgradeGroup  `json:"groups"`
	Routers []UpgradeRouter `json:"routers"`
}

// RouterUpgradeResult is what an upgrade ends with.
type RouterUpgradeResult struct {
	Counts  map[string]int  `json:"counts"`
	Routers []UpgradeRouter `json:"routers"`
}

// RouterUpgradeWorkflowID is the workflow ID of the upgrade of one scope (one at a time).
func RouterUpgradeWorkflowID(scopeKind, scopeID string) string {
	if scopeID == "" {
		return "router-upgrade:" + scopeKind
	}
	return "router-upgrade:" + scopeKind + ":" + scopeID
}

// RouterUpgradeRouterOperationID is the operation ID of one router's recreate under an
// upgrade: derived from both, so a replayed upgrade finds the same journal.
func RouterUpgradeRouterOperationID(upgradeOperationID, routerID string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("sysvm:router.upgrade:"+upgradeOperationID+"/"+routerID)).String()
}
