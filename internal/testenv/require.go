package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true), where every real part must be there.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require stops a test whose real part is missing: a nil err means what is there and the test
// goes on. Otherwise the test is skipped with the reason on a developer's machine, and fails
// under CI (CI=true), so a CI machine without QEMU, sshd or an OpenSSH tool never passes a test
// as skipped. .ci/run installs every part a test requires. Skips for -short are not this: call
// t.Skip for those.
func Require(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if InCI() {
		t.Fatalf("%s is required under CI=true (.ci/run installs it): %v", what, err)
		return
	}
	t.Skipf("%s is missing: %v", what, err)
}
