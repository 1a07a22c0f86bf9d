package models_test

import (
	"context"
	"testing"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"4.15.0.1", "4.15.0.1", 0},
		{"4.15.0", "4.15.0.1", -1},
		{"4.15.0.1", "4.15.0", 1},
		{"4.15", "4.15.0.0", 0},
		{"4.10.0", "4.10.0.0", 0}, // CloudStack left routers stuck in "requires upgrade" on this
		{"4.10.0", "4.9.0.0", 1},
		{"4.9.3", "4.15.0", -1}, // numeric, not lexical
		{"4.15.0", "4.9.3", 1},
		{"4.16.0", "4.15.9.9", 1},
		{"4.15.0-SNAPSHOT", "4.15.0", 0},
		{"4.15.0.1-rc2", "4.15.0.2", -1},
		{"v4.16.1", "4.16.1", 0},
		{"Cloudstack Release 4.15.1 Mon Jan 11 10:00:00 UTC 2021", "4.15.0", 1},
		{"4.015.0", "4.15", 0},
		{"4.15.", "4.15.0", 0},
		{"4.15.x", "4.15", 0},
		{"99999999999999999999999.1", "99999999999999999999998.9", 1}, // beyond uint64
		{"", "4.15.0", -1},
		{"4.15.0", "unknown", 1},
		{"", "", 0},
		{"unknown", "", 0},
		{"0", "", 1}, // 0 is a known version
	} {
		if got := models.CompareVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := models.CompareVersions(c.b, c.a); got != -c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d (antisymmetry)", c.b, c.a, got, -c.want)
		}
	}
}

func TestRequiresUpgrade(t *testing.T) {
	for _, c := range []struct {
		version, minreq string
		want            bool
	}{
		{"4.15.0", "", false},              // no minimum set: nothing requires upgrade
		{"", "", false},                    // ...even an unknown version
		{"4.14.0", "  ", false},            // blank minimum
		{"4.14.0", "not-a-version", false}, // a minimum with no number cannot be compared
		{"4.14.0", "4.15.0", true},
		{"4.15.0", "4.15.0", false},
		{"4.15.0.1", "4.15.0", false},
		{"4.15", "4.15.0.0", false},
		{"4.10.0", "4.10.0.0", false},
		{"4.10.0.0", "4.10.0", false},
		{"4.9.0", "4.15.0", true},
		{"", "4.15.0", true},        // unknown version requires upgrade
		{"unknown", "4.15.0", true}, // so does one with no number
		{"4.15.0-SNAPSHOT", "4.15.0", false},
		{"4.16.0", "4.15.0.1", false},
	} {
		if got := models.RequiresUpgrade(c.version, c.minreq); got != c.want {
			t.Errorf("RequiresUpgrade(%q, %q) = %v, want %v", c.version, c.minreq, got, c.want)
		}
	}
}

func TestMinReqVersionsZoneFirst(t *testing.T) {
	ctx := context.Background()
	s := modelstest.SQLite(t)
	if _, err := s.Settings.Set(ctx, models.SettingMinReqVersion, models.ScopeGlobal, "", "4.15.0"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Settings.Set(ctx, models.SettingMinReqVersion, models.ScopeZone, "zone-b", "4.16.0"); err != nil {
		t.Fatal(err)
	}
	m := models.MinReqVersions{Settings: s.Settings}
	for _, c := range []struct {
		zone, version string
		want          bool
	}{
		{"zone-a", "4.15.0.0", false}, // global 4.15.0 applies
		{"zone-a", "4.14.9", true},
		{"zone-b", "4.15.0", true}, // the zone's own 4.16.0 wins
		{"zone-b", "4.16", false},
		{"zone-b", "", true},
	} {
		got, _, err := m.RouterRequiresUpgrade(ctx, models.SystemVM{ZoneID: c.zone, Version: c.version})
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("zone %s version %q: requires upgrade = %v, want %v", c.zone, c.version, got, c.want)
		}
	}
}
