package fleet

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/sysvm/sysvm/agent"
)

// The simulated network's service addresses (public IPs, guest gateways). A simulated VM
// holds an address while it runs and is not a redundant BACKUP (keepalived keeps a BACKUP's
// addresses down): the addresses it boots with (RouterSpec.BootAddresses) and those the
// platform associated with it over SSH (`sysvm-agent ip-assoc`, which survive a restart as
// CloudStack's ips.json does). The fleet refuses an ip-assoc of an address another running VM
// holds, and records every moment two VMs held one address (a VM booting with an address
// already held cannot be refused, as on a real network): Conflicts.

// Conflict is one moment two simulated VMs held, or one tried to take, the same service address.
type Conflict struct {
	Address string `json:"address"`
	// Holders are the fleet IDs (instance names) that held it at that moment, the newcomer last.
	Holders []string  `json:"holders"`
	At      time.Time `json:"at"`
	// Refused: an ip-assoc was refused, so the address was never held twice.
	Refused bool `json:"refused,omitempty"`
}

func (c Conflict) String() string {
	what := "held by"
	if c.Refused {
		what = "refused, wanted by"
	}
	return fmt.Sprintf("%s %s %v at %s", c.Address, what, c.Holders, c.At.Format(time.RFC3339Nano))
}

// activeLocked is the set of addresses r holds now. Callers hold f.mu.
func (r *router) activeLocked() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.running || r.spec.RedundantState == agent.RedundantBackup {
		return nil
	}
	out := slices.Clone(r.spec.BootAddresses)
	for _, a := range r.assoc {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for i := range out {
		out[i] = canonical(out[i])
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// refreshLocked brings the holders index in line with what r holds now and records a
// conflict for every address r newly holds that another VM holds too. Callers hold f.mu.
func (f *Fleet) refreshLocked(r *router, id string) {
	now := f.activeOrNil(r)
	for _, a := range r.held {
		if !slices.Contains(now, a) {
			f.holders[a] = slices.DeleteFunc(f.holders[a], func(h string) bool { return h == id })
			if len(f.holders[a]) == 0 {
				delete(f.holders, a)
			}
		}
	}
	for _, a := range now {
		if slices.Contains(f.holders[a], id) {
			continue
		}
		f.holders[a] = append(f.holders[a], id)
		if len(f.holders[a]) > 1 {
			c := Conflict{Address: a, Holders: slices.Clone(f.holders[a]), At: time.Now().UTC()}
			f.conflicts = append(f.conflicts, c)
			f.log.Warn("two simulated VMs hold one service address", "conflict", c.String())
		}
	}
	r.held = now
}

func (f *Fleet) activeOrNil(r *router) []string {
	if r == nil {
		return nil
	}
	return r.activeLocked()
}

// dropLocked removes a router from the holders index (it is removed from the fleet).
func (f *Fleet) dropLocked(r *router, id string) {
	r.mu.Lock()
	r.running = false
	r.mu.Unlock()
	f.refreshLocked(r, id)
}

// associate is the simulated network's side of ip-assoc on router r: it refuses (and records)
// an address another VM holds, else r holds exactly up (while it runs).
func (f *Fleet) associate(_ context.Context, r *router, up []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := r.id()
	r.mu.Lock()
	active := r.running && r.spec.RedundantState != agent.RedundantBackup
	r.mu.Unlock()
	if active {
		for _, a := range up {
			a = canonical(a)
			others := slices.DeleteFunc(slices.Clone(f.holders[a]), func(h string) bool { return h == id })
			if len(others) > 0 {
				c := Conflict{Address: a, Holders: append(others, id), At: time.Now().UTC(), Refused: true}
				f.conflicts = append(f.conflicts, c)
				f.log.Warn("ip-assoc refused: the address is held", "conflict", c.String())
				return fmt.Errorf("address %s is in use by %v (duplicate address detected)", a, others)
			}
		}
	}
	r.mu.Lock()
	r.assoc = slices.Clone(up)
	r.mu.Unlock()
	f.refreshLocked(r, id)
	return nil
}

// SetRunning powers a simulated VM on or off on the simulated network: a stopped VM holds no
// service address (it still keeps what was associated with it, for its next start). It does
// not change whether the VM answers SSH (Inject FaultUnreachable does).
func (f *Fleet) SetRunning(id string, running bool) error {
	r, err := f.router(id)
	if err != nil {
		return fmt.Errorf("power of %s: %w", id, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r.mu.Lock()
	r.running = running
	r.mu.Unlock()
	f.refreshLocked(r, id)
	return nil
}

// Running reports whether a simulated VM is powered on.
func (f *Fleet) Running(id string) (bool, error) {
	r, err := f.router(id)
	if err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running, nil
}

// Holders lists the simulated VMs (fleet IDs) holding a service address now.
func (f *Fleet) Holders(address string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.holders[canonical(address)])
	sort.Strings(out)
	return out
}

// Held lists the service addresses a simulated VM holds now.
func (f *Fleet) Held(id string) ([]string, error) {
	r, err := f.router(id)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(r.held), nil
}

// Conflicts lists every moment two simulated VMs held one service address, or an ip-assoc was
// refused because another held it, oldest first.
func (f *Fleet) Conflicts() []Conflict {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.conflicts)
}
