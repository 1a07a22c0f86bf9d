package api

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

func TestReadEndpoints(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		e := newEnv(t, s, Config{})
		f := seed(t, s)
		ro := models.RoleReadOnly
		list := func(path string, wantNames ...string) []map[string]any {
			t.Helper()
			r := e.want(e.do("GET", path, ro, nil), 200, "GET "+path)
			got := items(t, r)
			if !slices.Equal(names(got), wantNames) && !(len(wantNames) == 0 && len(got) == 0) {
				t.Errorf("GET %s: names %v, want %v", path, names(got), wantNames)
			}
			if count(r) != len(wantNames) {
				t.Errorf("GET %s: count %d, want %d", path, count(r), len(wantNames))
			}
			return got
		}

		list("/zones", "zone-1", "zone-2")
		list("/zones?networktype=basic", "zone-2") // enum values match without regard to case
		list("/zones?allocationstate=Enabled", "zone-1")
		list("/pods?zoneid="+f.zone2, "pod-2")
		list("/clusters?hypervisor=kvm", "kvm-cluster")
		list("/hosts?state=disconnected", "esxi-1")
		list("/hosts?clusterid="+f.cluster1, "kvm-host-1")
		list("/storage-pools?scope=ZONE", "vsan")
		list("/storage-pools?clusterid="+f.cluster1, "nfs-primary")
		list("/networks?vpcid="+f.vpc, "tier-web")
		list("/networks?type=Isolated", "net_100%")
		// keyword is a substring match with LIKE's wildcards taken literally.
		list("/networks?keyword="+url.QueryEscape("_100%"), "net_100%")
		list("/networks?keyword=NET", "net-1000", "net_100%")
		list("/networks?name=net-1000", "net-1000")
		// listServiceOfferings: what scaleSystemVm's serviceofferingid names.
		list("/service-offerings", "System Offering For Console Proxy", "System Offering For Software Router")
		off := list("/service-offerings?systemvmtype=consoleproxy", "System Offering For Console Proxy")[0]
		if off["cpunumber"].(float64) != 2 || off["memory"].(float64) != 1024 || off["id"] != f.offeringCPVM {
			t.Errorf("service offering fields wrong: %v", off)
		}
		e.wantErr(e.do("GET", "/service-offerings?systemvmtype=vm", ro, nil), 400, CodeBadRequest, "systemvmtype", "bad systemvmtype")

		// listSystemVms: SSVMs and CPVMs only, with CloudStack's field names.
		vms := list("/system-vms", "s-1-VM", "s-3-VM", "v-2-VM")
		for _, vm := range vms {
			for _, field := range []string{"systemvmtype", "publicip", "privateip", "linklocalip", "activeviewersessions", "version", "state", "zoneid"} {
				if _, found := vm[field]; !found {
					t.Errorf("system VM %v has no field %s", vm["name"], field)
				}
			}
		}
		cp := list("/system-vms?systemvmtype=consoleproxy", "v-2-VM")[0]
		if cp["activeviewersessions"].(float64) != 3 || cp["publicip"] != "192.0.2.11" || cp["linklocalip"] != "169.254.1.11" {
			t.Errorf("CPVM fields wrong: %v", cp)
		}
		list("/system-vms?zoneid="+f.zone1+"&state=running", "s-1-VM", "v-2-VM")
		list("/system-vms?hostid="+f.host2, "s-3-VM")
		list("/system-vms?podid="+f.pod1+"&clusterid="+f.cluster1+"&systemvmtype=secondarystoragevm", "s-1-VM")
		list("/system-vms?keyword=-3-", "s-3-VM")
		list("/system-vms?name=v-2-VM", "v-2-VM")
		e.wantErr(e.do("GET", "/system-vms?systemvmtype=domainrouter", ro, nil), 400, CodeBadRequest, "systemvmtype", "routers are not system VMs here")

		one := e.want(e.do("GET", "/system-vms/"+f.ssvm1, ro, nil), 200, "get SSVM").JSON
		if one["name"] != "s-1-VM" || one["systemvmtype"] != models.TypeSSVM || one["version"] != "4.15.0" {
			t.Errorf("GET /system-vms/{id}: %v", one)
		}
		r := e.do("GET", "/system-vms/"+f.r4, ro, nil)
		e.wantErr(r, 404, CodeNotFound, "", "router under /system-vms")
		if _, msg, _ := r.errParts(); !strings.Contains(msg, "/api/v1/routers/"+f.r4) {
			t.Errorf("router under /system-vms: message %q does not point at /routers", msg)
		}
		e.wantErr(e.do("GET", "/system-vms/no-such-id", ro, nil), 404, CodeNotFound, "", "unknown system VM")

		// Every item path answers its own ID and a 404 for an unknown one.
		for path, id := range map[string]string{"/zones": f.zone1, "/pods": f.pod1, "/clusters": f.cluster1, "/hosts": f.host1,
			"/storage-pools": f.pool1, "/networks": f.net1, "/routers": f.r4, "/templates": f.tplKVM, "/events": f.events[0],
			"/alerts": f.alertOpen} {
			got := e.want(e.do("GET", path+"/"+id, ro, nil), 200, "GET "+path+"/{id}").JSON
			if got["id"] != id {
				t.Errorf("GET %s/%s answered id %v", path, id, got["id"])
			}
			e.wantErr(e.do("GET", path+"/00000000-0000-0000-0000-000000000000", ro, nil), 404, CodeNotFound, "", "unknown id under "+path)
		}

		// Credentials never leave the server.
		for _, path := range []string{"/clusters", "/clusters/" + f.cluster1, "/clusters/" + f.cluster2, "/hosts", "/hosts/" + f.host1} {
			raw := string(e.want(e.do("GET", path, ro, nil), 200, path).Raw)
			for _, secret := range fixtureSecrets {
				if strings.Contains(raw, secret) {
					t.Errorf("GET %s leaks %q: %s", path, secret, raw)
				}
			}
			for _, field := range []string{`"endpoint"`, `"username"`, `"credentialref"`, `"password"`, `"datacenter"`} {
				if strings.Contains(strings.ToLower(raw), field) {
					t.Errorf("GET %s has a %s field: %s", path, field, raw)
				}
			}
		}

		// Templates, with their copies in primary storage.
		list("/templates?hypervisor=KVM", "systemvm-kvm-4.15.0")
		list("/templates?status=downloading", "systemvm-vmware-4.15.0")
		list("/templates?zoneid="+f.zone2+"&templatetype=system", "systemvm-vmware-4.15.0")
		tpl := e.want(e.do("GET", "/templates/"+f.tplKVM, ro, nil), 200, "template").JSON
		pools, _ := tpl["storagepools"].([]any)
		if len(pools) != 1 || pools[0].(map[string]any)["storageid"] != f.pool1 || pools[0].(map[string]any)["downloadpercent"].(float64) != 100 {
			t.Errorf("template storagepools = %v", tpl["storagepools"])
		}

		// Events and alerts, newest first, by level, time and resource.
		ev := e.want(e.do("GET", "/events", ro, nil), 200, "events")
		if got := items(t, ev); len(got) != 3 || got[0]["id"] != f.events[2] || got[2]["id"] != f.events[0] {
			t.Errorf("events not newest first: %s", ev.Raw)
		}
		if got := items(t, e.do("GET", "/events?level=error", ro, nil)); len(got) != 1 || got[0]["id"] != f.events[1] {
			t.Errorf("events?level=error = %v", got)
		}
		if got := items(t, e.do("GET", "/events?startdate=2024-03-11&enddate=2024-03-11", ro, nil)); len(got) != 1 || got[0]["id"] != f.events[1] {
			t.Errorf("events of 2024-03-11 = %v", got)
		}
		if got := items(t, e.do("GET", "/events?startdate=2024-03-11T12:00:00Z&resourceid="+f.r4, ro, nil)); len(got) != 1 || got[0]["id"] != f.events[1] {
			t.Errorf("events since 2024-03-11T12:00Z about r-4 = %v", got)
		}
		if got := items(t, e.do("GET", "/events?keyword=DNS_CHECK&type=router.health.checks", ro, nil)); len(got) != 1 {
			t.Errorf("events?keyword=DNS_CHECK = %v", got)
		}
		if got := items(t, e.do("GET", "/alerts?cleared=false", ro, nil)); len(got) != 1 || got[0]["id"] != f.alertOpen {
			t.Errorf("open alerts = %v", got)
		}
		if got := items(t, e.do("GET", "/alerts?cleared=true&severity=warn", ro, nil)); len(got) != 1 || got[0]["id"] != f.alertCleared || got[0]["cleared"] == nil {
			t.Errorf("cleared alerts = %v", got)
		}
		if got := items(t, e.do("GET", "/alerts?zoneid="+f.zone1, ro, nil)); len(got) != 1 {
			t.Errorf("alerts of zone-1 = %v", got)
		}
	})
}

func TestRouters(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		e := newEnv(t, s, Config{})
		f := seed(t, s)
		ro := models.RoleReadOnly
		routerNames := func(query string) []string {
			t.Helper()
			return names(items(t, e.want(e.do("GET", "/routers"+query, ro, nil), 200, "routers"+query)))
		}
		all := e.want(e.do("GET", "/routers", ro, nil), 200, "routers")
		if got := names(items(t, all)); !slices.Equal(got, []string{"r-4-VM", "r-5-VM", "r-6-VM", "r-7-VM"}) {
			t.Fatalf("routers = %v", got)
		}
		for _, it := range items(t, all) {
			for _, field := range []string{"version", "requiresupgrade", "healthchecksfailed", "templateid", "systemvmtype"} {
				if _, found := it[field]; !found {
					t.Errorf("router %v has no field %s", it["name"], field)
				}
			}
			if it["requiresupgrade"] != false {
				t.Errorf("router %v requires upgrade with no minreq.sysvmtemplate.version set", it["name"])
			}
		}
		if got := routerNames("?requiresupgrade=true"); len(got) != 0 {
			t.Errorf("requiresupgrade=true without a minimum = %v", got)
		}

		// With a minimum, routers below it or of unknown version require upgrade.
		e.want(e.do("PUT", "/settings/minreq.sysvmtemplate.version", models.RoleAdmin, map[string]any{"value": "4.15.0"}), 200, "set minreq")
		if got := routerNames("?requiresupgrade=true"); !slices.Equal(got, []string{"r-4-VM", "r-6-VM"}) {
			t.Errorf("requiresupgrade=true = %v, want r-4 (4.14.0) and r-6 (unknown)", got)
		}
		if got := routerNames("?requiresupgrade=false"); !slices.Equal(got, []string{"r-5-VM", "r-7-VM"}) {
			t.Errorf("requiresupgrade=false = %v", got)
		}
		if got := routerNames("?requiresupgrade=true&vpcid=" + f.vpc); !slices.Equal(got, []string{"r-6-VM"}) {
			t.Errorf("requiresupgrade=true in the VPC = %v", got)
		}
		// Paging after the version filter: count is the whole match, items the page.
		pg := e.want(e.do("GET", "/routers?requiresupgrade=true&pagesize=1&page=2", ro, nil), 200, "page 2")
		if got := names(items(t, pg)); count(pg) != 2 || !slices.Equal(got, []string{"r-6-VM"}) || pg.JSON["page"].(float64) != 2 || pg.JSON["pagesize"].(float64) != 1 {
			t.Errorf("requiresupgrade page 2 of size 1: %s", pg.Raw)
		}
		if got := routerNames("?healthchecksfailed=true"); !slices.Equal(got, []string{"r-4-VM"}) {
			t.Errorf("healthchecksfailed=true = %v", got)
		}
		if got := routerNames("?redundantstate=backup"); !slices.Equal(got, []string{"r-6-VM"}) {
			t.Errorf("redundantstate=backup = %v", got)
		}
		if got := routerNames("?networkid=" + f.net1); !slices.Equal(got, []string{"r-4-VM"}) {
			t.Errorf("networkid = %v", got)
		}
		if got := routerNames("?state=Destroyed&zoneid=" + f.zone2); !slices.Equal(got, []string{"r-7-VM"}) {
			t.Errorf("destroyed in zone-2 = %v", got)
		}
		if got := routerNames("?hypervisor=vmware"); !slices.Equal(got, []string{"r-7-VM"}) {
			t.Errorf("hypervisor=vmware = %v", got)
		}
		if got := routerNames("?version=4.15.0.1&hostid=" + f.host1 + "&accountid=" + f.account + "&domainid=" + f.domain); !slices.Equal(got, []string{"r-5-VM"}) {
			t.Errorf("version=4.15.0.1 = %v", got)
		}

		// Paging over the plain list.
		p2 := e.want(e.do("GET", "/routers?pagesize=3&page=2", ro, nil), 200, "routers page 2")
		if got := names(items(t, p2)); count(p2) != 4 || !slices.Equal(got, []string{"r-7-VM"}) {
			t.Errorf("routers page 2 of 3: %s", p2.Raw)
		}
		p9 := e.want(e.do("GET", "/routers?page=9", ro, nil), 200, "routers page 9")
		if got := items(t, p9); count(p9) != 4 || len(got) != 0 {
			t.Errorf("a page past the end must be empty with the full count: %s", p9.Raw)
		}

		// One router: requiresupgrade and its health check results.
		r4 := e.want(e.do("GET", "/routers/"+f.r4, ro, nil), 200, "r-4").JSON
		if r4["requiresupgrade"] != true || r4["healthchecksfailed"] != true || r4["templateid"] != "tpl-old" {
			t.Errorf("r-4 = %v", r4)
		}
		hc, _ := r4["healthcheckresults"].([]any)
		if len(hc) != 2 {
			t.Fatalf("r-4 healthcheckresults = %v", r4["healthcheckresults"])
		}
		var failed []string
		for _, h := range hc {
			m := h.(map[string]any)
			if m["success"] == false {
				failed = append(failed, fmt.Sprint(m["checkname"], ": ", m["details"]))
			}
			if m["checktype"] == nil || m["lastupdated"] == nil {
				t.Errorf("health result without checktype/lastupdated: %v", m)
			}
		}
		if !slices.Equal(failed, []string{"dns_check.py: 10.0.1.5 vm-5 missing from /etc/hosts"}) {
			t.Errorf("failed checks of r-4 = %v", failed)
		}
		r5 := e.want(e.do("GET", "/routers/"+f.r5, ro, nil), 200, "r-5").JSON
		if r5["requiresupgrade"] != false || r5["redundantstate"] != "PRIMARY" || r5["isredundantrouter"] != true {
			t.Errorf("r-5 = %v", r5)
		}
		r6 := e.want(e.do("GET", "/routers/"+f.r6, ro, nil), 200, "r-6").JSON
		if hc6, _ := r6["healthcheckresults"].([]any); hc6 == nil || len(hc6) != 0 || r6["requiresupgrade"] != true {
			t.Errorf("r-6 must show an empty healthcheckresults list and require upgrade (unknown version): %v", r6)
		}
		r := e.do("GET", "/routers/"+f.cpvm1, ro, nil)
		e.wantErr(r, 404, CodeNotFound, "", "a CPVM under /routers")
		if _, msg, _ := r.errParts(); !strings.Contains(msg, "/api/v1/system-vms/"+f.cpvm1) {
			t.Errorf("CPVM under /routers: message %q does not point at /system-vms", msg)
		}
	})
}

// TestRoutersRequiresUpgradeZoneScope: a zone's minreq.sysvmtemplate.version wins over the
// global one, and versions compare numerically (4.15.0.1 is not below 4.15.0.1.0).
func TestRoutersRequiresUpgradeZoneScope(t *testing.T) {
	s := modelstest.SQLite(t)
	e := newEnv(t, s, Config{})
	f := seed(t, s)
	ro := models.RoleReadOnly
	e.want(e.do("PUT", "/settings/minreq.sysvmtemplate.version", models.RoleAdmin, map[string]any{"value": "4.15.0.1.0"}), 200, "set minreq")
	got := names(items(t, e.want(e.do("GET", "/routers?requiresupgrade=true", ro, nil), 200, "routers")))
	if !slices.Equal(got, []string{"r-4-VM", "r-6-VM"}) {
		t.Errorf("requiresupgrade=true under global 4.15.0.1.0 = %v, want r-4 and r-6", got)
	}
	// Zone 2 requires more: r-7 (4.16.0) is below 4.17 there; zone 1 is unchanged.
	e.want(e.do("PUT", "/settings/minreq.sysvmtemplate.version", models.RoleAdmin, map[string]any{"value": "4.17", "scope": "zone", "scopeid": f.zone2}), 200, "set zone minreq")
	got = names(items(t, e.want(e.do("GET", "/routers?requiresupgrade=true", ro, nil), 200, "routers")))
	if !slices.Equal(got, []string{"r-4-VM", "r-6-VM", "r-7-VM"}) {
		t.Errorf("requiresupgrade=true with zone 2 at 4.17 = %v, want r-4, r-6 and r-7", got)
	}
	one := e.want(e.do("GET", "/routers/"+f.r7, ro, nil), 200, "r-7")
	if one.JSON["requiresupgrade"] != true {
		t.Errorf("GET r-7: requiresupgrade = %v, want true", one.JSON["requiresupgrade"])
	}
}
