package xapisim

import "strconv"

const (
	classVDI = "VDI"
	// CodeVDITooSmall: the data imported is larger than the VDI.
	CodeVDITooSmall = "VDI_TOO_SMALL"
	// CodeVDIIOError: the import stream is not a valid image of the announced format.
	CodeVDIIOError = "VDI_IO_ERROR"
)

// vdiRec is XAPI's VDI (virtual disk image) class.
type vdiRec struct {
	UUID                string            `xapi:"uuid"`
	NameLabel           string            `xapi:"name_label,rw"`
	NameDescription     string            `xapi:"name_description,rw"`
	SR                  string            `xapi:"SR"`
	VBDs                []string          `xapi:"VBDs"`
	VirtualSize         int64             `xapi:"virtual_size"`
	PhysicalUtilisation int64             `xapi:"physical_utilisation"`
	Type                string            `xapi:"type"`
	Sharable            bool              `xapi:"sharable"`
	ReadOnly            bool              `xapi:"read_only"`
	Managed             bool              `xapi:"managed"`
	Missing             bool              `xapi:"missing"`
	IsASnapshot         bool              `xapi:"is_a_snapshot"`
	SnapshotOf          string            `xapi:"snapshot_of"`
	Location            string            `xapi:"location"`
	OtherConfig         map[string]string `xapi:"other_config,rw"`
	SMConfig            map[string]string `xapi:"sm_config,rw"`
	XenstoreData        map[string]string `xapi:"xenstore_data,rw"`
	Tags                []string          `xapi:"tags,rw"`
	AllowedOperations   []string          `xapi:"allowed_operations"`
	CurrentOperations   map[string]string `xapi:"current_operations"`
}

func (r *vdiRec) ops() map[string]string { return r.CurrentOperations }

// vdiContent is what was imported into a VDI: its length and sha256.
type vdiContent struct {
	Size   int64
	SHA256 string
}

func newVDIClass() *class { return newClass(classVDI, vdiRec{}) }

var vdiTypes = map[string]bool{
	"system": true, "user": true, "ephemeral": true, "suspend": true, "crashdump": true,
	"ha_statefile": true, "metadata": true, "redo_log": true, "rrd": true, "pvs_cache": true,
	"cbt_metadata": true,
}

func (s *Server) registerVDI() {
	s.methods["VDI.create"] = &method{name: "VDI.create", params: []param{pRecord("args",
		fReq("SR", argString),
		fReq("virtual_size", argInt),
		fReq("type", argString),
		fReq("sharable", argBool),
		fReq("read_only", argBool),
		fReq("other_config", argStrMap),
		fOpt("name_label", argString, ""),
		fOpt("name_description", argString, ""),
		fOpt("sm_config", argStrMap, nil),
		fOpt("xenstore_data", argStrMap, nil),
		fOpt("tags", argStrings, nil))}, fn: s.vdiCreate}
	s.methods["VDI.destroy"] = &method{name: "VDI.destroy", params: []param{pRef("self", classVDI)}, fn: s.vdiDestroy}
	s.methods["VDI.clone"] = &method{name: "VDI.clone", params: []param{pRef("vdi", classVDI), pStrMap("driver_params")},
		fn: func(c *call) (any, error) {
			ref := c.ref(0)
			v, _ := lookup[vdiRec](s.db, classVDI, ref)
			return s.copyVDI(ref, v, v.SR, true)
		}}
	s.methods["VDI.copy"] = &method{name: "VDI.copy", params: []param{pRef("vdi", classVDI), pRef("sr", classSR)},
		fn: func(c *call) (any, error) {
			ref := c.ref(0)
			sr := c.ref(1)
			v, _ := lookup[vdiRec](s.db, classVDI, ref)
			return s.copyVDI(ref, v, sr, false)
		}}
}

func (s *Server) vdiCreate(c *call) (any, error) {
	r := c.rec(0)
	srRef := r.str("SR")
	sr, f := lookup[srRec](s.db, classSR, srRef)
	if f != nil {
		return nil, f
	}
	size := r.int("virtual_size")
	typ := r.str("type")
	if !vdiTypes[typ] {
		return nil, fail(CodeFieldTypeError, "type")
	}
	sharable := r.bool("sharable")
	ro := r.bool("read_only")
	oc := r.strMap("other_config")
	name := r.str("name_label")
	desc := r.str("name_description")
	smc := r.strMap("sm_config")
	xsd := r.strMap("xenstore_data")
	tags := r.strings("tags")
	if size < 0 {
		return nil, fail(CodeValueNotSupported, "virtual_size", strconv.FormatInt(size, 10), "must not be negative")
	}
	if f := busy(classSR, srRef, sr); f != nil {
		return nil, f
	}
	return s.newVDI(srRef, sr, &vdiRec{
		NameLabel: name, NameDescription: desc, VirtualSize: size, Type: typ, Sharable: sharable,
		ReadOnly: ro, OtherConfig: oc, SMConfig: smc, XenstoreData: xsd, Tags: tags,
	})
}

// newVDI places a VDI in an SR, charging thick SRs its whole size.
func (s *Server) newVDI(srRef string, sr *srRec, v *vdiRec) (string, error) {
	phys := int64(0)
	if sr.thick() {
		phys = v.VirtualSize
	}
	if phys > sr.free() {
		return "", fail(CodeSRFull, strconv.FormatInt(phys, 10), strconv.FormatInt(sr.free(), 10))
	}
	v.UUID = newUUID()
	v.SR = srRef
	v.PhysicalUtilisation = phys
	v.VBDs = []string{}
	v.Managed = true
	v.SnapshotOf = NullRef
	v.Location = v.UUID
	v.AllowedOperations = []string{"clone", "copy", "destroy", "resize", "snapshot", "update"}
	v.CurrentOperations = map[string]string{}
	for _, m := range []*map[string]string{&v.OtherConfig, &v.SMConfig, &v.XenstoreData} {
		if *m == nil {
			*m = map[string]string{}
		}
	}
	if v.Tags == nil {
		v.Tags = []string{}
	}
	ref := s.db.add(classVDI, v)
	sr.PhysicalUtilisation += phys
	sr.VirtualAllocation += v.VirtualSize
	sr.VDIs = append(sr.VDIs, ref)
	return ref, nil
}

// copyVDI clones (same SR, fast clone) or copies (full, any SR) a VDI with its content.
func (s *Server) copyVDI(ref string, v *vdiRec, srRef string, clone bool) (string, error) {
	sr, f := lookup[srRec](s.db, classSR, srRef)
	if f != nil {
		return "", f
	}
	if f := busy(classVDI, ref, v); f != nil {
		return "", f
	}
	nv := &vdiRec{
		NameLabel: v.NameLabel, NameDescription: v.NameDescription, VirtualSize: v.VirtualSize,
		Type: v.Type, Sharable: v.Sharable, ReadOnly: v.ReadOnly,
		OtherConfig: cloneMap(v.OtherConfig), SMConfig: cloneMap(v.SMConfig),
		XenstoreData: cloneMap(v.XenstoreData), Tags: append([]string{}, v.Tags...),
	}
	nref, err := s.newVDI(srRef, sr, nv)
	if err != nil {
		return "", err
	}
	if content, ok := s.content[v.UUID]; ok {
		s.content[nv.UUID] = content
		if !sr.thick() && !clone {
			// A full copy on a thin SR writes the data again; a clone shares the parent's.
			nv.PhysicalUtilisation = content.Size
			sr.PhysicalUtilisation += content.Size
		}
	}
	return nref, nil
}

func (s *Server) vdiDestroy(c *call) (any, error) {
	ref := c.ref(0)
	v, _ := lookup[vdiRec](s.db, classVDI, ref)
	if f := busy(classVDI, ref, v); f != nil {
		return nil, f
	}
	for _, vbdRef := range v.VBDs {
		vbd, _ := lookup[vbdRec](s.db, classVBD, vbdRef)
		if vbd.CurrentlyAttached {
			return nil, fail(CodeVDIInUse, ref, "destroy")
		}
	}
	for _, vbdRef := range append([]string(nil), v.VBDs...) {
		s.removeVBD(vbdRef)
	}
	sr, _ := lookup[srRec](s.db, classSR, v.SR)
	sr.PhysicalUtilisation -= v.PhysicalUtilisation
	sr.VirtualAllocation -= v.VirtualSize
	sr.VDIs = without(sr.VDIs, ref)
	delete(s.content, v.UUID)
	s.db.remove(classVDI, ref)
	return "", nil
}

// VDIContent reports what was imported into a VDI (by uuid): its length and sha256 hex.
func (s *Server) VDIContent(uuid string) (size int64, sha256Hex string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.content[uuid]
	return c.Size, c.SHA256, ok
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func without(list []string, x string) []string {
	out := list[:0]
	for _, e := range list {
		if e != x {
			out = append(out, e)
		}
	}
	return out
}
