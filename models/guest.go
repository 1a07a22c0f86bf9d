package models

// Guest VMs and the rules of guest networks: what the management side knows a router must
// serve. Router health checks (SPEC §4.3) compare each router's DHCP and DNS entries, iptables
// and haproxy.cfg against these rows.

// GuestVM is a tenant VM's NIC on a guest network, as the management server records it: the
// router of that network must hand out its address over DHCP (/etc/dhcphosts.txt) and resolve
// its name (/etc/hosts). A VM with NICs on several networks has one row per network.
type GuestVM struct {
	Base
	ZoneID    string `gorm:"size:36;index" json:"zoneid"`
	NetworkID string `gorm:"size:36;index" json:"networkid"`
	AccountID string `gorm:"size:36;index" json:"accountid"`
	// Name is the VM's host name on the network (its DNS and DHCP name).
	Name string `gorm:"size:255" json:"name"`
	// MAC is the NIC's MAC address (aa:bb:cc:dd:ee:ff).
	MAC string `gorm:"size:32" json:"macaddress"`
	// IP is the NIC's address on the network.
	IP string `gorm:"size:64" json:"ipaddress"`
	// State is the VM's state, as CloudStack names them (Running, Stopped, ...); only running
	// VMs are expected on their router.
	State string `gorm:"size:32;index" json:"state"`
}

// PortForwardingRule forwards a public port (or range) of a network's public IP to a guest
// VM's port (or range); the router's iptables-save must hold its DNAT rule. End ports are 0
// for a single port.
type PortForwardingRule struct {
	Base
	NetworkID      string `gorm:"size:36;index" json:"networkid"`
	PublicIP       string `gorm:"size:64" json:"ipaddress"`
	PublicPort     int    `json:"publicport"`
	PublicEndPort  int    `json:"publicendport,omitempty"`
	PrivateIP      string `gorm:"size:64" json:"vmguestip"`
	PrivatePort    int    `json:"privateport"`
	PrivateEndPort int    `json:"privateendport,omitempty"`
	// Protocol is tcp or udp.
	Protocol string `gorm:"size:8" json:"protocol"`
}

// LoadBalancerRule balances a network's public IP and port over guest VMs; the router's
// haproxy.cfg must have a listener for it with every backend and, when MaxConn is set, that
// maxconn.
type LoadBalancerRule struct {
	Base
	NetworkID  string `gorm:"size:36;index" json:"networkid"`
	PublicIP   string `gorm:"size:64" json:"publicip"`
	PublicPort int    `json:"publicport"`
	// Algorithm is CloudStack's: roundrobin, leastconn or source.
	Algorithm string `gorm:"size:32" json:"algorithm"`
	// MaxConn is the listener's maxconn; 0 is haproxy's default (not checked).
	MaxConn int `json:"maxconn,omitempty"`
	// Backends are the servers behind the rule; deleting the rule deletes them.
	Backends []LoadBalancerBackend `gorm:"foreignKey:RuleID;constraint:OnDelete:CASCADE" json:"backends"`
}

// LoadBalancerBackend is one server (a guest VM's IP and port) behind a LoadBalancerRule.
type LoadBalancerBackend struct {
	Base
	RuleID string `gorm:"size:36;index" json:"lbruleid"`
	IP     string `gorm:"size:64" json:"ipaddress"`
	Port   int    `json:"port"`
}
