package activities

// Make-before-break recreate: the replacement VM is built under a new instance name and a
// fresh control address, started and verified while the old VM still serves; only then is
// the old one stopped, the replacement takes over, and the old one is destroyed. The row keeps
// its ID and CloudStack name; at the end it names the replacement's instance and control
// address. Every step is journaled under the operation ID, so a retried step is not redone.

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
)

// RecreatePlan is what StepPrepare chose for one recreate, journaled under the operation ID
// so a retry (or a replay after a crash) builds the same replacement.
type RecreatePlan struct {
	// InstanceName is the replacement's hypervisor name (<name>-<8 hex of the operation>).
	InstanceName string `json:"instanceName"`
	// OldInstanceName is the hypervisor name of the VM being replaced.
	OldInstanceName string `json:"oldInstanceName"`
	// ControlIP is the replacement's control address: link-local (169.254/16) when LinkLocal
	// (KVM, XenServer), else a fresh private IP (VMware).
	ControlIP  string `json:"controlIp"`
	ControlMAC string `json:"controlMac"`
	LinkLocal  bool   `json:"linkLocal"`
	// OldExists: the old VM is on its hypervisor (a missing one is just created again).
	OldExists bool `json:"oldExists"`
	// OldRunning: the old VM was running, so a rollback starts it again.
	OldRunning bool `json:"oldRunning"`
	// Takeover: the replacement is built without its service addresses and gets them over
	// SSH at the switch (plans journaled before address takeover have false).
	Takeover bool `json:"takeover,omitempty"`
	// PublicIP and Gateways are the service addresses the VM serves: its public IP and its
	// guest networks' gateways.
	PublicIP string   `json:"publicIp,omitempty"`
	Gateways []string `json:"gateways,omitempty"`
}

// RecreateInput asks for one step of a make-before-break recreate.
type RecreateInput struct {
	OperationID string       `json:"operationId"`
	VMID        string       `json:"vmId"`
	Step        Step         `json:"step"`
	Plan        RecreatePlan `json:"plan"`
}

// RecreateResult is what a recreate step reports.
type RecreateResult struct {
	State   string `json:"state,omitempty"`
	Host    string `json:"host,omitempty"`
	Detail  string `json:"detail,omitempty"`
	Skipped bool   `json:"skipped,omitempty"`
	// OldStoppedAt and ServingAt are measured by StepSwitch: the old VM stopped, the
	// replacement confirmed serving.
	OldStoppedAt time.Time `json:"oldStoppedAt,omitempty"`
	ServingAt    time.Time `json:"servingAt,omitempty"`
	// Addresses are the service addresses the replacement holds after StepTakeOver (or
	// StepSwitch).
	Addresses []string `json:"addresses,omitempty"`
}

// ErrTypeNotServing is the error type of a replacement that does not answer as it must.
const ErrTypeNotServing = "NotServing"

// PrepareRecreate chooses the replacement's instance name and control address and looks the
// old VM up on its hypervisor. The choice is journaled; a retry returns it unchanged.
func (a *Activities) PrepareRecreate(ctx context.Context, in RecreateInput) (RecreatePlan, error) {
	key := StepPrepare.JournalKey()
	if detail, done, err := a.stepDetail(ctx, in.OperationID, key); err != nil {
		return RecreatePlan{}, err
	} else if done {
		var p RecreatePlan
		if err := json.Unmarshal([]byte(detail), &p); err != nil {
			return RecreatePlan{}, fmt.Errorf("journaled recreate plan of %s: %w", in.VMID, err)
		}
		return p, nil
	}
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, in.VMID); err != nil {
		return RecreatePlan{}, classifyStore(err, in.VMID)
	}
	if vm.State == models.StateDestroyed {
		return RecreatePlan{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("system VM %s is destroyed", vm.Name), ErrTypeNotAllowed, nil)
	}
	t, err := hypervisors.ParseType(vm.HypervisorType)
	if err != nil {
		return RecreatePlan{}, classify(hypervisors.Wrap(hypervisors.ErrInvalid, "recreate", vm.Name, err))
	}
	p := RecreatePlan{OldInstanceName: vm.HypervisorName(), LinkLocal: t.LinkLocalControl(), Takeover: true}
	if p.PublicIP, p.Gateways, err = a.serviceAddresses(ctx, &vm); err != nil {
		return RecreatePlan{}, err
	}
	seed := in.OperationID
	if seed == "" {
		seed = fmt.Sprintf("%s/%d", vm.ID, time.Now().UnixNano())
	}
	sum := sha1.Sum([]byte("sysvm:recreate:" + seed + "/" + vm.ID))
	p.InstanceName = fmt.Sprintf("%s-%x", vm.Name, sum[:4])
	if p.InstanceName == p.OldInstanceName {
		p.InstanceName = fmt.Sprintf("%s-%x", vm.Name, sum[4:8])
	}
	p.ControlMAC = fmt.Sprintf("0e:%02x:%02x:%02x:%02x:%02x", sum[8], sum[9], sum[10], sum[11], sum[12])
	err = heartbeatWhile(ctx, string(StepPrepare), func() error {
		d, err := a.driverFor(ctx, vm.ClusterID)
		if err != nil {
			return err
		}
		info, err := d.GetVM(ctx, p.OldInstanceName)
		switch {
		case errors.Is(err, hypervisors.ErrNotFound):
			// An earlier recreate may have destroyed it and built a replacement it never
			// committed: that one serves, and is the VM this recreate replaces.
			orphan, ok, oerr := a.uncommittedReplacement(ctx, &vm)
			if oerr != nil {
				return oerr
			}
			if !ok {
				return nil
			}
			oinfo, gerr := d.GetVM(ctx, orphan.Plan.InstanceName)
			if gerr == nil {
				p.OldInstanceName = orphan.Plan.InstanceName
				p.OldExists, p.OldRunning = true, oinfo.State == hypervisors.PowerRunning
			} else if !errors.Is(gerr, hypervisors.ErrNotFound) {
				return classify(fmt.Errorf("inspect %s: %w", orphan.Plan.InstanceName, gerr))
			}
		case err != nil:
			return classify(fmt.Errorf("inspect %s: %w", p.OldInstanceName, err))
		default:
			p.OldExists, p.OldRunning = true, info.State == hypervisors.PowerRunning
		}
		return nil
	})
	if err != nil {
		return RecreatePlan{}, err
	}
	// The control address is chosen and the plan journaled under one zone lock, and open
	// plans' addresses count as taken: two recreates never pick one address.
	err = a.Store.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := a.lockZone(tx, vm.ZoneID); err != nil {
			return err
		}
		var rows []models.OperationStep
		if in.OperationID != "" {
			if err := tx.Where("operation_id = ? AND step = ?", in.OperationID, key).Find(&rows).Error; err != nil {
				return fmt.Errorf("read journal of %s: %w", in.OperationID, err)
			}
		}
		if len(rows) > 0 { // a concurrent attempt journaled it first
			return json.Unmarshal([]byte(rows[0].Detail), &p)
		}
		var err error
		if p.ControlIP, err = a.freeControlIP(ctx, tx, &vm, p.LinkLocal, binary.BigEndian.Uint32(sum[12:16])); err != nil {
			return err
		}
		b, _ := json.Marshal(p)
		if len(b) > maxJournalDetail {
			return temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("recreate plan of %s is %d bytes (%d gateways), more than the journal holds (%d)", vm.Name, len(b), len(p.Gateways), maxJournalDetail),
				ErrTypeNotAllowed, nil)
		}
		if in.OperationID == "" {
			return nil
		}
		return tx.Create(&models.OperationStep{OperationID: in.OperationID, Step: key, CompletedAt: time.Now().UTC(), Detail: string(b)}).Error
	})
	if err != nil {
		return RecreatePlan{}, err
	}
	return p, nil
}

// freeControlIP picks a control address no other system VM uses and no open recreate plan
// reserved: in 169.254/16 for the link-local path, else in the /24 of the VM's private IP.
// start spreads concurrent choices; tx holds the zone lock.
func (a *Activities) freeControlIP(ctx context.Context, tx *gorm.DB, vm *models.SystemVM, linkLocal bool, start uint32) (string, error) {
	col := "private_ip"
	if linkLocal {
		col = "link_local_ip"
	}
	var used []string
	if err := tx.WithContext(ctx).Model(&models.SystemVM{}).Where("state <> ?", models.StateDestroyed).
		Pluck(col, &used).Error; err != nil {
		return "", fmt.Errorf("control addresses in use: %w", err)
	}
	taken, err := reservedControlIPs(ctx, tx, linkLocal)
	if err != nil {
		return "", err
	}
	for _, ip := range used {
		taken[ip] = true
	}
	if linkLocal {
		// 169.254.1.0 - 169.254.254.255 (RFC 3927 reserves the first and last /24).
		const n = 254 * 256
		for i := uint32(0); i < n; i++ {
			v := (start + i) % n
			c, d := byte(v/256+1), byte(v%256)
			if d == 0 || d == 255 {
				continue
			}
			ip := netip.AddrFrom4([4]byte{169, 254, c, d}).String()
			if !taken[ip] {
				return ip, nil
			}
		}
		return "", temporal.NewNonRetryableApplicationError("no free link-local control address", ErrTypeNotAllowed, nil)
	}
	base, err := netip.ParseAddr(vm.PrivateIP)
	if err != nil || !base.Is4() {
		return "", temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("system VM %s has no IPv4 private IP (%q) to pick a new control address next to", vm.Name, vm.PrivateIP), ErrTypeNotAllowed, err)
	}
	b4 := base.As4()
	for i := uint32(0); i < 253; i++ {
		b4[3] = byte((start+i)%253 + 2) // .2 - .254
		ip := netip.AddrFrom4(b4).String()
		if !taken[ip] {
			return ip, nil
		}
	}
	return "", temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("no free private IP next to %s for the replacement of %s", vm.PrivateIP, vm.Name), ErrTypeNotAllowed, nil)
}

// stepDetail returns a journaled step's detail.
func (a *Activities) stepDetail(ctx context.Context, opID, step string) (string, bool, error) {
	if opID == "" {
		return "", false, nil
	}
	var rows []models.OperationStep
	if err := a.Store.DB.WithContext(ctx).Where("operation_id = ? AND step = ?", opID, step).Find(&rows).Error; err != nil {
		return "", false, fmt.Errorf("read journal of %s: %w", opID, err)
	}
	if len(rows) == 0 {
		return "", false, nil
	}
	return rows[0].Detail, true, nil
}

// RecreateStep does one step of a make-before-break recreate (StepSeed to StepCommit) or one
// of its compensations (StepDestroyReplacement, StepStartOld). It heartbeats from the start,
// before the driver logs in.
func (a *Activities) RecreateStep(ctx context.Context, in RecreateInput) (RecreateResult, error) {
	if in.Plan.InstanceName == "" {
		return RecreateResult{}, temporal.NewNonRetryableApplicationError("recreate step "+string(in.Step)+": no plan", ErrTypeNotAllowed, nil)
	}
	key := in.Step.JournalKey()
	if detail, done, err := a.stepDetail(ctx, in.OperationID, key); err != nil {
		return RecreateResult{}, err
	} else if done {
		res := RecreateResult{Skipped: true, Detail: detail}
		if timedStep(in.Step) {
			_ = json.Unmarshal([]byte(detail), &res)
			res.Skipped = true
		}
		return res, nil
	}
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, in.VMID); err != nil {
		return RecreateResult{}, classifyStore(err, in.VMID)
	}
	var res RecreateResult
	var stepErr error
	err := heartbeatWhile(ctx, string(in.Step), func() error {
		d, err := a.driverFor(ctx, vm.ClusterID)
		if err != nil {
			return err
		}
		res, stepErr = a.recreateStep(ctx, d, &vm, in)
		return nil
	})
	if err != nil {
		return RecreateResult{}, err
	}
	if stepErr != nil {
		var app *temporal.ApplicationError
		if errors.As(stepErr, &app) {
			return res, stepErr
		}
		return res, classify(fmt.Errorf("%s of %s: %w", in.Step, vm.Name, stepErr))
	}
	detail := res.Detail
	if timedStep(in.Step) {
		b, _ := json.Marshal(RecreateResult{OldStoppedAt: res.OldStoppedAt, ServingAt: res.ServingAt,
			Addresses: res.Addresses, Detail: res.Detail})
		detail = string(b)
	}
	if err := a.markStep(ctx, in.OperationID, key, detail); err != nil {
		return res, err
	}
	return res, nil
}

// timedStep: the step's journal detail is its JSON result (the switch's times), so a retry
// after an unrecorded success reports the same times.
func timedStep(s Step) bool { return s == StepSwitch || s == StepStopOld || s == StepTakeOver }

func (a *Activities) recreateStep(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM, in RecreateInput) (RecreateResult, error) {
	p := in.Plan
	switch in.Step {
	case StepSeed:
		b, err := a.resolveBuild(ctx, vm)
		if err != nil {
			return RecreateResult{}, err
		}
		return RecreateResult{Detail: "template " + b.tpl.Name + " in " + b.pool.Name}, a.seed(ctx, d, b)
	case StepCreateReplacement:
		b, err := a.resolveBuild(ctx, vm)
		if err != nil {
			return RecreateResult{}, err
		}
		spec := SpecFor(replacementRow(vm, p), b.host.Name, b.pool.Name, b.tpl.Name)
		if p.Takeover {
			withoutServiceAddresses(&spec)
		}
		if err := a.Store.Secrets.ForgetHostKey(ctx, "vm:"+p.InstanceName); err != nil {
			return RecreateResult{}, err
		}
		if err := a.withKey(ctx, &spec); err != nil {
			return RecreateResult{}, err
		}
		_, err = d.CreateVM(ctx, spec)
		if errors.Is(err, hypervisors.ErrAlreadyExists) {
			return RecreateResult{Detail: "already created"}, nil
		}
		return RecreateResult{Detail: "created " + p.InstanceName + " from " + b.tpl.Name}, err
	case StepStartReplacement:
		if err := d.StartVM(ctx, p.InstanceName); err != nil {
			return RecreateResult{}, err
		}
		return a.observe(ctx, d, vm, p.InstanceName)
	case StepVerifyReplacement:
		res, err := a.verify(ctx, d, vm, p)
		return res, err
	case StepSwitch:
		// Runs before address takeover had their own steps: stop and take over in one.
		res, err := a.stopOld(ctx, d, p)
		if err != nil {
			return RecreateResult{}, err
		}
		if p.Takeover {
			t, err := a.takeOver(ctx, d, vm, p)
			if err != nil {
				return RecreateResult{}, err
			}
			res.Addresses = t.Addresses
		} else if _, err := a.verify(ctx, d, vm, p); err != nil {
			// Built with its service addresses: confirm it serves them.
			return RecreateResult{}, err
		}
		res.ServingAt = time.Now().UTC()
		res.Detail = fmt.Sprintf("gap %s", res.ServingAt.Sub(res.OldStoppedAt).Round(time.Millisecond))
		return res, nil
	case StepStopOld:
		return a.stopOld(ctx, d, p)
	case StepTakeOver:
		return a.takeOver(ctx, d, vm, p)
	case StepReleaseAddresses:
		return a.releaseAddresses(ctx, d, vm, p)
	case StepDestroyOld:
		if !p.OldExists {
			return RecreateResult{Detail: "old VM was missing on its hypervisor"}, nil
		}
		err := d.DestroyVM(ctx, p.OldInstanceName)
		if errors.Is(err, hypervisors.ErrNotFound) {
			return RecreateResult{Detail: "already gone"}, nil
		}
		return RecreateResult{Detail: "destroyed " + p.OldInstanceName}, err
	case StepCommit:
		return a.commit(ctx, d, vm, p, in.OperationID)
	case StepDestroyReplacement:
		err := d.DestroyVM(ctx, p.InstanceName)
		if errors.Is(err, hypervisors.ErrNotFound) {
			return RecreateResult{Detail: "not created"}, nil
		}
		return RecreateResult{Detail: "destroyed " + p.InstanceName}, err
	case StepStartOld:
		if !p.OldExists || !p.OldRunning {
			return RecreateResult{Detail: "old VM was not running"}, nil
		}
		if p.Takeover {
			// Never two VMs on one address: a rollback of a run without its own
			// release step (the one-step switch) releases here first.
			if done, err := a.stepDone(ctx, in.OperationID, StepReleaseAddresses.JournalKey()); err != nil {
				return RecreateResult{}, err
			} else if !done {
				if _, err := a.releaseAddresses(ctx, d, vm, p); err != nil {
					return RecreateResult{}, err
				}
			}
		}
		if err := d.StartVM(ctx, p.OldInstanceName); err != nil {
			return RecreateResult{}, err
		}
		return RecreateResult{Detail: "started " + p.OldInstanceName + " again"}, nil
	}
	return RecreateResult{}, temporal.NewNonRetryableApplicationError("unknown recreate step "+string(in.Step), ErrTypeNotAllowed, nil)
}

// replacementRow is the row as the replacement sees it: its instance name and control address.
func replacementRow(vm *models.SystemVM, p RecreatePlan) *models.SystemVM {
	r := *vm
	r.InstanceName = p.InstanceName
	if p.LinkLocal {
		r.LinkLocalIP, r.LinkLocalMAC = p.ControlIP, p.ControlMAC
	} else {
		r.PrivateIP, r.PrivateMAC = p.ControlIP, p.ControlMAC
	}
	return &r
}

// observe reports a VM's state on the hypervisor.
func (a *Activities) observe(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM, name string) (RecreateResult, error) {
	info, err := d.GetVM(ctx, name)
	if err != nil {
		return RecreateResult{}, fmt.Errorf("inspect %s: %w", name, err)
	}
	return RecreateResult{State: stateOf(info.State), Host: info.Host}, nil
}

// verify checks the replacement runs, boots with its control address and, when the platform
// has an SSH executor, answers `sysvm-agent version` on 3922 along the access path with the
// template version it was built from. A replacement that does not answer (yet) is a
// retryable NotServing error: the activity's retry policy bounds how long it may take to boot.
func (a *Activities) verify(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM, p RecreatePlan) (RecreateResult, error) {
	info, err := d.GetVM(ctx, p.InstanceName)
	if err != nil {
		return RecreateResult{}, fmt.Errorf("inspect replacement %s: %w", p.InstanceName, err)
	}
	if info.State != hypervisors.PowerRunning {
		return RecreateResult{}, temporal.NewApplicationError(
			fmt.Sprintf("replacement %s is %s, not running", p.InstanceName, info.State), ErrTypeNotServing)
	}
	arg := "privateip" // VMware: the control address is the private IP
	if p.LinkLocal {
		arg = "controlip"
	}
	if got := info.BootArgs[arg]; got != "" && got != p.ControlIP {
		return RecreateResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("replacement %s boots with control IP %s, want %s", p.InstanceName, got, p.ControlIP), ErrTypeNotServing, nil)
	}
	res := RecreateResult{State: models.StateRunning, Host: info.Host, Detail: "running"}
	if a.Exec == nil {
		res.Detail = "running (no SSH executor configured: not checked over SSH)"
		return res, nil
	}
	b, err := a.resolveBuild(ctx, vm)
	if err != nil {
		return RecreateResult{}, err
	}
	t, err := a.replacementTarget(ctx, vm, p, info)
	if err != nil {
		return RecreateResult{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := a.Exec.Run(rctx, t, []string{"timeout", "15", DefaultAgentCommand, "version"}, nil)
	if err != nil {
		return RecreateResult{}, temporal.NewApplicationError(
			fmt.Sprintf("replacement %s does not answer over SSH on %s:%d: %v", p.InstanceName, p.ControlIP, sshexec.DefaultPort, err), ErrTypeNotServing)
	}
	if out.ExitCode != 0 {
		return RecreateResult{}, temporal.NewApplicationError(
			fmt.Sprintf("replacement %s: %s version exited %d: %s", p.InstanceName, DefaultAgentCommand, out.ExitCode,
				strings.TrimSpace(string(out.Stderr))), ErrTypeNotServing)
	}
	var v agent.VersionInfo
	if err := json.Unmarshal(out.Stdout, &v); err != nil {
		return RecreateResult{}, temporal.NewApplicationError(
			fmt.Sprintf("replacement %s: unreadable version output: %v", p.InstanceName, err), ErrTypeNotServing)
	}
	if b.tpl.Version != "" && !strings.Contains(v.TemplateVersion, b.tpl.Version) {
		return RecreateResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("replacement %s runs template %q, want version %s", p.InstanceName, v.TemplateVersion, b.tpl.Version), ErrTypeNotServing, nil)
	}
	res.Detail = fmt.Sprintf("answers over SSH: agent %s, template %s", v.AgentVersion, v.TemplateVersion)
	// A CPVM or SSVM replacement serves what its VM served (or the current uploaded
	// certificate) before it takes over; commit records it as served.
	cert, err := a.followedCertificate(ctx, vm)
	if err != nil {
		return RecreateResult{}, err
	}
	if cert != nil {
		row := replacementRow(vm, p)
		row.Name = p.InstanceName
		addr, err := a.followCertificate(ctx, *row, t, cert)
		if err != nil {
			return RecreateResult{}, err
		}
		res.Detail += fmt.Sprintf("; serves %s v%d at %s", cert.Name, cert.Version, addr)
	}
	return res, nil
}

// commit makes the row name the replacement: instance name, control address, template,
// pool, host and the state the hypervisor reports. The old VM's health results and host key
// are forgotten (the replacement has run no check yet and has a new key).
func (a *Activities) commit(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM, p RecreatePlan, opID string) (RecreateResult, error) {
	b, err := a.resolveBuild(ctx, vm)
	if err != nil {
		return RecreateResult{}, err
	}
	info, err := d.GetVM(ctx, p.InstanceName)
	if err != nil {
		return RecreateResult{}, fmt.Errorf("inspect replacement %s: %w", p.InstanceName, err)
	}
	state := stateOf(info.State)
	updates := map[string]any{"instance_name": p.InstanceName, "template_id": b.tpl.ID, "version": b.tpl.Version,
		"storage_pool_id": b.pool.ID, "state": state, "last_error": "", "removed_at": nil,
		// The replacement runs its template's scripts: a live patch of the old VM is gone.
		"scripts_version": "", "software_version": ""}
	if p.LinkLocal {
		updates["link_local_ip"], updates["link_local_mac"] = p.ControlIP, p.ControlMAC
	} else {
		updates["private_ip"], updates["private_mac"] = p.ControlIP, p.ControlMAC
	}
	hostID := a.hostID(ctx, vm.ClusterID, info.Host)
	if hostID == "" {
		hostID = b.host.ID
	}
	updates["host_id"] = hostID
	if err := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vm.ID).Updates(updates).Error; err != nil {
		return RecreateResult{}, fmt.Errorf("record replacement of %s: %w", vm.Name, err)
	}
	if err := a.forgetHealth(ctx, vm.ID); err != nil {
		return RecreateResult{}, err
	}
	// The replacement was verified serving this certificate (verify): recorded only now, so a
	// recreate rolled back before its commit leaves the old VM's record as it was.
	if a.Exec != nil {
		cert, err := a.followedCertificate(ctx, vm)
		if err != nil {
			return RecreateResult{}, err
		}
		if cert != nil {
			if err := a.Store.SetServedCertificate(ctx, vm.ID, cert.ID, opID); err != nil {
				return RecreateResult{}, fmt.Errorf("record %s serving %s: %w", vm.Name, cert.Name, err)
			}
		}
	}
	// An uncommitted replacement of an earlier recreate that this one replaced (as its old
	// VM) is gone now: its plan no longer reserves its control address.
	if plans, err := openPlans(ctx, a.Store.DB); err == nil {
		for _, op := range plans {
			if op.Plan.InstanceName == p.OldInstanceName && op.Plan.InstanceName != p.InstanceName {
				if err := a.markStep(ctx, op.OperationID, StepDestroyReplacement.JournalKey(), "destroyed as the old VM of a later recreate"); err != nil {
					return RecreateResult{}, err
				}
			}
		}
	}
	if err := a.Store.Secrets.ForgetHostKey(ctx, "vm:"+vm.Name); err != nil {
		return RecreateResult{}, err
	}
	return RecreateResult{State: state, Host: info.Host, Detail: p.OldInstanceName + " -> " + p.InstanceName}, nil
}

// SettleInput asks SettleVM to end an operation's effect on a VM in a state the hypervisor
// confirms.
type SettleInput struct {
	OperationID string `json:"operationId"`
	VMID        string `json:"vmId"`
	// Error is the operation's failure (or cancel) reason, recorded as LastError.
	Error string `json:"error"`
	// Destroying: the operation was a destroy, so a VM gone from its hypervisor is Destroyed.
	Destroying bool `json:"destroying,omitempty"`
}

// SettleVM runs after a lifecycle operation failed, timed out or was canceled: it reads the
// VM from its hypervisor and writes Running, Stopped or Error with LastError, never leaving a
// transitional Starting or Stopping in the row. A VM its hypervisor no longer has is Error
// "missing on hypervisor" (Destroyed only for a destroy), so a recreate repairs it; an
// unreachable hypervisor leaves Error with the reason. A destroy that did not complete gives
// up its mark (AdmitDestroy). An operator-destroyed row is left alone.
func (a *Activities) SettleVM(ctx context.Context, in SettleInput) (string, error) {
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, in.VMID); err != nil {
		return "", classifyStore(err, in.VMID)
	}
	if vm.State == models.StateDestroyed {
		return vm.State, nil
	}
	reason := in.Error
	if len(reason) > 2000 {
		reason = reason[:2000]
	}
	var state string
	err := heartbeatWhile(ctx, "settle", func() error {
		d, err := a.driverFor(ctx, vm.ClusterID)
		if err != nil {
			state, reason = models.StateError, "hypervisor unreachable after a failed operation: "+err.Error()+"; "+reason
			return nil
		}
		info, err := d.GetVM(ctx, vm.HypervisorName())
		if errors.Is(err, hypervisors.ErrNotFound) && !in.Destroying {
			// A recreate whose commit failed after destroy-old: its replacement serves;
			// make the row name it rather than call the VM missing.
			res, ok, cerr := a.commitUncommitted(ctx, d, &vm)
			if cerr != nil {
				state, reason = models.StateError, "state unknown: "+cerr.Error()+"; "+reason
				return nil
			}
			if ok {
				state, reason = res.State, "replacement committed by the settle step ("+res.Detail+") after: "+reason
				return nil
			}
		}
		switch {
		case errors.Is(err, hypervisors.ErrNotFound) && in.Destroying:
			state = models.StateDestroyed
		case errors.Is(err, hypervisors.ErrNotFound):
			state, reason = models.StateError, MissingOnHypervisor+": "+reason
		case err != nil:
			state, reason = models.StateError, "state unknown: "+err.Error()+"; "+reason
		default:
			state = stateOf(info.State)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	updates := map[string]any{"state": state, "last_error": reason, "destroy_operation_id": ""}
	if state == models.StateDestroyed {
		now := time.Now().UTC()
		updates["removed_at"] = &now
	}
	if err := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vm.ID).Updates(updates).Error; err != nil {
		return "", fmt.Errorf("settle %s: %w", vm.Name, err)
	}
	return state, nil
}
