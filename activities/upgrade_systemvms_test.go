package activities

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// TestPlanSystemVMUpgrade: zones by name, CPVMs then SSVMs, the VMs of one zone and kind
// chained; routers, destroyed and current VMs not taken (unless forced); selectors naming
// nothing refused; the check at a VM's turn counts the others of its kind serving its zone.
func TestPlanSystemVMUpgrade(t *testing.T) {
	ctx := context.Background()
	s := modelstest.SQLite(t)
	mk := func(v any) {
		t.Helper()
		modelstest.Must(t, s.DB.Create(v).Error, "create %T", v)
	}
	za, zb := models.Zone{Name: "zone-a"}, models.Zone{Name: "zone-b"}
	mk(&za)
	mk(&zb)
	_, err := s.Settings.Set(ctx, models.SettingMinReqVersion, models.ScopeGlobal, "", "4.15.0")
	modelstest.Must(t, err, "minreq")
	vm := func(name, typ, zone, version, state string) models.SystemVM {
		v := models.SystemVM{Name: name, Type: typ, State: state, ZoneID: zone, Version: version}
		mk(&v)
		return v
	}
	v2 := vm("v-2-VM", models.TypeCPVM, za.ID, "4.14.0", models.StateRunning)
	v1 := vm("v-1-VM", models.TypeCPVM, za.ID, "", models.StateRunning)
	s1 := vm("s-1-VM", models.TypeSSVM, za.ID, "4.14.0", models.StateRunning)
	v3 := vm("v-3-VM", models.TypeCPVM, zb.ID, "4.14.0", models.StateRunning)
	cur := vm("s-2-VM", models.TypeSSVM, zb.ID, "4.15.0", models.StateRunning)
	vm("v-4-VM", models.TypeCPVM, zb.ID, "4.1", models.StateDestroyed)
	r := vm("r-9-VM", models.TypeRouter, za.ID, "4.1", models.StateRunning)

	plan, err := PlanSystemVMUpgrade(ctx, s, SystemVMUpgradeSelection{})
	modelstest.Must(t, err, "plan")
	if len(plan.Groups) != 2 || plan.Groups[0].Key != za.ID || plan.Groups[1].Key != zb.ID {
		t.Fatalf("groups %+v", plan.Groups)
	}
	type row struct{ id, typ, after string }
	var got []row
	for _, p := range plan.Groups[0].Routers {
		got = append(got, row{p.ID, p.Type, p.After})
	}
	want := []row{{v1.ID, models.TypeCPVM, ""}, {v2.ID, models.TypeCPVM, v1.ID}, {s1.ID, models.TypeSSVM, ""}}
	if len(got) != len(want) {
		t.Fatalf("zone-a: %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("zone-a[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	if g := plan.Groups[1].Routers; len(g) != 1 || g[0].ID != v3.ID {
		t.Errorf("zone-b: %+v, want only v-3-VM", g)
	}
	// Kind and force.
	plan, err = PlanSystemVMUpgrade(ctx, s, SystemVMUpgradeSelection{ZoneID: zb.ID, SystemVMType: SystemVMKindSecondaryStorage, Force: true})
	modelstest.Must(t, err, "plan forced SSVMs")
	if plan.Count() != 1 || plan.Groups[0].Routers[0].ID != cur.ID {
		t.Errorf("forced SSVMs of zone-b: %+v", plan.Groups)
	}
	var appErr *temporal.ApplicationError
	_, err = PlanSystemVMUpgrade(ctx, s, SystemVMUpgradeSelection{ZoneID: zb.ID, SystemVMType: SystemVMKindSecondaryStorage})
	if !errors.As(err, &appErr) || appErr.Type() != ErrTypeNothingToUpgrade {
		t.Errorf("nothing to upgrade: %v", err)
	}
	for _, sel := range []SystemVMUpgradeSelection{{ZoneID: "nope"}, {ID: "nope"}, {ID: r.ID}} {
		if _, err := PlanSystemVMUpgrade(ctx, s, sel); !errors.As(err, &appErr) || appErr.Type() != ErrTypeNotFound {
			t.Errorf("%+v: %v, want NotFound", sel, err)
		}
	}
	var se *models.SettingError
	if err := (SystemVMUpgradeSelection{SystemVMType: "router"}).Validate(); !errors.As(err, &se) || se.Field != "systemvmtype" {
		t.Errorf("systemvmtype router: %v", err)
	}

	// The check: v-1-VM has one other CPVM serving zone-a; s-1-VM none; v-3-VM none (the
	// destroyed one does not count); a current SSVM is skipped unless forced.
	a := &Activities{Store: s}
	for _, c := range []struct {
		id      string
		force   bool
		serving int
		skip    bool
	}{{v1.ID, false, 1, false}, {s1.ID, false, 0, false}, {v3.ID, false, 0, false}, {cur.ID, false, 0, true}, {cur.ID, true, 0, false}} {
		chk, err := a.SystemVMUpgradeCheck(ctx, UpgradeCheckInput{RouterID: c.id, Force: c.force})
		modelstest.Must(t, err, "check")
		if chk.Serving != c.serving || chk.Skip != c.skip {
			t.Errorf("check %s (force %v) = %+v, want serving %d skip %v", c.id, c.force, chk, c.serving, c.skip)
		}
	}
	modelstest.Must(t, s.DB.Model(&models.SystemVM{}).Where("id = ?", v2.ID).Update("state", models.StateStopped).Error, "stop")
	if chk, err := a.SystemVMUpgradeCheck(ctx, UpgradeCheckInput{RouterID: v1.ID}); err != nil || chk.Serving != 0 {
		t.Errorf("with v-2-VM stopped, v-1-VM's check = %+v %v, want no other serving", chk, err)
	}
	if chk, err := a.SystemVMUpgradeCheck(ctx, UpgradeCheckInput{RouterID: v2.ID}); err != nil || !chk.Skip {
		t.Errorf("stopped v-2-VM's check = %+v %v, want skipped", chk, err)
	}
}

// gateExec answers the gate's two commands: the agent's version and the endpoint's status.
type gateExec struct {
	version string
	addr    string
}

func (g gateExec) Run(_ context.Context, _ sshexec.Target, argv []string, _ []byte) (sshexec.Result, error) {
	switch {
	case len(argv) == 4 && argv[2] == DefaultAgentCommand && argv[3] == "version":
		b, _ := json.Marshal(agent.VersionInfo{AgentVersion: "1.0.0", TemplateVersion: "Cloudstack Release " + g.version})
		return sshexec.Result{Stdout: b}, nil
	case len(argv) == 2 && argv[0] == ConsoleAgentCommand && argv[1] == "status":
		return sshexec.Result{Stdout: []byte(`{"addr":"` + g.addr + `"}`)}, nil
	}
	return sshexec.Result{ExitCode: 127, Stderr: []byte("unknown command")}, nil
}

// TestSystemVMUpgradeGate: a CPVM at the required version whose console endpoint completes a
// TLS handshake passes; one whose endpoint does not serve, or whose agent reports another
// template, fails with ErrTypeGateFailed naming why.
func TestSystemVMUpgradeGate(t *testing.T) {
	ctx := context.Background()
	s := modelstest.SQLite(t)
	_, err := s.Settings.Set(ctx, models.SettingMinReqVersion, models.ScopeGlobal, "", "4.15.0")
	modelstest.Must(t, err, "minreq")
	vm := models.SystemVM{Name: "v-1-VM", Type: models.TypeCPVM, State: models.StateRunning, Version: "4.15.0",
		HypervisorType: "VMware", PrivateIP: "10.0.0.5"}
	modelstest.Must(t, s.DB.Create(&vm).Error, "vm")
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")

	a := &Activities{Store: s, Exec: gateExec{version: "4.15.0", addr: addr}}
	res, err := a.SystemVMUpgradeGate(ctx, SystemVMGateInput{VMID: vm.ID, Timeout: time.Second, Poll: 100 * time.Millisecond})
	modelstest.Must(t, err, "gate")
	if res.Version != "4.15.0" || !strings.Contains(res.Note, "console endpoint serves TLS on "+addr) {
		t.Errorf("passed gate = %+v", res)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	modelstest.Must(t, err, "listen")
	closed := ln.Addr().String()
	_ = ln.Close()
	for _, c := range []struct {
		exec Exec
		want string
	}{
		{gateExec{version: "4.15.0", addr: closed}, "does not serve TLS"},
		{gateExec{version: "4.15.0", addr: ""}, "is not serving (restarting)"},
		{gateExec{version: "4.14.0", addr: addr}, `runs template "Cloudstack Release 4.14.0", the inventory says 4.15.0`},
	} {
		a := &Activities{Store: s, Exec: c.exec}
		_, err := a.SystemVMUpgradeGate(ctx, SystemVMGateInput{VMID: vm.ID, Timeout: 300 * time.Millisecond, Poll: 100 * time.Millisecond})
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != ErrTypeGateFailed || !strings.Contains(err.Error(), c.want) {
			t.Errorf("gate = %v, want %s naming %q", err, ErrTypeGateFailed, c.want)
		}
	}
	// Still at the old version in the inventory: not passed.
	modelstest.Must(t, s.DB.Model(&vm).Update("version", "4.14.0").Error, "outdate")
	if _, err := a.SystemVMUpgradeGate(ctx, SystemVMGateInput{VMID: vm.ID, Timeout: 200 * time.Millisecond, Poll: 100 * time.Millisecond}); err == nil ||
		!strings.Contains(err.Error(), "below the required 4.15.0") {
		t.Errorf("outdated VM's gate = %v", err)
	}
}
