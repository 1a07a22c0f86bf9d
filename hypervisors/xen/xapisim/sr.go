package xapisim

const classSR = "SR"

// srRec is XAPI's SR (storage repository) class.
type srRec struct {
	UUID                string            `xapi:"uuid"`
	NameLabel           string            `xapi:"name_label,rw"`
	NameDescription     string            `xapi:"name_description,rw"`
	Type                string            `xapi:"type"`
	ContentType         string            `xapi:"content_type"`
	Shared              bool              `xapi:"shared,rw"`
	PhysicalSize        int64             `xapi:"physical_size"`
	PhysicalUtilisation int64             `xapi:"physical_utilisation"`
	VirtualAllocation   int64             `xapi:"virtual_allocation"`
	VDIs                []string          `xapi:"VDIs"`
	PBDs                []string          `xapi:"PBDs"`
	SMConfig            map[string]string `xapi:"sm_config,rw"`
	OtherConfig         map[string]string `xapi:"other_config,rw"`
	Tags                []string          `xapi:"tags,rw"`
	AllowedOperations   []string          `xapi:"allowed_operations"`
	CurrentOperations   map[string]string `xapi:"current_operations"`
}

func (r *srRec) ops() map[string]string { return r.CurrentOperations }

// thick SRs (LVM based) allocate a VDI's whole virtual size at creation; thin ones (file
// based: nfs, ext, file) grow as data is written.
func (r *srRec) thick() bool {
	switch r.Type {
	case "lvm", "lvmoiscsi", "lvmohba", "lvmofcoe":
		return true
	}
	return false
}

func (r *srRec) free() int64 { return r.PhysicalSize - r.PhysicalUtilisation }

func newSRClass() *class { return newClass(classSR, srRec{}) }

func (s *Server) registerSR() {
	s.methods["SR.scan"] = &method{name: "SR.scan", params: []param{pRef("sr", classSR)}, fn: func(c *call) (any, error) {
		return "", nil
	}}
}

func (s *Server) addSR(spec SRSpec) string {
	if spec.Type == "" {
		spec.Type = "nfs"
	}
	if spec.SizeBytes <= 0 {
		spec.SizeBytes = 2 << 40
	}
	return s.db.add(classSR, &srRec{
		UUID: newUUID(), NameLabel: spec.Name, Type: spec.Type, ContentType: "user",
		Shared: spec.Shared, PhysicalSize: spec.SizeBytes, VDIs: []string{}, PBDs: []string{},
		SMConfig: map[string]string{}, OtherConfig: map[string]string{}, Tags: []string{},
		AllowedOperations: []string{"vdi_create", "vdi_destroy", "vdi_clone", "vdi_snapshot", "scan", "update"},
		CurrentOperations: map[string]string{},
	})
}
