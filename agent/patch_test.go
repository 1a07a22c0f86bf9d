package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testBundle(t *testing.T, script string) Bundle {
	t.Helper()
	b, err := NewBundle("9.9.9", []BundleFile{
		{Path: "opt/cloud/bin/hello.sh", Mode: 0o755, Content: []byte("#!/bin/sh\necho " + script + "\n")},
		{Path: "opt/cloud/templates/motd", Mode: 0o644, Content: []byte("patched\n")},
	}, PatchServices())
	require.NoError(t, err)
	return b
}

func patchMain(t *testing.T, s *sandbox, b Bundle, args ...string) (int, PatchResult, string) {
	t.Helper()
	data, err := json.Marshal(b)
	require.NoError(t, err)
	code, out, errOut := runMain(t, s, string(data), append([]string{"patch"}, args...)...)
	var res PatchResult
	if code == ExitOK {
		require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	}
	return code, res, errOut
}

func TestPatchInstallsRecordsAndRestartsServices(t *testing.T) {
	s := newSandbox(t)
	b := testBundle(t, "v1")
	code, res, errOut := patchMain(t, s, b)
	require.Equal(t, ExitOK, code, errOut)
	assert.True(t, res.Changed)
	assert.Equal(t, b.Checksum, res.ScriptsVersion)
	assert.Equal(t, b.Version, res.Version)
	assert.Equal(t, strings.TrimSpace(fixtureRelease), res.TemplateVersion, "the template stays: no reboot, no new image")
	assert.Equal(t, []string{"/opt/cloud/bin/hello.sh", "/opt/cloud/templates/motd"}, res.Files)
	assert.Equal(t, PatchServices(), res.Restarted)
	for _, svc := range PatchServices() {
		assert.Equal(t, 1, s.sys.ServiceRestarts(svc), svc)
	}
	assert.Zero(t, s.sys.ServiceRestarts(ServiceSSH), "ssh carries the patch: not restarted")

	st, err := os.Stat(filepath.Join(s.root, "opt/cloud/bin/hello.sh"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), st.Mode().Perm())
	data, err := os.ReadFile(filepath.Join(s.root, "opt/cloud/bin/hello.sh"))
	require.NoError(t, err)
	assert.Equal(t, "#!/bin/sh\necho v1\n", string(data))
	leftovers, _ := filepath.Glob(filepath.Join(s.root, "opt/cloud/bin/.*"))
	assert.Empty(t, leftovers, "no staging file left")

	// version reports the new scripts version and the bundle.
	code, out, _ := runMain(t, s, "", "version")
	require.Equal(t, ExitOK, code)
	var v VersionInfo
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	assert.Equal(t, b.Checksum, v.ScriptsVersion)
	assert.Equal(t, b.Version, v.SoftwareVersion)
	rec, ok, err := s.a.InstalledPatch()
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, b.Checksum, rec.Checksum)
	assert.Equal(t, []string{"opt/cloud/bin/hello.sh", "opt/cloud/templates/motd"}, rec.Files)
}

func TestPatchReapplyIsNoOpUnlessForced(t *testing.T) {
	s := newSandbox(t)
	b := testBundle(t, "v1")
	code, _, errOut := patchMain(t, s, b)
	require.Equal(t, ExitOK, code, errOut)
	code, res, errOut := patchMain(t, s, b)
	require.Equal(t, ExitOK, code, errOut)
	assert.False(t, res.Changed, "the same bundle again changes nothing")
	assert.Empty(t, res.Restarted)
	assert.Equal(t, 1, s.sys.ServiceRestarts(ServiceDnsmasq), "a retried patch does not restart again")

	code, res, errOut = patchMain(t, s, b, "--force")
	require.Equal(t, ExitOK, code, errOut)
	assert.True(t, res.Changed)
	assert.Equal(t, 2, s.sys.ServiceRestarts(ServiceDnsmasq), "--force re-installs and restarts")

	// A file changed behind the agent's back makes the bundle not installed: re-applied.
	require.NoError(t, os.WriteFile(filepath.Join(s.root, "opt/cloud/bin/hello.sh"), []byte("tampered"), 0o755))
	code, res, _ = patchMain(t, s, b)
	require.Equal(t, ExitOK, code)
	assert.True(t, res.Changed)

	// A newer bundle replaces the older one.
	b2 := testBundle(t, "v2")
	code, res, _ = patchMain(t, s, b2)
	require.Equal(t, ExitOK, code)
	assert.True(t, res.Changed)
	assert.NotEqual(t, b.Checksum, b2.Checksum)
	sig, err := s.a.firstLine(ScriptsSignatureFile)
	require.NoError(t, err)
	assert.Equal(t, b2.Checksum, sig)
}

func TestPatchRefusesBadChecksumNamingIt(t *testing.T) {
	s := newSandbox(t)
	b := testBundle(t, "v1")
	b.Files[0].Content = []byte("#!/bin/sh\nrm -rf /\n") // altered on the way
	code, _, errOut := patchMain(t, s, b)
	assert.Equal(t, ExitError, code)
	assert.Contains(t, errOut, "checksum mismatch")
	assert.Contains(t, errOut, b.Checksum, "the declared checksum is named")
	assert.Contains(t, errOut, BundleChecksum(b.Files), "and the content's")
	_, err := os.Stat(filepath.Join(s.root, "opt/cloud/bin/hello.sh"))
	assert.True(t, os.IsNotExist(err), "nothing installed")
	assert.Zero(t, s.sys.ServiceRestarts(ServiceDnsmasq))
	sig, _ := s.a.firstLine(ScriptsSignatureFile)
	assert.Equal(t, strings.TrimSpace(fixtureSignature), sig, "the scripts version is unchanged")
}

func TestPatchRefusesBadPathsAndModes(t *testing.T) {
	for name, f := range map[string]BundleFile{
		"escape":   {Path: "opt/cloud/../../etc/shadow", Mode: 0o644},
		"absolute": {Path: "/opt/cloud/bin/x", Mode: 0o644},
		"outside":  {Path: "etc/passwd", Mode: 0o644},
		"setuid":   {Path: "opt/cloud/bin/x", Mode: 0o4755},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewBundle("1", []BundleFile{f}, nil)
			require.Error(t, err)
			s := newSandbox(t)
			b := Bundle{Version: "1", Checksum: BundleChecksum([]BundleFile{f}), Files: []BundleFile{f}}
			code, _, errOut := patchMain(t, s, b)
			assert.Equal(t, ExitError, code)
			assert.Contains(t, errOut, "patch bundle")
		})
	}
	s := newSandbox(t)
	code, _, errOut := runMain(t, s, "{}", "patch", "--now")
	assert.Equal(t, ExitUsage, code)
	assert.Contains(t, errOut, "--force")
}

func TestPatchFailuresLeaveNoRecord(t *testing.T) {
	t.Run("read-only root: nothing installed", func(t *testing.T) {
		s := newSandbox(t)
		s.sys.SetReadOnly(true)
		_, err := s.a.Patch(context.Background(), testBundle(t, "v1"), false)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "nothing installed")
		_, ok, _ := s.a.InstalledPatch()
		assert.False(t, ok)
		s.sys.SetReadOnly(false)
		res, err := s.a.Patch(context.Background(), testBundle(t, "v1"), false)
		require.NoError(t, err)
		assert.True(t, res.Changed)
	})
	t.Run("a service that does not restart: not recorded, the retry restarts", func(t *testing.T) {
		s := newSandbox(t)
		s.sys.SetService(ServiceHaproxy, true, true)
		b := testBundle(t, "v1")
		_, err := s.a.Patch(context.Background(), b, false)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "haproxy")
		_, ok, _ := s.a.InstalledPatch()
		assert.False(t, ok, "not recorded: a retry must not take it for done")
		s.sys.SetService(ServiceHaproxy, false, false)
		res, err := s.a.Patch(context.Background(), b, false)
		require.NoError(t, err)
		assert.True(t, res.Changed)
		assert.Contains(t, res.Restarted, ServiceHaproxy)
		active, _ := s.sys.ServiceActive(context.Background(), ServiceHaproxy)
		assert.True(t, active)
	})
}

func TestDefaultBundle(t *testing.T) {
	b, err := DefaultBundle()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(b.Version, Version+"+"), b.Version)
	assert.Len(t, b.Checksum, 64)
	require.NotEmpty(t, b.Files)
	for _, f := range b.Files {
		assert.True(t, strings.HasPrefix(f.Path, "opt/cloud/bin/"), f.Path)
	}
	again, err := DefaultBundle()
	require.NoError(t, err)
	assert.Equal(t, b.Checksum, again.Checksum, "deterministic")
}
