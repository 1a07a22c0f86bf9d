package models

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Setting scopes, narrowest wins: account, cluster, zone, global.
const (
	ScopeGlobal  = "global"
	ScopeZone    = "zone"
	ScopeCluster = "cluster"
	ScopeAccount = "account"
)

// Setting is a stored override of a global setting at one scope. A setting with no row uses
// its definition's default.
type Setting struct {
	Name      string    `gorm:"primaryKey;size:128" json:"name"`
	Scope     string    `gorm:"primaryKey;size:16" json:"scope"`
	ScopeID   string    `gorm:"primaryKey;size:36" json:"scopeid,omitempty"`
	Value     string    `gorm:"type:text" json:"value"`
	UpdatedAt time.Time `json:"updated"`
}

// Kind is a setting's value type.
type Kind string

// Setting kinds.
const (
	KindString Kind = "string"
	KindBool   Kind = "boolean"
	KindInt    Kind = "integer"
	KindList   Kind = "list" // comma-separated names
)

// Definition describes one setting: its name, type, default, range, unit and scopes.
type Definition struct {
	Name        string   `json:"name"`
	Kind        Kind     `json:"type"`
	Default     string   `json:"defaultvalue"`
	Min         *int64   `json:"min,omitempty"`
	Max         *int64   `json:"max,omitempty"`
	Unit        string   `json:"unit,omitempty"`
	Scopes      []string `json:"scopes"`
	Category    string   `json:"category"`
	Description string   `json:"description"`
}

func i64(v int64) *int64 { return &v }

var zoneScopes = []string{ScopeGlobal, ScopeZone}

// Definitions returns every setting sysvm knows, sorted by name: those of the CloudStack guide
// (SPEC §3) with their defaults, and sysvm's own safety settings.
func Definitions() []Definition {
	defs := []Definition{
		{Name: "router.template.kvm", Kind: KindString, Scopes: zoneScopes, Category: "Templates", Description: "Name of the system VM template new system VMs on KVM use."},
		{Name: "router.template.xenserver", Kind: KindString, Scopes: zoneScopes, Category: "Templates", Description: "Name of the system VM template new system VMs on XenServer use."},
		{Name: "router.template.vmware", Kind: KindString, Scopes: zoneScopes, Category: "Templates", Description: "Name of the system VM template new system VMs on VMware use."},
		{Name: "router.template.hyperv", Kind: KindString, Scopes: zoneScopes, Category: "Templates", Description: "Name of the system VM template new system VMs on Hyper-V use."},
		{Name: "minreq.sysvmtemplate.version", Kind: KindString, Scopes: zoneScopes, Category: "Templates", Description: "Routers whose template version is below this (or unknown) require upgrade."},
		{Name: "novnc.console.default", Kind: KindBool, Default: "true", Scopes: zoneScopes, Category: "Console Proxy", Description: "noVNC is the default console viewer."},
		{Name: "consoleproxy.url.domain", Kind: KindString, Scopes: zoneScopes, Category: "Console Proxy", Description: "`*.example.com` maps public IP 1.2.3.4 to 1-2-3-4.example.com; any other value is a fixed FQDN; empty uses the raw IP."},
		{Name: "consoleproxy.sslEnabled", Kind: KindBool, Default: "false", Scopes: zoneScopes, Category: "Console Proxy", Description: "Console URLs use https/wss on port 8443 once a certificate and domain are set."},
		{Name: "consoleproxy.session.max", Kind: KindInt, Default: "50", Min: i64(1), Max: i64(10000), Scopes: zoneScopes, Category: "Console Proxy", Description: "Console sessions one CPVM serves."},
		{Name: "consoleproxy.capacity.standby", Kind: KindInt, Default: "10", Min: i64(0), Max: i64(10000), Scopes: zoneScopes, Category: "Console Proxy", Description: "Start another CPVM when free session slots fall to this."},
		{Name: "consoleproxy.launch.max", Kind: KindInt, Default: "10", Min: i64(1), Max: i64(1000), Scopes: zoneScopes, Category: "Console Proxy", Description: "Most CPVMs launched in a zone."},
		{Name: "consoleproxy.certificate.expiry.buffer", Kind: KindInt, Default: "14", Min: i64(0), Max: i64(3650), Unit: "days", Scopes: []string{ScopeGlobal}, Category: "Console Proxy", Description: "Warn (upload answer, alert, metric rule) when a console proxy certificate expires within this many days."},
		{Name: "consoleproxy.certificate.check.interval", Kind: KindInt, Default: "60", Min: i64(0), Max: i64(10080), Unit: "minutes", Scopes: []string{ScopeGlobal}, Category: "Console Proxy", Description: "How often every stored and served console proxy certificate is checked for expiry; 0 = not scheduled."},
		{Name: "secstorage.session.max", Kind: KindInt, Default: "50", Min: i64(1), Max: i64(10000), Scopes: zoneScopes, Category: "Secondary Storage", Description: "Transfer sessions one SSVM serves."},
		{Name: "consoleproxy.capacityscan.interval", Kind: KindInt, Default: "30", Min: i64(0), Max: i64(86400), Unit: "seconds", Scopes: zoneScopes, Category: "Console Proxy", Description: "How often each zone's CPVM and SSVM capacity is scanned (a Temporal Schedule per zone); 0 pauses the scans."},
		{Name: "secstorage.capacity.standby", Kind: KindInt, Default: "10", Min: i64(0), Max: i64(10000), Scopes: zoneScopes, Category: "Secondary Storage", Description: "Start another SSVM when free session slots fall to this."},
		{Name: "router.stats.interval", Kind: KindInt, Default: "300", Min: i64(0), Max: i64(86400), Unit: "seconds", Scopes: zoneScopes, Category: "Router", Description: "How often network usage is collected from routers; 0 = never."},
		{Name: "network.router.enableservicemonitoring", Kind: KindBool, Default: "false", Scopes: zoneScopes, Category: "Router", Description: "Restart crashed router daemons (dnsmasq, haproxy, sshd, apache2); alert when a restart fails."},
		{Name: "router.version.check", Kind: KindBool, Default: "true", Scopes: zoneScopes, Category: "Router", Description: "Refuse changes to a router older than the required version until it is upgraded."},
		{Name: "router.health.checks.enabled", Kind: KindBool, Default: "true", Scopes: zoneScopes, Category: "Router Health", Description: "false disables scheduled checks and the on-demand API."},
		{Name: "router.health.checks.basic.interval", Kind: KindInt, Default: "3", Min: i64(0), Max: i64(1440), Unit: "minutes", Scopes: zoneScopes, Category: "Router Health", Description: "Basic checks interval; 0 = not scheduled."},
		{Name: "router.health.checks.advanced.interval", Kind: KindInt, Default: "10", Min: i64(0), Max: i64(1440), Unit: "minutes", Scopes: zoneScopes, Category: "Router Health", Description: "Advanced checks interval; 0 = not scheduled."},
		{Name: "router.health.checks.config.refresh.interval", Kind: KindInt, Default: "10", Min: i64(0), Max: i64(1440), Unit: "minutes", Scopes: zoneScopes, Category: "Router Health", Description: "How often check configuration is pushed to each router; 0 = not scheduled."},
		{Name: "router.health.checks.results.fetch.interval", Kind: KindInt, Default: "10", Min: i64(0), Max: i64(1440), Unit: "minutes", Scopes: zoneScopes, Category: "Router Health", Description: "How often results are fetched and recreation evaluated; 0 = not scheduled."},
		{Name: "router.health.checks.failures.to.recreate.vr", Kind: KindList, Scopes: zoneScopes, Category: "Router Health", Description: "Check names whose failure recreates the router (exact names); empty = never recreate."},
		{Name: "router.health.checks.to.exclude", Kind: KindList, Scopes: zoneScopes, Category: "Router Health", Description: "Check script names not to run."},
		{Name: "router.health.checks.free.disk.space.threshold", Kind: KindInt, Default: "100", Min: i64(0), Max: i64(1 << 20), Unit: "MB", Scopes: zoneScopes, Category: "Router Health", Description: "Disk check fails below this much free space."},
		{Name: "router.health.checks.max.cpu.usage.threshold", Kind: KindInt, Default: "100", Min: i64(0), Max: i64(100), Unit: "percent", Scopes: zoneScopes, Category: "Router Health", Description: "CPU check fails above this usage."},
		{Name: "router.health.checks.max.memory.usage.threshold", Kind: KindInt, Default: "100", Min: i64(0), Max: i64(100), Unit: "percent", Scopes: zoneScopes, Category: "Router Health", Description: "Memory check fails above this usage."},
		{Name: "diagnostics.data.max.file.age", Kind: KindInt, Default: "86400", Min: i64(60), Max: i64(30 * 86400), Unit: "seconds", Scopes: []string{ScopeGlobal}, Category: "Diagnostics", Description: "How long a getDiagnosticsData archive (and its download link) is kept before it is removed."},
		// sysvm's own safety settings (CloudStack has none of these).
		{Name: "router.health.checks.failures.before.recreate", Kind: KindInt, Default: "2", Min: i64(1), Max: i64(100), Scopes: zoneScopes, Category: "Router Health", Description: "Consecutive failed runs of a recreate-listed check before the router is recreated."},
		{Name: "router.health.checks.max.concurrent.recreations", Kind: KindInt, Default: "2", Min: i64(1), Max: i64(1000), Scopes: zoneScopes, Category: "Router Health", Description: "Most router recreations running at once in a zone."},
		{Name: "router.health.checks.circuit.breaker.percent", Kind: KindInt, Default: "30", Min: i64(1), Max: i64(100), Unit: "percent", Scopes: zoneScopes, Category: "Router Health", Description: "When more than this share of a zone's routers fail at once, no router is recreated and an alert is raised."},
		{Name: "router.health.checks.recreate.limit", Kind: KindInt, Default: "3", Min: i64(1), Max: i64(100), Scopes: zoneScopes, Category: "Router Health", Description: "A router recreated this many times within the window for the same check is no longer recreated."},
		{Name: "router.health.checks.recreate.window", Kind: KindInt, Default: "60", Min: i64(1), Max: i64(10080), Unit: "minutes", Scopes: zoneScopes, Category: "Router Health", Description: "Window for router.health.checks.recreate.limit."},
		{Name: "secstorage.launch.max", Kind: KindInt, Default: "10", Min: i64(1), Max: i64(1000), Scopes: zoneScopes, Category: "Secondary Storage", Description: "Most SSVMs the capacity scan runs in a zone (consoleproxy.launch.max's counterpart)."},
		{Name: "systemvm.capacity.shrink.scans", Kind: KindInt, Default: "3", Min: i64(1), Max: i64(1000), Scopes: zoneScopes, Category: "Console Proxy", Description: "Consecutive capacity scans that must see more CPVMs (or SSVMs) than the target before idle ones are destroyed; the count starts again after each shrink (hysteresis)."},
		{Name: "router.health.checks.sweep.concurrency", Kind: KindInt, Default: "64", Min: i64(1), Max: i64(4096), Scopes: zoneScopes, Category: "Router Health", Description: "Routers checked at once in a sweep."},
	}
	sort.Slice(defs, func(i, j int) bool { return defs[i].Name < defs[j].Name })
	return defs
}

// ErrUnknownSetting is returned for a name that has no definition.
var ErrUnknownSetting = errors.New("unknown setting")

// SettingError explains why a value or scope was refused; Field names the setting.
type SettingError struct {
	Field   string
	Message string
}

func (e *SettingError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Message) }

// Validate checks a value against the definition and returns its normal form.
func (d Definition) Validate(value string) (string, error) {
	v := strings.TrimSpace(value)
	switch d.Kind {
	case KindBool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return "", &SettingError{d.Name, fmt.Sprintf("must be true or false, got %q", value)}
		}
		return strconv.FormatBool(b), nil
	case KindInt:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return "", &SettingError{d.Name, fmt.Sprintf("must be a whole number, got %q", value)}
		}
		if d.Min != nil && n < *d.Min || d.Max != nil && n > *d.Max {
			return "", &SettingError{d.Name, fmt.Sprintf("must be between %d and %d, got %d", *d.Min, *d.Max, n)}
		}
		return strconv.FormatInt(n, 10), nil
	case KindList:
		parts := SplitList(v)
		for _, p := range parts {
			if strings.ContainsAny(p, " \t/") {
				return "", &SettingError{d.Name, fmt.Sprintf("list item %q must be a name without spaces or slashes", p)}
			}
		}
		return strings.Join(parts, ","), nil
	}
	return v, nil
}

// SplitList splits a comma list, trimming blanks and dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Lookup finds a definition by name.
func Lookup(name string) (Definition, bool) {
	for _, d := range Definitions() {
		if d.Name == name {
			return d, true
		}
	}
	return Definition{}, false
}

// Scope selects which overrides apply when reading a setting; empty IDs are skipped.
type Scope struct {
	ZoneID    string
	ClusterID string
	AccountID string
}

// Settings reads and writes settings. Every read goes to the database, so a change takes
// effect at once, with no restart.
type Settings struct{ db *gorm.DB }

// In reads and writes settings inside a transaction (or on another handle) instead of the
// store's pool. Reading a setting from the pool while a transaction holds SQLite's write lock
// can wait for a connection that only transactions waiting on that lock hold: read through tx.
func (s *Settings) In(tx *gorm.DB) *Settings { return &Settings{db: tx} }

// Value is a setting's effective value and where it came from.
type Value struct {
	Definition
	Value   string `json:"value"`
	Scope   string `json:"scope"` // the scope the value came from, "default" for the default
	ScopeID string `json:"scopeid,omitempty"`
}

// Get returns the effective value of a setting for a scope: account, cluster, zone, global, default.
func (s *Settings) Get(ctx context.Context, name string, sc Scope) (Value, error) {
	def, ok := Lookup(name)
	if !ok {
		return Value{}, fmt.Errorf("%w: %s", ErrUnknownSetting, name)
	}
	var rows []Setting
	if err := s.db.WithContext(ctx).Where("name = ?", name).Find(&rows).Error; err != nil {
		return Value{}, fmt.Errorf("read setting %s: %w", name, err)
	}
	pick := func(scope, id string) *Setting {
		for i := range rows {
			if rows[i].Scope == scope && rows[i].ScopeID == id {
				return &rows[i]
			}
		}
		return nil
	}
	for _, c := range []struct{ scope, id string }{
		{ScopeAccount, sc.AccountID}, {ScopeCluster, sc.ClusterID}, {ScopeZone, sc.ZoneID}, {ScopeGlobal, ""},
	} {
		if c.scope != ScopeGlobal && c.id == "" {
			continue
		}
		if r := pick(c.scope, c.id); r != nil {
			return Value{Definition: def, Value: r.Value, Scope: c.scope, ScopeID: c.id}, nil
		}
	}
	return Value{Definition: def, Value: def.Default, Scope: "default"}, nil
}

// String returns a setting's effective value.
func (s *Settings) String(ctx context.Context, name string, sc Scope) (string, error) {
	v, err := s.Get(ctx, name, sc)
	return v.Value, err
}

// Bool returns a boolean setting's effective value.
func (s *Settings) Bool(ctx context.Context, name string, sc Scope) (bool, error) {
	v, err := s.Get(ctx, name, sc)
	if err != nil {
		return false, err
	}
	return strconv.ParseBool(v.Value)
}

// Int returns an integer setting's effective value.
func (s *Settings) Int(ctx context.Context, name string, sc Scope) (int, error) {
	v, err := s.Get(ctx, name, sc)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v.Value)
	if err != nil {
		return 0, fmt.Errorf("setting %s: stored value %q is not a number: %w", name, v.Value, err)
	}
	return n, nil
}

// List returns a list setting's items.
func (s *Settings) List(ctx context.Context, name string, sc Scope) ([]string, error) {
	v, err := s.Get(ctx, name, sc)
	if err != nil {
		return nil, err
	}
	return SplitList(v.Value), nil
}

// Set validates and stores a value at a scope (scopeID empty for global).
func (s *Settings) Set(ctx context.Context, name, scope, scopeID, value string) (Value, error) {
	def, ok := Lookup(name)
	if !ok {
		return Value{}, &SettingError{"name", fmt.Sprintf("unknown setting %q", name)}
	}
	if scope == "" {
		scope = ScopeGlobal
	}
	allowed := false
	for _, sc := range def.Scopes {
		allowed = allowed || sc == scope
	}
	if !allowed {
		return Value{}, &SettingError{"scope", fmt.Sprintf("%s cannot be set at %s scope (allowed: %s)", name, scope, strings.Join(def.Scopes, ", "))}
	}
	if scope == ScopeGlobal && scopeID != "" {
		return Value{}, &SettingError{"scopeid", "global settings take no scope id"}
	}
	if scope != ScopeGlobal && scopeID == "" {
		return Value{}, &SettingError{"scopeid", fmt.Sprintf("a %s-scoped setting needs the %s id", scope, scope)}
	}
	norm, err := def.Validate(value)
	if err != nil {
		return Value{}, err
	}
	row := Setting{Name: name, Scope: scope, ScopeID: scopeID, Value: norm, UpdatedAt: time.Now().UTC()}
	err = s.db.WithContext(ctx).Clauses(clause.OnConflict{UpdateAll: true}).Create(&row).Error
	if err != nil {
		return Value{}, fmt.Errorf("store setting %s: %w", name, err)
	}
	return Value{Definition: def, Value: norm, Scope: scope, ScopeID: scopeID}, nil
}

// Reset removes an override so the next wider scope (or the default) applies again.
func (s *Settings) Reset(ctx context.Context, name, scope, scopeID string) error {
	return s.db.WithContext(ctx).Where("name = ? AND scope = ? AND scope_id = ?", name, scope, scopeID).
		Delete(&Setting{}).Error
}

// Overrides lists every stored override.
func (s *Settings) Overrides(ctx context.Context) ([]Setting, error) {
	var rows []Setting
	err := s.db.WithContext(ctx).Order("name, scope, scope_id").Find(&rows).Error
	return rows, err
}

// Batch reads several settings of one scope, keeping the first error of each, so a caller
// reads a group of settings in a few lines and checks once.
type Batch struct {
	ctx  context.Context
	s    *Settings
	sc   Scope
	errs []error
}

// Batch starts reading settings for a scope.
func (s *Settings) Batch(ctx context.Context, sc Scope) *Batch { return &Batch{ctx: ctx, s: s, sc: sc} }

// Bool reads a boolean setting into dst.
func (b *Batch) Bool(name string, dst *bool) {
	v, err := b.s.Bool(b.ctx, name, b.sc)
	b.errs = append(b.errs, err)
	*dst = v
}

// Int reads an integer setting into dst.
func (b *Batch) Int(name string, dst *int) {
	v, err := b.s.Int(b.ctx, name, b.sc)
	b.errs = append(b.errs, err)
	*dst = v
}

// List reads a list setting into dst.
func (b *Batch) List(name string, dst *[]string) {
	v, err := b.s.List(b.ctx, name, b.sc)
	b.errs = append(b.errs, err)
	*dst = v
}

// Err joins the errors of every read.
func (b *Batch) Err() error { return errors.Join(b.errs...) }
