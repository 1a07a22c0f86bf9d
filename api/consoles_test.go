package api

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// Console URLs follow consoleproxy.url.domain, consoleproxy.sslEnabled and
// novnc.console.default, go through a running CPVM of the VM's zone, and carry a token that
// verifies under the key and names the VM and the proxy.
func TestCreateConsoleEndpoint(t *testing.T) {
	s := modelstest.SQLite(t)
	key, err := consoles.TokenKey(modelstest.TestKey)
	modelstest.Must(t, err, "token key")
	e := newEnv(t, s, Config{ConsoleTokenKey: key})
	ctx := context.Background()
	op := models.RoleOperator
	z := models.Zone{Name: "zone-c"}
	modelstest.Must(t, s.DB.Create(&z).Error, "zone")
	z2 := models.Zone{Name: "zone-empty"}
	modelstest.Must(t, s.DB.Create(&z2).Error, "zone")
	cpvm := models.SystemVM{Name: "v-9-VM", Type: models.TypeCPVM, State: models.StateRunning, ZoneID: z.ID, PublicIP: "1.2.3.4"}
	ssvm := models.SystemVM{Name: "s-9-VM", Type: models.TypeSSVM, State: models.StateRunning, ZoneID: z.ID, PublicIP: "1.2.3.5"}
	lonely := models.SystemVM{Name: "s-10-VM", Type: models.TypeSSVM, State: models.StateRunning, ZoneID: z2.ID}
	guest := models.GuestVM{ZoneID: z.ID, Name: "web-1", State: "Running"}
	for _, v := range []any{&cpvm, &ssvm, &lonely, &guest} {
		modelstest.Must(t, s.DB.Create(v).Error, "seed")
	}

	// Defaults: raw IP, http, noVNC.
	r := e.want(e.do("POST", "/consoles", op, map[string]any{"vmid": guest.ID}), 200, "guest console")
	u, err := url.Parse(r.JSON["url"].(string))
	modelstest.Must(t, err, "parse url")
	if u.Scheme != "http" || u.Host != "1.2.3.4" || u.Path != "/resource/noVNC/vnc.html" || r.JSON["proxy"] != "v-9-VM" {
		t.Errorf("default console URL = %s (%v)", u, r.JSON)
	}
	cl, err := consoles.Verify(key, u.Query().Get("token"), time.Now())
	modelstest.Must(t, err, "verify token")
	if cl.VMID != guest.ID || cl.ProxyID != cpvm.HypervisorName() || cl.Expires > time.Now().Add(consoles.DefaultTokenTTL+time.Second).Unix() {
		t.Errorf("claims = %+v", cl)
	}

	// *.example.com + SSL: 1-2-3-4.example.com:8443 over https/wss; legacy viewer without noVNC.
	for name, v := range map[string]string{"consoleproxy.url.domain": "*.example.com", "consoleproxy.sslEnabled": "true", "novnc.console.default": "false"} {
		_, err := s.Settings.Set(ctx, name, models.ScopeZone, z.ID, v)
		modelstest.Must(t, err, "set %s", name)
	}
	r = e.want(e.do("POST", "/consoles", op, map[string]any{"vmid": ssvm.ID}), 200, "ssvm console")
	if got := r.JSON["url"].(string); !strings.HasPrefix(got, "https://1-2-3-4.example.com:8443/console?token=") || r.JSON["ssl"] != true {
		t.Errorf("ssl console URL = %s", got)
	}
	_, err = s.Settings.Set(ctx, "consoleproxy.url.domain", models.ScopeZone, z.ID, "console.example.com")
	modelstest.Must(t, err, "set domain")
	r = e.want(e.do("POST", "/consoles", op, map[string]any{"vmid": ssvm.ID}), 200, "fixed name")
	if r.JSON["host"] != "console.example.com" {
		t.Errorf("load balancer host = %v", r.JSON["host"])
	}

	e.wantErr(e.do("POST", "/consoles", op, map[string]any{"vmid": "nope"}), 400, CodeBadRequest, "vmid", "unknown VM")
	e.wantErr(e.do("POST", "/consoles", op, map[string]any{}), 400, CodeBadRequest, "vmid", "no vmid")
	e.wantErr(e.do("POST", "/consoles", op, map[string]any{"vmid": lonely.ID}), 409, CodeConflict, "", "no CPVM in zone")
	e.wantErr(e.do("POST", "/consoles", models.RoleReadOnly, map[string]any{"vmid": guest.ID}), 403, CodeForbidden, "", "read-only")
	noKey := newEnv(t, s, Config{})
	noKey.wantErr(noKey.do("POST", "/consoles", op, map[string]any{"vmid": guest.ID}), 503, CodeUnavailable, "", "no token key")
}
