package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// System is everything the checks need from outside the router's file tree: the kernel's
// figures, the network, the service manager, the firewall, processes and file writes. The file
// tree itself is read directly under the agent's root directory ("/" in a real router). There
// are two implementations: LinuxSystem for a real Debian system VM and SandboxSystem for the
// simulated router fleet. Implementations are safe for concurrent use.
type System interface {
	// Now is the clock every start, end and lastupdated time comes from.
	Now() time.Time
	// Statfs reports the file system holding path (a path under the agent's root).
	Statfs(path string) (DiskStats, error)
	// CPUUsage reports the share of CPU time not idle, in percent (0-100).
	CPUUsage(ctx context.Context) (float64, error)
	// Memory reports the memory figures.
	Memory() (MemoryStats, error)
	// Ping sends one echo request to ip and returns nil when a reply came back.
	Ping(ctx context.Context, ip string) error
	// ServiceActive reports whether the named service (a systemd unit name such as "dnsmasq")
	// is running.
	ServiceActive(ctx context.Context, name string) (bool, error)
	// RestartService restarts the named service.
	RestartService(ctx context.Context, name string) error
	// IptablesSave returns the output of iptables-save (all tables).
	IptablesSave(ctx context.Context) (string, error)
	// Exec runs a program directly (never through a shell) and returns its output and exit
	// status. A non-zero exit is not an error; err is for a program that could not run or was
	// killed by ctx.
	Exec(ctx context.Context, cmd Command) (ExecResult, error)
	// WriteFile replaces path with data atomically (a temporary file in the same directory, then
	// a rename), creating parent directories. On a read-only file system it fails with an error
	// that errors.Is(err, syscall.EROFS).
	WriteFile(path string, data []byte, perm fs.FileMode) error
	// Remove removes a file.
	Remove(path string) error
}

// DiskStats are a file system's figures, as statvfs gives them.
type DiskStats struct {
	TotalBytes uint64
	// FreeBytes is the space available to an unprivileged user (f_bavail).
	FreeBytes uint64
	ReadOnly  bool
}

// MemoryStats are the memory figures of /proc/meminfo.
type MemoryStats struct {
	TotalBytes     uint64
	AvailableBytes uint64
}

// UsedPercent is the share of memory not available, in percent.
func (m MemoryStats) UsedPercent() float64 {
	if m.TotalBytes == 0 {
		return 0
	}
	used := m.TotalBytes - min(m.AvailableBytes, m.TotalBytes)
	return float64(used) * 100 / float64(m.TotalBytes)
}

// Command is a program to run with its argv; nothing goes through a shell.
type Command struct {
	Path string
	Args []string
	// Dir is the working directory ("" = the caller's).
	Dir string
	// Env is added to a minimal environment (PATH, LANG=C).
	Env []string
}

// ExecResult is what a finished program produced.
type ExecResult struct {
	Stdout   []byte
	Stderr   []byte
	ExitCode int
}

// maxOutput bounds what is kept of a program's stdout and stderr.
const maxOutput = 64 << 10

// runCommand runs cmd with os/exec: no shell, bounded output, the whole process group killed
// when ctx ends.
func runCommand(ctx context.Context, c Command) (ExecResult, error) {
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	cmd.Dir = c.Dir
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}, c.Env...)
	var stdout, stderr limitedBuffer
	stdout.limit, stderr.limit = maxOutput, maxOutput
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	setProcessGroup(cmd)
	// A grandchild keeping the pipes open must not hold us past the kill.
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	res := ExecResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if ctx.Err() != nil {
		return res, fmt.Errorf("run %s: %w", c.Path, ctx.Err())
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		res.ExitCode = exitErr.ExitCode()
		if res.ExitCode < 0 {
			return res, fmt.Errorf("run %s: %w", c.Path, err)
		}
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("run %s: %w", c.Path, err)
	}
	return res, nil
}

// limitedBuffer keeps the first limit bytes written and drops the rest.
type limitedBuffer struct {
	bytes.Buffer
	limit int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}

// writeFileAtomic writes data to a temporary file next to path, syncs it to disk when sync is
// set, and renames it over path.
func writeFileAtomic(path string, data []byte, perm fs.FileMode, sync bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
