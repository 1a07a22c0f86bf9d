package models

import (
	"context"
	"fmt"
)

// SettingMinReqVersion is the setting whose value routers below require upgrade (SPEC §3).
const SettingMinReqVersion = "minreq.sysvmtemplate.version"

// SettingRouterVersionCheck refuses changes to outdated routers while true (SPEC §3, §4.4).
const SettingRouterVersionCheck = "router.version.check"

// MinReqVersions reads minreq.sysvmtemplate.version once per zone (the zone's value first,
// then the global one), for computing requiresupgrade of many routers when they are read.
// The zero value is ready to use; it is not safe for concurrent use.
type MinReqVersions struct {
	Settings *Settings
	byZone   map[string]string
}

// For returns the minimum version routers of a zone must run ("" requires nothing).
func (m *MinReqVersions) For(ctx context.Context, zoneID string) (string, error) {
	if v, ok := m.byZone[zoneID]; ok {
		return v, nil
	}
	v, err := m.Settings.String(ctx, SettingMinReqVersion, Scope{ZoneID: zoneID})
	if err != nil {
		return "", fmt.Errorf("read %s of zone %s: %w", SettingMinReqVersion, zoneID, err)
	}
	if m.byZone == nil {
		m.byZone = map[string]string{}
	}
	m.byZone[zoneID] = v
	return v, nil
}

// RouterRequiresUpgrade reports whether vm must be upgraded under its zone's
// minreq.sysvmtemplate.version, and that version. It is computed from the row as it is now
// (never stored), so it is true to the version at every read.
func (m *MinReqVersions) RouterRequiresUpgrade(ctx context.Context, vm SystemVM) (bool, string, error) {
	minreq, err := m.For(ctx, vm.ZoneID)
	if err != nil {
		return false, "", err
	}
	return RequiresUpgrade(vm.Version, minreq), minreq, nil
}
