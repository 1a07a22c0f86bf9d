package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// guestVMCreate is the body of POST /networks/{id}/guest-vms.
type guestVMCreate struct {
	Name       string `json:"name"`
	MACAddress string `json:"macaddress"`
	IPAddress  string `json:"ipaddress"`
}

// portForwardingCreate is the body of POST /networks/{id}/port-forwarding-rules.
type portForwardingCreate struct {
	IPAddress      string `json:"ipaddress"`
	PublicPort     int    `json:"publicport"`
	PublicEndPort  int    `json:"publicendport"`
	VMGuestIP      string `json:"vmguestip"`
	PrivatePort    int    `json:"privateport"`
	PrivateEndPort int    `json:"privateendport"`
	Protocol       string `json:"protocol"`
}

// lbBackendCreate is one backend of a new LB rule.
type lbBackendCreate struct {
	IPAddress string `json:"ipaddress"`
	Port      int    `json:"port"`
}

// lbRuleCreate is the body of POST /networks/{id}/load-balancer-rules.
type lbRuleCreate struct {
	PublicIP   string            `json:"publicip"`
	PublicPort int               `json:"publicport"`
	Algorithm  string            `json:"algorithm"`
	MaxConn    int               `json:"maxconn"`
	Backends   []lbBackendCreate `json:"backends"`
}

func networkRuleSchemas() map[string]any {
	return map[string]any{
		"GuestVMCreate": objectSchema("a guest VM's NIC on the network: its router serves its DHCP lease and DNS name",
			"name", "macaddress", "ipaddress"),
		"PortForwardingRuleCreate": objectSchema("a port forwarding rule of the network's public IP to a guest VM",
			"ipaddress", "publicport:int", "publicendport?:int", "vmguestip", "privateport:int", "privateendport?:int",
			"protocol:string=tcp|udp"),
		"LoadBalancerBackendCreate": objectSchema("a server behind an LB rule", "ipaddress", "port:int"),
		"LoadBalancerRuleCreate": objectSchema("a load balancing rule of the network's public IP over guest VMs",
			"publicip", "publicport:int", "algorithm?:string=roundrobin|leastconn|source", "maxconn?:int",
			"backends:[]@LoadBalancerBackendCreate"),
		"OutdatedRouter": objectSchema("a router that requires upgrade", "id", "name", "version"),
		"NetworkChange": objectSchema("a change stored and being pushed to the network's routers",
			"operation:@Operation", "guestvm?:object", "rule?:object"),
	}
}

func (s *Server) networkRuleRoutes() []Route {
	desc := func(what string) string {
		return "Stores " + what + " and starts a " + workflows.NetworkRulesOperationKind + " operation (under the network's " +
			"workflow ID network:<id>) that pushes what the network's routers serve to every one of them over SSH " +
			"(sysvm-agent apply-rules rewrites /etc/hosts, /etc/dhcphosts.txt, haproxy.cfg and the iptables rules). " +
			"With router.version.check true (the network's zone, then global), a change that would reach a router below " +
			"minreq.sysvmtemplate.version is refused with 409 `router requires upgrade` naming the routers and the version " +
			"needed, before anything is stored; the router keeps serving what it has."
	}
	resp := []Response{{Status: 202, Description: "stored; the push runs", Schema: "NetworkChange"},
		{Status: 404, Description: "no such network", Schema: "Error"},
		{Status: 409, Description: "router requires upgrade (routers and requiredVersion name them), the network has no " +
			"router, a duplicate, or another operation runs on the network", Schema: "ConflictError"},
		{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}
	return []Route{
		{Method: http.MethodPost, Path: "/networks/{id}/guest-vms", Role: models.RoleOperator, Handler: s.addGuestVM, Doc: Doc{
			OperationID: "addNetworkGuestVM", Tag: "Lifecycle", Summary: "Add a guest VM's DHCP and DNS entry to a network",
			Description: desc("the guest VM's NIC (running)"), Body: "GuestVMCreate", BodyRequired: true, Responses: resp}},
		{Method: http.MethodPost, Path: "/networks/{id}/port-forwarding-rules", Role: models.RoleOperator, Handler: s.addPortForwarding, Doc: Doc{
			OperationID: "createPortForwardingRule", Tag: "Lifecycle", Summary: "Add a port forwarding rule to a network",
			Description: desc("the rule"), Body: "PortForwardingRuleCreate", BodyRequired: true, Responses: resp}},
		{Method: http.MethodPost, Path: "/networks/{id}/load-balancer-rules", Role: models.RoleOperator, Handler: s.addLBRule, Doc: Doc{
			OperationID: "createLoadBalancerRule", Tag: "Lifecycle", Summary: "Add a load balancing rule with its backends to a network",
			Description: desc("the rule and its backends"), Body: "LoadBalancerRuleCreate", BodyRequired: true, Responses: resp}},
	}
}

var macPattern = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)

// hostNamePattern is a DNS label (what dnsmasq hands out).
var hostNamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

func parseIP(field, v string) (string, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(v))
	if err != nil {
		return "", BadRequest(field, "%s must be an IP address, got %q", field, v)
	}
	return a.String(), nil
}

func checkPort(field string, p int, optional bool) error {
	if optional && p == 0 {
		return nil
	}
	if p < 1 || p > 65535 {
		return BadRequest(field, "%s must be a port from 1 to 65535, got %d", field, p)
	}
	return nil
}

// inCIDR checks that ip lies in the network's CIDR (when the network has one).
func inCIDR(field, ip string, n models.Network) error {
	if n.CIDR == "" {
		return nil
	}
	pfx, err := netip.ParsePrefix(n.CIDR)
	if err != nil {
		return nil
	}
	if a, _ := netip.ParseAddr(ip); !pfx.Contains(a) {
		return BadRequest(field, "%s %s is not in network %s (%s)", field, ip, n.Name, n.CIDR)
	}
	return nil
}

// gatedChange is the common path of a change: the network, its routers, the version gate
// (before anything is stored), then store (in one transaction) and start the push. A push
// that cannot start removes what was stored.
func (s *Server) gatedChange(c echo.Context, n models.Network, change string, store func(ctx context.Context) (any, error),
	unstore func(ctx context.Context) error, key string) error {
	ctx := c.Request().Context()
	routers, err := activities.RoutersOfNetwork(ctx, s.store.DB, n)
	if err != nil {
		return Internal(err, "read the routers of network %s", n.Name)
	}
	if len(routers) == 0 {
		return Conflict("network %s (%s) has no router to serve the change", n.Name, n.ID)
	}
	if err := activities.CheckRouterVersions(ctx, s.store, routers); err != nil {
		var oe *activities.OutdatedError
		if errors.As(err, &oe) {
			e := Conflict("%s", oe.Error())
			e.Extra = map[string]any{"routers": oe.Routers, "requiredVersion": oe.Required}
			return e
		}
		return Internal(err, "check the versions of the routers of network %s", n.Name)
	}
	row, err := store(ctx)
	if err != nil {
		return err
	}
	spec := operations.Spec{
		Target:   workflows.NetworkTarget(n.ID, n.ZoneID, workflows.NetworkRulesOperationKind),
		Workflow: workflows.NetworkRulesWorkflowName, TargetType: TargetNetwork, TargetID: n.ID, TargetName: n.Name,
		Input: func(opID string) any {
			return workflows.NetworkRulesInput{OperationID: opID, NetworkID: n.ID, Change: change}
		},
		Memo: map[string]any{"change": change, "routers": len(routers)},
	}
	if k, found := Caller(c); found {
		spec.RequestedBy = k.Name
	}
	op, err := s.ops.Start(ctx, spec)
	if err != nil {
		var oe *operations.Error
		if !errors.As(err, &oe) || !errors.Is(oe.Kind, operations.ErrUnavailable) || oe.Operation == nil {
			// Definitely not started: nothing was pushed, so nothing stays stored.
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if uerr := unstore(uctx); uerr != nil {
				s.log.Error("remove a change whose push did not start", "network", n.ID, "change", change, "error", uerr)
			}
		}
		return s.operationError(err)
	}
	return c.JSON(http.StatusAccepted, map[string]any{"operation": s.view(op), key: row})
}

func (s *Server) addGuestVM(c echo.Context) error {
	n, err := getRow[models.Network](c, s.store.DB, c.Param("id"), "network")
	if err != nil {
		return err
	}
	var b guestVMCreate
	if err := decodeBody(c, &b, false); err != nil {
		return err
	}
	if !hostNamePattern.MatchString(b.Name) {
		return BadRequest("name", "name must be a host name (letters, digits and -, up to 63), got %q", b.Name)
	}
	if !macPattern.MatchString(b.MACAddress) {
		return BadRequest("macaddress", "macaddress must be aa:bb:cc:dd:ee:ff, got %q", b.MACAddress)
	}
	ip, err := parseIP("ipaddress", b.IPAddress)
	if err != nil {
		return err
	}
	if err := inCIDR("ipaddress", ip, n); err != nil {
		return err
	}
	row := models.GuestVM{Base: models.Base{ID: models.NewID()}, ZoneID: n.ZoneID, NetworkID: n.ID, AccountID: n.AccountID,
		Name: b.Name, MAC: strings.ToLower(b.MACAddress), IP: ip, State: models.StateRunning}
	ctx := c.Request().Context()
	var clash int64
	if err := s.store.DB.WithContext(ctx).Model(&models.GuestVM{}).
		Where("network_id = ? AND (ip = ? OR mac = ? OR name = ?)", n.ID, row.IP, row.MAC, row.Name).Count(&clash).Error; err != nil {
		return Internal(err, "read guest VMs of network %s", n.Name)
	}
	if clash > 0 {
		return Conflict("network %s already has a guest VM with name %s, MAC %s or IP %s", n.Name, row.Name, row.MAC, row.IP)
	}
	return s.gatedChange(c, n, fmt.Sprintf("guest VM %s (%s, %s) added", row.Name, row.IP, row.MAC),
		func(ctx context.Context) (any, error) {
			if err := s.store.DB.WithContext(ctx).Create(&row).Error; err != nil {
				return nil, Internal(err, "store guest VM %s", row.Name)
			}
			return row, nil
		},
		func(ctx context.Context) error {
			return s.store.DB.WithContext(ctx).Delete(&models.GuestVM{}, "id = ?", row.ID).Error
		},
		"guestvm")
}

func (s *Server) addPortForwarding(c echo.Context) error {
	n, err := getRow[models.Network](c, s.store.DB, c.Param("id"), "network")
	if err != nil {
		return err
	}
	var b portForwardingCreate
	if err := decodeBody(c, &b, false); err != nil {
		return err
	}
	pub, err := parseIP("ipaddress", b.IPAddress)
	if err != nil {
		return err
	}
	priv, err := parseIP("vmguestip", b.VMGuestIP)
	if err != nil {
		return err
	}
	if err := inCIDR("vmguestip", priv, n); err != nil {
		return err
	}
	for _, p := range []struct {
		f        string
		v        int
		optional bool
	}{{"publicport", b.PublicPort, false}, {"publicendport", b.PublicEndPort, true}, {"privateport", b.PrivatePort, false},
		{"privateendport", b.PrivateEndPort, true}} {
		if err := checkPort(p.f, p.v, p.optional); err != nil {
			return err
		}
	}
	if b.PublicEndPort != 0 && b.PublicEndPort < b.PublicPort {
		return BadRequest("publicendport", "publicendport %d is below publicport %d", b.PublicEndPort, b.PublicPort)
	}
	if b.PrivateEndPort != 0 && b.PrivateEndPort < b.PrivatePort {
		return BadRequest("privateendport", "privateendport %d is below privateport %d", b.PrivateEndPort, b.PrivatePort)
	}
	proto := strings.ToLower(b.Protocol)
	if proto != "tcp" && proto != "udp" {
		return BadRequest("protocol", "protocol must be tcp or udp, got %q", b.Protocol)
	}
	row := models.PortForwardingRule{Base: models.Base{ID: models.NewID()}, NetworkID: n.ID, PublicIP: pub, PublicPort: b.PublicPort,
		PublicEndPort: b.PublicEndPort, PrivateIP: priv, PrivatePort: b.PrivatePort, PrivateEndPort: b.PrivateEndPort, Protocol: proto}
	ctx := c.Request().Context()
	var clash int64
	if err := s.store.DB.WithContext(ctx).Model(&models.PortForwardingRule{}).
		Where("network_id = ? AND public_ip = ? AND public_port = ? AND protocol = ?", n.ID, pub, b.PublicPort, proto).Count(&clash).Error; err != nil {
		return Internal(err, "read port forwarding rules of network %s", n.Name)
	}
	if clash > 0 {
		return Conflict("network %s already forwards %s port %d/%s", n.Name, pub, b.PublicPort, proto)
	}
	return s.gatedChange(c, n, fmt.Sprintf("port forwarding %s:%d/%s -> %s:%d added", pub, b.PublicPort, proto, priv, b.PrivatePort),
		func(ctx context.Context) (any, error) {
			if err := s.store.DB.WithContext(ctx).Create(&row).Error; err != nil {
				return nil, Internal(err, "store port forwarding rule")
			}
			return row, nil
		},
		func(ctx context.Context) error {
			return s.store.DB.WithContext(ctx).Delete(&models.PortForwardingRule{}, "id = ?", row.ID).Error
		},
		"rule")
}

func (s *Server) addLBRule(c echo.Context) error {
	n, err := getRow[models.Network](c, s.store.DB, c.Param("id"), "network")
	if err != nil {
		return err
	}
	var b lbRuleCreate
	if err := decodeBody(c, &b, false); err != nil {
		return err
	}
	pub, err := parseIP("publicip", b.PublicIP)
	if err != nil {
		return err
	}
	if err := checkPort("publicport", b.PublicPort, false); err != nil {
		return err
	}
	algo := b.Algorithm
	if algo == "" {
		algo = "roundrobin"
	}
	if !slices.Contains([]string{"roundrobin", "leastconn", "source"}, algo) {
		return BadRequest("algorithm", "algorithm must be roundrobin, leastconn or source, got %q", b.Algorithm)
	}
	if b.MaxConn < 0 {
		return BadRequest("maxconn", "maxconn must be 0 (haproxy's default) or more, got %d", b.MaxConn)
	}
	if len(b.Backends) == 0 {
		return BadRequest("backends", "an LB rule needs at least one backend")
	}
	row := models.LoadBalancerRule{Base: models.Base{ID: models.NewID()}, NetworkID: n.ID, PublicIP: pub, PublicPort: b.PublicPort,
		Algorithm: algo, MaxConn: b.MaxConn}
	for i, be := range b.Backends {
		ip, err := parseIP(fmt.Sprintf("backends[%d].ipaddress", i), be.IPAddress)
		if err != nil {
			return err
		}
		if err := inCIDR(fmt.Sprintf("backends[%d].ipaddress", i), ip, n); err != nil {
			return err
		}
		if err := checkPort(fmt.Sprintf("backends[%d].port", i), be.Port, false); err != nil {
			return err
		}
		row.Backends = append(row.Backends, models.LoadBalancerBackend{Base: models.Base{ID: models.NewID()}, RuleID: row.ID, IP: ip, Port: be.Port})
	}
	ctx := c.Request().Context()
	var clash int64
	if err := s.store.DB.WithContext(ctx).Model(&models.LoadBalancerRule{}).
		Where("network_id = ? AND public_ip = ? AND public_port = ?", n.ID, pub, b.PublicPort).Count(&clash).Error; err != nil {
		return Internal(err, "read LB rules of network %s", n.Name)
	}
	if clash > 0 {
		return Conflict("network %s already balances %s port %d", n.Name, pub, b.PublicPort)
	}
	return s.gatedChange(c, n, fmt.Sprintf("LB rule %s:%d over %d backends added", pub, b.PublicPort, len(row.Backends)),
		func(ctx context.Context) (any, error) {
			if err := s.store.DB.WithContext(ctx).Create(&row).Error; err != nil {
				return nil, Internal(err, "store LB rule")
			}
			return row, nil
		},
		func(ctx context.Context) error {
			return s.store.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
				if err := tx.Delete(&models.LoadBalancerBackend{}, "rule_id = ?", row.ID).Error; err != nil {
					return err
				}
				return tx.Delete(&models.LoadBalancerRule{}, "id = ?", row.ID).Error
			})
		},
		"rule")
}
