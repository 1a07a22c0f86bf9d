package xapisim

const classNetwork = "network"

// networkRec is XAPI's network class.
type networkRec struct {
	UUID              string            `xapi:"uuid"`
	NameLabel         string            `xapi:"name_label,rw"`
	NameDescription   string            `xapi:"name_description,rw"`
	Bridge            string            `xapi:"bridge"`
	MTU               int64             `xapi:"MTU,rw"`
	Managed           bool              `xapi:"managed"`
	VIFs              []string          `xapi:"VIFs"`
	PIFs              []string          `xapi:"PIFs"`
	OtherConfig       map[string]string `xapi:"other_config,rw"`
	Tags              []string          `xapi:"tags,rw"`
	AllowedOperations []string          `xapi:"allowed_operations"`
	CurrentOperations map[string]string `xapi:"current_operations"`
}

func newNetworkClass() *class { return newClass(classNetwork, networkRec{}) }

// registerNetwork: the network class has only generated messages here.
func (s *Server) registerNetwork() {}

func (s *Server) addNetwork(n NetworkSpec) string {
	if n.MTU <= 0 {
		n.MTU = 1500
	}
	desc := ""
	if n.Name == LinkLocalNetworkName {
		desc = "link local network used by system vms"
	}
	return s.db.add(classNetwork, &networkRec{
		UUID: newUUID(), NameLabel: n.Name, NameDescription: desc, Bridge: n.Bridge, MTU: n.MTU,
		Managed: true, VIFs: []string{}, PIFs: []string{}, OtherConfig: map[string]string{},
		Tags: []string{}, AllowedOperations: []string{"attaching"}, CurrentOperations: map[string]string{},
	})
}
