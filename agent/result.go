package agent

import (
	"fmt"
	"time"
)

// CheckType is "basic" or "advanced", as CloudStack's checktype.
type CheckType string

// The two kinds of health check runs.
const (
	Basic    CheckType = "basic"
	Advanced CheckType = "advanced"
)

// ParseCheckType accepts "basic" or "advanced".
func ParseCheckType(s string) (CheckType, error) {
	switch CheckType(s) {
	case Basic, Advanced:
		return CheckType(s), nil
	}
	return "", fmt.Errorf("check type %q: want basic or advanced", s)
}

// Result is the outcome of one check, with CloudStack's field names (checkname, checktype,
// success, lastupdated, details) plus the check's own timing.
//
// A check of a service the network does not get from this router (or gateways_check.py on a
// BACKUP router or a router without a guest network) is reported, not omitted, with
// Success=true, Skipped=true and details "skipped: ...": a skipped result overwrites an older
// failure of the same check on the platform side, so healthchecksfailed never sticks on a check
// that no longer applies. Checks excluded by the operator (ExcludedChecks) are not run and do
// not appear at all.
type Result struct {
	CheckName string    `json:"checkname"`
	CheckType CheckType `json:"checktype"`
	Success   bool      `json:"success"`
	// LastUpdated is when the check finished.
	LastUpdated time.Time `json:"lastupdated"`
	// Details always says what was checked and, on failure, names what is wrong.
	Details    string    `json:"details"`
	Skipped    bool      `json:"skipped,omitempty"`
	StartTime  time.Time `json:"starttime"`
	DurationMs int64     `json:"durationms"`
}

// Run is one basic or advanced run: what `sysvm-agent run` prints and what the results files
// hold.
type Run struct {
	Type       CheckType `json:"type"`
	RouterName string    `json:"routername,omitempty"`
	StartTime  time.Time `json:"starttime"`
	EndTime    time.Time `json:"endtime"`
	DurationMs int64     `json:"durationms"`
	// Disabled is true when the pushed Config has enabled=false: no check was run.
	Disabled bool     `json:"disabled,omitempty"`
	Results  []Result `json:"results"`
}

// Failed returns the results that failed.
func (r Run) Failed() []Result {
	var out []Result
	for _, res := range r.Results {
		if !res.Success {
			out = append(out, res)
		}
	}
	return out
}

// Result returns the result of the named check and whether it is present.
func (r Run) Result(name string) (Result, bool) {
	for _, res := range r.Results {
		if res.CheckName == name {
			return res, true
		}
	}
	return Result{}, false
}
