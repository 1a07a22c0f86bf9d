// Package workflows holds sysvm's durable orchestration, one file per operation. Workflow code
// is deterministic: it reads time with workflow.Now, starts goroutines with workflow.Go, and
// reaches the world only through activities.
package workflows

import (
	"errors"

	"go.temporal.io/sdk/temporal"
)

// TaskQueue is the task queue the sysvm worker polls.
const TaskQueue = "sysvm"

// Search attributes set on every run, so the Web UI and `temporal workflow list --query` find a
// run by the VM, router, zone and kind of operation it concerns.
var (
	SystemVMIDKey    = temporal.NewSearchAttributeKeyKeyword("SystemVmId")
	RouterIDKey      = temporal.NewSearchAttributeKeyKeyword("RouterId")
	ZoneIDKey        = temporal.NewSearchAttributeKeyKeyword("ZoneId")
	OperationKindKey = temporal.NewSearchAttributeKeyKeyword("OperationKind")
)

// SearchAttributeNames lists the custom search attributes (all Keyword) the server must know.
func SearchAttributeNames() []string {
	return []string{SystemVMIDKey.GetName(), RouterIDKey.GetName(), ZoneIDKey.GetName(), OperationKindKey.GetName()}
}

// QueryProgress is the query every long workflow answers with its Progress.
const QueryProgress = "progress"

// Progress is what a running operation reports to the API and the Web UI.
type Progress struct {
	Step    string `json:"step"`
	Done    int    `json:"done"`
	Total   int    `json:"total"`
	Percent int    `json:"percent"`
}

// advance moves progress to the next step.
func (p *Progress) advance(step string) {
	p.Step = step
	if p.Done < p.Total {
		p.Done++
	}
	p.update()
}

func (p *Progress) update() {
	if p.Total > 0 {
		p.Percent = p.Done * 100 / p.Total
	}
}

// rootMessage is the innermost message of a Temporal error chain (the activity's own words).
func rootMessage(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Message()
	}
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}
