//go:build linux

package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LinuxSystem is the System of a real Debian system VM: /proc for CPU and memory, statfs,
// ping, systemctl and iptables-save run directly with their argv (no shell).
type LinuxSystem struct {
	// ProcDir is where /proc is mounted ("/proc").
	ProcDir string
	// CPUSampleInterval is the gap between the two /proc/stat samples of CPUUsage.
	CPUSampleInterval time.Duration
}

// NewLinuxSystem returns the System of the machine it runs on.
func NewLinuxSystem() *LinuxSystem {
	return &LinuxSystem{ProcDir: "/proc", CPUSampleInterval: 500 * time.Millisecond}
}

// Now returns the wall clock.
func (s *LinuxSystem) Now() time.Time { return time.Now() }

// Statfs calls statfs(2) on path.
func (s *LinuxSystem) Statfs(path string) (DiskStats, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return DiskStats{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	return DiskStats{
		TotalBytes: st.Blocks * uint64(st.Bsize),
		FreeBytes:  st.Bavail * uint64(st.Bsize),
		ReadOnly:   st.Flags&unix.ST_RDONLY != 0,
	}, nil
}

// CPUUsage samples /proc/stat twice, CPUSampleInterval apart, and returns the share of time
// the CPUs were not idle (idle and iowait count as idle).
func (s *LinuxSystem) CPUUsage(ctx context.Context) (float64, error) {
	path := filepath.Join(s.ProcDir, "stat")
	first, err := readCPUTimes(path)
	if err != nil {
		return 0, err
	}
	interval := s.CPUSampleInterval
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	t := time.NewTimer(interval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return 0, fmt.Errorf("sample cpu: %w", ctx.Err())
	case <-t.C:
	}
	second, err := readCPUTimes(path)
	if err != nil {
		return 0, err
	}
	return cpuUsageBetween(first, second)
}

// Memory reads /proc/meminfo.
func (s *LinuxSystem) Memory() (MemoryStats, error) {
	path := filepath.Join(s.ProcDir, "meminfo")
	data, err := os.ReadFile(path)
	if err != nil {
		return MemoryStats{}, fmt.Errorf("read memory figures: %w", err)
	}
	m, err := parseMeminfo(data)
	if err != nil {
		return MemoryStats{}, fmt.Errorf("parse %s: %w", path, err)
	}
	return m, nil
}

// Ping runs `ping -c1 -W1 <ip>`.
func (s *LinuxSystem) Ping(ctx context.Context, ip string) error {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("ping %q: %w", ip, err)
	}
	res, err := runCommand(ctx, Command{Path: "ping", Args: []string{"-c1", "-W1", addr.String()}})
	if err != nil {
		return fmt.Errorf("ping %s: %w", ip, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("ping %s: no reply (exit %d)", ip, res.ExitCode)
	}
	return nil
}

var unitName = regexp.MustCompile(`^[A-Za-z0-9@._-]+$`)

// ServiceActive runs `systemctl is-active --quiet <name>`.
func (s *LinuxSystem) ServiceActive(ctx context.Context, name string) (bool, error) {
	if !unitName.MatchString(name) {
		return false, fmt.Errorf("service name %q is not a unit name", name)
	}
	res, err := runCommand(ctx, Command{Path: "systemctl", Args: []string{"is-active", "--quiet", name}})
	if err != nil {
		return false, fmt.Errorf("query service %s: %w", name, err)
	}
	return res.ExitCode == 0, nil
}

// RestartService runs `systemctl restart <name>`.
func (s *LinuxSystem) RestartService(ctx context.Context, name string) error {
	if !unitName.MatchString(name) {
		return fmt.Errorf("service name %q is not a unit name", name)
	}
	res, err := runCommand(ctx, Command{Path: "systemctl", Args: []string{"restart", name}})
	if err != nil {
		return fmt.Errorf("restart service %s: %w", name, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("restart service %s: exit %d: %s", name, res.ExitCode, strings.TrimSpace(string(res.Stderr)))
	}
	return nil
}

// IptablesSave runs `iptables-save`.
func (s *LinuxSystem) IptablesSave(ctx context.Context) (string, error) {
	res, err := runCommand(ctx, Command{Path: "iptables-save"})
	if err != nil {
		return "", fmt.Errorf("iptables-save: %w", err)
	}
	if res.ExitCode != 0 {
		return "", fmt.Errorf("iptables-save: exit %d: %s", res.ExitCode, strings.TrimSpace(string(res.Stderr)))
	}
	return string(res.Stdout), nil
}

// Exec runs a program with os/exec.
func (s *LinuxSystem) Exec(ctx context.Context, cmd Command) (ExecResult, error) {
	return runCommand(ctx, cmd)
}

// WriteFile writes path atomically and durably (fsync before rename).
func (s *LinuxSystem) WriteFile(path string, data []byte, perm fs.FileMode) error {
	return writeFileAtomic(path, data, perm, true)
}

// Remove removes a file.
func (s *LinuxSystem) Remove(path string) error { return os.Remove(path) }

// setProcessGroup puts the command in its own process group and kills the whole group when
// its context ends, so a custom check's children do not outlive its timeout.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// cpuTimes are the aggregate jiffies of the "cpu" line of /proc/stat.
type cpuTimes struct {
	idle, total uint64
}

func readCPUTimes(path string) (cpuTimes, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return cpuTimes{}, fmt.Errorf("read cpu figures: %w", err)
	}
	t, err := parseProcStat(data)
	if err != nil {
		return cpuTimes{}, fmt.Errorf("parse %s: %w", path, err)
	}
	return t, nil
}

// parseProcStat reads the aggregate "cpu" line: user nice system idle iowait irq softirq steal
// (guest and guest_nice are already counted in user and nice).
func parseProcStat(data []byte) (cpuTimes, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[0] != "cpu" {
			continue
		}
		var vals []uint64
		for _, f := range fields[1:min(len(fields), 9)] {
			v, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("cpu line field %q: %w", f, err)
			}
			vals = append(vals, v)
		}
		var t cpuTimes
		for _, v := range vals {
			t.total += v
		}
		t.idle = vals[3]
		if len(vals) > 4 {
			t.idle += vals[4] // iowait
		}
		return t, nil
	}
	return cpuTimes{}, fmt.Errorf("no aggregate cpu line")
}

func cpuUsageBetween(a, b cpuTimes) (float64, error) {
	if b.total < a.total || b.idle < a.idle {
		return 0, fmt.Errorf("cpu counters went backwards")
	}
	dt := b.total - a.total
	if dt == 0 {
		return 0, nil
	}
	di := b.idle - a.idle
	return float64(dt-min(di, dt)) * 100 / float64(dt), nil
}

// parseMeminfo reads MemTotal and MemAvailable (or, on old kernels, MemFree + Buffers + Cached).
func parseMeminfo(data []byte) (MemoryStats, error) {
	vals := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		if len(fields) > 1 && fields[1] == "kB" {
			v *= 1024
		}
		vals[key] = v
	}
	total, ok := vals["MemTotal"]
	if !ok || total == 0 {
		return MemoryStats{}, fmt.Errorf("no MemTotal")
	}
	avail, ok := vals["MemAvailable"]
	if !ok {
		avail = vals["MemFree"] + vals["Buffers"] + vals["Cached"]
	}
	return MemoryStats{TotalBytes: total, AvailableBytes: avail}, nil
}
