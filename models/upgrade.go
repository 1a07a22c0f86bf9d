package models

import (
	"context"
	"fmt"

	"github.com/sysvm/sysvm/agent"
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
	// CurrentSoftware is the platform's current live patch bundle version (empty: this
	// build's, CurrentSoftwareVersion).
	CurrentSoftware string
	byZone          map[string]string
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
// (never stored), so it is true to the version at every read. As in CloudStack 4.17+, a
// router whose template is below the minimum but that was live-patched with the platform's
// current bundle (SoftwareVersion equal to CurrentSoftwareVersion) does not require upgrade:
// its scripts and agent are current, only its image is older.
func (m *MinReqVersions) RouterRequiresUpgrade(ctx context.Context, vm SystemVM) (bool, string, error) {
	minreq, err := m.For(ctx, vm.ZoneID)
	if err != nil {
		return false, "", err
	}
	return RequiresUpgradePatched(vm.Version, vm.SoftwareVersion, minreq, m.current()), minreq, nil
}

func (m *MinReqVersions) current() string {
	if m.CurrentSoftware == "" {
		m.CurrentSoftware = CurrentSoftwareVersion()
	}
	return m.CurrentSoftware
}

// RequiresUpgradePatched is RequiresUpgrade for a VM live-patched with bundle version
// software ("" when never patched): a VM below minreq does not require upgrade when software
// is the platform's current bundle version current (CloudStack's softwareversion rule).
func RequiresUpgradePatched(version, software, minreq, current string) bool {
	if !RequiresUpgrade(version, minreq) {
		return false
	}
	return software == "" || software != current
}

// CurrentSoftwareVersion is the version of the live patch bundle this build of the platform
// installs (agent.DefaultBundle), "" when it cannot be built.
func CurrentSoftwareVersion() string {
	b, err := agent.DefaultBundle()
	if err != nil {
		return ""
	}
	return b.Version
}
