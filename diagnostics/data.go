package diagnostics

import (
	"fmt"
	"path"
	"strings"
)

// MaxExtraFiles bounds the named extra files of one getDiagnosticsData request.
const MaxExtraFiles = 20

// Entry is one item of a diagnostics data archive: a command's output or a file's content,
// collected by running Argv in the VM (a file is `cat <path>`).
type Entry struct {
	// Name is the entry's file name in the archive.
	Name string `json:"name"`
	// Argv is what runs in the VM to collect it.
	Argv []string `json:"argv"`
}

// DefaultEntries are the files and command outputs every archive of a VM of this type holds:
// iptables-save, ip addr, rule and route, dnsmasq and haproxy configuration on a router, and
// the system VM's logs (cloud.log, and the health agent's results on a router).
func DefaultEntries(vmType string, router bool) []Entry {
	out := []Entry{
		{Name: "iptables-save.txt", Argv: []string{"iptables-save"}},
		{Name: "ip-addr.txt", Argv: []string{"ip", "addr", "show"}},
		{Name: "ip-rule.txt", Argv: []string{"ip", "rule", "show"}},
		{Name: "ip-route.txt", Argv: []string{"ip", "route", "show", "table", "all"}},
	}
	files := []string{"/etc/hosts", "/var/log/cloud.log"}
	if router {
		files = append(files, "/etc/dnsmasq.conf", "/etc/dhcphosts.txt", "/etc/haproxy/haproxy.cfg",
			"/root/basic_monitor_results.json", "/root/advance_monitor_results.json")
	}
	for _, f := range files {
		out = append(out, FileEntry(f))
	}
	return out
}

// FileEntry is the entry of one file of the VM.
func FileEntry(p string) Entry {
	return Entry{Name: "files" + p, Argv: []string{"cat", p}}
}

// ValidateFiles checks named extra files: absolute paths of letters, digits, '-', '_', '.'
// and '/', without "..", at most MaxExtraFiles. The error names the field files and the
// offending path and character.
func ValidateFiles(files []string) error {
	if len(files) > MaxExtraFiles {
		return fieldError("files", "%d files named, at most %d are allowed", len(files), MaxExtraFiles)
	}
	for i, f := range files {
		if !strings.HasPrefix(f, "/") {
			return fieldError("files", "files[%d] %q is not an absolute path", i, f)
		}
		pos := 0
		for _, r := range f {
			pos++
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.', r == '/':
				continue
			}
			return fieldError("files", "files[%d] %q: character %q at position %d is not allowed (only letters, digits, '-', '_', '.' and '/')", i, f, r, pos)
		}
		if path.Clean(f) != f || strings.Contains(f, "/../") || strings.HasSuffix(f, "/..") {
			return fieldError("files", "files[%d] %q is not a clean path (no '..', '//' or trailing '/')", i, f)
		}
		if len(f) > 1024 {
			return fieldError("files", "files[%d] is longer than 1024 characters", i)
		}
	}
	return nil
}

// ArchiveName is the file name of a VM's archive.
func ArchiveName(vmName, stamp string) string {
	return fmt.Sprintf("diagnostics-%s-%s.tar.gz", vmName, stamp)
}
