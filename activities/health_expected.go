package activities

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/models"
)

// ExpectedFromStore is what a router must serve according to the inventory: the running guest
// VMs of the networks it serves (its network, or every tier of its VPC), and their port
// forwarding and load balancing rules with their backends. It is the default when
// Health.Expected is nil; a hook that adds to the inventory's view can start from it.
func (h *Health) ExpectedFromStore(ctx context.Context, vm models.SystemVM) (ExpectedState, error) {
	nets, err := h.routerNetworks(ctx, vm)
	if err != nil {
		return ExpectedState{}, err
	}
	exp, err := h.expectedOf(ctx, nets)
	if err != nil {
		return ExpectedState{}, fmt.Errorf("expected state of router %s: %w", vm.Name, err)
	}
	return exp, nil
}

// expectedOf reads the guest VM and rule rows of networks, in a deterministic order: by
// network, then name (VMs) or public address and port (rules), then ID.
func (h *Health) expectedOf(ctx context.Context, nets []models.Network) (ExpectedState, error) {
	var exp ExpectedState
	if len(nets) == 0 {
		return exp, nil
	}
	ids := make([]string, 0, len(nets))
	for _, n := range nets {
		ids = append(ids, n.ID)
	}
	db := h.Store.DB.WithContext(ctx)

	var vms []models.GuestVM
	if err := db.Where("network_id IN ? AND state = ?", ids, models.StateRunning).
		Order("network_id, name, id").Find(&vms).Error; err != nil {
		return ExpectedState{}, fmt.Errorf("guest VMs: %w", err)
	}
	for _, v := range vms {
		exp.VMs = append(exp.VMs, agent.ExpectedVM{MAC: v.MAC, IP: v.IP, Name: v.Name})
	}

	var pfs []models.PortForwardingRule
	if err := db.Where("network_id IN ?", ids).Order("network_id, public_ip, public_port, protocol, id").
		Find(&pfs).Error; err != nil {
		return ExpectedState{}, fmt.Errorf("port forwarding rules: %w", err)
	}
	for _, r := range pfs {
		exp.PortForwarding = append(exp.PortForwarding, agent.PortForwarding{PublicIP: r.PublicIP,
			PublicPort: r.PublicPort, PublicEndPort: r.PublicEndPort, PrivateIP: r.PrivateIP,
			PrivatePort: r.PrivatePort, PrivateEndPort: r.PrivateEndPort, Protocol: r.Protocol})
	}

	var lbs []models.LoadBalancerRule
	if err := db.Preload("Backends", func(q *gorm.DB) *gorm.DB { return q.Order("ip, port, id") }).
		Where("network_id IN ?", ids).Order("network_id, public_ip, public_port, id").Find(&lbs).Error; err != nil {
		return ExpectedState{}, fmt.Errorf("load balancing rules: %w", err)
	}
	for _, r := range lbs {
		rule := agent.LBRule{PublicIP: r.PublicIP, PublicPort: r.PublicPort, MaxConn: r.MaxConn}
		for _, b := range r.Backends {
			rule.Backends = append(rule.Backends, agent.LBBackend{IP: b.IP, Port: b.Port})
		}
		exp.LoadBalancing = append(exp.LoadBalancing, rule)
	}
	return exp, nil
}
