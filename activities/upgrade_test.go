package activities

import (
	"context"
	"errors"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// TestPlanRouterUpgrade: selection (requires upgrade, or force), groups by the hierarchy in
// name order, redundant peers (a VPC's and a network's) chained BACKUP first and kept in the
// first member's group, destroyed routers never taken, selectors naming nothing refused.
func TestPlanRouterUpgrade(t *testing.T) {
	ctx := context.Background()
	s := modelstest.SQLite(t)
	mk := func(v any) {
		t.Helper()
		modelstest.Must(t, s.DB.Create(v).Error, "create %T", v)
	}
	z := models.Zone{Name: "zone-a"}
	mk(&z)
	cA := models.Cluster{ZoneID: z.ID, Name: "c-a"}
	cB := models.Cluster{ZoneID: z.ID, Name: "c-b"}
	mk(&cA)
	mk(&cB)
	d := models.Domain{Name: "ROOT"}
	mk(&d)
	acct := models.Account{DomainID: d.ID, Name: "tenant"}
	mk(&acct)
	vpc := models.VPC{ZoneID: z.ID, Name: "vpc-1", Redundant: true}
	mk(&vpc)
	net := models.Network{ZoneID: z.ID, Name: "net-1", Redundant: true}
	mk(&net)
	_, err := s.Settings.Set(ctx, models.SettingMinReqVersion, models.ScopeGlobal, "", "4.15.0")
	modelstest.Must(t, err, "minreq")
	router := func(name, cluster, version, state, red string, vpcID, netID string) models.SystemVM {
		vm := models.SystemVM{Name: name, Type: models.TypeRouter, State: state, ZoneID: z.ID, ClusterID: cluster, Version: version,
			AccountID: acct.ID, DomainID: d.ID, VPCID: vpcID, NetworkID: netID, IsRedundant: red != "", RedundantState: red}
		mk(&vm)
		return vm
	}
	// The VPC pair is split over clusters, PRIMARY in c-a, BACKUP in c-b.
	vp := router("r-1-VM", cA.ID, "4.14.0", models.StateRunning, models.RedundantPrimary, vpc.ID, "")
	vb := router("r-2-VM", cB.ID, "", models.StateRunning, models.RedundantBackup, vpc.ID, "")
	np := router("r-3-VM", cA.ID, "4.14", models.StateRunning, models.RedundantPrimary, "", net.ID)
	nb := router("r-4-VM", cA.ID, "4.14", models.StateRunning, models.RedundantBackup, "", net.ID)
	single := router("r-5-VM", cA.ID, "4.9.9", models.StateRunning, "", "", "")
	current := router("r-6-VM", cB.ID, "4.15.0.0", models.StateRunning, "", "", "")
	router("r-7-VM", cB.ID, "4.1", models.StateDestroyed, "", "", "")

	plan, err := PlanRouterUpgrade(ctx, s, UpgradeSelection{GroupBy: UpgradeGroupCluster})
	modelstest.Must(t, err, "plan")
	if len(plan.Groups) != 2 || plan.Groups[0].Name != "c-a" || plan.Groups[1].Name != "c-b" {
		t.Fatalf("groups %+v", plan.Groups)
	}
	order := func(g PlannedGroup) []string {
		var out []string
		for _, r := range g.Routers {
			out = append(out, r.Name)
		}
		return out
	}
	// c-a: the network pair (BACKUP r-4 first), r-5; c-b: the VPC pair whose BACKUP is there,
	// PRIMARY r-1 moved with it. r-6 is current, r-7 destroyed.
	if got := order(plan.Groups[0]); len(got) != 3 || got[0] != "r-4-VM" || got[1] != "r-5-VM" || got[2] != "r-3-VM" {
		t.Errorf("c-a order %v, want r-4, r-5, r-3 (BACKUPs first)", got)
	}
	if got := order(plan.Groups[1]); len(got) != 2 || got[0] != "r-2-VM" || got[1] != "r-1-VM" {
		t.Errorf("c-b order %v, want r-2 then r-1", got)
	}
	after := map[string]string{}
	for _, g := range plan.Groups {
		for _, r := range g.Routers {
			after[r.ID] = r.After
		}
	}
	if after[vp.ID] != vb.ID || after[np.ID] != nb.ID || after[vb.ID] != "" || after[single.ID] != "" {
		t.Errorf("after: %v", after)
	}
	if _, found := after[current.ID]; found {
		t.Error("a router at the required version (4.15.0.0 = 4.15.0) was planned")
	}
	forced, err := PlanRouterUpgrade(ctx, s, UpgradeSelection{Force: true})
	modelstest.Must(t, err, "forced plan")
	if forced.Count() != 6 || len(forced.Groups) != 1 || forced.GroupBy != UpgradeGroupZone {
		t.Errorf("forced: %d routers in %d groups by %s, want 6 in one zone group", forced.Count(), len(forced.Groups), forced.GroupBy)
	}
	acctPlan, err := PlanRouterUpgrade(ctx, s, UpgradeSelection{DomainID: d.ID, Account: "tenant", GroupBy: UpgradeGroupAccount})
	modelstest.Must(t, err, "account plan")
	if acctPlan.Count() != 5 || acctPlan.Groups[0].Name != "tenant" {
		t.Errorf("account plan %+v", acctPlan)
	}
	appType := func(err error) string {
		var ae *temporal.ApplicationError
		if errors.As(err, &ae) {
			return ae.Type()
		}
		return ""
	}
	if _, err := PlanRouterUpgrade(ctx, s, UpgradeSelection{RouterID: current.ID}); appType(err) != ErrTypeNothingToUpgrade {
		t.Errorf("a current router alone: %v, want %s", err, ErrTypeNothingToUpgrade)
	}
	if _, err := PlanRouterUpgrade(ctx, s, UpgradeSelection{PodID: "nope"}); appType(err) != ErrTypeNotFound {
		t.Errorf("unknown pod: %v", err)
	}
	if err := (UpgradeSelection{ZoneID: z.ID, ClusterID: cA.ID}).Validate(); err == nil {
		t.Error("two selectors accepted")
	}
	// The check at a router's turn: skipped once at the version, or when not Running.
	a := &Activities{Store: s}
	chk, err := a.RouterUpgradeCheck(ctx, UpgradeCheckInput{RouterID: current.ID})
	modelstest.Must(t, err, "check")
	if !chk.Skip {
		t.Errorf("check of a current router: %+v, want skip", chk)
	}
	chk, err = a.RouterUpgradeCheck(ctx, UpgradeCheckInput{RouterID: single.ID})
	modelstest.Must(t, err, "check")
	if chk.Skip || chk.MinReq != "4.15.0" {
		t.Errorf("check of an outdated router: %+v", chk)
	}
	modelstest.Must(t, s.DB.Model(&models.SystemVM{}).Where("id = ?", single.ID).Update("state", models.StateStopped).Error, "stop")
	if chk, _ = a.RouterUpgradeCheck(ctx, UpgradeCheckInput{RouterID: single.ID, Force: true}); !chk.Skip {
		t.Errorf("check of a stopped router: %+v, want skip", chk)
	}
}

// TestCheckRouterVersions: router.version.check refuses a change for outdated routers,
// naming them and the version; off (in the zone), it lets it through.
func TestCheckRouterVersions(t *testing.T) {
	ctx := context.Background()
	s := modelstest.SQLite(t)
	_, err := s.Settings.Set(ctx, models.SettingMinReqVersion, models.ScopeGlobal, "", "4.15.0")
	modelstest.Must(t, err, "minreq")
	old := models.SystemVM{Base: models.Base{ID: "r1"}, Name: "r-1-VM", ZoneID: "z1", Version: "4.14.0", State: models.StateRunning}
	cur := models.SystemVM{Base: models.Base{ID: "r2"}, Name: "r-2-VM", ZoneID: "z1", Version: "4.15", State: models.StateRunning}
	gone := models.SystemVM{Base: models.Base{ID: "r3"}, Name: "r-3-VM", ZoneID: "z1", Version: "1", State: models.StateDestroyed}
	err = CheckRouterVersions(ctx, s, []models.SystemVM{old, cur, gone})
	var oe *OutdatedError
	if !errors.As(err, &oe) || len(oe.Routers) != 1 || oe.Routers[0].Name != "r-1-VM" || oe.Required != "4.15.0" {
		t.Fatalf("err = %v, want r-1-VM outdated against 4.15.0", err)
	}
	if err := CheckRouterVersions(ctx, s, []models.SystemVM{cur, gone}); err != nil {
		t.Errorf("current routers refused: %v", err)
	}
	_, err = s.Settings.Set(ctx, models.SettingRouterVersionCheck, models.ScopeZone, "z1", "false")
	if err != nil {
		// the zone must exist for a zone-scoped setting
		modelstest.Must(t, s.DB.Create(&models.Zone{Base: models.Base{ID: "z1"}, Name: "z1"}).Error, "zone")
		_, err = s.Settings.Set(ctx, models.SettingRouterVersionCheck, models.ScopeZone, "z1", "false")
	}
	modelstest.Must(t, err, "version check off")
	if err := CheckRouterVersions(ctx, s, []models.SystemVM{old}); err != nil {
		t.Errorf("router.version.check false in the zone still refuses: %v", err)
	}
}
