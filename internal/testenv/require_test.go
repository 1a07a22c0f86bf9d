package testenv

import (
	"errors"
	"testing"
)

// recorder is a testing.TB that records how a test ended instead of ending it.
type recorder struct {
	testing.TB
	skipped, failed bool
}

func (r *recorder) Helper()                       {}
func (r *recorder) Skipf(format string, a ...any) { r.skipped = true }
func (r *recorder) Fatalf(format string, a ...any) {
	r.failed = true
}

func TestRequire(t *testing.T) {
	missing := errors.New("not installed")
	for _, tc := range []struct {
		ci, err              bool
		wantSkip, wantFailed bool
	}{
		{ci: false, err: false},
		{ci: true, err: false},
		{ci: false, err: true, wantSkip: true},
		{ci: true, err: true, wantFailed: true},
	} {
		ci := ""
		if tc.ci {
			ci = "true"
		}
		t.Setenv("CI", ci)
		var err error
		if tc.err {
			err = missing
		}
		r := &recorder{TB: t}
		Require(r, "a part", err)
		if r.skipped != tc.wantSkip || r.failed != tc.wantFailed {
			t.Errorf("CI=%q err=%v: skipped %v failed %v, want %v %v", ci, err, r.skipped, r.failed, tc.wantSkip, tc.wantFailed)
		}
	}
}
