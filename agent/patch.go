package agent

// Live patching (issue 8, `mode: patch`): the platform pushes its current agent and scripts
// bundle to a running system VM over SSH and `sysvm-agent patch` installs it without a
// reboot, as CloudStack's patchSystemVm does with the scripts of its systemvm.iso: the bundle
// is verified against its checksum, its files are written under the VM's root (/opt/cloud/bin
// on a real router, the sandbox root in the fleet), the services are restarted, and the scripts
// version (the bundle's checksum, in /var/cache/cloud/cloud-scripts-signature as CloudStack's
// VR keeps it) and the bundle's version are recorded. Re-applying the bundle that is installed
// changes nothing (a retried patch is a no-op) unless forced.

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// PatchRecordFile is where the agent records the bundle it installed, relative to the root.
const PatchRecordFile = "var/cache/cloud/sysvm-patch.json"

// MaxBundleBytes bounds the bundle `sysvm-agent patch` reads on stdin.
const MaxBundleBytes = 64 << 20

// patchPrefixes are the directories a bundle may write to (relative to the root).
func patchPrefixes() []string { return []string{"opt/cloud/", "usr/local/bin/"} }

// BundleFile is one file of a patch bundle: a path relative to the VM's root, its permission
// bits (0644 or 0755) and its content (base64 in JSON).
type BundleFile struct {
	Path    string      `json:"path"`
	Mode    fs.FileMode `json:"mode"`
	Content []byte      `json:"content"`
}

// Bundle is the agent and scripts a platform live-patches system VMs with. Checksum is the
// SHA-256 (hex) of the files (see BundleChecksum); it is the scripts version a patched VM
// reports. Version names the bundle (softwareversion in listRouters). Services are the
// daemons restarted once the files are in place.
type Bundle struct {
	Version      string       `json:"version"`
	AgentVersion string       `json:"agentVersion"`
	Checksum     string       `json:"checksum"`
	Files        []BundleFile `json:"files"`
	Services     []string     `json:"services"`
}

// BundleChecksum is the SHA-256 (hex) of a bundle's files in path order: each file's path,
// permission bits and content, length-prefixed, so no two different file sets share it.
func BundleChecksum(files []BundleFile) string {
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b BundleFile) int { return strings.Compare(a.Path, b.Path) })
	h := sha256.New()
	for _, f := range sorted {
		fmt.Fprintf(h, "%d:%s\x00%04o\x00%d:", len(f.Path), f.Path, f.Mode.Perm(), len(f.Content))
		h.Write(f.Content)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// NewBundle builds a bundle of files: sorted by path, checksummed, named
// "<agentVersion>+<first 8 hex digits of the checksum>" so that another content is another
// version.
func NewBundle(agentVersion string, files []BundleFile, services []string) (Bundle, error) {
	b := Bundle{AgentVersion: agentVersion, Files: slices.Clone(files), Services: slices.Clone(services)}
	slices.SortFunc(b.Files, func(a, b BundleFile) int { return strings.Compare(a.Path, b.Path) })
	b.Checksum = BundleChecksum(b.Files)
	b.Version = agentVersion + "+" + b.Checksum[:8]
	return b, b.Validate()
}

//go:embed all:bundle
var bundleFS embed.FS

// PatchServices are the daemons a live patch restarts: those the router's scripts configure.
// ssh is left running: the patch itself comes over it.
func PatchServices() []string {
	return []string{ServiceDnsmasq, ServiceHaproxy, ServiceApache2}
}

// DefaultBundle is the bundle this build of the platform patches routers with: the scripts
// under agent/bundle (embedded; shell scripts are 0755), for this agent Version.
func DefaultBundle() (Bundle, error) {
	var files []BundleFile
	err := fs.WalkDir(bundleFS, "bundle", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := bundleFS.ReadFile(p)
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if strings.HasSuffix(p, ".sh") {
			mode = 0o755
		}
		files = append(files, BundleFile{Path: strings.TrimPrefix(p, "bundle/"), Mode: mode, Content: data})
		return nil
	})
	if err != nil {
		return Bundle{}, fmt.Errorf("read the embedded patch bundle: %w", err)
	}
	return NewBundle(Version, files, PatchServices())
}

// Validate checks a bundle's shape: a version, files with clean relative paths under the
// patchable directories and 0644/0755 modes, no path twice, and a checksum equal to the
// files' (a mismatch is named, with both values).
func (b Bundle) Validate() error {
	if strings.TrimSpace(b.Version) == "" {
		return errors.New("patch bundle: no version")
	}
	if len(b.Files) == 0 {
		return errors.New("patch bundle: no files")
	}
	seen := map[string]bool{}
	for _, f := range b.Files {
		if err := validBundlePath(f.Path); err != nil {
			return err
		}
		if seen[f.Path] {
			return fmt.Errorf("patch bundle: %s appears twice", f.Path)
		}
		seen[f.Path] = true
		if f.Mode != 0o644 && f.Mode != 0o755 {
			return fmt.Errorf("patch bundle: %s has mode %04o, want 0644 or 0755", f.Path, uint32(f.Mode))
		}
	}
	for _, s := range b.Services {
		if s == "" || strings.ContainsAny(s, "/ \t\n") {
			return fmt.Errorf("patch bundle: %q is not a service name", s)
		}
	}
	if got := BundleChecksum(b.Files); got != strings.ToLower(strings.TrimSpace(b.Checksum)) {
		return &ChecksumError{Declared: b.Checksum, Actual: got}
	}
	return nil
}

// ChecksumError is a bundle whose files do not have the checksum it declares: it was
// corrupted or tampered with on the way, and nothing of it is installed.
type ChecksumError struct {
	Declared, Actual string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("patch bundle checksum mismatch: declared %q, the files' SHA-256 is %s: nothing installed", e.Declared, e.Actual)
}

func validBundlePath(p string) error {
	if p == "" || path.IsAbs(p) || path.Clean(p) != p || strings.HasPrefix(p, "../") || p == ".." || strings.Contains(p, "\\") {
		return fmt.Errorf("patch bundle: %q is not a clean relative path", p)
	}
	for _, pre := range patchPrefixes() {
		if strings.HasPrefix(p, pre) && len(p) > len(pre) {
			return nil
		}
	}
	return fmt.Errorf("patch bundle: %s is outside the patchable directories (%s)", p, strings.Join(patchPrefixes(), ", "))
}

// PatchRecord is what the agent records of the bundle it installed (PatchRecordFile).
type PatchRecord struct {
	Version      string    `json:"version"`
	AgentVersion string    `json:"agentVersion"`
	Checksum     string    `json:"checksum"`
	Files        []string  `json:"files"`
	Services     []string  `json:"services"`
	InstalledAt  time.Time `json:"installedAt"`
}

// PatchResult is what `sysvm-agent patch` prints.
type PatchResult struct {
	// Changed is false when the bundle was installed already (nothing was done).
	Changed bool `json:"changed"`
	// Version and ScriptsVersion are the bundle's version and checksum, now recorded.
	Version         string   `json:"version"`
	AgentVersion    string   `json:"agentVersion"`
	ScriptsVersion  string   `json:"scriptsVersion"`
	TemplateVersion string   `json:"templateVersion"`
	Files           []string `json:"files,omitempty"`
	Restarted       []string `json:"restarted,omitempty"`
}

// InstalledPatch reads the record of the installed bundle (ok false when none).
func (a *Agent) InstalledPatch() (PatchRecord, bool, error) {
	data, err := os.ReadFile(a.Path(PatchRecordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return PatchRecord{}, false, nil
	}
	if err != nil {
		return PatchRecord{}, false, fmt.Errorf("read /%s: %w", PatchRecordFile, err)
	}
	var rec PatchRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return PatchRecord{}, false, fmt.Errorf("parse /%s: %w", PatchRecordFile, err)
	}
	return rec, true, nil
}

// installed reports whether b is the recorded bundle, the scripts signature names it and
// every file of it has its content and mode on disk.
func (a *Agent) installed(b Bundle) bool {
	rec, ok, err := a.InstalledPatch()
	if err != nil || !ok || rec.Checksum != b.Checksum {
		return false
	}
	if sig, err := a.firstLine(ScriptsSignatureFile); err != nil || sig != b.Checksum {
		return false
	}
	for _, f := range b.Files {
		st, err := os.Stat(a.Path(f.Path))
		if err != nil || st.Mode().Perm() != f.Mode {
			return false
		}
		data, err := os.ReadFile(a.Path(f.Path))
		if err != nil || string(data) != string(f.Content) {
			return false
		}
	}
	return true
}

// Patch installs a bundle: it is validated (a bad checksum refuses it, naming both sums,
// before anything is written); unless force, a bundle already installed is a no-op
// (Changed false). Otherwise every file is staged next to its target (through System, so a
// read-only root fails here with nothing changed), then all are renamed into place; the
// services are restarted through System (as service monitoring does); and only then are the
// scripts signature and the record written, so a patch that failed half way is applied in full
// by a retry rather than taken for done.
func (a *Agent) Patch(ctx context.Context, b Bundle, force bool) (PatchResult, error) {
	if err := b.Validate(); err != nil {
		return PatchResult{}, err
	}
	b.Checksum = strings.ToLower(strings.TrimSpace(b.Checksum))
	tv, _ := a.firstLine(ReleaseFile)
	out := PatchResult{Version: b.Version, AgentVersion: b.AgentVersion, ScriptsVersion: b.Checksum, TemplateVersion: tv}
	if !force && a.installed(b) {
		return out, nil
	}
	out.Changed = true
	type staged struct{ tmp, dst, rel string }
	var stage []staged
	cleanup := func() {
		for _, s := range stage {
			_ = os.Remove(s.tmp)
		}
	}
	for _, f := range b.Files {
		dst := a.Path(f.Path)
		tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".sysvm-patch")
		if err := a.Sys.WriteFile(tmp, f.Content, f.Mode); err != nil {
			cleanup()
			return PatchResult{}, fmt.Errorf("stage /%s: %w (nothing installed)", f.Path, err)
		}
		stage = append(stage, staged{tmp: tmp, dst: dst, rel: f.Path})
	}
	for i, s := range stage {
		if err := os.Rename(s.tmp, s.dst); err != nil {
			for _, rest := range stage[i:] {
				_ = os.Remove(rest.tmp)
			}
			return PatchResult{}, fmt.Errorf("install /%s: %w (%d of %d files installed; a retry installs the rest)", s.rel, err, i, len(stage))
		}
		out.Files = append(out.Files, "/"+s.rel)
	}
	var failed []string
	for _, svc := range b.Services {
		if err := a.Sys.RestartService(ctx, svc); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", svc, err))
			continue
		}
		out.Restarted = append(out.Restarted, svc)
	}
	if len(failed) > 0 {
		return out, fmt.Errorf("files installed but services did not restart (%s): the patch is not recorded", strings.Join(failed, "; "))
	}
	rec := PatchRecord{Version: b.Version, AgentVersion: b.AgentVersion, Checksum: b.Checksum,
		Services: b.Services, InstalledAt: a.Sys.Now().UTC()}
	for _, f := range b.Files {
		rec.Files = append(rec.Files, f.Path)
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return out, fmt.Errorf("encode the patch record: %w", err)
	}
	if err := a.Sys.WriteFile(a.Path(ScriptsSignatureFile), []byte(b.Checksum+"\n"), 0o644); err != nil {
		return out, fmt.Errorf("record the scripts version: %w", err)
	}
	if err := a.Sys.WriteFile(a.Path(PatchRecordFile), append(data, '\n'), 0o644); err != nil {
		return out, fmt.Errorf("record the patch: %w", err)
	}
	return out, nil
}

// patchCommand is `sysvm-agent patch [--force]`: the bundle (JSON) on stdin.
func (a *Agent) patchCommand(ctx context.Context, args []string, stdin io.Reader, stderr io.Writer, printJSON func(any) int) int {
	force := false
	switch {
	case len(args) == 1:
	case len(args) == 2 && args[1] == "--force":
		force = true
	default:
		fmt.Fprint(stderr, "sysvm-agent: patch takes only --force (the bundle comes on stdin)\n")
		return ExitUsage
	}
	data, err := io.ReadAll(io.LimitReader(stdin, MaxBundleBytes+1))
	if err != nil {
		fmt.Fprintf(stderr, "sysvm-agent: read the patch bundle: %v\n", err)
		return ExitError
	}
	if len(data) > MaxBundleBytes {
		fmt.Fprintf(stderr, "sysvm-agent: the patch bundle is larger than %d bytes\n", MaxBundleBytes)
		return ExitError
	}
	var b Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		fmt.Fprintf(stderr, "sysvm-agent: parse the patch bundle: %v\n", err)
		return ExitError
	}
	res, err := a.Patch(ctx, b, force)
	if err != nil {
		fmt.Fprintf(stderr, "sysvm-agent: %v\n", err)
		return ExitError
	}
	return printJSON(res)
}
