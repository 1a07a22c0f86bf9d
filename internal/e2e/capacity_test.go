package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

// scanCapacity runs one CapacityScan of the platform's zone (as its schedule would) and
// returns its result.
func (p *platform) scanCapacity(n int) workflows.CapacityScanResult {
	p.t.Helper()
	res, _, _ := p.scanCapacityRun(n)
	return res
}

// scanCapacityRun is scanCapacity with the run's workflow and run IDs.
func (p *platform) scanCapacityRun(n int) (workflows.CapacityScanResult, string, string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t := workflows.ZoneTarget(workflows.CapacityScheduleID(p.zoneID)+"-e2e-"+time.Now().Format("150405.000"), p.zoneID, workflows.CapacityScanKind)
	run, err := p.client.ExecuteWorkflow(ctx, t.StartOptions(nil), workflows.CapacityScanWorkflowName, workflows.CapacityScanInput{ZoneID: p.zoneID})
	if err != nil {
		p.t.Fatalf("scan %d: %v", n, err)
	}
	var res workflows.CapacityScanResult
	if err := run.Get(ctx, &res); err != nil {
		p.t.Fatalf("scan %d: %v", n, err)
	}
	p.t.Logf("scan %d: CPVM %+v", n, res.Pools[0])
	return res, run.GetID(), run.GetRunID()
}

// openConsole asks the API for a console of a VM (POST /api/v1/consoles, which picks the
// zone's least busy CPVM) and opens the session its URL names on that CPVM's simulated
// endpoint.
func (p *platform) openConsole(vmID string) (*consoleSession, string) {
	p.t.Helper()
	var ans struct {
		URL     string `json:"url"`
		ProxyID string `json:"proxyid"`
		Proxy   string `json:"proxy"`
	}
	if code := p.do(http.MethodPost, "/api/v1/consoles", map[string]any{"vmid": vmID}, &ans); code != http.StatusOK {
		p.t.Fatalf("POST /consoles = %d", code)
	}
	u, err := url.Parse(ans.URL)
	modelstest.Must(p.t, err, "console URL")
	// Where the simulated CPVM serves, as an operator of sysvm dev finds it.
	var ep struct {
		Address string `json:"address"`
	}
	if code := p.do(http.MethodGet, "/api/v1/dev/consoles/"+ans.ProxyID, nil, &ep); code != http.StatusOK || ep.Address == "" {
		p.t.Fatalf("GET /dev/consoles/%s = %d %+v", ans.ProxyID, code, ep)
	}
	s, err := openConsoleAt(ep.Address, ans.Proxy, u.Query().Get("token"))
	if err != nil {
		p.t.Fatalf("console through %s: %v", ans.Proxy, err)
	}
	return s, ans.Proxy
}

func (p *platform) eventCount(typ string) int {
	p.t.Helper()
	var n int64
	modelstest.Must(p.t, p.store.DB.Model(&models.Event{}).Where("type = ? AND zone_id = ?", typ, p.zoneID).Count(&n).Error, "events")
	return int(n)
}

func (p *platform) cpvms() int {
	p.t.Helper()
	var n int64
	modelstest.Must(p.t, p.store.DB.Model(&models.SystemVM{}).Where("zone_id = ? AND type = ? AND state = ?", p.zoneID, models.TypeCPVM,
		models.StateRunning).Count(&n).Error, "CPVMs")
	return int(n)
}

// TestCapacityFollowsConsoleSessions: on the real stack (Temporal, the worker, vcsim and the
// XAPI simulator, the SSH fleet with real TLS console endpoints) real console sessions opened
// through POST /api/v1/consoles grow the CPVM pool to its target in one scan (capped by
// consoleproxy.launch.max), and once they are closed the pool shrinks back to one CPVM after
// systemvm.capacity.shrink.scans scans; hypervisors, rows, events and the capacity API agree
// after each scan. Then the zone's Temporal Schedule runs scans on its own every
// consoleproxy.capacityscan.interval seconds, and 0 pauses it.
func TestCapacityFollowsConsoleSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim, the XAPI simulator and the SSH fleet")
	}
	store := modelstest.SQLite(t)
	p := newPlatform(t, store, platformOptions{vmware: true, xen: true, fleet: true, consoles: true})
	for name, v := range map[string]string{"consoleproxy.session.max": "2", "consoleproxy.capacity.standby": "1",
		"consoleproxy.launch.max": "4", "systemvm.capacity.shrink.scans": "2", "consoleproxy.capacityscan.interval": "0"} {
		p.setting(name, v)
	}
	var guest models.GuestVM
	modelstest.Must(t, store.DB.Where("zone_id = ?", p.zoneID).First(&guest).Error, "a guest VM")
	hv0, db0 := p.systemVMCounts()
	if p.cpvms() != 1 || hv0 != db0 {
		t.Fatalf("before: %d CPVMs, %d/%d CPVMs+SSVMs on hypervisors/DB", p.cpvms(), hv0, db0)
	}
	if res := p.scanCapacity(0); res.Pools[0].Target != 1 || res.Pools[0].Deploy != 0 {
		t.Fatalf("idle zone: %+v", res.Pools[0])
	}

	// 3 sessions with 2 per CPVM and a standby of 1: 3 CPVMs, both new ones in one scan.
	var open []*consoleSession
	for i := 0; i < 3; i++ {
		s, _ := p.openConsole(guest.ID)
		open = append(open, s)
	}
	begin := time.Now()
	res := p.scanCapacity(1)
	t.Logf("grow scan took %s", time.Since(begin).Round(time.Millisecond))
	cp := res.Pools[0]
	if cp.Demand != 3 || cp.Target != 3 || len(cp.Deployed) != 2 || len(cp.Failures) > 0 {
		t.Fatalf("grow scan: %+v", cp)
	}
	if hv, db := p.systemVMCounts(); hv != db0+2 || db != db0+2 || p.cpvms() != 3 {
		t.Fatalf("after growing: %d on hypervisors, %d rows, %d Running CPVMs", hv, db, p.cpvms())
	}
	if p.eventCount("PROXY.SCALE.UP") != 1 || p.eventCount("PROXY.CREATE") != 2 {
		t.Errorf("events: %d PROXY.SCALE.UP, %d PROXY.CREATE", p.eventCount("PROXY.SCALE.UP"), p.eventCount("PROXY.CREATE"))
	}

	// New sessions go to the idle new CPVMs (the scan stored every CPVM's sessions); 8 in all
	// would need 5, launch.max caps at 4.
	proxies := map[string]int{}
	for i := 0; i < 5; i++ {
		s, proxy := p.openConsole(guest.ID)
		open = append(open, s)
		proxies[proxy]++
	}
	if len(proxies) < 2 {
		t.Errorf("5 new sessions all went through %v: not balanced on the measured sessions", proxies)
	}
	cp = p.scanCapacity(2).Pools[0]
	if cp.Demand != 8 || cp.Target != 4 || len(cp.Deployed) != 1 || p.cpvms() != 4 {
		t.Fatalf("capped scan: %+v (%d CPVMs)", cp, p.cpvms())
	}

	// Close everything: one scan of surplus changes nothing, the second shrinks to one.
	for _, s := range open {
		s.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		total := 0
		for _, id := range p.consoles.IDs() {
			st, _ := p.consoles.Status(id)
			total += st.Sessions
		}
		if total == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still open after closing them all", total)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cp = p.scanCapacity(3).Pools[0]
	if cp.Target != 1 || cp.SurplusScans != 1 || len(cp.Destroy) != 0 || p.cpvms() != 4 {
		t.Fatalf("first scan of surplus: %+v (%d CPVMs)", cp, p.cpvms())
	}
	cp = p.scanCapacity(4).Pools[0]
	if len(cp.Destroyed) != 3 || cp.SurplusScans != 0 || p.cpvms() != 1 {
		t.Fatalf("shrink scan: %+v (%d CPVMs)", cp, p.cpvms())
	}
	if hv, db := p.systemVMCounts(); hv != db0 || db != db0 {
		t.Fatalf("after shrinking: %d on hypervisors, %d rows, want %d", hv, db, db0)
	}
	if p.eventCount("PROXY.SCALE.DOWN") != 1 || p.eventCount("PROXY.DESTROY") != 3 {
		t.Errorf("events: %d PROXY.SCALE.DOWN, %d PROXY.DESTROY", p.eventCount("PROXY.SCALE.DOWN"), p.eventCount("PROXY.DESTROY"))
	}
	var left models.SystemVM
	modelstest.Must(t, store.DB.Where("zone_id = ? AND type = ? AND state = ?", p.zoneID, models.TypeCPVM, models.StateRunning).First(&left).Error, "last CPVM")
	if !strings.HasPrefix(left.PublicIP, "198.51.100.") {
		t.Errorf("the CPVM left is %s (%s), want the zone's original one", left.Name, left.PublicIP)
	}
	cp = p.scanCapacity(5).Pools[0]
	if p.cpvms() != 1 || len(cp.Destroy) != 0 {
		t.Fatalf("idle zone keeps one CPVM: %+v", cp)
	}

	// The API shows the pools.
	var capa struct {
		Interval int64 `json:"capacityscaninterval"`
		Pools    []struct {
			Type    string `json:"systemvmtype"`
			Target  int    `json:"target"`
			Running int    `json:"running"`
			VMs     []any  `json:"systemvms"`
		} `json:"pools"`
	}
	if code := p.do(http.MethodGet, "/api/v1/zones/"+p.zoneID+"/capacity", nil, &capa); code != http.StatusOK || len(capa.Pools) != 2 ||
		capa.Pools[0].Type != models.TypeCPVM || capa.Pools[0].Target != 1 || len(capa.Pools[0].VMs) != 1 {
		t.Errorf("GET capacity = %d %+v", code, capa)
	}

	// The schedule: interval 1 s runs scans by itself; 0 pauses it.
	ctx := context.Background()
	p.setting("consoleproxy.capacityscan.interval", "1")
	sync, err := workflows.SyncCapacitySchedules(ctx, p.client, store)
	if err != nil || len(sync.Created) != 1 {
		t.Fatalf("sync: %+v %v", sync, err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		var st models.CapacityState
		modelstest.Must(t, store.DB.Where("zone_id = ? AND type = ?", p.zoneID, models.TypeCPVM).First(&st).Error, "state")
		if strings.HasPrefix(st.LastScan, workflows.CapacityScheduleID(p.zoneID)) && !strings.Contains(st.LastScan, "-e2e-") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scheduled scan within 30 s (last %s)", st.LastScan)
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.setting("consoleproxy.capacityscan.interval", "0")
	sync, err = workflows.SyncCapacitySchedules(ctx, p.client, store)
	if err != nil || len(sync.Paused) != 1 {
		t.Fatalf("pause: %+v %v", sync, err)
	}
	desc, err := p.client.ScheduleClient().GetHandle(ctx, workflows.CapacityScheduleID(p.zoneID)).Describe(ctx)
	if err != nil || desc.Schedule.State == nil || !desc.Schedule.State.Paused {
		t.Fatalf("schedule after interval 0: %+v %v", desc, err)
	}
}

// TestCapacityFollowsTemplateTransfers: on the real stack, a template download running for
// the zone's SSVM (a real rollout from a slow template server) is SSVM demand: with one
// session per SSVM and no standby the scan deploys a second SSVM while it runs; once it is done
// the idle new SSVM is destroyed and the zone keeps its original one.
func TestCapacityFollowsTemplateTransfers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim, the XAPI simulator and the SSH fleet")
	}
	needQemuImg(t)
	store := modelstest.SQLite(t)
	p := newPlatform(t, store, platformOptions{vmware: true, xen: true, fleet: true, consoles: true})
	localSecondaryStores(t, store)
	for name, v := range map[string]string{"secstorage.session.max": "1", "secstorage.capacity.standby": "0",
		"systemvm.capacity.shrink.scans": "1"} {
		p.setting(name, v)
	}
	imgDir := t.TempDir()
	imgs, err := devcloud.BuildTemplateImages(context.Background(), imgDir, "4.16.0", 8<<20)
	modelstest.Must(t, err, "images")
	var ova devcloud.TemplateImage
	for _, im := range imgs {
		if im.Hypervisor == "VMware" {
			ova = im
		}
	}
	srv := devcloud.StartTemplateServer(imgDir, false)
	t.Cleanup(srv.Close)
	srv.SetFault("/"+ova.File, devcloud.TemplateFault{Delay: 20 * time.Millisecond}) // ~5 s for the image
	ssvms := func() int {
		var n int64
		modelstest.Must(t, store.DB.Model(&models.SystemVM{}).Where("zone_id = ? AND type = ? AND state = ?", p.zoneID, models.TypeSSVM,
			models.StateRunning).Count(&n).Error, "SSVMs")
		return int(n)
	}
	if ssvms() != 1 {
		t.Fatalf("%d SSVMs before", ssvms())
	}
	if res := p.scanCapacity(0); res.Pools[1].Target != 1 || res.Pools[1].Deploy != 0 {
		t.Fatalf("no transfer: %+v", res.Pools[1])
	}
	tpl := p.registerTemplate("systemvm-vmware-4.16.0", ova, srv.URL+"/"+ova.File)
	op := p.rollout(tpl.ID)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var ref models.TemplateZoneRef
		err := store.DB.Where("template_id = ? AND zone_id = ?", tpl.ID, p.zoneID).First(&ref).Error
		if err == nil && strings.HasSuffix(ref.Status, "Downloaded") && ref.DownloadPct < 60 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the download never showed progress (%+v %v)", ref, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	res := p.scanCapacity(1)
	ss := res.Pools[1]
	if ss.Demand != 1 || ss.Target != 2 || len(ss.Deployed) != 1 || ssvms() != 2 {
		t.Fatalf("scan during the download: %+v (%d SSVMs)", ss, ssvms())
	}
	if hv, db := p.systemVMCounts(); hv != db {
		t.Errorf("during the download: %d on hypervisors, %d rows", hv, db)
	}
	if got := p.wait(op, 3*time.Minute); got.Status != models.OpCompleted {
		t.Fatalf("rollout ended %s: %s", got.Status, got.Error)
	}
	ss = p.scanCapacity(2).Pools[1]
	if ss.Demand != 0 || len(ss.Destroyed) != 1 || ss.Destroyed[0] != res.Pools[1].Deployed[0] || ssvms() != 1 {
		t.Fatalf("scan after the download: %+v (%d SSVMs)", ss, ssvms())
	}
	if p.eventCount("SSVM.SCALE.UP") != 1 || p.eventCount("SSVM.SCALE.DOWN") != 1 {
		t.Errorf("events: %d SSVM.SCALE.UP, %d SSVM.SCALE.DOWN", p.eventCount("SSVM.SCALE.UP"), p.eventCount("SSVM.SCALE.DOWN"))
	}
	if hv, db := p.systemVMCounts(); hv != db {
		t.Errorf("after: %d on hypervisors, %d rows", hv, db)
	}
}
