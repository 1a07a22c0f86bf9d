package sshexec

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/sysvm/sysvm/hypervisors"
)

// Reasons a connection to a hop failed, as counted by ConnectErrors.
const (
	ReasonAuth        = "auth"        // authentication refused, or the host key changed
	ReasonTimeout     = "timeout"     // Config.ConnectTimeout passed
	ReasonUnreachable = "unreachable" // refused, reset, no route, a failed forward
	ReasonCanceled    = "canceled"    // the caller's context ended
	ReasonOther       = "other"       // the host key store failed, the executor was closed
)

// ConnectErrorReasons lists every reason ConnectErrors reports.
var ConnectErrorReasons = []string{ReasonAuth, ReasonTimeout, ReasonUnreachable, ReasonCanceled, ReasonOther}

// ConnectErrorCount is how many connections to one kind of hop failed at one stage for one
// reason since the executor was built.
type ConnectErrorCount struct {
	Hop    Hop
	Stage  string
	Reason string
	Count  uint64
}

type errorKey struct {
	hop           Hop
	stage, reason string
}

// errorCounts counts failed connections by hop, stage and reason.
type errorCounts struct {
	mu sync.Mutex
	m  map[errorKey]uint64
}

// record counts a connect error (an *Error naming its hop; others are not counted).
func (c *errorCounts) record(err error) {
	var e *Error
	if !errors.As(err, &e) || e.Hop == "" {
		return
	}
	reason := ReasonOther
	switch {
	case errors.Is(e.Kind, hypervisors.ErrAuth):
		reason = ReasonAuth
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		reason = ReasonCanceled
	case errors.Is(err, ErrConnectTimeout):
		reason = ReasonTimeout
	case errors.Is(e.Kind, hypervisors.ErrUnreachable):
		reason = ReasonUnreachable
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[errorKey]uint64{}
	}
	c.m[errorKey{e.Hop, e.Stage, reason}]++
}

// ConnectErrors returns the failed connections by hop (host, vm), stage (dial, handshake) and
// reason (ReasonAuth, ...), in a stable order. Metrics read it at scrape time.
func (e *Executor) ConnectErrors() []ConnectErrorCount {
	e.errs.mu.Lock()
	out := make([]ConnectErrorCount, 0, len(e.errs.m))
	for k, n := range e.errs.m {
		out = append(out, ConnectErrorCount{Hop: k.hop, Stage: k.stage, Reason: k.reason, Count: n})
	}
	e.errs.mu.Unlock()
	slices.SortFunc(out, func(a, b ConnectErrorCount) int {
		if a.Hop != b.Hop {
			return strings.Compare(string(a.Hop), string(b.Hop))
		}
		if a.Stage != b.Stage {
			return strings.Compare(a.Stage, b.Stage)
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	return out
}

// MaxConns is the bound on pooled clients (Config.MaxConns).
func (e *Executor) MaxConns() int { return e.cfg.MaxConns }
