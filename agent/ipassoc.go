package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"slices"
)

// IPAssociationsFile records the service addresses the platform associated with this system
// VM (`sysvm-agent ip-assoc`), relative to the agent's root. Like CloudStack's
// /etc/cloudstack/ips.json it survives a reboot: a VM started again brings them up again.
const IPAssociationsFile = "var/cache/cloud/ip_associations.json"

// Kinds of service addresses the platform associates with a system VM.
const (
	// AddressPublic is the VM's public (source NAT, console, storage) IP.
	AddressPublic = "public"
	// AddressGuestGateway is the gateway IP of a guest network the router serves.
	AddressGuestGateway = "guest-gateway"
)

// IPAssociation is one entry of the list `sysvm-agent ip-assoc` reads on stdin, as
// CloudStack's IpAssocCommand sends the virtual router its ip_associations: bring the address
// up (Add) or release it.
type IPAssociation struct {
	IP   string `json:"ip"`
	Kind string `json:"kind"`
	Add  bool   `json:"add"`
}

// IPAssocResult is what `sysvm-agent ip-assoc` prints: the service addresses the VM holds
// afterwards, sorted.
type IPAssocResult struct {
	Addresses []string `json:"addresses"`
}

// AddressSystem is a System that can bring service addresses up and down. SandboxSystem
// implements it (the simulated network of devcloud/fleet decides who holds an address); a
// System without it refuses ip-assoc rather than claim addresses it cannot bring up.
type AddressSystem interface {
	// SetAddresses makes up exactly the service addresses this VM holds. It fails, changing
	// nothing, when the network refuses one (another running VM holds it).
	SetAddresses(ctx context.Context, up []string) error
}

// DecodeIPAssociations reads and validates the ip-assoc list: every entry needs a valid IP
// address and a known kind.
func DecodeIPAssociations(r io.Reader) ([]IPAssociation, error) {
	var list []IPAssociation
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("ip associations: not a JSON list of {ip, kind, add}: %w", err)
	}
	var errs []error
	for i := range list {
		a, err := netip.ParseAddr(list[i].IP)
		if err != nil {
			errs = append(errs, fmt.Errorf("ip associations[%d].ip %q: %w", i, list[i].IP, err))
			continue
		}
		list[i].IP = a.Unmap().String()
		if list[i].Kind != AddressPublic && list[i].Kind != AddressGuestGateway {
			errs = append(errs, fmt.Errorf("ip associations[%d].kind %q: want %s or %s", i, list[i].Kind, AddressPublic, AddressGuestGateway))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return list, nil
}

// Associations reads the recorded service addresses (none when never associated).
func (a *Agent) Associations() ([]string, error) {
	b, err := os.ReadFile(a.Path(IPAssociationsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read /%s: %w", IPAssociationsFile, err)
	}
	var res IPAssocResult
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("read /%s: %w", IPAssociationsFile, err)
	}
	return res.Addresses, nil
}

// AssociateIPs applies an ip-assoc list: the addresses to add are brought up, those to
// release brought down, and the result recorded in IPAssociationsFile. It is idempotent: an
// address already up (or already released) is left as it is.
func (a *Agent) AssociateIPs(ctx context.Context, list []IPAssociation) (IPAssocResult, error) {
	as, ok := a.Sys.(AddressSystem)
	if !ok {
		return IPAssocResult{}, errors.New("ip-assoc: this system cannot bring service addresses up")
	}
	held, err := a.Associations()
	if err != nil {
		return IPAssocResult{}, err
	}
	for _, e := range list {
		switch i := slices.Index(held, e.IP); {
		case e.Add && i < 0:
			held = append(held, e.IP)
		case !e.Add && i >= 0:
			held = slices.Delete(held, i, i+1)
		}
	}
	slices.Sort(held)
	if held == nil {
		held = []string{}
	}
	if err := as.SetAddresses(ctx, held); err != nil {
		return IPAssocResult{}, fmt.Errorf("ip-assoc: %w", err)
	}
	res := IPAssocResult{Addresses: held}
	b, _ := json.Marshal(res)
	if err := a.Sys.WriteFile(a.Path(IPAssociationsFile), b, 0o644); err != nil {
		return res, fmt.Errorf("ip-assoc: record addresses: %w", err)
	}
	return res, nil
}
