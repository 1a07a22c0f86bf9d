package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/models"
)

// consoleBody is createConsoleEndpoint's request.
type consoleBody struct {
	VMID string `json:"vmid"`
}

// consoleAnswer is createConsoleEndpoint's answer.
type consoleAnswer struct {
	URL     string    `json:"url"`
	Proxy   string    `json:"proxy"`
	ProxyID string    `json:"proxyid"`
	Host    string    `json:"host"`
	Expires time.Time `json:"expires"`
	NoVNC   bool      `json:"novnc"`
	SSL     bool      `json:"ssl"`
}

func consoleSchemas() map[string]map[string]any {
	return map[string]map[string]any{
		"ConsoleRequest": objectSchema("the VM (system VM or guest VM) whose console to open", "vmid"),
		"ConsoleEndpoint": objectSchema("a console URL with a signed, expiring, single-use token, through a console proxy VM of the VM's zone",
			"url", "proxy", "proxyid", "host", "expires:time", "novnc:bool", "ssl:bool"),
	}
}

func (s *Server) consoleRoutes() []Route {
	for name, sc := range consoleSchemas() {
		s.AddSchema(name, sc)
	}
	return []Route{
		{Method: http.MethodPost, Path: "/consoles", Role: models.RoleOperator, Handler: s.createConsole, Doc: Doc{
			OperationID: "createConsoleEndpoint", Summary: "Open a console: a URL through a CPVM of the VM's zone with a single-use token", Tag: "Certificates",
			Description: "Like CloudStack's createConsoleEndpoint. The host follows consoleproxy.url.domain (*.example.com gives " +
				"1-2-3-4.example.com for the CPVM's public IP 1.2.3.4; any other value is a fixed name; empty is the raw IP); " +
				"consoleproxy.sslEnabled gives https/wss on 8443; novnc.console.default the noVNC page. The token is an HMAC under a key " +
				"derived from the master key, expires after two minutes and is accepted once.",
			Body: "ConsoleRequest", BodyRequired: true,
			Responses: []Response{{Status: 200, Description: "the console URL", Schema: "ConsoleEndpoint"},
				{Status: 409, Description: "no running console proxy VM in the VM's zone", Schema: "Error"},
				{Status: 503, Description: "console tokens are not configured on this server", Schema: "Error"}}}},
	}
}

func (s *Server) createConsole(c echo.Context) error {
	var body consoleBody
	if err := decodeBody(c, &body, false); err != nil {
		return err
	}
	if body.VMID == "" {
		return BadRequest("vmid", "vmid is required: the system VM or guest VM whose console to open")
	}
	if len(s.consoleKey) == 0 {
		return Unavailable(nil, "console tokens are not configured on this server (no master key given to the API)")
	}
	ctx := c.Request().Context()
	var zoneID, name string
	var vm models.SystemVM
	err := s.store.DB.WithContext(ctx).Where("id = ? AND state <> ?", body.VMID, models.StateDestroyed).Take(&vm).Error
	switch {
	case err == nil:
		zoneID, name = vm.ZoneID, vm.Name
	case errors.Is(err, gorm.ErrRecordNotFound):
		var g models.GuestVM
		gerr := s.store.DB.WithContext(ctx).Where("id = ?", body.VMID).Take(&g).Error
		if errors.Is(gerr, gorm.ErrRecordNotFound) {
			return BadRequest("vmid", "no system VM or guest VM with id %s", body.VMID)
		}
		if gerr != nil {
			return Internal(gerr, "read guest VM")
		}
		zoneID, name = g.ZoneID, g.Name
	default:
		return Internal(err, "read system VM")
	}
	var proxy models.SystemVM
	err = s.store.DB.WithContext(ctx).Where("type = ? AND state = ? AND zone_id = ?", models.TypeCPVM, models.StateRunning, zoneID).
		Order("active_viewers, name").Take(&proxy).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Conflict("no running console proxy VM in zone %s", zoneID)
	}
	if err != nil {
		return Internal(err, "find a console proxy")
	}
	sc := models.Scope{ZoneID: zoneID}
	domain, err := s.store.Settings.String(ctx, "consoleproxy.url.domain", sc)
	if err != nil {
		return Internal(err, "read consoleproxy.url.domain")
	}
	ssl, err := s.store.Settings.Bool(ctx, "consoleproxy.sslEnabled", sc)
	if err != nil {
		return Internal(err, "read consoleproxy.sslEnabled")
	}
	novnc, err := s.store.Settings.Bool(ctx, "novnc.console.default", sc)
	if err != nil {
		return Internal(err, "read novnc.console.default")
	}
	// Count the session on the proxy until the next capacity scan measures it, so the next
	// console goes to the proxy that is least busy now, not at the last scan.
	if err := s.store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", proxy.ID).
		Update("active_viewers", gorm.Expr("active_viewers + 1")).Error; err != nil {
		return Internal(err, "count the console session")
	}
	exp := time.Now().Add(consoles.DefaultTokenTTL).Truncate(time.Second)
	token, err := consoles.Sign(s.consoleKey, consoles.Claims{VMID: body.VMID, VMName: name, ProxyID: proxy.HypervisorName(), Expires: exp.Unix()})
	if err != nil {
		return Internal(err, "sign the console token")
	}
	o := consoles.URLOptions{Domain: domain, SSL: ssl, NoVNC: novnc}
	return ok(c, consoleAnswer{URL: consoles.URL(o, proxy.PublicIP, token), Proxy: proxy.Name, ProxyID: proxy.ID,
		Host: consoles.Host(domain, proxy.PublicIP), Expires: exp.UTC(), NoVNC: novnc, SSL: ssl})
}
