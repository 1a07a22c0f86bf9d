package activities

// CPVM and SSVM capacity: what a zone's pool of console proxies and secondary storage VMs
// serves (demand) and with which settings, measured for the CapacityScan workflow, and the
// record of each scan (the zone's capacity state, its events and alerts).

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm/clause"

	"github.com/sysvm/sysvm/models"
)

// Capacity settings.
const (
	SettingCapacityScanInterval = "consoleproxy.capacityscan.interval"
	SettingCapacityShrinkScans  = "systemvm.capacity.shrink.scans"
)

// AlertCapacity is the alert type of a capacity scan that could not reach its target.
const AlertCapacity = "SYSTEMVM.CAPACITY"

// CapacitySettings are the scaling settings of one system VM type in one zone.
type CapacitySettings struct {
	SessionMax  int `json:"sessionMax"`
	Standby     int `json:"standby"`
	LaunchMax   int `json:"launchMax"`
	ShrinkScans int `json:"shrinkScans"`
}

// capacitySettingNames are the session.max, capacity.standby and launch.max settings of a type.
func capacitySettingNames(typ string) (sessionMax, standby, launchMax string) {
	if typ == models.TypeSSVM {
		return "secstorage.session.max", "secstorage.capacity.standby", "secstorage.launch.max"
	}
	return "consoleproxy.session.max", "consoleproxy.capacity.standby", "consoleproxy.launch.max"
}

// PoolVM is one CPVM or SSVM of a zone's pool as a scan sees it.
type PoolVM struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	State   string    `json:"state"`
	Created time.Time `json:"created"`
	// Sessions are its active sessions (CPVM: console sessions its endpoint reports; SSVM:
	// the running transfer commands it holds).
	Sessions int `json:"sessions"`
	// Measured: the sessions were read from the VM now (an unreachable VM is not idle: it is
	// never chosen for removal).
	Measured bool   `json:"measured"`
	Error    string `json:"error,omitempty"`
}

// PoolMeasure is one type's pool in a zone: its VMs, the demand, the settings and the
// surplus streak of earlier scans.
type PoolMeasure struct {
	Type     string           `json:"type"`
	Settings CapacitySettings `json:"settings"`
	// VMs are the Running and Starting VMs of the pool, oldest first.
	VMs []PoolVM `json:"vms"`
	// Demand is the sum of the sessions (SSVM: the zone's running template downloads and
	// seeds, which its SSVMs serve).
	Demand int `json:"demand"`
	// SurplusScans is the streak recorded by the last scan.
	SurplusScans int `json:"surplusScans"`
}

// CapacityMeasureInput asks for a zone's pools.
type CapacityMeasureInput struct {
	ZoneID string `json:"zoneId"`
}

// CapacityMeasurement is a zone's CPVM and SSVM pools.
type CapacityMeasurement struct {
	ZoneID   string        `json:"zoneId"`
	ZoneName string        `json:"zoneName"`
	Pools    []PoolMeasure `json:"pools"`
}

// transferFresh bounds how long ago a running transfer must have reported progress to count:
// a download reports every second, so an older "x% Downloaded" is one that died with its worker.
const transferFresh = 2 * time.Minute

// CapacityMeasure reads a zone's CPVM and SSVM pools: each Running CPVM's active console
// sessions from its console agent over SSH (`sysvm-console status`, the number is also stored
// as the row's activeviewersessions, which console URLs are balanced on), and the SSVMs'
// running commands: template downloads into the zone's secondary store and template copies
// (seeds) into its primary pools still in progress.
func (a *Activities) CapacityMeasure(ctx context.Context, in CapacityMeasureInput) (CapacityMeasurement, error) {
	var zone models.Zone
	if err := a.Store.Get(ctx, &zone, in.ZoneID); err != nil {
		return CapacityMeasurement{}, classifyStore(err, in.ZoneID)
	}
	out := CapacityMeasurement{ZoneID: zone.ID, ZoneName: zone.Name}
	sc := models.Scope{ZoneID: zone.ID}
	for _, typ := range []string{models.TypeCPVM, models.TypeSSVM} {
		pm := PoolMeasure{Type: typ}
		names := []string{}
		a1, a2, a3 := capacitySettingNames(typ)
		names = append(names, a1, a2, a3, SettingCapacityShrinkScans)
		vals := make([]int, len(names))
		for i, n := range names {
			v, err := a.Store.Settings.Int(ctx, n, sc)
			if err != nil {
				return out, fmt.Errorf("setting %s of zone %s: %w", n, zone.Name, err)
			}
			vals[i] = int(v)
		}
		pm.Settings = CapacitySettings{SessionMax: max(vals[0], 1), Standby: max(vals[1], 0), LaunchMax: max(vals[2], 1), ShrinkScans: max(vals[3], 1)}
		var vms []models.SystemVM
		if err := a.Store.DB.WithContext(ctx).Where("zone_id = ? AND type = ? AND state IN ?", zone.ID, typ,
			[]string{models.StateRunning, models.StateStarting}).Order("created_at, name").Find(&vms).Error; err != nil {
			return out, fmt.Errorf("%s pool of zone %s: %w", typ, zone.Name, err)
		}
		for _, vm := range vms {
			pv := PoolVM{ID: vm.ID, Name: vm.Name, State: vm.State, Created: vm.CreatedAt}
			if typ == models.TypeCPVM && vm.State == models.StateRunning {
				a.measureConsole(ctx, vm, &pv)
			}
			pm.VMs = append(pm.VMs, pv)
		}
		if typ == models.TypeSSVM {
			n, perVM, err := a.runningTransfers(ctx, zone.ID)
			if err != nil {
				return out, err
			}
			pm.Demand = n
			for i := range pm.VMs {
				if pm.VMs[i].State == models.StateRunning {
					pm.VMs[i].Sessions, pm.VMs[i].Measured = perVM[pm.VMs[i].Name], true
				}
			}
		} else {
			for _, v := range pm.VMs {
				pm.Demand += v.Sessions
			}
		}
		var st models.CapacityState
		if err := a.Store.DB.WithContext(ctx).Where("zone_id = ? AND type = ?", zone.ID, typ).Limit(1).Find(&st).Error; err != nil {
			return out, fmt.Errorf("capacity state of zone %s: %w", zone.Name, err)
		}
		pm.SurplusScans = st.SurplusScans
		out.Pools = append(out.Pools, pm)
	}
	return out, nil
}

// measureConsole reads a CPVM's active sessions from its console agent and stores them as
// its activeviewersessions; an agent that does not answer leaves the stored number.
func (a *Activities) measureConsole(ctx context.Context, vm models.SystemVM, pv *PoolVM) {
	pv.Sessions = vm.ActiveViewers
	if a.Exec == nil {
		pv.Error = "no SSH executor: sessions as stored"
		return
	}
	st, err := a.consoleStatus(ctx, vm)
	if err != nil {
		pv.Error = err.Error()
		return
	}
	pv.Sessions, pv.Measured = st.Sessions, true
	if st.Sessions != vm.ActiveViewers {
		_ = a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vm.ID).Update("active_viewers", st.Sessions).Error
	}
}

// runningTransfers counts the zone's running SSVM commands: template downloads into its
// secondary store (status "x% Downloaded" or Installing, progress reported within
// transferFresh) by SSVM name, and template seeds into its primary pools still Installing.
func (a *Activities) runningTransfers(ctx context.Context, zoneID string) (int, map[string]int, error) {
	since := time.Now().UTC().Add(-transferFresh)
	var refs []models.TemplateZoneRef
	if err := a.Store.DB.WithContext(ctx).Where("zone_id = ? AND updated_at > ? AND (status LIKE ? OR status = ?)",
		zoneID, since, "%Downloaded", models.TemplateInstalling).Find(&refs).Error; err != nil {
		return 0, nil, fmt.Errorf("running template downloads of zone %s: %w", zoneID, err)
	}
	per := map[string]int{}
	for _, r := range refs {
		per[r.SSVM]++
	}
	var seeds int64
	if err := a.Store.DB.WithContext(ctx).Model(&models.TemplatePoolRef{}).Where("zone_id = ? AND state = ? AND updated_at > ?",
		zoneID, models.TemplateInstalling, time.Now().UTC().Add(-30*time.Minute)).Count(&seeds).Error; err != nil {
		return 0, nil, fmt.Errorf("running template seeds of zone %s: %w", zoneID, err)
	}
	return len(refs) + int(seeds), per, nil
}

// CapacityOp is one deploy or destroy a scan starts, journaled as an operation row so the API
// lists it with the rest.
type CapacityOp struct {
	OperationID string `json:"operationId"`
	Kind        string `json:"kind"`
	VMID        string `json:"vmId"`
	ZoneID      string `json:"zoneId"`
	WorkflowID  string `json:"workflowId"`
}

// CapacityBeginOps journals the operations a scan is about to start (idempotent).
func (a *Activities) CapacityBeginOps(ctx context.Context, ops []CapacityOp) error {
	for _, op := range ops {
		row := models.Operation{Base: models.Base{ID: op.OperationID}, Kind: op.Kind, TargetType: "SystemVM", TargetID: op.VMID,
			ZoneID: op.ZoneID, WorkflowID: op.WorkflowID, Status: models.OpRunning, RequestedBy: "capacity-scan"}
		if err := a.Store.DB.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&row).Error; err != nil {
			return fmt.Errorf("journal %s of %s: %w", op.Kind, op.VMID, err)
		}
	}
	return nil
}

// PoolDecision is what a scan decided and did for one pool.
type PoolDecision struct {
	Type    string `json:"type"`
	Demand  int    `json:"demand"`
	Running int    `json:"running"`
	// Starting are VMs of the pool still being deployed (by an earlier scan).
	Starting int `json:"starting"`
	Target   int `json:"target"`
	// Deploy and Destroy are the VMs the scan started and retired; Deployed and Destroyed
	// those that succeeded.
	Deploy       int      `json:"deploy"`
	Deployed     []string `json:"deployed,omitempty"`
	Destroy      []string `json:"destroy,omitempty"`
	Destroyed    []string `json:"destroyed,omitempty"`
	SurplusScans int      `json:"surplusScans"`
	// Failures are the failed deploys and destroys.
	Failures []string `json:"failures,omitempty"`
	// Note says why the pool did (not) change.
	Note     string           `json:"note"`
	Settings CapacitySettings `json:"settings"`
}

// CapacityRecordInput is a scan's outcome for a zone.
type CapacityRecordInput struct {
	ZoneID     string         `json:"zoneId"`
	ZoneName   string         `json:"zoneName"`
	WorkflowID string         `json:"workflowId"`
	Pools      []PoolDecision `json:"pools"`
}

// CapacityRecord stores a scan's outcome: the zone's capacity state per type, an event for
// every scaling step (PROXY.SCALE.UP / .DOWN, SSVM.SCALE.UP / .DOWN), and an alert naming the
// failures when a step failed (an open alert of the zone and type is not raised twice).
func (a *Activities) CapacityRecord(ctx context.Context, in CapacityRecordInput) error {
	now := time.Now().UTC()
	for _, p := range in.Pools {
		prefix := "SSVM"
		if p.Type == models.TypeCPVM {
			prefix = "PROXY"
		}
		// Running is the pool after the scan: what it found, plus its deploys, less its destroys.
		st := models.CapacityState{ZoneID: in.ZoneID, Type: p.Type, Demand: p.Demand, Running: p.Running + len(p.Deployed) - len(p.Destroyed), Target: p.Target,
			SessionMax: p.Settings.SessionMax, Standby: p.Settings.Standby, LaunchMax: p.Settings.LaunchMax,
			SurplusScans: p.SurplusScans, LastScanAt: &now, LastScan: in.WorkflowID, LastError: strings.Join(p.Failures, "; ")}
		var prev models.CapacityState
		if err := a.Store.DB.WithContext(ctx).Where("zone_id = ? AND type = ?", in.ZoneID, p.Type).Limit(1).Find(&prev).Error; err != nil {
			return err
		}
		st.LastScaleAt = prev.LastScaleAt
		if len(p.Deployed)+len(p.Destroyed) > 0 {
			st.LastScaleAt = &now
		}
		if err := a.Store.DB.WithContext(ctx).Clauses(clause.OnConflict{UpdateAll: true}).Create(&st).Error; err != nil {
			return fmt.Errorf("capacity state of zone %s: %w", in.ZoneName, err)
		}
		// Events are journaled under an ID of this scan and pool (a retry records none twice).
		opID := uuid.NewSHA1(uuid.NameSpaceURL, []byte("sysvm:capacity:"+in.WorkflowID+"/"+p.Type)).String()
		if p.Deploy > 0 {
			if err := a.capacityEvent(ctx, opID, prefix+".SCALE.UP", "INFO", in.ZoneID, fmt.Sprintf(
				"zone %s: %d sessions, %d running (%d starting), target %d: deployed %d of %d (%s)",
				in.ZoneName, p.Demand, p.Running, p.Starting, p.Target, len(p.Deployed), p.Deploy, strings.Join(p.Deployed, ", "))); err != nil {
				return err
			}
		}
		if len(p.Destroy) > 0 {
			if err := a.capacityEvent(ctx, opID, prefix+".SCALE.DOWN", "INFO", in.ZoneID, fmt.Sprintf(
				"zone %s: %d sessions, %d running, target %d after %d scans of surplus: destroyed %s of idle %s",
				in.ZoneName, p.Demand, p.Running, p.Target, p.Settings.ShrinkScans, strings.Join(p.Destroyed, ", "), strings.Join(p.Destroy, ", "))); err != nil {
				return err
			}
		}
		if len(p.Failures) > 0 {
			desc := fmt.Sprintf("zone %s: %s pool at %d of target %d: %s", in.ZoneName, p.Type, p.Running+len(p.Deployed), p.Target, strings.Join(p.Failures, "; "))
			if err := a.capacityEvent(ctx, opID, prefix+".SCALE.FAILED", "ERROR", in.ZoneID, desc); err != nil {
				return err
			}
			var open int64
			if err := a.Store.DB.WithContext(ctx).Model(&models.Alert{}).Where("type = ? AND zone_id = ? AND resource_id = ? AND cleared_at IS NULL",
				AlertCapacity, in.ZoneID, p.Type).Count(&open).Error; err != nil {
				return err
			}
			if open == 0 {
				if err := a.Store.AddAlert(ctx, models.Alert{Type: AlertCapacity, Severity: "WARN", ZoneID: in.ZoneID,
					ResourceType: "SystemVmPool", ResourceID: p.Type,
					Subject: fmt.Sprintf("%s capacity of zone %s not reached", p.Type, in.ZoneName), Description: desc}); err != nil {
					return err
				}
			}
		} else if p.Running+len(p.Deployed) >= p.Target {
			// Reached: an open capacity alert of this pool is over.
			if err := a.Store.DB.WithContext(ctx).Model(&models.Alert{}).Where("type = ? AND zone_id = ? AND resource_id = ? AND cleared_at IS NULL",
				AlertCapacity, in.ZoneID, p.Type).Update("cleared_at", &now).Error; err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *Activities) capacityEvent(ctx context.Context, opID, typ, level, zoneID, desc string) error {
	if done, err := a.stepDone(ctx, opID, "event."+typ); err != nil || done {
		return err
	}
	if err := a.Store.AddEvent(ctx, models.Event{Type: typ, Level: level, Description: desc, ResourceType: "Zone",
		ResourceID: zoneID, ZoneID: zoneID}); err != nil {
		return err
	}
	return a.markStep(ctx, opID, "event."+typ, "")
}
