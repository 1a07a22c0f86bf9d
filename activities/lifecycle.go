package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
)

// VMRecord is the part of a system VM row workflows need to decide and report.
type VMRecord struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	Type           string `json:"type"`
	State          string `json:"state"`
	ZoneID         string `json:"zoneId"`
	ClusterID      string `json:"clusterId"`
	HostID         string `json:"hostId"`
	NetworkID      string `json:"networkId,omitempty"`
	VPCID          string `json:"vpcId,omitempty"`
	HypervisorType string `json:"hypervisorType"`
	IsRedundant    bool   `json:"isRedundant"`
	RedundantState string `json:"redundantState,omitempty"`
}

// Non-retryable error types workflows match on.
const (
	ErrTypeNotFound   = "NotFound"
	ErrTypeNotAllowed = "NotAllowed"
)

// LoadVM reads a system VM.
func (a *Activities) LoadVM(ctx context.Context, vmID string) (VMRecord, error) {
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, vmID); err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return VMRecord{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("system VM %s not found", vmID), ErrTypeNotFound, err)
		}
		return VMRecord{}, fmt.Errorf("load system VM %s: %w", vmID, err)
	}
	return VMRecord{ID: vm.ID, Name: vm.Name, Type: vm.Type, State: vm.State, ZoneID: vm.ZoneID,
		ClusterID: vm.ClusterID, HostID: vm.HostID, NetworkID: vm.NetworkID, VPCID: vm.VPCID,
		HypervisorType: vm.HypervisorType, IsRedundant: vm.IsRedundant, RedundantState: vm.RedundantState}, nil
}

// CheckDestroyAllowed refuses to destroy the only router of a network or VPC: that would
// leave it without DHCP, DNS and NAT. restartNetwork cleanup=true recreates it instead.
func (a *Activities) CheckDestroyAllowed(ctx context.Context, vmID string) error {
	vm, err := a.LoadVM(ctx, vmID)
	if err != nil {
		return err
	}
	if vm.Type != models.TypeRouter || (vm.NetworkID == "" && vm.VPCID == "") {
		return nil
	}
	q := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).
		Where("type = ? AND id <> ? AND state <> ?", models.TypeRouter, vm.ID, models.StateDestroyed)
	if vm.VPCID != "" {
		q = q.Where("vpc_id = ?", vm.VPCID)
	} else {
		q = q.Where("network_id = ?", vm.NetworkID)
	}
	var others int64
	if err := q.Count(&others).Error; err != nil {
		return err
	}
	if others == 0 {
		what := "network " + vm.NetworkID
		hint := "restartNetwork cleanup=true (POST /api/v1/networks/" + vm.NetworkID + "/restart?cleanup=true)"
		if vm.VPCID != "" {
			what, hint = "VPC "+vm.VPCID, "restartVpc cleanup=true"
		}
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"router %s is the only router of %s; destroying it would cut the network off: use %s or recreate to replace it",
			vm.Name, what, hint), ErrTypeNotAllowed, nil)
	}
	return nil
}

// SetVMState records a transitional state (Starting, Stopping).
func (a *Activities) SetVMState(ctx context.Context, vmID, state string) error {
	return a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vmID).
		Update("state", state).Error
}

// HypervisorStepInput asks for one hypervisor action on a VM.
type HypervisorStepInput struct {
	OperationID string `json:"operationId"`
	VMID        string `json:"vmId"`
	// Step is start, stop, forcestop, reboot, destroy or create.
	Step string `json:"step"`
}

// HypervisorStepResult is the VM's state after the step, as the hypervisor reports it.
type HypervisorStepResult struct {
	State   string `json:"state"`
	Host    string `json:"host,omitempty"`
	Skipped bool   `json:"skipped,omitempty"` // journaled as done already
}

// HypervisorStep does one action through the VM's driver, then writes what the hypervisor
// reports back to the database, so the two agree after every step. It is idempotent: a step
// already journaled for the operation is not done again, and the driver's own rules make a
// repeated call harmless (start of a running VM, destroy of a missing one).
func (a *Activities) HypervisorStep(ctx context.Context, in HypervisorStepInput) (HypervisorStepResult, error) {
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, in.VMID); err != nil {
		return HypervisorStepResult{}, classifyStore(err, in.VMID)
	}
	journalKey := "hypervisor." + in.Step
	if done, err := a.stepDone(ctx, in.OperationID, journalKey); err != nil {
		return HypervisorStepResult{}, err
	} else if done {
		return HypervisorStepResult{State: vm.State, Skipped: true}, nil
	}
	d, err := a.driverFor(ctx, vm.ClusterID)
	if err != nil {
		return HypervisorStepResult{}, err
	}
	var stepErr error
	detail := ""
	err = heartbeatWhile(ctx, in.Step, func() error {
		switch in.Step {
		case "start":
			stepErr = d.StartVM(ctx, vm.Name)
		case "stop":
			stepErr = d.StopVM(ctx, vm.Name, false)
		case "forcestop":
			stepErr = d.StopVM(ctx, vm.Name, true)
		case "reboot":
			stepErr = d.RebootVM(ctx, vm.Name)
		case "destroy":
			stepErr = d.DestroyVM(ctx, vm.Name)
			if errors.Is(stepErr, hypervisors.ErrNotFound) {
				stepErr, detail = nil, "already gone"
			}
		case "create":
			detail, stepErr = a.createVM(ctx, d, &vm)
		default:
			return temporal.NewNonRetryableApplicationError("unknown step "+in.Step, ErrTypeNotAllowed, nil)
		}
		return nil
	})
	if err != nil {
		return HypervisorStepResult{}, err
	}
	// Whatever happened, the database now says what the hypervisor says.
	res, syncErr := a.syncState(ctx, d, &vm)
	if stepErr != nil {
		return res, classify(fmt.Errorf("%s %s: %w", in.Step, vm.Name, stepErr))
	}
	if syncErr != nil {
		return res, syncErr
	}
	if err := a.markStep(ctx, in.OperationID, journalKey, detail); err != nil {
		return res, err
	}
	return res, nil
}

func classifyStore(err error, vmID string) error {
	if errors.Is(err, models.ErrNotFound) {
		return temporal.NewNonRetryableApplicationError("system VM "+vmID+" not found", ErrTypeNotFound, err)
	}
	return err
}

// syncState reads the VM from the hypervisor and stores its state and host.
func (a *Activities) syncState(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM) (HypervisorStepResult, error) {
	info, err := d.GetVM(ctx, vm.Name)
	updates := map[string]any{}
	res := HypervisorStepResult{}
	switch {
	case errors.Is(err, hypervisors.ErrNotFound):
		now := time.Now().UTC()
		updates["state"], updates["removed_at"] = models.StateDestroyed, &now
		res.State = models.StateDestroyed
	case err != nil:
		return res, fmt.Errorf("inspect %s: %w", vm.Name, err)
	default:
		state := models.StateStopped
		switch info.State {
		case hypervisors.PowerRunning:
			state = models.StateRunning
		case hypervisors.PowerUnknown:
			state = models.StateError
		}
		updates["state"], updates["removed_at"] = state, nil
		res.State, res.Host = state, info.Host
		if info.Host != "" {
			var h models.Host
			if err := a.Store.DB.WithContext(ctx).Where("cluster_id = ? AND name = ?", vm.ClusterID, info.Host).
				First(&h).Error; err == nil {
				updates["host_id"] = h.ID
			}
		}
		if info.CPUs > 0 {
			updates["cpus"], updates["memory_mb"] = info.CPUs, info.MemoryMB
		}
	}
	if err := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vm.ID).Updates(updates).Error; err != nil {
		return res, fmt.Errorf("record state of %s: %w", vm.Name, err)
	}
	return res, nil
}

// createVM builds the VM on the hypervisor from the zone's current system VM template for its
// hypervisor (router.template.<hypervisor>), falling back to the template it had.
func (a *Activities) createVM(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM) (string, error) {
	t, err := hypervisors.ParseType(vm.HypervisorType)
	if err != nil {
		return "", hypervisors.Wrap(hypervisors.ErrInvalid, "create", vm.Name, err)
	}
	tplName, err := a.Store.Settings.String(ctx, "router.template."+t.SettingSuffix(), models.Scope{ZoneID: vm.ZoneID, ClusterID: vm.ClusterID})
	if err != nil {
		return "", err
	}
	var tpl models.Template
	q := a.Store.DB.WithContext(ctx)
	if tplName != "" {
		err = q.Where("name = ? AND hypervisor = ?", tplName, string(t)).Order("created_at desc").First(&tpl).Error
	} else {
		err = q.First(&tpl, "id = ?", vm.TemplateID).Error
	}
	if err != nil {
		return "", hypervisors.Errorf(hypervisors.ErrNotFound, "create", vm.Name,
			"no system VM template for %s (set router.template.%s): %v", t, t.SettingSuffix(), err)
	}
	var pool models.StoragePool
	if err := a.Store.DB.WithContext(ctx).First(&pool, "id = ?", vm.StoragePoolID).Error; err != nil {
		if err := a.Store.DB.WithContext(ctx).Where("cluster_id = ?", vm.ClusterID).First(&pool).Error; err != nil {
			return "", hypervisors.Errorf(hypervisors.ErrNotFound, "create", vm.Name, "no storage pool in cluster %s", vm.ClusterID)
		}
	}
	var host models.Host
	if err := a.Store.DB.WithContext(ctx).Where("id = ?", vm.HostID).First(&host).Error; err != nil {
		if err := a.Store.DB.WithContext(ctx).Where("cluster_id = ? AND state = ?", vm.ClusterID, models.HostUp).
			Order("name").First(&host).Error; err != nil {
			return "", hypervisors.Errorf(hypervisors.ErrNotFound, "create", vm.Name, "no Up host in cluster %s", vm.ClusterID)
		}
	}
	if _, err := d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: tpl.Name, URL: tpl.URL, Format: tpl.Format,
		Checksum: tpl.Checksum, SizeBytes: tpl.SizeBytes, Pool: pool.Name}, nil); err != nil {
		return "", fmt.Errorf("seed template %s into %s: %w", tpl.Name, pool.Name, err)
	}
	spec := SpecFor(vm, host.Name, pool.Name, tpl.Name)
	// The rebuilt VM has a new SSH host key under the same name: forget the recorded one.
	if err := a.Store.Secrets.ForgetHostKey(ctx, "vm:"+vm.Name); err != nil {
		return "", err
	}
	if a.SystemVMKey != nil {
		key, err := a.SystemVMKey(ctx)
		if err != nil {
			return "", fmt.Errorf("system VM key: %w", err)
		}
		spec.BootArgs["authorized_key"] = key
	}
	_, err = d.CreateVM(ctx, spec)
	detail := "created from " + tpl.Name
	if errors.Is(err, hypervisors.ErrAlreadyExists) {
		err, detail = nil, "already created"
	}
	if err != nil {
		return "", err
	}
	if err := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vm.ID).
		Updates(map[string]any{"template_id": tpl.ID, "version": tpl.Version, "host_id": host.ID, "storage_pool_id": pool.ID}).Error; err != nil {
		return "", err
	}
	// The rebuilt VM has run no check yet: the old VM's results must not count against it
	// (they would make the next fetch recreate it again). healthchecksfailed and its alert stay
	// until a check of the new VM passes.
	if err := a.Store.DB.WithContext(ctx).Where("router_id = ?", vm.ID).Delete(&models.HealthCheckResult{}).Error; err != nil {
		return "", err
	}
	return detail, nil
}

// SpecFor builds the hypervisor spec of a system VM from its row: shape, NICs and the boot
// arguments that tell it its role and addresses (CloudStack's cmdline keys).
func SpecFor(vm *models.SystemVM, host, pool, template string) hypervisors.VMSpec {
	cpus, mem := vm.CPUs, vm.MemoryMB
	if cpus <= 0 {
		cpus = 1
	}
	if mem <= 0 {
		mem = 512
	}
	spec := hypervisors.VMSpec{Name: vm.Name, Host: host, Pool: pool, Template: template, CPUs: cpus, CPUMHz: 500, MemoryMB: mem,
		BootArgs: map[string]string{"type": vm.Type, "name": vm.Name, "zone": vm.ZoneID}}
	addNIC := func(kind hypervisors.NICKind, mac, ip, mask, key string) {
		if ip == "" {
			return
		}
		spec.NICs = append(spec.NICs, hypervisors.NIC{Kind: kind, MAC: mac, IP: ip, Netmask: mask})
		spec.BootArgs[key] = ip
	}
	addNIC(hypervisors.NICControl, vm.LinkLocalMAC, vm.LinkLocalIP, "255.255.0.0", "controlip")
	addNIC(hypervisors.NICPrivate, vm.PrivateMAC, vm.PrivateIP, "255.255.255.0", "privateip")
	addNIC(hypervisors.NICPublic, vm.PublicMAC, vm.PublicIP, "255.255.255.0", "publicip")
	if vm.IsRedundant {
		spec.BootArgs["redundant_router"] = "true"
	}
	if vm.NetworkID != "" {
		spec.BootArgs["guestnetwork"] = vm.NetworkID
	}
	if vm.VPCID != "" {
		spec.BootArgs["vpcid"] = vm.VPCID
	}
	for k, v := range spec.BootArgs {
		spec.BootArgs[k] = strings.ReplaceAll(v, " ", "_")
	}
	return spec
}

// EventInput records an event from a workflow.
type EventInput struct {
	Type        string `json:"type"`
	Level       string `json:"level"`
	Description string `json:"description"`
	VMID        string `json:"vmId"`
	ZoneID      string `json:"zoneId"`
	OperationID string `json:"operationId"`
}

// RecordEvent stores an event once per operation and type.
func (a *Activities) RecordEvent(ctx context.Context, in EventInput) error {
	if done, err := a.stepDone(ctx, in.OperationID, "event."+in.Type); err != nil || done {
		return err
	}
	if err := a.Store.AddEvent(ctx, models.Event{Type: in.Type, Level: in.Level, Description: in.Description,
		ResourceType: "SystemVm", ResourceID: in.VMID, ZoneID: in.ZoneID, OperationID: in.OperationID}); err != nil {
		return err
	}
	return a.markStep(ctx, in.OperationID, "event."+in.Type, "")
}

// FinishInput records an operation's end.
type FinishInput struct {
	OperationID string `json:"operationId"`
	Status      string `json:"status"`
	Result      string `json:"result,omitempty"`
	Error       string `json:"error,omitempty"`
}

// FinishOperation writes an operation's final status, result or error to its journal row.
func (a *Activities) FinishOperation(ctx context.Context, in FinishInput) error {
	if in.OperationID == "" {
		return nil
	}
	now := time.Now().UTC()
	return a.Store.DB.WithContext(ctx).Model(&models.Operation{}).Where("id = ?", in.OperationID).
		Updates(map[string]any{"status": in.Status, "result": in.Result, "error": in.Error, "completed_at": &now}).Error
}
