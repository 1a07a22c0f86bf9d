package bench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Linux process accounting from /proc, to measure the CPU time of the processes of a sweep.

// clockTick is the length of one /proc clock tick (USER_HZ), read once from the auxiliary
// vector (AT_CLKTCK); Linux uses 100 Hz on every architecture sysvm runs on.
var clockTick = func() time.Duration {
	const atClkTck = 17
	b, err := os.ReadFile("/proc/self/auxv")
	if err == nil {
		for i := 0; i+16 <= len(b); i += 16 {
			k, v := binary.LittleEndian.Uint64(b[i:]), binary.LittleEndian.Uint64(b[i+8:])
			if k == atClkTck && v > 0 {
				return time.Second / time.Duration(v)
			}
		}
	}
	return 10 * time.Millisecond
}()

// statFields returns the fields of /proc/<pid>/stat after the command name, so that index 0
// is field 3 (state), index 1 field 4 (ppid), index 11 field 14 (utime), index 12 field 15
// (stime).
func statFields(pid int) (comm string, fields []string, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", nil, err
	}
	open, closing := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return "", nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields = strings.Fields(string(b[closing+1:]))
	if len(fields) < 13 {
		return "", nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	return string(b[open+1 : closing]), fields, nil
}

// ProcessCPU is the CPU time (user plus system) a process has used so far.
func ProcessCPU(pid int) (time.Duration, error) {
	_, f, err := statFields(pid)
	if err != nil {
		return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("CPU time of process %d: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return time.Duration(u+s) * clockTick, nil
}

// SelfCPU is the CPU time this process has used so far (getrusage, microsecond resolution).
func SelfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// MachineCPU is the CPU time all processors have spent busy (not idle or waiting for I/O)
// since boot, from /proc/stat: the difference of two readings minus the measured processes is
// what everything else on the machine used meanwhile.
func MachineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 7 { // guest and guest_nice are already counted in user and nice
			break
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %q: %w", v, err)
		}
		busy += n
	}
	return time.Duration(busy) * clockTick, nil
}

// LoadAverage is the 1-minute load average of the machine.
func LoadAverage() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("/proc/loadavg is empty")
	}
	return strconv.ParseFloat(f[0], 64)
}

// ChildPIDs lists the live child processes of parent whose command name is comm.
func ChildPIDs(parent int, comm string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		c, f, err := statFields(pid)
		if err != nil || c != comm || f[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == parent {
			out = append(out, pid)
		}
	}
	return out, nil
}
