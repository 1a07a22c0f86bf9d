package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCustomCheckContract(t *testing.T) {
	s := newSandbox(t)
	dir := CustomChecksDir + "/"
	// Passes in both types, echoing its argument and the root it was given.
	writeTestFile(t, s.root, dir+"echo_type.sh", "#!/bin/sh\necho \"type=$1 root=$SYSVM_ROOT cwd=$(pwd)\"\n", 0o755)
	// Fails with a message.
	writeTestFile(t, s.root, dir+"fails.sh", "#!/bin/sh\necho \"conntrack table 98% full\"\nexit 1\n", 0o755)
	// Prints nothing: not a check.
	writeTestFile(t, s.root, dir+"quiet.sh", "#!/bin/sh\nexit 0\n", 0o755)
	// A check of the basic type only.
	writeTestFile(t, s.root, dir+"basic_only.sh", "#!/bin/sh\n[ \"$1\" = basic ] && echo \"basic thing ok\"\nexit 0\n", 0o755)
	// Not executable: ignored even though it would fail.
	writeTestFile(t, s.root, dir+"not_executable.sh", "#!/bin/sh\necho broken\nexit 1\n", 0o644)
	// Crashes without a word: still a failure, with its stderr.
	writeTestFile(t, s.root, dir+"crashes.sh", "#!/bin/sh\necho oops >&2\nexit 3\n", 0o755)
	// Another exit status with a message.
	writeTestFile(t, s.root, dir+"exit2.sh", "#!/bin/sh\necho \"half broken\"\nexit 2\n", 0o755)
	// A directory is not a check.
	require.NoError(t, os.MkdirAll(filepath.Join(s.root, dir, "subdir"), 0o755))

	basic := s.a.Check(context.Background(), s.cfg, Basic)
	custom := basic.Results[len(BuiltinChecks(Basic)):]
	assert.Equal(t, []string{"basic_only.sh", "crashes.sh", "echo_type.sh", "exit2.sh", "fails.sh"}, names(Run{Results: custom}))

	r := mustResult(t, basic, "echo_type.sh")
	assert.True(t, r.Success)
	assert.Equal(t, "type=basic root="+s.root+" cwd="+filepath.Join(s.root, CustomChecksDir), r.Details)
	assert.Equal(t, Basic, r.CheckType)
	assert.True(t, r.LastUpdated.After(r.StartTime))

	r = mustResult(t, basic, "fails.sh")
	assert.False(t, r.Success)
	assert.Equal(t, "conntrack table 98% full", r.Details)

	r = mustResult(t, basic, "crashes.sh")
	assert.False(t, r.Success)
	assert.Equal(t, "custom check exited with status 3 and printed nothing; stderr: oops", r.Details)

	r = mustResult(t, basic, "exit2.sh")
	assert.False(t, r.Success)
	assert.Equal(t, "half broken (exit status 2)", r.Details)

	assert.True(t, mustResult(t, basic, "basic_only.sh").Success)

	advanced := s.a.Check(context.Background(), s.cfg, Advanced)
	assert.NotContains(t, names(advanced), "basic_only.sh")
	assert.NotContains(t, names(advanced), "quiet.sh")
	assert.Equal(t, "type=advanced root="+s.root+" cwd="+filepath.Join(s.root, CustomChecksDir),
		mustResult(t, advanced, "echo_type.sh").Details)
}

func TestCustomCheckTimeoutKillsScript(t *testing.T) {
	s := newSandbox(t)
	// The script starts a child that would outlive it; the whole group must go.
	writeTestFile(t, s.root, CustomChecksDir+"/hangs.sh", "#!/bin/sh\necho started\nsleep 30 &\nsleep 30\n", 0o755)
	s.cfg.CustomCheckTimeoutSec = 1
	start := time.Now()
	run := s.a.Check(context.Background(), s.cfg, Basic)
	elapsed := time.Since(start)
	r := mustResult(t, run, "hangs.sh")
	assert.False(t, r.Success)
	assert.Equal(t, "custom check timed out after 1s and was killed", r.Details)
	assert.Less(t, elapsed, 5*time.Second, "the run is bounded by the timeout")
}

func TestNoCustomChecksDirectory(t *testing.T) {
	s := newSandbox(t)
	run := s.a.Check(context.Background(), s.cfg, Basic)
	assert.Len(t, run.Results, len(BuiltinChecks(Basic)))
}
