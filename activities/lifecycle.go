package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
)

// VMRecord is the part of a system VM row workflows need to decide and report.
type VMRecord struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// InstanceName is the name the hypervisor knows the VM by (Name when the row has none).
	InstanceName   string `json:"instanceName,omitempty"`
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
	return VMRecord{ID: vm.ID, Name: vm.Name, InstanceName: vm.HypervisorName(), Type: vm.Type, State: vm.State, ZoneID: vm.ZoneID,
		ClusterID: vm.ClusterID, HostID: vm.HostID, NetworkID: vm.NetworkID, VPCID: vm.VPCID,
		HypervisorType: vm.HypervisorType, IsRedundant: vm.IsRedundant, RedundantState: vm.RedundantState}, nil
}

// CheckDestroyAllowed refuses to destroy the only router of a network or VPC: that would
// leave it without DHCP, DNS and NAT. restartNetwork cleanup=true recreates it instead. It is
// the check of runs recorded before AdmitDestroy; AdmitDestroy also takes the pair's lock.
func (a *Activities) CheckDestroyAllowed(ctx context.Context, vmID string) error {
	return a.admitDestroy(ctx, a.Store.DB.WithContext(ctx), "", vmID)
}

// AdmitDestroyInput asks AdmitDestroy to let one destroy of a system VM go ahead.
type AdmitDestroyInput struct {
	OperationID string `json:"operationId"`
	VMID        string `json:"vmId"`
}

// AdmitDestroy refuses to destroy the only router of a network or VPC and otherwise marks the
// VM as being destroyed by this operation, both under one lock covering the network or VPC:
// a transaction that locks its row (SELECT ... FOR UPDATE on MariaDB; SQLite's immediate
// transactions serialize writers). Routers being destroyed by another operation do not count
// as the network's other router, so two destroys of a redundant pair at once cannot both pass.
// A retry of the same operation passes again. SettleVM clears the mark of a destroy that did
// not complete.
func (a *Activities) AdmitDestroy(ctx context.Context, in AdmitDestroyInput) error {
	opID := in.OperationID
	if opID == "" {
		opID = "unrecorded"
	}
	return a.Store.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return a.admitDestroy(ctx, tx, opID, in.VMID)
	})
}

// admitDestroy is the only-router check; with an operation ID it locks the VM's network or
// VPC row in tx first and marks the VM as being destroyed by that operation.
func (a *Activities) admitDestroy(ctx context.Context, tx *gorm.DB, opID, vmID string) error {
	var vm models.SystemVM
	if err := tx.First(&vm, "id = ?", vmID).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return temporal.NewNonRetryableApplicationError(fmt.Sprintf("system VM %s not found", vmID), ErrTypeNotFound, err)
		}
		return fmt.Errorf("load system VM %s: %w", vmID, err)
	}
	if vm.Type != models.TypeRouter || (vm.NetworkID == "" && vm.VPCID == "") {
		return a.markDestroying(tx, opID, vm.ID)
	}
	if opID != "" {
		if vm.DestroyOperationID == opID {
			return nil // this operation was admitted already
		}
		lock := tx
		if a.Store.Dialect() == "mysql" {
			lock = tx.Clauses(clause.Locking{Strength: "UPDATE"})
		}
		var err error
		if vm.VPCID != "" {
			err = lock.Select("id").First(&models.VPC{}, "id = ?", vm.VPCID).Error
		} else {
			err = lock.Select("id").First(&models.Network{}, "id = ?", vm.NetworkID).Error
		}
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("lock network of %s: %w", vm.Name, err)
		}
	}
	q := tx.Model(&models.SystemVM{})
	if opID != "" && a.Store.Dialect() == "mysql" {
		// A locking read sees the latest committed marks: InnoDB's plain reads in a
		// repeatable-read transaction would see the snapshot taken before the lock was granted.
		q = q.Clauses(clause.Locking{Strength: "UPDATE"})
	}
	q = q.Where("type = ? AND id <> ? AND state <> ?", models.TypeRouter, vm.ID, models.StateDestroyed).
		Where("destroy_operation_id = '' OR destroy_operation_id IS NULL")
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
			"router %s is the only router of %s (others are missing or being destroyed); destroying it would cut the network off: use %s or recreate to replace it",
			vm.Name, what, hint), ErrTypeNotAllowed, nil)
	}
	return a.markDestroying(tx, opID, vm.ID)
}

func (a *Activities) markDestroying(tx *gorm.DB, opID, vmID string) error {
	if opID == "" {
		return nil
	}
	return tx.Model(&models.SystemVM{}).Where("id = ?", vmID).Update("destroy_operation_id", opID).Error
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
	// Step is StepStart, StepStop, StepForceStop, StepReboot, StepDestroy or StepCreate.
	Step Step `json:"step"`
}

// HypervisorStepResult is the VM's state after the step, as the hypervisor reports it.
type HypervisorStepResult struct {
	State   string `json:"state"`
	Host    string `json:"host,omitempty"`
	Skipped bool   `json:"skipped,omitempty"` // journaled as done already
}

// HypervisorStep does one action through the VM's driver, addressing the VM by its instance
// name, then writes what the hypervisor reports back to the database, so the two agree after
// every step. It is idempotent: a step already journaled for the operation is not done
// again, the driver's own rules make a repeated call harmless (start of a running VM,
// destroy of a missing one), and a reboot records its intent and the VM's boot time first,
// so a retry after an unrecorded success sees the new boot time and does not reboot again.
// It heartbeats from the start, before the driver logs in, so a slow login on a dead worker
// is noticed and no second attempt runs beside a live first one.
func (a *Activities) HypervisorStep(ctx context.Context, in HypervisorStepInput) (HypervisorStepResult, error) {
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, in.VMID); err != nil {
		return HypervisorStepResult{}, classifyStore(err, in.VMID)
	}
	journalKey := in.Step.JournalKey()
	if done, err := a.stepDone(ctx, in.OperationID, journalKey); err != nil {
		return HypervisorStepResult{}, err
	} else if done {
		return HypervisorStepResult{State: vm.State, Skipped: true}, nil
	}
	name := vm.HypervisorName()
	var stepErr error
	var d hypervisors.Driver
	detail := ""
	err := heartbeatWhile(ctx, string(in.Step), func() error {
		var err error
		if d, err = a.driverFor(ctx, vm.ClusterID); err != nil {
			return err
		}
		switch in.Step {
		case StepStart:
			stepErr = d.StartVM(ctx, name)
		case StepStop:
			stepErr = d.StopVM(ctx, name, false)
		case StepForceStop:
			stepErr = d.StopVM(ctx, name, true)
		case StepReboot:
			detail, stepErr = a.rebootOnce(ctx, d, in.OperationID, name)
		case StepDestroy:
			stepErr = d.DestroyVM(ctx, name)
			if errors.Is(stepErr, hypervisors.ErrNotFound) {
				stepErr, detail = nil, "already gone"
			}
		case StepCreate:
			detail, stepErr = a.createVM(ctx, d, &vm)
		default:
			return temporal.NewNonRetryableApplicationError("unknown step "+string(in.Step), ErrTypeNotAllowed, nil)
		}
		return nil
	})
	if err != nil {
		return HypervisorStepResult{}, err
	}
	// Whatever happened, the database now says what the hypervisor says.
	res, syncErr := a.syncState(ctx, d, &vm, in.Step == StepDestroy)
	if stepErr != nil {
		return res, classify(fmt.Errorf("%s %s: %w", in.Step, name, stepErr))
	}
	if syncErr != nil {
		return res, syncErr
	}
	if err := a.markStep(ctx, in.OperationID, journalKey, detail); err != nil {
		return res, err
	}
	return res, nil
}

// rebootIntentKey journals a reboot about to be asked for, with the boot time seen before.
const rebootIntentKey = "hypervisor.reboot.intent"

// rebootOnce reboots a VM at most once per operation. Before asking the hypervisor it
// journals the intent with the VM's boot time; a retried attempt that finds the intent
// compares boot times: a newer one means the first attempt's reboot happened (its success was
// just not recorded), the same one means it never reached the VM and the reboot is asked for
// again. A driver that reports no boot time (libvirt) cannot tell: the reboot is then not
// repeated (at most once), which the detail says.
func (a *Activities) rebootOnce(ctx context.Context, d hypervisors.Driver, opID, name string) (string, error) {
	info, err := d.GetVM(ctx, name)
	if err != nil {
		return "", err
	}
	var intent []models.OperationStep
	if opID != "" {
		if err := a.Store.DB.WithContext(ctx).Where("operation_id = ? AND step = ?", opID, rebootIntentKey).
			Find(&intent).Error; err != nil {
			return "", fmt.Errorf("read reboot intent of %s: %w", name, err)
		}
	}
	if len(intent) > 0 {
		before, _ := time.Parse(time.RFC3339Nano, intent[0].Detail)
		switch {
		case info.BootTime.IsZero() || before.IsZero():
			return "intent recorded by an earlier attempt; the hypervisor reports no boot time, so the reboot is not repeated", nil
		case info.BootTime.After(before):
			return "rebooted by an earlier attempt (boot time " + info.BootTime.Format(time.RFC3339) + ")", nil
		}
	} else {
		bt := ""
		if !info.BootTime.IsZero() {
			bt = info.BootTime.UTC().Format(time.RFC3339Nano)
		}
		if err := a.markStep(ctx, opID, rebootIntentKey, bt); err != nil {
			return "", fmt.Errorf("record reboot intent of %s: %w", name, err)
		}
	}
	return "", d.RebootVM(ctx, name)
}

func classifyStore(err error, vmID string) error {
	if errors.Is(err, models.ErrNotFound) {
		return temporal.NewNonRetryableApplicationError("system VM "+vmID+" not found", ErrTypeNotFound, err)
	}
	return err
}

// MissingOnHypervisor is the LastError of a VM its hypervisor no longer has.
const MissingOnHypervisor = "missing on hypervisor"

// syncState reads the VM from the hypervisor and stores its state and host. A VM the
// hypervisor no longer has is Destroyed only after a destroy step; otherwise it is Error
// "missing on hypervisor", which a recreate repairs.
func (a *Activities) syncState(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM, destroying bool) (HypervisorStepResult, error) {
	info, err := d.GetVM(ctx, vm.HypervisorName())
	updates := map[string]any{}
	res := HypervisorStepResult{}
	switch {
	case errors.Is(err, hypervisors.ErrNotFound) && destroying:
		now := time.Now().UTC()
		updates["state"], updates["removed_at"], updates["last_error"] = models.StateDestroyed, &now, ""
		res.State = models.StateDestroyed
	case errors.Is(err, hypervisors.ErrNotFound):
		updates["state"], updates["last_error"] = models.StateError, MissingOnHypervisor
		res.State = models.StateError
	case err != nil:
		return res, fmt.Errorf("inspect %s: %w", vm.HypervisorName(), err)
	default:
		state := stateOf(info.State)
		updates["state"], updates["removed_at"] = state, nil
		if state != models.StateError {
			updates["last_error"] = ""
		}
		res.State, res.Host = state, info.Host
		if id := a.hostID(ctx, vm.ClusterID, info.Host); id != "" {
			updates["host_id"] = id
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

// stateOf maps a hypervisor power state to the row's state.
func stateOf(p hypervisors.PowerState) string {
	switch p {
	case hypervisors.PowerRunning:
		return models.StateRunning
	case hypervisors.PowerUnknown:
		return models.StateError
	}
	return models.StateStopped
}

// hostID is the ID of the host row of that name in a cluster, or "".
func (a *Activities) hostID(ctx context.Context, clusterID, name string) string {
	if name == "" {
		return ""
	}
	var h models.Host
	if err := a.Store.DB.WithContext(ctx).Where("cluster_id = ? AND name = ?", clusterID, name).First(&h).Error; err != nil {
		return ""
	}
	return h.ID
}

// build is what a system VM is built from: the zone's current template, a pool and a host.
type build struct {
	tpl  models.Template
	pool models.StoragePool
	host models.Host
}

// resolveBuild finds the zone's current system VM template for the VM's hypervisor
// (router.template.<hypervisor>, falling back to the template it had), its pool (or the
// cluster's first) and its host (or the cluster's first Up one).
func (a *Activities) resolveBuild(ctx context.Context, vm *models.SystemVM) (build, error) {
	var b build
	t, err := hypervisors.ParseType(vm.HypervisorType)
	if err != nil {
		return b, hypervisors.Wrap(hypervisors.ErrInvalid, "create", vm.Name, err)
	}
	tplName, err := a.Store.Settings.String(ctx, "router.template."+t.SettingSuffix(), models.Scope{ZoneID: vm.ZoneID, ClusterID: vm.ClusterID})
	if err != nil {
		return b, err
	}
	q := a.Store.DB.WithContext(ctx)
	if tplName != "" {
		err = q.Where("name = ? AND hypervisor = ?", tplName, string(t)).Order("created_at desc").First(&b.tpl).Error
	} else {
		err = q.First(&b.tpl, "id = ?", vm.TemplateID).Error
	}
	if err != nil {
		return b, hypervisors.Errorf(hypervisors.ErrNotFound, "create", vm.Name,
			"no system VM template for %s (set router.template.%s): %v", t, t.SettingSuffix(), err)
	}
	if err := a.Store.DB.WithContext(ctx).First(&b.pool, "id = ?", vm.StoragePoolID).Error; err != nil {
		if err := a.Store.DB.WithContext(ctx).Where("cluster_id = ?", vm.ClusterID).First(&b.pool).Error; err != nil {
			return b, hypervisors.Errorf(hypervisors.ErrNotFound, "create", vm.Name, "no storage pool in cluster %s", vm.ClusterID)
		}
	}
	if err := a.Store.DB.WithContext(ctx).Where("id = ?", vm.HostID).First(&b.host).Error; err != nil {
		if err := a.Store.DB.WithContext(ctx).Where("cluster_id = ? AND state = ?", vm.ClusterID, models.HostUp).
			Order("name").First(&b.host).Error; err != nil {
			return b, hypervisors.Errorf(hypervisors.ErrNotFound, "create", vm.Name, "no Up host in cluster %s", vm.ClusterID)
		}
	}
	return b, nil
}

// seed makes the build's template present in its pool.
func (a *Activities) seed(ctx context.Context, d hypervisors.Driver, b build) error {
	if _, err := d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: b.tpl.Name, URL: b.tpl.URL, Format: b.tpl.Format,
		Checksum: b.tpl.Checksum, SizeBytes: b.tpl.SizeBytes, Pool: b.pool.Name}, nil); err != nil {
		return fmt.Errorf("seed template %s into %s: %w", b.tpl.Name, b.pool.Name, err)
	}
	return nil
}

// withKey adds the platform's SSH key to a spec's boot arguments.
func (a *Activities) withKey(ctx context.Context, spec *hypervisors.VMSpec) error {
	if a.SystemVMKey == nil {
		return nil
	}
	key, err := a.SystemVMKey(ctx)
	if err != nil {
		return fmt.Errorf("system VM key: %w", err)
	}
	spec.BootArgs["authorized_key"] = key
	return nil
}

// createVM builds the VM on the hypervisor under its own instance name (the destroy-first
// recreate of histories recorded before make-before-break), from resolveBuild.
func (a *Activities) createVM(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM) (string, error) {
	b, err := a.resolveBuild(ctx, vm)
	if err != nil {
		return "", err
	}
	if err := a.seed(ctx, d, b); err != nil {
		return "", err
	}
	spec := SpecFor(vm, b.host.Name, b.pool.Name, b.tpl.Name)
	// The rebuilt VM has a new SSH host key under the same name: forget the recorded one.
	if err := a.Store.Secrets.ForgetHostKey(ctx, "vm:"+vm.Name); err != nil {
		return "", err
	}
	if err := a.withKey(ctx, &spec); err != nil {
		return "", err
	}
	_, err = d.CreateVM(ctx, spec)
	detail := "created from " + b.tpl.Name
	if errors.Is(err, hypervisors.ErrAlreadyExists) {
		err, detail = nil, "already created"
	}
	if err != nil {
		return "", err
	}
	if err := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vm.ID).
		Updates(map[string]any{"template_id": b.tpl.ID, "version": b.tpl.Version, "host_id": b.host.ID, "storage_pool_id": b.pool.ID,
			// A VM built from a template runs the template's scripts: a live patch's are gone.
			"scripts_version": "", "software_version": ""}).Error; err != nil {
		return "", err
	}
	if err := a.forgetHealth(ctx, vm.ID); err != nil {
		return "", err
	}
	return detail, nil
}

// forgetHealth drops a rebuilt VM's health results: it has run no check yet, and the old VM's
// results must not count against it (they would make the next fetch recreate it again).
// healthchecksfailed and its alert stay until a check of the new VM passes.
func (a *Activities) forgetHealth(ctx context.Context, vmID string) error {
	return a.Store.DB.WithContext(ctx).Where("router_id = ?", vmID).Delete(&models.HealthCheckResult{}).Error
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
	spec := hypervisors.VMSpec{Name: vm.HypervisorName(), Host: host, Pool: pool, Template: template, CPUs: cpus, CPUMHz: 500, MemoryMB: mem,
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
