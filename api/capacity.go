package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/workflows"
)

// capacityPool is one pool of GET /zones/{id}/capacity: the last scan's state and the VMs now.
type capacityPool struct {
	models.CapacityState
	// VMs are the pool's Running and Starting VMs now, with their activeviewersessions.
	VMs []capacityVM `json:"systemvms"`
}

type capacityVM struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	State         string `json:"state"`
	PublicIP      string `json:"publicip"`
	ActiveViewers int    `json:"activeviewersessions"`
}

// capacityAnswer is the answer of GET /zones/{id}/capacity.
type capacityAnswer struct {
	ZoneID string `json:"zoneid"`
	// IntervalSeconds is consoleproxy.capacityscan.interval in the zone (0: scans paused).
	IntervalSeconds int64 `json:"capacityscaninterval"`
	// ScheduleID is the zone's Temporal Schedule of scans.
	ScheduleID string         `json:"scheduleid"`
	Pools      []capacityPool `json:"pools"`
}

// mountCapacity adds the zone capacity route.
func (s *Server) mountCapacity() error {
	s.AddSchema("ZoneCapacity", objectSchema("a zone's CPVM and SSVM pools: the last capacity scan's demand, target and "+
		"surplus streak per pool (consoleproxy/secondarystoragevm), the settings it used, and the pool's VMs now",
		"zoneid", "capacityscaninterval:int", "scheduleid", "pools:[]object"))
	return s.Handle(Route{Method: http.MethodGet, Path: "/zones/{id}/capacity", Role: models.RoleReadOnly, Handler: s.zoneCapacity,
		Doc: Doc{OperationID: "getZoneCapacity", Tag: "Lifecycle", Summary: "The zone's CPVM and SSVM capacity",
			Description: "What the last capacity scan (workflow CapacityScan, run by the Temporal Schedule capacity:<zoneid> every " +
				"consoleproxy.capacityscan.interval seconds) measured and decided per pool: demand (CPVM: active console sessions; " +
				"SSVM: running template downloads and copies), running VMs, target (the smallest n with n*session.max - demand > " +
				"capacity.standby, at most launch.max, at least 1), the surplus streak toward a shrink (systemvm.capacity.shrink.scans), " +
				"the last scan and scaling times and the last error; and the pool's Running and Starting VMs with their sessions.",
			Responses: []Response{{Status: 200, Description: "the zone's pools", Schema: "ZoneCapacity"},
				{Status: 404, Description: "no such zone", Schema: "Error"}}}})
}

func (s *Server) zoneCapacity(c echo.Context) error {
	zone, err := getRow[models.Zone](c, s.store.DB, c.Param("id"), "zone")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	secs, err := s.store.Settings.Int(ctx, activities.SettingCapacityScanInterval, models.Scope{ZoneID: zone.ID})
	if err != nil {
		return Internal(err, "read "+activities.SettingCapacityScanInterval)
	}
	out := capacityAnswer{ZoneID: zone.ID, IntervalSeconds: int64(secs), ScheduleID: workflows.CapacityScheduleID(zone.ID)}
	for _, typ := range []string{models.TypeCPVM, models.TypeSSVM} {
		var p capacityPool
		if err := s.store.DB.WithContext(ctx).Where("zone_id = ? AND type = ?", zone.ID, typ).Limit(1).Find(&p.CapacityState).Error; err != nil {
			return Internal(err, "read capacity state")
		}
		p.ZoneID, p.Type = zone.ID, typ
		var vms []models.SystemVM
		if err := s.store.DB.WithContext(ctx).Where("zone_id = ? AND type = ? AND state IN ?", zone.ID, typ,
			[]string{models.StateRunning, models.StateStarting}).Order("created_at, name").Find(&vms).Error; err != nil {
			return Internal(err, "read the pool")
		}
		p.VMs = []capacityVM{}
		for _, v := range vms {
			p.VMs = append(p.VMs, capacityVM{ID: v.ID, Name: v.Name, State: v.State, PublicIP: v.PublicIP, ActiveViewers: v.ActiveViewers})
		}
		out.Pools = append(out.Pools, p)
	}
	return ok(c, out)
}
