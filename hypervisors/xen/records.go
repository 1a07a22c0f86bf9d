package xen

// The XAPI records this driver reads, decoded from JSON-RPC (field names as XAPI's
// datamodel spells them). Only the fields used are declared.

type hostRecord struct {
	UUID            string            `json:"uuid"`
	NameLabel       string            `json:"name_label"`
	Enabled         bool              `json:"enabled"`
	CPUInfo         map[string]string `json:"cpu_info"`
	SoftwareVersion map[string]string `json:"software_version"`
	Metrics         string            `json:"metrics"`
}

type hostMetricsRecord struct {
	MemoryTotal xint `json:"memory_total"`
	MemoryFree  xint `json:"memory_free"`
	Live        bool `json:"live"`
}

type poolRecord struct {
	NameLabel string `json:"name_label"`
	Master    string `json:"master"`
	DefaultSR string `json:"default_SR"`
}

type srRecord struct {
	UUID                string `json:"uuid"`
	NameLabel           string `json:"name_label"`
	Type                string `json:"type"`
	ContentType         string `json:"content_type"`
	PhysicalSize        xint   `json:"physical_size"`
	PhysicalUtilisation xint   `json:"physical_utilisation"`
}

type vdiRecord struct {
	UUID        string   `json:"uuid"`
	NameLabel   string   `json:"name_label"`
	SR          string   `json:"SR"`
	VirtualSize xint     `json:"virtual_size"`
	VBDs        []string `json:"VBDs"`
}

type vbdRecord struct {
	VM         string `json:"VM"`
	VDI        string `json:"VDI"`
	Type       string `json:"type"`
	Empty      bool   `json:"empty"`
	Userdevice string `json:"userdevice"`
}

type vifRecord struct {
	Device        string            `json:"device"`
	Network       string            `json:"network"`
	VM            string            `json:"VM"`
	MAC           string            `json:"MAC"`
	OtherConfig   map[string]string `json:"other_config"`
	IPv4Addresses []string          `json:"ipv4_addresses"`
	IPv4Gateway   string            `json:"ipv4_gateway"`
}

type networkRecord struct {
	NameLabel string `json:"name_label"`
	Bridge    string `json:"bridge"`
	MTU       xint   `json:"MTU"`
}

type vmRecord struct {
	UUID              string            `json:"uuid"`
	NameLabel         string            `json:"name_label"`
	PowerState        string            `json:"power_state"`
	IsATemplate       bool              `json:"is_a_template"`
	IsDefaultTemplate bool              `json:"is_default_template"`
	IsASnapshot       bool              `json:"is_a_snapshot"`
	IsControlDomain   bool              `json:"is_control_domain"`
	ResidentOn        string            `json:"resident_on"`
	Affinity          string            `json:"affinity"`
	MemoryStaticMin   xint              `json:"memory_static_min"`
	MemoryStaticMax   xint              `json:"memory_static_max"`
	MemoryDynamicMax  xint              `json:"memory_dynamic_max"`
	VCPUsMax          xint              `json:"VCPUs_max"`
	VCPUsAtStartup    xint              `json:"VCPUs_at_startup"`
	PVArgs            string            `json:"PV_args"`
	XenstoreData      map[string]string `json:"xenstore_data"`
	OtherConfig       map[string]string `json:"other_config"`
	VIFs              []string          `json:"VIFs"`
	VBDs              []string          `json:"VBDs"`
	Metrics           string            `json:"metrics"`
}

type vmMetricsRecord struct {
	MemoryActual     xint               `json:"memory_actual"`
	VCPUsNumber      xint               `json:"VCPUs_number"`
	VCPUsUtilisation map[string]float64 `json:"VCPUs_utilisation"`
	StartTime        string             `json:"start_time"`
}
