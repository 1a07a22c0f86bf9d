package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runMain runs Main and returns its exit status, stdout and stderr.
func runMain(t *testing.T, s *sandbox, stdin string, argv ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), argv, strings.NewReader(stdin), &stdout, &stderr, s.sys, s.root)
	return code, stdout.String(), stderr.String()
}

func pushFixtureConfig(t *testing.T, s *sandbox) {
	t.Helper()
	data, err := json.Marshal(s.cfg)
	require.NoError(t, err)
	code, out, errOut := runMain(t, s, string(data), "push-config")
	require.Equal(t, ExitOK, code, errOut)
	require.Empty(t, out)
}

func TestMainPushConfigStoresValidatedConfig(t *testing.T) {
	s := newSandbox(t)
	pushFixtureConfig(t, s)
	stored, err := s.a.LoadConfig()
	require.NoError(t, err)
	assert.Equal(t, s.cfg, stored)
	info, err := os.Stat(filepath.Join(s.root, ConfigFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	// The JSON uses the field names of the contract.
	raw, err := os.ReadFile(filepath.Join(s.root, ConfigFile))
	require.NoError(t, err)
	for _, field := range []string{`"enabled"`, `"basicInterval"`, `"freeDiskMB"`, `"maxCpuPercent"`,
		`"maxMemoryPercent"`, `"serviceMonitoring"`, `"expectedVms"`, `"portForwardingRules"`, `"lbRules"`,
		`"maxConnections"`, `"templateVersion"`, `"scriptsVersion"`, `"hasGuestNetwork"`, `"userdata"`} {
		assert.Contains(t, string(raw), field)
	}

	code, _, errOut := runMain(t, s, `{"enabled": true, "redundantState": "PRIMARY", "gateways": ["10.1.1"]}`, "push-config")
	assert.Equal(t, ExitError, code)
	assert.Contains(t, errOut, `redundantState "PRIMARY"`)
	assert.Contains(t, errOut, "gateways[0]")
	code, _, errOut = runMain(t, s, `{not json`, "push-config")
	assert.Equal(t, ExitError, code)
	assert.Contains(t, errOut, "decode health check config")
	// A rejected push leaves the stored configuration alone.
	stored, err = s.a.LoadConfig()
	require.NoError(t, err)
	assert.Equal(t, s.cfg, stored)
}

func TestMainRunWritesResultsAndPrintsRun(t *testing.T) {
	s := newSandbox(t)
	pushFixtureConfig(t, s)
	s.sys.SetService("haproxy", false, false)

	code, out, errOut := runMain(t, s, "", "run", "basic")
	require.Equal(t, ExitOK, code, errOut)
	var printed Run
	require.NoError(t, json.Unmarshal([]byte(out), &printed))
	assert.Equal(t, Basic, printed.Type)
	assert.Equal(t, "r-12-VM", printed.RouterName)
	assert.True(t, printed.EndTime.After(printed.StartTime))
	assert.Equal(t, printed.EndTime.Sub(printed.StartTime).Milliseconds(), printed.DurationMs)
	assert.Positive(t, printed.DurationMs)
	failed := printed.Failed()
	require.Len(t, failed, 1)
	assert.Equal(t, CheckLoadBalancingService, failed[0].CheckName)

	// CloudStack's field names on each result.
	var raw struct {
		Results []map[string]any `json:"results"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &raw))
	for _, k := range []string{"checkname", "checktype", "success", "lastupdated", "details", "starttime", "durationms"} {
		assert.Contains(t, raw.Results[0], k)
	}

	// The file holds the same run, and `results` prints it.
	data, err := os.ReadFile(filepath.Join(s.root, BasicResultsFile))
	require.NoError(t, err)
	var stored Run
	require.NoError(t, json.Unmarshal(data, &stored))
	assert.Equal(t, printed, stored)
	code, out, _ = runMain(t, s, "", "results", "basic")
	require.Equal(t, ExitOK, code)
	var fetched Run
	require.NoError(t, json.Unmarshal([]byte(out), &fetched))
	assert.Equal(t, printed, fetched)

	// Advanced goes to its own file.
	_, err = os.Stat(filepath.Join(s.root, AdvancedResultsFile))
	assert.ErrorIs(t, err, os.ErrNotExist)
	code, _, errOut = runMain(t, s, "", "results", "advanced")
	assert.Equal(t, ExitError, code)
	assert.Contains(t, errOut, "no advanced results yet")
	code, _, _ = runMain(t, s, "", "run", "advanced")
	require.Equal(t, ExitOK, code)
	adv, err := s.a.LastRun(Advanced)
	require.NoError(t, err)
	assert.Equal(t, Advanced, adv.Type)
	assert.Equal(t, names(adv), BuiltinChecks(Advanced))
}

func TestMainReadOnlyFilesystem(t *testing.T) {
	s := newSandbox(t)
	pushFixtureConfig(t, s)
	code, _, _ := runMain(t, s, "", "run", "basic")
	require.Equal(t, ExitOK, code)
	before, err := os.ReadFile(filepath.Join(s.root, BasicResultsFile))
	require.NoError(t, err)

	s.sys.SetReadOnly(true)
	code, out, errOut := runMain(t, s, "", "run", "basic")
	require.Equal(t, ExitOK, code, "results are still printed")
	assert.Contains(t, errOut, "read-only file system")
	var run Run
	require.NoError(t, json.Unmarshal([]byte(out), &run))
	failed := run.Failed()
	require.Len(t, failed, 1)
	assert.Equal(t, CheckFilesystemWritable, failed[0].CheckName)
	assert.Contains(t, failed[0].Details, "root file system is read-only")
	after, err := os.ReadFile(filepath.Join(s.root, BasicResultsFile))
	require.NoError(t, err)
	assert.Equal(t, before, after, "nothing was written")

	_, writeErr, err := s.a.RunAndRecord(context.Background(), Advanced)
	require.NoError(t, err)
	assert.ErrorIs(t, writeErr, syscall.EROFS)

	// push-config cannot store anything either.
	code, _, errOut = runMain(t, s, `{"enabled":true}`, "push-config")
	assert.Equal(t, ExitError, code)
	assert.Contains(t, errOut, "read-only file system")
}

func TestMainUsageAndVersion(t *testing.T) {
	s := newSandbox(t)
	for _, argv := range [][]string{{}, {"run"}, {"run", "extended"}, {"results"}, {"frobnicate"}, {"--bogus", "version"}, {"push-config", "x"}} {
		code, _, errOut := runMain(t, s, "", argv...)
		assert.Equal(t, ExitUsage, code, "%q", argv)
		assert.NotEmpty(t, errOut, "%q", argv)
	}
	code, _, errOut := runMain(t, s, "", "run", "basic")
	assert.Equal(t, ExitError, code)
	assert.Contains(t, errOut, "the platform has not pushed one yet")

	code, out, _ := runMain(t, s, "", "version")
	require.Equal(t, ExitOK, code)
	var v VersionInfo
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	assert.Equal(t, VersionInfo{
		AgentVersion:    Version,
		TemplateVersion: strings.TrimSpace(fixtureRelease),
		ScriptsVersion:  strings.TrimSpace(fixtureSignature),
	}, v)

	// --root points at another file tree.
	other := t.TempDir()
	writeTestFile(t, other, ReleaseFile, "Cloudstack Release 4.20.1\n", 0o644)
	code, out, _ = runMain(t, s, "", "--root", other, "version")
	require.Equal(t, ExitOK, code)
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	assert.Equal(t, "Cloudstack Release 4.20.1", v.TemplateVersion)
	assert.Empty(t, v.ScriptsVersion)
}
