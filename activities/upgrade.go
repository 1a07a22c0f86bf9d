package activities

// Batched router upgrades (SPEC §4.4): the plan (which routers, in which groups and order, and
// which must wait for which), the check made at each router's turn (so a router already at the
// required version is skipped, and a restarted upgrade never upgrades a router twice) and the
// alert raised when the failure budget is spent. The upgrade itself is the lifecycle's
// recreate; the health gate is Health.UpgradeHealthGate.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/models"
)

// Group hierarchies of an upgrade (groupBy).
const (
	UpgradeGroupZone    = "zone"
	UpgradeGroupPod     = "pod"
	UpgradeGroupCluster = "cluster"
	UpgradeGroupAccount = "account"
)

// UpgradeGroupings lists the accepted groupBy values.
func UpgradeGroupings() []string {
	return []string{UpgradeGroupZone, UpgradeGroupPod, UpgradeGroupCluster, UpgradeGroupAccount}
}

// Alert and event types of upgrades.
const (
	// AlertUpgradeBudget: an upgrade spent its failure budget and paused itself.
	AlertUpgradeBudget = "ROUTER.UPGRADE.FAILURE.BUDGET"
	// ResourceUpgrade is the resource type of upgrade alerts (the resource ID is the operation's).
	ResourceUpgrade = "RouterUpgrade"
)

// ErrTypeNothingToUpgrade: the selection has no router that requires upgrade.
const ErrTypeNothingToUpgrade = "NothingToUpgrade"

// UpgradeSelection is which routers an upgrade takes: CloudStack's upgradeRouterTemplate
// selectors (at most one of RouterID, ClusterID, PodID, ZoneID, DomainID with Account; none =
// every router), only those that require upgrade unless Force.
type UpgradeSelection struct {
	RouterID  string `json:"id,omitempty"`
	ClusterID string `json:"clusterid,omitempty"`
	PodID     string `json:"podid,omitempty"`
	ZoneID    string `json:"zoneid,omitempty"`
	DomainID  string `json:"domainid,omitempty"`
	Account   string `json:"account,omitempty"`
	// Force takes routers that do not require upgrade too.
	Force bool `json:"force,omitempty"`
	// GroupBy is the hierarchy the routers are grouped and ordered by (zone when empty).
	GroupBy string `json:"groupBy,omitempty"`
}

// Validate checks the selectors: at most one, and domainid with account.
func (s UpgradeSelection) Validate() error {
	n := 0
	for _, v := range []string{s.RouterID, s.ClusterID, s.PodID, s.ZoneID} {
		if v != "" {
			n++
		}
	}
	if (s.DomainID == "") != (s.Account == "") {
		if s.DomainID == "" {
			return &models.SettingError{Field: "domainid", Message: "account needs domainid (the account's domain)"}
		}
		return &models.SettingError{Field: "account", Message: "domainid needs account (the account's name in that domain)"}
	}
	if s.DomainID != "" {
		n++
	}
	if n > 1 {
		return &models.SettingError{Field: "id", Message: "give at most one of id, clusterid, podid, zoneid or domainid+account"}
	}
	if s.GroupBy != "" && !slices.Contains(UpgradeGroupings(), s.GroupBy) {
		return &models.SettingError{Field: "groupBy", Message: fmt.Sprintf("%q: want one of %s", s.GroupBy, strings.Join(UpgradeGroupings(), ", "))}
	}
	return nil
}

// Scope names what the selection covers, for the upgrade's workflow ID: one upgrade at a time
// per scope ("all", "zone:<id>", "account:<domain>/<name>", ...).
func (s UpgradeSelection) Scope() (kind, id string) {
	switch {
	case s.RouterID != "":
		return "router", s.RouterID
	case s.ClusterID != "":
		return "cluster", s.ClusterID
	case s.PodID != "":
		return "pod", s.PodID
	case s.ZoneID != "":
		return "zone", s.ZoneID
	case s.DomainID != "":
		return "account", s.DomainID + "/" + s.Account
	}
	return "all", ""
}

// PlannedRouter is one router of an upgrade plan.
type PlannedRouter struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	ZoneID         string `json:"zoneId"`
	Version        string `json:"version,omitempty"`
	RedundantState string `json:"redundantState,omitempty"`
	// Type is the system VM type of an SSVM or CPVM upgrade's VM (empty for routers).
	Type string `json:"type,omitempty"`
	// After is the ID of the router (its redundant peer) that must have passed its health
	// gate before this one goes down; empty when none.
	After string `json:"after,omitempty"`
}

// PlannedGroup is one group of an upgrade: the routers of one zone, pod, cluster or account,
// in the order they go.
type PlannedGroup struct {
	// Key is the group's zone, pod, cluster or account ID (the key of per-group windows).
	Key     string          `json:"key"`
	Name    string          `json:"name"`
	Routers []PlannedRouter `json:"routers"`
}

// UpgradePlan is an upgrade's routers in groups, in the order they go.
type UpgradePlan struct {
	GroupBy string         `json:"groupBy"`
	Groups  []PlannedGroup `json:"groups"`
}

// Count is the number of routers in the plan.
func (p UpgradePlan) Count() int {
	n := 0
	for _, g := range p.Groups {
		n += len(g.Routers)
	}
	return n
}

// pairKey is what a redundant router shares with its peer: its VPC, or its network.
func pairKey(vm models.SystemVM) string {
	if !vm.IsRedundant {
		return ""
	}
	if vm.VPCID != "" {
		return "vpc:" + vm.VPCID
	}
	if vm.NetworkID != "" {
		return "net:" + vm.NetworkID
	}
	return ""
}

// redundantRank orders a pair: BACKUP first, PRIMARY last.
func redundantRank(state string) int {
	switch strings.ToUpper(state) {
	case models.RedundantBackup:
		return 0
	case models.RedundantPrimary, "MASTER":
		return 2
	}
	return 1
}

// PlanRouterUpgrade selects the routers of an upgrade and orders them: groups by the chosen
// hierarchy (by name), routers in a group by name, except that the members of a redundant pair
// (one network's or one VPC's redundant routers) are chained BACKUP first, each waiting (After)
// for the one before it, and a pair always goes in the group of its first member so the chain
// never waits on a later group. Destroyed routers are never taken; routers of other states are
// planned and skipped at their turn if they are not Running then. Unknown selectors are a
// NotFound error naming them; an empty selection an error of type ErrTypeNothingToUpgrade.
func PlanRouterUpgrade(ctx context.Context, s *models.Store, sel UpgradeSelection) (UpgradePlan, error) {
	if err := sel.Validate(); err != nil {
		return UpgradePlan{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeNotAllowed, err)
	}
	groupBy := cmp.Or(sel.GroupBy, UpgradeGroupZone)
	q := s.DB.WithContext(ctx).Where("type = ? AND state <> ? AND removed_at IS NULL", models.TypeRouter, models.StateDestroyed)
	notFound := func(what, id string) error {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("no %s with id %s", what, id), ErrTypeNotFound, nil)
	}
	exists := func(v any, id string) (bool, error) {
		err := s.Get(ctx, v, id)
		if errors.Is(err, models.ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	}
	switch {
	case sel.RouterID != "":
		q = q.Where("id = ?", sel.RouterID)
	case sel.ClusterID != "":
		if ok, err := exists(&models.Cluster{}, sel.ClusterID); err != nil || !ok {
			return UpgradePlan{}, cmp.Or(err, notFound("cluster", sel.ClusterID))
		}
		q = q.Where("cluster_id = ?", sel.ClusterID)
	case sel.PodID != "":
		if ok, err := exists(&models.Pod{}, sel.PodID); err != nil || !ok {
			return UpgradePlan{}, cmp.Or(err, notFound("pod", sel.PodID))
		}
		q = q.Where("pod_id = ?", sel.PodID)
	case sel.ZoneID != "":
		if ok, err := exists(&models.Zone{}, sel.ZoneID); err != nil || !ok {
			return UpgradePlan{}, cmp.Or(err, notFound("zone", sel.ZoneID))
		}
		q = q.Where("zone_id = ?", sel.ZoneID)
	case sel.DomainID != "":
		var acct models.Account
		err := s.DB.WithContext(ctx).Where("domain_id = ? AND name = ?", sel.DomainID, sel.Account).Take(&acct).Error
		if err != nil {
			return UpgradePlan{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("no account %q in domain %s", sel.Account, sel.DomainID), ErrTypeNotFound, err)
		}
		q = q.Where("account_id = ?", acct.ID)
	}
	var vms []models.SystemVM
	if err := q.Order("name, id").Find(&vms).Error; err != nil {
		return UpgradePlan{}, fmt.Errorf("select routers to upgrade: %w", err)
	}
	if sel.RouterID != "" && len(vms) == 0 {
		return UpgradePlan{}, notFound("router", sel.RouterID)
	}
	take, err := requiringUpgrade(ctx, s, vms, sel.Force)
	if err != nil {
		return UpgradePlan{}, err
	}
	if len(take) == 0 {
		return UpgradePlan{GroupBy: groupBy}, temporal.NewNonRetryableApplicationError(
			"no router of the selection requires upgrade (use force to upgrade routers that do not)", ErrTypeNothingToUpgrade, nil)
	}
	keyOf := func(vm models.SystemVM) string {
		switch groupBy {
		case UpgradeGroupPod:
			return vm.PodID
		case UpgradeGroupCluster:
			return vm.ClusterID
		case UpgradeGroupAccount:
			return vm.AccountID
		}
		return vm.ZoneID
	}
	// Pairs: chained BACKUP first; the whole pair in its first member's group.
	pairs := map[string][]models.SystemVM{}
	for _, vm := range take {
		if k := pairKey(vm); k != "" {
			pairs[k] = append(pairs[k], vm)
		}
	}
	after := map[string]string{}
	groupOf := map[string]string{}
	for _, members := range pairs {
		slices.SortStableFunc(members, func(a, b models.SystemVM) int {
			return cmp.Or(cmp.Compare(redundantRank(a.RedundantState), redundantRank(b.RedundantState)), cmp.Compare(a.Name, b.Name))
		})
		for i, vm := range members {
			groupOf[vm.ID] = keyOf(members[0])
			if i > 0 {
				after[vm.ID] = members[i-1].ID
			}
		}
	}
	byGroup := map[string][]PlannedRouter{}
	for _, vm := range take {
		g := keyOf(vm)
		if pg, ok := groupOf[vm.ID]; ok {
			g = pg
		}
		byGroup[g] = append(byGroup[g], PlannedRouter{ID: vm.ID, Name: vm.Name, ZoneID: vm.ZoneID, Version: vm.Version,
			RedundantState: vm.RedundantState, After: after[vm.ID]})
	}
	plan := UpgradePlan{GroupBy: groupBy}
	for key, rs := range byGroup {
		// A pair's later members go right after the member they wait for, so the group's
		// order reads as the order they go in.
		slices.SortStableFunc(rs, func(a, b PlannedRouter) int {
			return cmp.Compare(redundantRank(a.RedundantState), redundantRank(b.RedundantState))
		})
		name, err := groupName(ctx, s, groupBy, key)
		if err != nil {
			return UpgradePlan{}, err
		}
		plan.Groups = append(plan.Groups, PlannedGroup{Key: key, Name: name, Routers: rs})
	}
	slices.SortFunc(plan.Groups, func(a, b PlannedGroup) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Key, b.Key)) })
	return plan, nil
}

// groupName names a group's zone, pod, cluster or account (its key when the row is gone).
func groupName(ctx context.Context, s *models.Store, groupBy, key string) (string, error) {
	var name string
	var err error
	switch groupBy {
	case UpgradeGroupPod:
		var p models.Pod
		err, name = s.Get(ctx, &p, key), p.Name
	case UpgradeGroupCluster:
		var c models.Cluster
		err, name = s.Get(ctx, &c, key), c.Name
	case UpgradeGroupAccount:
		var a models.Account
		err, name = s.Get(ctx, &a, key), a.Name
	default:
		var z models.Zone
		err, name = s.Get(ctx, &z, key), z.Name
	}
	if errors.Is(err, models.ErrNotFound) || key == "" {
		return key, nil
	}
	if err != nil {
		return "", fmt.Errorf("name of %s %s: %w", groupBy, key, err)
	}
	return name, nil
}

// PlanRouterUpgrade is the plan activity (see the function of the same name).
func (a *Activities) PlanRouterUpgrade(ctx context.Context, sel UpgradeSelection) (UpgradePlan, error) {
	return PlanRouterUpgrade(ctx, a.Store, sel)
}

// UpgradeCheckInput asks whether one router still needs its upgrade, at its turn.
type UpgradeCheckInput struct {
	RouterID string `json:"routerId"`
	Force    bool   `json:"force,omitempty"`
}

// UpgradeCheck is the answer: skip the router (and why), or go, with its versions.
type UpgradeCheck struct {
	Skip    bool   `json:"skip"`
	Reason  string `json:"reason,omitempty"`
	Version string `json:"version"`
	MinReq  string `json:"minreq"`
}

// RouterUpgradeCheck decides at a router's turn whether it is still to be upgraded: not when
// it is gone, destroyed or not Running (nothing to make before breaking), and not when it
// already runs the required version (unless forced). This is what makes a second upgrade of
// the same routers (after one was terminated, say) skip those already upgraded; within one
// upgrade, Temporal's history already ensures a router's recreate is started once.
func (a *Activities) RouterUpgradeCheck(ctx context.Context, in UpgradeCheckInput) (UpgradeCheck, error) {
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, in.RouterID); err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return UpgradeCheck{Skip: true, Reason: "the router no longer exists"}, nil
		}
		return UpgradeCheck{}, fmt.Errorf("load router %s: %w", in.RouterID, err)
	}
	return upgradeCheckOf(ctx, a.Store, vm, in.Force, "router")
}

// upgradeCheckOf is the decision of RouterUpgradeCheck and SystemVMUpgradeCheck at vm's turn
// (noun names the VM in reasons): skip it when destroyed, not Running, or already at the
// required version unless forced.
func upgradeCheckOf(ctx context.Context, s *models.Store, vm models.SystemVM, force bool, noun string) (UpgradeCheck, error) {
	minreq := models.MinReqVersions{Settings: s.Settings}
	req, min, err := minreq.RouterRequiresUpgrade(ctx, vm)
	if err != nil {
		return UpgradeCheck{}, err
	}
	out := UpgradeCheck{Version: vm.Version, MinReq: min}
	switch {
	case vm.State == models.StateDestroyed || vm.RemovedAt != nil:
		out.Skip, out.Reason = true, fmt.Sprintf("the %s is destroyed", noun)
	case vm.State != models.StateRunning:
		out.Skip, out.Reason = true, fmt.Sprintf("the %s is %s, not Running", noun, vm.State)
	case !req && !force:
		out.Skip, out.Reason = true, fmt.Sprintf("already at version %s (minimum %s)", vm.Version, cmp.Or(min, "none"))
	}
	return out, nil
}

// requiringUpgrade keeps, in order, the VMs that require upgrade (all of them with force).
func requiringUpgrade(ctx context.Context, s *models.Store, vms []models.SystemVM, force bool) ([]models.SystemVM, error) {
	minreq := models.MinReqVersions{Settings: s.Settings}
	var take []models.SystemVM
	for _, vm := range vms {
		req, _, err := minreq.RouterRequiresUpgrade(ctx, vm)
		if err != nil {
			return nil, err
		}
		if req || force {
			take = append(take, vm)
		}
	}
	return take, nil
}

// UpgradeAlertInput raises the alert of an upgrade that spent its failure budget.
type UpgradeAlertInput struct {
	OperationID string `json:"operationId"`
	// Type and ResourceType are the alert's (AlertUpgradeBudget and ResourceUpgrade when empty).
	Type         string `json:"type,omitempty"`
	ResourceType string `json:"resourceType,omitempty"`
	// Key makes the alert once-only within the operation (e.g. "budget.1" for the first pause).
	Key         string `json:"key"`
	ZoneID      string `json:"zoneId,omitempty"`
	Subject     string `json:"subject"`
	Description string `json:"description"`
}

// RaiseUpgradeAlert raises (once per operation and subject) a CRITICAL alert and an event
// naming the failed routers and why.
func (a *Activities) RaiseUpgradeAlert(ctx context.Context, in UpgradeAlertInput) error {
	step := clip("alert."+in.Key, 64)
	if done, err := a.stepDone(ctx, in.OperationID, step); err != nil || done {
		return err
	}
	typ, rtype := cmp.Or(in.Type, AlertUpgradeBudget), cmp.Or(in.ResourceType, ResourceUpgrade)
	if err := a.Store.DB.WithContext(ctx).Create(&models.Alert{Type: typ, Severity: "CRITICAL",
		Subject: clip(in.Subject, 512), Description: in.Description, ResourceType: rtype,
		ResourceID: in.OperationID, ZoneID: in.ZoneID}).Error; err != nil {
		return fmt.Errorf("raise upgrade alert: %w", err)
	}
	if err := a.Store.DB.WithContext(ctx).Create(&models.Event{Type: typ, Level: "ERROR",
		Description: clip(in.Subject+": "+in.Description, 4000), ResourceType: rtype, ResourceID: in.OperationID,
		ZoneID: in.ZoneID}).Error; err != nil {
		return fmt.Errorf("record upgrade event: %w", err)
	}
	return a.markStep(ctx, in.OperationID, step, "")
}

// UpgradeAlertResolveInput clears the failure-budget alerts of an upgrade.
type UpgradeAlertResolveInput struct {
	OperationID string `json:"operationId"`
	// Why is recorded in the event: "resumed by an operator", "the upgrade ended completed", ...
	Why string `json:"why"`
}

// ResolveUpgradeAlert clears the open ROUTER.UPGRADE.FAILURE.BUDGET alerts of an upgrade (its
// operator resumed it, or it ended) and records an INFO event when it cleared one. It is
// idempotent: a retry after the commit finds no open alert and does nothing.
func (a *Activities) ResolveUpgradeAlert(ctx context.Context, in UpgradeAlertResolveInput) error {
	if in.OperationID == "" {
		return temporal.NewNonRetryableApplicationError("resolve upgrade alert: no operation ID", ErrTypeNotAllowed, nil)
	}
	return a.Store.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var open []models.Alert
		if err := tx.Where("type = ? AND resource_id = ? AND cleared_at IS NULL", AlertUpgradeBudget, in.OperationID).
			Find(&open).Error; err != nil {
			return fmt.Errorf("read upgrade alerts of %s: %w", in.OperationID, err)
		}
		if len(open) == 0 {
			return nil
		}
		now := time.Now().UTC()
		ids := make([]string, len(open))
		for i, al := range open {
			ids[i] = al.ID
		}
		if err := tx.Model(&models.Alert{}).Where("id IN ? AND cleared_at IS NULL", ids).Update("cleared_at", &now).Error; err != nil {
			return fmt.Errorf("clear upgrade alerts of %s: %w", in.OperationID, err)
		}
		if err := tx.Create(&models.Event{Type: AlertUpgradeBudget, Level: "INFO", ResourceType: ResourceUpgrade,
			ResourceID: in.OperationID, ZoneID: open[0].ZoneID,
			Description: clip(fmt.Sprintf("Router upgrade %s: failure budget alert cleared (%s)", in.OperationID, cmp.Or(in.Why, "resolved")), 4000)}).Error; err != nil {
			return fmt.Errorf("record upgrade event: %w", err)
		}
		return nil
	})
}
