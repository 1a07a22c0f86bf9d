package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// The upgrade benchmark runs the worker and the simulators (the XAPI pool, the SSH fleet) in
// one process, because the fleet follows the worker's hypervisor calls in process
// (devcloud.Routers.Observe). Their CPU is told apart by profiler labels: the goroutines
// started by the worker (and its Temporal client) carry RoleWorker, those of the simulators
// RoleSimulators (labels are inherited by the goroutines a goroutine starts), and a CPU
// profile of the measured upgrade sums the samples of each. The fleet's bookkeeping when the
// worker creates, starts, stops or destroys a VM runs on the worker's goroutine: a sample with
// a frame in the simulators' code (simulatorFrame) counts as the simulators' whatever its
// label.
const (
	// ProfileRoleKey is the profiler label naming a goroutine's role.
	ProfileRoleKey = "sysvm-bench-role"
	// RoleWorker labels the worker's goroutines.
	RoleWorker = "worker"
	// RoleSimulators labels the simulators' goroutines.
	RoleSimulators = "simulators"
	// simulatorFrame prefixes the functions of the dev cloud's simulators (devcloud and its
	// fleet: the driver decorator that makes the fleet follow the hypervisor).
	simulatorFrame = "github.com/sysvm/sysvm/devcloud."
	// roleOther is the CPU of unlabeled goroutines: the runtime's background work (garbage
	// collection's mark workers, the scavenger) and this benchmark's own code.
	roleOther = "other"
)

// withRole runs f with the goroutine (and those it starts) labeled role.
func withRole(ctx context.Context, role string, f func(context.Context)) {
	pprof.Do(ctx, pprof.Labels(ProfileRoleKey, role), f)
}

// cpuProfile is a running CPU profile of this process.
type cpuProfile struct {
	buf bytes.Buffer
}

func startCPUProfile() (*cpuProfile, error) {
	p := &cpuProfile{}
	if err := pprof.StartCPUProfile(&p.buf); err != nil {
		return nil, fmt.Errorf("CPU profile: %w", err)
	}
	return p, nil
}

// stop ends the profile, writes it to path (when not ""), and returns the CPU time sampled
// for each role.
func (p *cpuProfile) stop(path string) (map[string]time.Duration, error) {
	pprof.StopCPUProfile()
	if path != "" {
		if err := os.WriteFile(path, p.buf.Bytes(), 0o644); err != nil {
			return nil, fmt.Errorf("write CPU profile: %w", err)
		}
	}
	return cpuByLabel(p.buf.Bytes(), ProfileRoleKey)
}

// cpuByLabel sums the CPU time of a gzipped pprof CPU profile by the value of one label
// (samples without it count as roleOther; samples with a simulatorFrame frame as
// RoleSimulators). It reads the profile.proto fields it needs with protowire:
// Profile.sample_type (1), sample (2) with location_id (1), value (2) and label (3: key 1,
// str 2), location (4: id 1, line 4 with function_id 1), function (5: id 1, name 2) and
// string_table (6).
func cpuByLabel(gz []byte, key string) (map[string]time.Duration, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("CPU profile: %w", err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("CPU profile: %w", err)
	}
	type sample struct {
		values    []int64
		labels    [][2]int64 // key, str string indices
		locations []uint64
	}
	var samples []sample
	locFuncs := map[uint64][]uint64{} // location id -> function ids (inlined frames too)
	funcName := map[uint64]int64{}    // function id -> name string index
	var types [][2]int64              // type, unit string indices
	var strs []string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errors.New("CPU profile: bad tag")
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, errors.New("CPU profile: bad field")
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, errors.New("CPU profile: bad bytes field")
		}
		b = b[n:]
		switch num {
		case 1:
			f := varintFields(v)
			types = append(types, [2]int64{f[1], f[2]})
		case 2:
			var s sample
			if err := eachField(v, func(num protowire.Number, typ protowire.Type, val []byte, x uint64) {
				switch {
				case num == 2 && typ == protowire.VarintType:
					s.values = append(s.values, int64(x))
				case num == 2 && typ == protowire.BytesType: // packed
					for len(val) > 0 {
						y, k := protowire.ConsumeVarint(val)
						if k < 0 {
							return
						}
						s.values = append(s.values, int64(y))
						val = val[k:]
					}
				case num == 3 && typ == protowire.BytesType:
					f := varintFields(val)
					s.labels = append(s.labels, [2]int64{f[1], f[2]})
				case num == 1 && typ == protowire.VarintType:
					s.locations = append(s.locations, x)
				case num == 1 && typ == protowire.BytesType: // packed
					for len(val) > 0 {
						y, k := protowire.ConsumeVarint(val)
						if k < 0 {
							return
						}
						s.locations = append(s.locations, y)
						val = val[k:]
					}
				}
			}); err != nil {
				return nil, err
			}
			samples = append(samples, s)
		case 4: // Location: id 1, line 4 (Line: function_id 1)
			var id uint64
			var fns []uint64
			if err := eachField(v, func(num protowire.Number, typ protowire.Type, val []byte, x uint64) {
				switch {
				case num == 1 && typ == protowire.VarintType:
					id = x
				case num == 4 && typ == protowire.BytesType:
					fns = append(fns, uint64(varintFields(val)[1]))
				}
			}); err != nil {
				return nil, err
			}
			locFuncs[id] = fns
		case 5: // Function: id 1, name 2
			f := varintFields(v)
			funcName[uint64(f[1])] = f[2]
		case 6:
			strs = append(strs, string(v))
		}
	}
	str := func(i int64) string {
		if i >= 0 && int(i) < len(strs) {
			return strs[i]
		}
		return ""
	}
	ns := -1
	for i, t := range types {
		if str(t[1]) == "nanoseconds" {
			ns = i
		}
	}
	if ns < 0 {
		return nil, errors.New("CPU profile: no nanoseconds sample type")
	}
	out := map[string]time.Duration{}
	for _, s := range samples {
		if ns >= len(s.values) {
			continue
		}
		role := roleOther
		for _, l := range s.labels {
			if str(l[0]) == key {
				role = str(l[1])
			}
		}
	frames:
		for _, loc := range s.locations {
			for _, fn := range locFuncs[loc] {
				if strings.HasPrefix(str(funcName[fn]), simulatorFrame) {
					role = RoleSimulators
					break frames
				}
			}
		}
		out[role] += time.Duration(s.values[ns])
	}
	return out, nil
}

// varintFields returns the varint fields of a message by number (the last of each).
func varintFields(b []byte) map[protowire.Number]int64 {
	out := map[protowire.Number]int64{}
	_ = eachField(b, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) {
		if typ == protowire.VarintType {
			out[num] = int64(x)
		}
	})
	return out
}

// eachField calls f for each field of a message: x is a varint's value, val a bytes field's.
func eachField(b []byte, f func(num protowire.Number, typ protowire.Type, val []byte, x uint64)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errors.New("CPU profile: bad tag")
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			x, k := protowire.ConsumeVarint(b)
			if k < 0 {
				return errors.New("CPU profile: bad varint")
			}
			f(num, typ, nil, x)
			b = b[k:]
		case protowire.BytesType:
			v, k := protowire.ConsumeBytes(b)
			if k < 0 {
				return errors.New("CPU profile: bad bytes")
			}
			f(num, typ, v, 0)
			b = b[k:]
		default:
			k := protowire.ConsumeFieldValue(num, typ, b)
			if k < 0 {
				return errors.New("CPU profile: bad field")
			}
			b = b[k:]
		}
	}
	return nil
}
