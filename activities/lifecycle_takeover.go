package activities

// Address takeover at a make-before-break recreate's switch: the replacement is built holding
// only its control address; once the old VM is stopped, the platform pushes the service
// addresses (public IP, guest gateways) to it over SSH, as CloudStack's IpAssocCommand does to
// a virtual router, and confirms it serves them before the old VM is destroyed. A rollback
// makes the replacement give them up before the old VM starts again.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
)

// maxJournalDetail is the size of a journaled step's detail (models.OperationStep.Detail).
const maxJournalDetail = 1024

// serviceAddresses are the addresses a system VM serves, to be brought up on its
// replacement at the switch: its public IP and, for a router, the gateway of each guest
// network it serves (its network, or every tier of its VPC).
func (a *Activities) serviceAddresses(ctx context.Context, vm *models.SystemVM) (string, []string, error) {
	var public string
	if addr, err := netip.ParseAddr(strings.TrimSpace(vm.PublicIP)); err == nil {
		public = addr.String()
	}
	if !vm.IsRouter() || (vm.VPCID == "" && vm.NetworkID == "") {
		return public, nil, nil
	}
	q := a.Store.DB.WithContext(ctx).Model(&models.Network{})
	if vm.VPCID != "" {
		q = q.Where("vpc_id = ?", vm.VPCID)
	} else {
		q = q.Where("id = ?", vm.NetworkID)
	}
	var gateways, out []string
	if err := q.Order("id").Pluck("gateway", &gateways).Error; err != nil {
		return "", nil, fmt.Errorf("guest gateways of %s: %w", vm.Name, err)
	}
	for _, gw := range gateways {
		if addr, err := netip.ParseAddr(strings.TrimSpace(gw)); err == nil && addr.String() != public && !slices.Contains(out, addr.String()) {
			out = append(out, addr.String())
		}
	}
	return public, out, nil
}

// associations is the ip-assoc list of the plan's service addresses, to add or release.
func (p RecreatePlan) associations(add bool) []agent.IPAssociation {
	var out []agent.IPAssociation
	if p.PublicIP != "" {
		out = append(out, agent.IPAssociation{IP: p.PublicIP, Kind: agent.AddressPublic, Add: add})
	}
	for _, gw := range p.Gateways {
		out = append(out, agent.IPAssociation{IP: gw, Kind: agent.AddressGuestGateway, Add: add})
	}
	return out
}

// addresses lists the plan's service addresses.
func (p RecreatePlan) addresses() []string {
	var out []string
	for _, e := range p.associations(true) {
		out = append(out, e.IP)
	}
	return out
}

// withoutServiceAddresses takes the service addresses out of a replacement's spec: no public
// IP in its boot arguments or on its public NIC (the NIC stays, with its MAC, for the
// addresses it gets at the switch). Its control address stays.
func withoutServiceAddresses(spec *hypervisors.VMSpec) {
	delete(spec.BootArgs, "publicip")
	for i := range spec.NICs {
		if spec.NICs[i].Kind == hypervisors.NICPublic {
			spec.NICs[i].IP, spec.NICs[i].Netmask, spec.NICs[i].Gateway = "", "", ""
		}
	}
}

// replacementTarget is the SSH access path of the replacement: its control address, through
// the host it runs on.
func (a *Activities) replacementTarget(ctx context.Context, vm *models.SystemVM, p RecreatePlan, info hypervisors.VMInfo) (sshexec.Target, error) {
	row := replacementRow(vm, p)
	row.Name = p.InstanceName
	if id := a.hostID(ctx, vm.ClusterID, info.Host); id != "" {
		row.HostID = id
	}
	t, err := StoreTargets{Store: a.Store}.TargetFor(ctx, *row)
	if err != nil {
		return sshexec.Target{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeNotServing, err)
	}
	return t, nil
}

// stopOld stops the old VM (if it is still on its hypervisor); from then on it holds no
// service address.
func (a *Activities) stopOld(ctx context.Context, d hypervisors.Driver, p RecreatePlan) (RecreateResult, error) {
	res := RecreateResult{Detail: "old VM was missing on its hypervisor"}
	if p.OldExists {
		if err := d.StopVM(ctx, p.OldInstanceName, true); err != nil && !errors.Is(err, hypervisors.ErrNotFound) {
			return RecreateResult{}, fmt.Errorf("stop old %s: %w", p.OldInstanceName, err)
		}
		res.Detail = "stopped " + p.OldInstanceName
	}
	res.OldStoppedAt = time.Now().UTC()
	return res, nil
}

// ipAssoc runs `sysvm-agent ip-assoc` on the replacement with the plan's addresses, added or
// released, and returns the addresses it holds afterwards.
func (a *Activities) ipAssoc(ctx context.Context, vm *models.SystemVM, p RecreatePlan, info hypervisors.VMInfo, add bool) ([]string, error) {
	t, err := a.replacementTarget(ctx, vm, p, info)
	if err != nil {
		return nil, err
	}
	stdin, err := json.Marshal(p.associations(add))
	if err != nil {
		return nil, fmt.Errorf("encode addresses of %s: %w", vm.Name, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := a.Exec.Run(rctx, t, []string{"timeout", "15", DefaultAgentCommand, "ip-assoc"}, stdin)
	if err != nil {
		return nil, fmt.Errorf("replacement %s does not answer over SSH on %s:%d: %w", p.InstanceName, p.ControlIP, sshexec.DefaultPort, err)
	}
	if out.ExitCode != 0 {
		return nil, fmt.Errorf("replacement %s: %s ip-assoc exited %d: %s", p.InstanceName, DefaultAgentCommand, out.ExitCode,
			strings.TrimSpace(string(out.Stderr)))
	}
	var res agent.IPAssocResult
	if err := json.Unmarshal(out.Stdout, &res); err != nil {
		return nil, fmt.Errorf("replacement %s: unreadable ip-assoc output: %w", p.InstanceName, err)
	}
	return res.Addresses, nil
}

// takeOver gives the replacement the service addresses (the old VM is stopped) and confirms
// it serves them: the agent answers with every one of them up, and answers its version with
// the template it was built from. A replacement that does not (yet) is a retryable NotServing
// error; the switch's retry policy bounds how long the network waits before the rollback.
func (a *Activities) takeOver(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM, p RecreatePlan) (RecreateResult, error) {
	want := p.addresses()
	if len(want) == 0 || a.Exec == nil {
		res, err := a.verify(ctx, d, vm, p)
		if err != nil {
			return RecreateResult{}, err
		}
		res.ServingAt = time.Now().UTC()
		if len(want) > 0 {
			res.Detail = "service addresses not pushed (no SSH executor configured); " + res.Detail
		} else {
			res.Detail = "no service addresses; " + res.Detail
		}
		return res, nil
	}
	info, err := d.GetVM(ctx, p.InstanceName)
	if err != nil {
		return RecreateResult{}, fmt.Errorf("inspect replacement %s: %w", p.InstanceName, err)
	}
	if info.State != hypervisors.PowerRunning {
		return RecreateResult{}, temporal.NewApplicationError(
			fmt.Sprintf("replacement %s is %s, not running", p.InstanceName, info.State), ErrTypeNotServing)
	}
	held, err := a.ipAssoc(ctx, vm, p, info, true)
	if err != nil {
		return RecreateResult{}, temporal.NewApplicationError("take over the service addresses: "+err.Error(), ErrTypeNotServing)
	}
	for _, ip := range want {
		if !slices.Contains(held, ip) {
			return RecreateResult{}, temporal.NewApplicationError(
				fmt.Sprintf("replacement %s holds %v after ip-assoc, not %s", p.InstanceName, held, ip), ErrTypeNotServing)
		}
	}
	res, err := a.verify(ctx, d, vm, p)
	if err != nil {
		return RecreateResult{}, err
	}
	res.ServingAt = time.Now().UTC()
	res.Addresses = held
	res.Detail = fmt.Sprintf("serves %s; %s", strings.Join(want, ", "), res.Detail)
	return res, nil
}

// releaseAddresses makes the replacement give the service addresses up, so the old VM can
// start again without two VMs holding one address. A replacement that is not there or not
// running holds nothing; one that does not answer is force-stopped (a stopped VM holds no
// address), and only if that fails too is the step an error.
func (a *Activities) releaseAddresses(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM, p RecreatePlan) (RecreateResult, error) {
	if !p.Takeover || len(p.addresses()) == 0 {
		return RecreateResult{Detail: "no service addresses taken over"}, nil
	}
	info, err := d.GetVM(ctx, p.InstanceName)
	switch {
	case errors.Is(err, hypervisors.ErrNotFound):
		return RecreateResult{Detail: "replacement not created: holds nothing"}, nil
	case err != nil:
		return RecreateResult{}, fmt.Errorf("inspect replacement %s: %w", p.InstanceName, err)
	case info.State != hypervisors.PowerRunning:
		return RecreateResult{Detail: "replacement " + string(info.State) + ": holds nothing"}, nil
	}
	var why error = errors.New("no SSH executor configured")
	if a.Exec != nil {
		held, err := a.ipAssoc(ctx, vm, p, info, false)
		if err == nil {
			for _, ip := range p.addresses() {
				if slices.Contains(held, ip) {
					err = fmt.Errorf("still holds %s after the release", ip)
					break
				}
			}
		}
		if err == nil {
			return RecreateResult{Detail: "released " + strings.Join(p.addresses(), ", ") + " from " + p.InstanceName}, nil
		}
		why = err
	}
	if err := d.StopVM(ctx, p.InstanceName, true); err != nil && !errors.Is(err, hypervisors.ErrNotFound) {
		return RecreateResult{}, fmt.Errorf("release addresses of %s (%v): stop it: %w", p.InstanceName, why, err)
	}
	return RecreateResult{Detail: fmt.Sprintf("replacement %s stopped: it did not release its addresses (%v)", p.InstanceName, why)}, nil
}
