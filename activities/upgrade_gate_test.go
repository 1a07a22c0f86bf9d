package activities

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
)

// TestPollGate: the loop both upgrade gates share passes on the attempt that passes, stops on
// an attempt's error, and once the timeout would pass fails with ErrTypeGateFailed naming the
// attempts and the last reason.
func TestPollGate(t *testing.T) {
	ctx := context.Background()
	n := 0
	err := pollGate(ctx, time.Second, time.Millisecond, time.Hour, "checks", &n, func() (bool, string, error) {
		return n == 3, "not yet", nil
	})
	if err != nil || n != 3 {
		t.Fatalf("passing on the third attempt: err %v after %d attempts", err, n)
	}

	n = 0
	boom := errors.New("boom")
	if err := pollGate(ctx, time.Second, time.Millisecond, time.Hour, "checks", &n, func() (bool, string, error) {
		return false, "", boom
	}); !errors.Is(err, boom) || n != 1 {
		t.Fatalf("an attempt's error: got %v after %d attempts, want boom after 1", err, n)
	}

	n = 0
	err = pollGate(ctx, 20*time.Millisecond, 0, 5*time.Millisecond, "attempts", &n, func() (bool, string, error) {
		return false, "endpoint not serving", nil
	})
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != ErrTypeGateFailed || !appErr.NonRetryable() {
		t.Fatalf("timeout: got %v, want a non-retryable %s", err, ErrTypeGateFailed)
	}
	if n < 2 || !strings.Contains(appErr.Message(), "attempts: endpoint not serving") || !strings.Contains(appErr.Message(), "within 20ms") {
		t.Fatalf("timeout after %d attempts: message %q", n, appErr.Message())
	}
}
