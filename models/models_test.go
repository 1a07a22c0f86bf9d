package models_test

import (
	"context"
	"errors"
	"testing"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

func TestInventoryRoundTrip(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		z := models.Zone{Name: "zone-1", NetworkType: "Advanced"}
		modelstest.Must(t, s.DB.Create(&z).Error, "create zone")
		if z.ID == "" {
			t.Fatal("zone got no ID")
		}
		vm := models.SystemVM{Name: "r-1-VM", Type: models.TypeRouter, State: models.StateRunning, ZoneID: z.ID,
			IsRedundant: true, RedundantState: models.RedundantBackup, LinkLocalIP: "169.254.0.9"}
		modelstest.Must(t, s.DB.Create(&vm).Error, "create vm")
		var got models.SystemVM
		modelstest.Must(t, s.Get(ctx, &got, vm.ID), "get vm")
		if got.Name != "r-1-VM" || got.RedundantState != models.RedundantBackup || !got.IsRouter() || got.ZoneID != z.ID {
			t.Errorf("round trip lost data: %+v", got)
		}
		if err := s.Get(ctx, &got, "nope"); !errors.Is(err, models.ErrNotFound) {
			t.Errorf("Get(unknown) = %v, want ErrNotFound", err)
		}
	})
}

func TestSettingsScopesAndValidation(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		st := s.Settings
		n, err := st.Int(ctx, "router.health.checks.basic.interval", models.Scope{})
		if err != nil || n != 3 {
			t.Fatalf("default basic interval = %d, %v; want 3", n, err)
		}
		if b, _ := st.Bool(ctx, "router.health.checks.enabled", models.Scope{}); !b {
			t.Error("router.health.checks.enabled default must be true")
		}
		_, err = st.Set(ctx, "router.health.checks.basic.interval", models.ScopeGlobal, "", "5")
		modelstest.Must(t, err, "set global")
		_, err = st.Set(ctx, "router.health.checks.basic.interval", models.ScopeZone, "z1", "7")
		modelstest.Must(t, err, "set zone")
		if n, _ := st.Int(ctx, "router.health.checks.basic.interval", models.Scope{ZoneID: "z1"}); n != 7 {
			t.Errorf("zone value = %d, want 7", n)
		}
		if n, _ := st.Int(ctx, "router.health.checks.basic.interval", models.Scope{ZoneID: "z2"}); n != 5 {
			t.Errorf("other zone falls back to global: got %d, want 5", n)
		}
		// A change is read at once: no cache, no restart.
		_, err = st.Set(ctx, "router.health.checks.basic.interval", models.ScopeGlobal, "", "9")
		modelstest.Must(t, err, "update global")
		if n, _ := st.Int(ctx, "router.health.checks.basic.interval", models.Scope{}); n != 9 {
			t.Errorf("updated global = %d, want 9", n)
		}
		var se *models.SettingError
		for _, c := range []struct{ name, scope, id, value, field string }{
			{"router.health.checks.basic.interval", "global", "", "abc", "router.health.checks.basic.interval"},
			{"router.health.checks.max.cpu.usage.threshold", "global", "", "101", "router.health.checks.max.cpu.usage.threshold"},
			{"router.version.check", "global", "", "maybe", "router.version.check"},
			{"no.such.setting", "global", "", "1", "name"},
			{"minreq.sysvmtemplate.version", "cluster", "c1", "4.15", "scope"}, // global or zone only
			{"router.stats.interval", "zone", "", "1", "scopeid"},
		} {
			_, err := st.Set(ctx, c.name, c.scope, c.id, c.value)
			if !errors.As(err, &se) || se.Field != c.field {
				t.Errorf("Set(%s=%q @%s) = %v, want SettingError on field %s", c.name, c.value, c.scope, err, c.field)
			}
		}
		l, err := st.Set(ctx, "router.health.checks.failures.to.recreate.vr", "global", "", " dns_check.py, ,connectivity.test ")
		modelstest.Must(t, err, "set list")
		if l.Value != "dns_check.py,connectivity.test" {
			t.Errorf("list normal form = %q", l.Value)
		}
	})
}

func TestSecretsEncryptedAtRest(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		secret := []byte("-----BEGIN PRIVATE KEY----- very secret")
		modelstest.Must(t, s.Secrets.Put(ctx, "cluster/x/password", "password", secret), "put")
		var row models.Secret
		modelstest.Must(t, s.DB.First(&row, "name = ?", "cluster/x/password").Error, "raw read")
		if string(row.Ciphertext) == string(secret) || len(row.Ciphertext) <= len(secret) {
			t.Fatal("secret stored in clear")
		}
		got, err := s.Secrets.GetSecret(ctx, "cluster/x/password")
		if err != nil || string(got) != string(secret) {
			t.Fatalf("GetSecret = %q, %v", got, err)
		}
		if _, err := s.Secrets.GetSecret(ctx, "nope"); !errors.Is(err, models.ErrSecretNotFound) {
			t.Errorf("GetSecret(unknown) = %v", err)
		}
		// A ciphertext moved to another name does not decrypt.
		modelstest.Must(t, s.DB.Create(&models.Secret{Name: "moved", Ciphertext: row.Ciphertext}).Error, "move")
		if _, err := s.Secrets.GetSecret(ctx, "moved"); err == nil {
			t.Error("moved ciphertext decrypted under another name")
		}
	})
}

func TestAPIKeysStoredHashed(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		k, clear, err := s.CreateAPIKey(ctx, "ops", models.RoleOperator, "")
		modelstest.Must(t, err, "create key")
		if k.Hash == clear || k.Hash != models.HashAPIKey(clear) {
			t.Fatal("key not stored as hash")
		}
		got, err := s.Authenticate(ctx, clear)
		if err != nil || got.Role != models.RoleOperator {
			t.Fatalf("Authenticate = %+v, %v", got, err)
		}
		if _, err := s.Authenticate(ctx, clear+"x"); !errors.Is(err, models.ErrNotFound) {
			t.Errorf("wrong key authenticated: %v", err)
		}
		if _, _, err := s.CreateAPIKey(ctx, "x", "root", ""); err == nil {
			t.Error("unknown role accepted")
		}
	})
}

func TestSettingsBatch(t *testing.T) {
	s := modelstest.SQLite(t)
	ctx := context.Background()
	_, err := s.Settings.Set(ctx, "router.health.checks.to.exclude", models.ScopeZone, "z1", "dns_check.py,iptables_check.py")
	modelstest.Must(t, err, "set list")
	var enabled bool
	var basic int
	var exclude []string
	r := s.Settings.Batch(ctx, models.Scope{ZoneID: "z1"})
	r.Bool("router.health.checks.enabled", &enabled)
	r.Int("router.health.checks.basic.interval", &basic)
	r.List("router.health.checks.to.exclude", &exclude)
	if err := r.Err(); err != nil || !enabled || basic != 3 || len(exclude) != 2 || exclude[1] != "iptables_check.py" {
		t.Fatalf("batch read = %v %d %v, %v", enabled, basic, exclude, err)
	}
	r.Int("no.such.setting", &basic)
	if err := r.Err(); !errors.Is(err, models.ErrUnknownSetting) {
		t.Errorf("unknown setting in a batch = %v, want ErrUnknownSetting", err)
	}
}
