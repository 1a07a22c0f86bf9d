package activities

// Batched SSVM and CPVM upgrades (SPEC §4.4: "CPVM and SSVM are upgraded the same way"): the
// plan (which system VMs, zone by zone, and in which order within a zone and kind so that a
// zone never loses its last serving CPVM or SSVM), the check made at each VM's turn and the
// health gate of an upgraded SSVM or CPVM (its agent over SSH at the required version, its
// console or upload endpoint serving TLS). The engine is the router upgrade's; the upgrade
// itself is the lifecycle's recreate.

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/models"
)

// System VM kinds an upgrade takes (systemvmtype), as CloudStack's listSystemVms names them.
const (
	SystemVMKindConsoleProxy     = "consoleproxy"
	SystemVMKindSecondaryStorage = "secondarystorage"
	SystemVMKindBoth             = "both"
)

// SystemVMKinds lists the accepted systemvmtype values.
func SystemVMKinds() []string {
	return []string{SystemVMKindConsoleProxy, SystemVMKindSecondaryStorage, SystemVMKindBoth}
}

// SystemVMUpgradeSelection is which SSVMs and CPVMs an upgrade takes: one VM (ID), one zone
// (ZoneID) or every zone (neither), of the kind SystemVMType (both when empty), only those
// that require upgrade unless Force.
type SystemVMUpgradeSelection struct {
	ID           string `json:"id,omitempty"`
	ZoneID       string `json:"zoneid,omitempty"`
	SystemVMType string `json:"systemvmtype,omitempty"`
	Force        bool   `json:"force,omitempty"`
}

// Validate checks the selectors: at most one of id and zoneid, and a known systemvmtype.
func (s SystemVMUpgradeSelection) Validate() error {
	if s.ID != "" && s.ZoneID != "" {
		return &models.SettingError{Field: "id", Message: "give at most one of id or zoneid"}
	}
	if s.SystemVMType != "" && !slices.Contains(SystemVMKinds(), s.SystemVMType) {
		return &models.SettingError{Field: "systemvmtype", Message: fmt.Sprintf("%q: want one of %s", s.SystemVMType,
			strings.Join(SystemVMKinds(), ", "))}
	}
	return nil
}

// Types are the system VM types (models.TypeSSVM, models.TypeCPVM) the selection takes.
func (s SystemVMUpgradeSelection) Types() []string {
	switch s.SystemVMType {
	case SystemVMKindConsoleProxy:
		return []string{models.TypeCPVM}
	case SystemVMKindSecondaryStorage:
		return []string{models.TypeSSVM}
	}
	return []string{models.TypeCPVM, models.TypeSSVM}
}

// Scope names what the selection covers, for the upgrade's workflow ID: one upgrade at a time
// per scope ("all", "zone:<id>", "systemvm:<id>"), whatever the kind (two upgrades of one zone,
// one per kind, would each count the other's VMs as serving).
func (s SystemVMUpgradeSelection) Scope() (kind, id string) {
	switch {
	case s.ID != "":
		return "systemvm", s.ID
	case s.ZoneID != "":
		return "zone", s.ZoneID
	}
	return "all", ""
}

// PlanSystemVMUpgrade selects the SSVMs and CPVMs of an upgrade and orders them: one group per
// zone (by name), in it the CPVMs then the SSVMs, by name. The VMs of one zone and kind are
// chained (each After the one before it): one at a time, the next only once the one before it
// passed its gate, so the others of its kind keep serving meanwhile. Destroyed VMs are never
// taken. Unknown selectors are a NotFound error; an empty selection an error of type
// ErrTypeNothingToUpgrade.
func PlanSystemVMUpgrade(ctx context.Context, s *models.Store, sel SystemVMUpgradeSelection) (UpgradePlan, error) {
	if err := sel.Validate(); err != nil {
		return UpgradePlan{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeNotAllowed, err)
	}
	q := s.DB.WithContext(ctx).Where("type IN ? AND state <> ? AND removed_at IS NULL", sel.Types(), models.StateDestroyed)
	switch {
	case sel.ID != "":
		var vm models.SystemVM
		err := s.Get(ctx, &vm, sel.ID)
		if errors.Is(err, models.ErrNotFound) || (err == nil && vm.IsRouter()) {
			return UpgradePlan{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("no SSVM or CPVM with id %s", sel.ID), ErrTypeNotFound, nil)
		}
		if err != nil {
			return UpgradePlan{}, err
		}
		q = q.Where("id = ?", sel.ID)
	case sel.ZoneID != "":
		var z models.Zone
		err := s.Get(ctx, &z, sel.ZoneID)
		if errors.Is(err, models.ErrNotFound) {
			return UpgradePlan{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("no zone with id %s", sel.ZoneID), ErrTypeNotFound, nil)
		}
		if err != nil {
			return UpgradePlan{}, err
		}
		q = q.Where("zone_id = ?", sel.ZoneID)
	}
	var vms []models.SystemVM
	if err := q.Order("name, id").Find(&vms).Error; err != nil {
		return UpgradePlan{}, fmt.Errorf("select system VMs to upgrade: %w", err)
	}
	take, err := requiringUpgrade(ctx, s, vms, sel.Force)
	if err != nil {
		return UpgradePlan{}, err
	}
	if len(take) == 0 {
		return UpgradePlan{GroupBy: UpgradeGroupZone}, temporal.NewNonRetryableApplicationError(
			"no SSVM or CPVM of the selection requires upgrade (use force to upgrade those that do not)", ErrTypeNothingToUpgrade, nil)
	}
	typeRank := func(t string) int {
		if t == models.TypeCPVM {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(take, func(a, b models.SystemVM) int {
		return cmp.Or(cmp.Compare(a.ZoneID, b.ZoneID), cmp.Compare(typeRank(a.Type), typeRank(b.Type)), cmp.Compare(a.Name, b.Name))
	})
	byZone := map[string][]PlannedRouter{}
	last := map[string]string{} // zone/type -> the VM the next one of its kind waits for
	for _, vm := range take {
		slot := vm.ZoneID + "/" + vm.Type
		byZone[vm.ZoneID] = append(byZone[vm.ZoneID], PlannedRouter{ID: vm.ID, Name: vm.Name, ZoneID: vm.ZoneID, Version: vm.Version,
			Type: vm.Type, After: last[slot]})
		last[slot] = vm.ID
	}
	plan := UpgradePlan{GroupBy: UpgradeGroupZone}
	for key, rs := range byZone {
		name, err := groupName(ctx, s, UpgradeGroupZone, key)
		if err != nil {
			return UpgradePlan{}, err
		}
		plan.Groups = append(plan.Groups, PlannedGroup{Key: key, Name: name, Routers: rs})
	}
	slices.SortFunc(plan.Groups, func(a, b PlannedGroup) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Key, b.Key)) })
	return plan, nil
}

// PlanSystemVMUpgrade is the plan activity (see the function of the same name).
func (a *Activities) PlanSystemVMUpgrade(ctx context.Context, sel SystemVMUpgradeSelection) (UpgradePlan, error) {
	return PlanSystemVMUpgrade(ctx, a.Store, sel)
}

// SystemVMUpgradeCheck is the answer of SystemVMUpgradeCheck: UpgradeCheck, plus how many
// other VMs of its kind serve its zone now (Running, not being destroyed).
type SystemVMUpgradeCheck struct {
	UpgradeCheck
	Type string `json:"type"`
	// Serving counts the zone's other Running VMs of the same type.
	Serving int `json:"serving"`
}

// SystemVMUpgradeCheck decides at a VM's turn whether it is still to be upgraded (as
// RouterUpgradeCheck does for routers: not when gone, destroyed, not Running, or already at
// the required version unless forced) and counts the other VMs of its kind serving its zone,
// so the workflow knows whether taking it down would leave the zone without one.
func (a *Activities) SystemVMUpgradeCheck(ctx context.Context, in UpgradeCheckInput) (SystemVMUpgradeCheck, error) {
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, in.RouterID); err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return SystemVMUpgradeCheck{UpgradeCheck: UpgradeCheck{Skip: true, Reason: "the system VM no longer exists"}}, nil
		}
		return SystemVMUpgradeCheck{}, fmt.Errorf("load system VM %s: %w", in.RouterID, err)
	}
	check, err := upgradeCheckOf(ctx, a.Store, vm, in.Force, "system VM")
	if err != nil {
		return SystemVMUpgradeCheck{}, err
	}
	out := SystemVMUpgradeCheck{UpgradeCheck: check, Type: vm.Type}
	var n int64
	if err := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where(
		"zone_id = ? AND type = ? AND id <> ? AND state = ? AND removed_at IS NULL", vm.ZoneID, vm.Type, vm.ID, models.StateRunning).
		Count(&n).Error; err != nil {
		return SystemVMUpgradeCheck{}, fmt.Errorf("count serving %s of zone %s: %w", vm.Type, vm.ZoneID, err)
	}
	out.Serving = int(n)
	if vm.IsRouter() {
		out.Skip, out.Reason = true, "a virtual router: upgraded by router upgrades"
	}
	return out, nil
}

// SystemVMGateInput asks for the health gate of an upgraded SSVM or CPVM.
type SystemVMGateInput struct {
	VMID string `json:"vmId"`
	// Timeout is how long the VM may take to pass (2 minutes when 0).
	Timeout time.Duration `json:"timeout"`
	// Poll is the pause between two attempts (2 s when 0).
	Poll time.Duration `json:"poll,omitempty"`
}

// SystemVMUpgradeGate is the health gate of an upgraded SSVM or CPVM. It passes once, in one
// attempt: the VM is Running in the inventory at the required version; its agent answers over
// SSH along the access path (`sysvm-agent version`) with that template version; its console
// endpoint (CPVM) or HTTPS upload endpoint (SSVM) reports a serving address (`sysvm-console
// status`); and a real TLS handshake with that address succeeds and is served the certificate
// the endpoint reports (and, when the VM was given one, the certificate recorded as served).
// Attempts repeat every Poll until Timeout; a gate that does not pass is a non-retryable error
// of type ErrTypeGateFailed naming what failed last.
func (a *Activities) SystemVMUpgradeGate(ctx context.Context, in SystemVMGateInput) (UpgradeGateResult, error) {
	out := UpgradeGateResult{RouterID: in.VMID}
	err := pollGate(ctx, in.Timeout, in.Poll, 2*time.Second, "attempts", &out.Attempts, func() (bool, string, error) {
		version, note, err := a.systemVMServes(ctx, in.VMID)
		if err == nil {
			out.Version, out.Note = version, note
			return true, "", nil
		}
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) && appErr.Type() == ErrTypeNotFound {
			return false, "", err
		}
		if ctx.Err() != nil {
			return false, "", ctx.Err()
		}
		return false, err.Error(), nil
	})
	return out, err
}

// systemVMServes is one attempt of SystemVMUpgradeGate.
func (a *Activities) systemVMServes(ctx context.Context, id string) (string, string, error) {
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, id); err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return "", "", temporal.NewNonRetryableApplicationError("system VM "+id+" no longer exists", ErrTypeNotFound, err)
		}
		return "", "", fmt.Errorf("load system VM %s: %w", id, err)
	}
	if vm.State != models.StateRunning {
		return "", "", fmt.Errorf("%s is %s, not Running", vm.Name, vm.State)
	}
	minreq := models.MinReqVersions{Settings: a.Store.Settings}
	if req, min, err := minreq.RouterRequiresUpgrade(ctx, vm); err != nil {
		return "", "", err
	} else if req {
		return "", "", fmt.Errorf("%s still runs version %q, below the required %s", vm.Name, vm.Version, min)
	}
	if a.Exec == nil {
		return vm.Version, "no SSH executor configured: the gate checked only that the VM is Running at the required version", nil
	}
	t, err := StoreTargets{Store: a.Store}.TargetFor(ctx, vm)
	if err != nil {
		return "", "", temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeNotAllowed, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := a.Exec.Run(rctx, t, []string{"timeout", "15", DefaultAgentCommand, "version"}, nil)
	if err != nil {
		return "", "", fmt.Errorf("agent of %s does not answer over SSH: %w", vm.Name, err)
	}
	if res.ExitCode != 0 {
		return "", "", fmt.Errorf("%s version on %s exited %d: %s", DefaultAgentCommand, vm.Name, res.ExitCode, strings.TrimSpace(string(res.Stderr)))
	}
	var v agent.VersionInfo
	if err := json.Unmarshal(res.Stdout, &v); err != nil {
		return "", "", fmt.Errorf("unreadable agent version of %s: %w", vm.Name, err)
	}
	if vm.Version != "" && !strings.Contains(v.TemplateVersion, vm.Version) {
		return "", "", fmt.Errorf("%s runs template %q, the inventory says %s", vm.Name, v.TemplateVersion, vm.Version)
	}
	st, err := a.consoleStatus(ctx, vm)
	if err != nil {
		return "", "", err
	}
	what := "console endpoint"
	if vm.Type == models.TypeSSVM {
		what = "HTTPS upload endpoint"
	}
	if st.Addr == "" {
		return "", "", fmt.Errorf("the %s of %s is not serving (restarting)", what, vm.Name)
	}
	addr := consoleAddr(vm, st)
	d := &net.Dialer{Timeout: 5 * time.Second}
	// Whether the chain is trusted is the certificate rotation's business; the gate wants the
	// endpoint to complete a handshake with the certificate it says it serves.
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // fingerprint compared below
	if err != nil {
		return "", "", fmt.Errorf("the %s of %s on %s does not serve TLS: %w", what, vm.Name, addr, err)
	}
	peers := conn.ConnectionState().PeerCertificates
	_ = conn.Close()
	if len(peers) == 0 {
		return "", "", fmt.Errorf("the %s of %s on %s sent no certificate", what, vm.Name, addr)
	}
	fp := models.Fingerprint(peers[0].Raw)
	if st.Fingerprint != "" && fp != st.Fingerprint {
		return "", "", fmt.Errorf("the %s of %s serves %s, its agent reports %s", what, vm.Name, fp, st.Fingerprint)
	}
	if served, err := a.Store.ServedCertificates(ctx); err == nil {
		if sc, ok := served[vm.ID]; ok && sc.CertificateID != "" {
			var cert models.Certificate
			if err := a.Store.Get(ctx, &cert, sc.CertificateID); err == nil && cert.Fingerprint != fp {
				return "", "", fmt.Errorf("the %s of %s serves %s, not its certificate %s v%d (%s)", what, vm.Name, fp, cert.Name, cert.Version, cert.Fingerprint)
			}
		}
	}
	return vm.Version, fmt.Sprintf("agent %s, template %s; %s serves TLS on %s", v.AgentVersion, v.TemplateVersion, what, addr), nil
}
