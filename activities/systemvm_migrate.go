package activities

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
)

// Move kinds: migrateSystemVm and scaleSystemVm.
const (
	MoveMigrate = "migrate"
	MoveScale   = "scale"
)

// MoveInput asks PlanMove to plan a migrate or a scale of a system VM.
type MoveInput struct {
	OperationID string `json:"operationId"`
	VMID        string `json:"vmId"`
	// Kind is MoveMigrate or MoveScale.
	Kind string `json:"kind"`
	// HostID is the migrate target ("" lets sysvm choose a host of the cluster with room).
	HostID string `json:"hostId,omitempty"`
	// ServiceOfferingID is the scale target.
	ServiceOfferingID string `json:"serviceOfferingId,omitempty"`
}

// MovePlan is what a migrate or scale will do, decided once from the inventory and the
// driver's capabilities.
type MovePlan struct {
	Kind         string `json:"kind"`
	VMID         string `json:"vmId"`
	Type         string `json:"type"`
	Name         string `json:"name"`
	InstanceName string `json:"instanceName"`
	ClusterID    string `json:"clusterId"`
	// Online: the driver migrates (LiveMigration) or scales (HotScale) the VM as it runs.
	Online bool `json:"online"`
	// StopFirst: the VM runs and the driver cannot move or scale it running: stop, change, start.
	StopFirst bool   `json:"stopFirst"`
	FromHost  string `json:"fromHost,omitempty"`
	ToHostID  string `json:"toHostId,omitempty"`
	ToHost    string `json:"toHost,omitempty"`
	// OfferingID, CPUs and MemoryMB are the scale target.
	OfferingID string `json:"offeringId,omitempty"`
	CPUs       int    `json:"cpus,omitempty"`
	MemoryMB   int    `json:"memoryMb,omitempty"`
}

// PlanMove checks a migrate or scale and decides how it runs: the VM must be Running or
// Stopped; a migrate's target is the named host (of the VM's cluster, Up, not the current
// one) or the Up host of the cluster with the fewest system VMs; a scale's target is a
// service offering with another shape. Where the driver cannot do it on a running VM, the VM
// is stopped first, which a redundant router allows only while its peer is Running (the peer
// keeps serving). Refusals are non-retryable NotAllowed errors.
func (a *Activities) PlanMove(ctx context.Context, in MoveInput) (MovePlan, error) {
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, in.VMID); err != nil {
		return MovePlan{}, classifyStore(err, in.VMID)
	}
	refuse := func(format string, args ...any) (MovePlan, error) {
		return MovePlan{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), ErrTypeNotAllowed, nil)
	}
	if vm.State != models.StateRunning && vm.State != models.StateStopped {
		return refuse("%s %s is %s: only a Running or Stopped system VM can be %sd", vm.Type, vm.Name, vm.State, in.Kind)
	}
	d, err := a.driverFor(ctx, vm.ClusterID)
	if err != nil {
		return MovePlan{}, err
	}
	caps := d.Capabilities()
	p := MovePlan{Kind: in.Kind, VMID: vm.ID, Type: vm.Type, Name: vm.Name, InstanceName: vm.HypervisorName(), ClusterID: vm.ClusterID}
	var from models.Host
	if vm.HostID != "" {
		if err := a.Store.DB.WithContext(ctx).Where("id = ?", vm.HostID).Take(&from).Error; err == nil {
			p.FromHost = from.Name
		}
	}
	switch in.Kind {
	case MoveMigrate:
		p.Online = caps.LiveMigration
		to, err := a.migrationTarget(ctx, vm, in.HostID)
		if err != nil {
			return MovePlan{}, err
		}
		p.ToHostID, p.ToHost = to.ID, to.Name
	case MoveScale:
		p.Online = caps.HotScale
		var so models.ServiceOffering
		if err := a.Store.DB.WithContext(ctx).Where("id = ?", in.ServiceOfferingID).Take(&so).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return refuse("no service offering %s", in.ServiceOfferingID)
			}
			return MovePlan{}, fmt.Errorf("load service offering %s: %w", in.ServiceOfferingID, err)
		}
		if so.CPUs <= 0 || so.MemoryMB <= 0 {
			return refuse("service offering %s has no CPU count or memory", so.Name)
		}
		if so.SystemVMType != "" && so.SystemVMType != vm.Type {
			return refuse("service offering %s is for %s, not for %s %s", so.Name, so.SystemVMType, vm.Type, vm.Name)
		}
		if so.CPUs == vm.CPUs && so.MemoryMB == vm.MemoryMB {
			return refuse("%s already has %d CPUs and %d MB (service offering %s)", vm.Name, so.CPUs, so.MemoryMB, so.Name)
		}
		p.OfferingID, p.CPUs, p.MemoryMB = so.ID, so.CPUs, so.MemoryMB
	default:
		return refuse("unknown move %q (want migrate or scale)", in.Kind)
	}
	p.StopFirst = vm.State == models.StateRunning && !p.Online
	if p.StopFirst && vm.IsRouter() && vm.IsRedundant {
		if err := a.peerServing(ctx, vm); err != nil {
			return MovePlan{}, err
		}
	}
	return p, nil
}

// migrationTarget is the named host, checked, or the cluster's Up host with the fewest
// system VMs other than the VM's own.
func (a *Activities) migrationTarget(ctx context.Context, vm models.SystemVM, hostID string) (models.Host, error) {
	refuse := func(format string, args ...any) (models.Host, error) {
		return models.Host{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), ErrTypeNotAllowed, nil)
	}
	if hostID != "" {
		var h models.Host
		if err := a.Store.DB.WithContext(ctx).Where("id = ?", hostID).Take(&h).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return refuse("no host %s", hostID)
			}
			return models.Host{}, fmt.Errorf("load host %s: %w", hostID, err)
		}
		switch {
		case h.ID == vm.HostID:
			return refuse("%s already runs on host %s", vm.Name, h.Name)
		case h.ClusterID != vm.ClusterID:
			return refuse("host %s is not in the cluster of %s: system VMs migrate within their cluster", h.Name, vm.Name)
		case h.State != models.HostUp:
			return refuse("host %s is %s, not Up", h.Name, h.State)
		}
		return h, nil
	}
	var hosts []models.Host
	if err := a.Store.DB.WithContext(ctx).Where("cluster_id = ? AND state = ? AND id <> ?", vm.ClusterID, models.HostUp, vm.HostID).
		Order("name").Find(&hosts).Error; err != nil {
		return models.Host{}, fmt.Errorf("hosts of cluster %s: %w", vm.ClusterID, err)
	}
	best, bestLoad := -1, int64(0)
	for i, h := range hosts {
		var load int64
		if err := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("host_id = ? AND state <> ?", h.ID, models.StateDestroyed).
			Count(&load).Error; err != nil {
			return models.Host{}, err
		}
		if best < 0 || load < bestLoad {
			best, bestLoad = i, load
		}
	}
	if best < 0 {
		return refuse("the cluster of %s has no other Up host to migrate to", vm.Name)
	}
	return hosts[best], nil
}

// peerServing refuses to stop a redundant router whose peer is not Running.
func (a *Activities) peerServing(ctx context.Context, vm models.SystemVM) error {
	q := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("type = ? AND id <> ? AND state = ?", models.TypeRouter, vm.ID, models.StateRunning)
	if vm.VPCID != "" {
		q = q.Where("vpc_id = ?", vm.VPCID)
	} else {
		q = q.Where("network_id = ?", vm.NetworkID)
	}
	var n int64
	if err := q.Count(&n).Error; err != nil {
		return fmt.Errorf("peers of %s: %w", vm.Name, err)
	}
	if n == 0 {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"redundant router %s must be stopped to be changed here, and its peer is not Running: the network would lose its router", vm.Name),
			ErrTypeNotAllowed, nil)
	}
	return nil
}

// MoveStepInput asks MoveVM to do the change of a plan.
type MoveStepInput struct {
	OperationID string   `json:"operationId"`
	Plan        MovePlan `json:"plan"`
}

// MoveVM migrates the VM to the plan's host or scales it to the plan's shape with the driver,
// then reads the VM back from its hypervisor and writes what it says (state, host, CPUs,
// memory) into the row; a scale records the new service offering, a migrate checks the VM is
// on the target (a move the hypervisor does not confirm is an error). Journaled per
// operation: a retry after a recorded success does nothing.
func (a *Activities) MoveVM(ctx context.Context, in MoveStepInput) (HypervisorStepResult, error) {
	p := in.Plan
	key := "move." + p.Kind
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, p.VMID); err != nil {
		return HypervisorStepResult{}, classifyStore(err, p.VMID)
	}
	if done, err := a.stepDone(ctx, in.OperationID, key); err != nil {
		return HypervisorStepResult{}, err
	} else if done {
		return HypervisorStepResult{State: vm.State, Skipped: true}, nil
	}
	var d hypervisors.Driver
	var stepErr error
	err := heartbeatWhile(ctx, key, func() error {
		var err error
		if d, err = a.driverFor(ctx, vm.ClusterID); err != nil {
			return err
		}
		if p.Kind == MoveMigrate {
			stepErr = d.MigrateVM(ctx, vm.HypervisorName(), p.ToHost)
		} else {
			stepErr = d.ScaleVM(ctx, vm.HypervisorName(), p.CPUs, p.MemoryMB)
		}
		return nil
	})
	if err != nil {
		return HypervisorStepResult{}, err
	}
	res, syncErr := a.syncState(ctx, d, &vm, false)
	if stepErr != nil {
		return res, classify(fmt.Errorf("%s %s: %w", p.Kind, vm.HypervisorName(), stepErr))
	}
	if syncErr != nil {
		return res, syncErr
	}
	info, err := d.GetVM(ctx, vm.HypervisorName())
	if err != nil {
		return res, classify(fmt.Errorf("inspect %s after %s: %w", vm.HypervisorName(), p.Kind, err))
	}
	detail := ""
	switch p.Kind {
	case MoveMigrate:
		if info.Host != "" && info.Host != p.ToHost {
			return res, fmt.Errorf("%s is on host %s after the migration, not on %s", vm.Name, info.Host, p.ToHost)
		}
		if info.Host == "" {
			// A halted XenServer VM lives on no host: its affinity names where it starts.
			if err := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vm.ID).
				Update("host_id", p.ToHostID).Error; err != nil {
				return res, fmt.Errorf("record host of %s: %w", vm.Name, err)
			}
		}
		detail = "on " + p.ToHost
	case MoveScale:
		if info.CPUs != p.CPUs || info.MemoryMB != p.MemoryMB {
			return res, fmt.Errorf("%s has %d CPUs and %d MB after scaling, want %d and %d", vm.Name, info.CPUs, info.MemoryMB, p.CPUs, p.MemoryMB)
		}
		if err := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vm.ID).
			Updates(map[string]any{"service_offering_id": p.OfferingID, "cpus": info.CPUs, "memory_mb": info.MemoryMB}).Error; err != nil {
			return res, fmt.Errorf("record offering of %s: %w", vm.Name, err)
		}
		detail = fmt.Sprintf("%d CPUs, %d MB", info.CPUs, info.MemoryMB)
	}
	res.Host = info.Host
	if res.Host == "" {
		res.Host = p.ToHost
	}
	return res, a.markStep(ctx, in.OperationID, key, detail)
}
