package xapisim

import "strconv"

const classVBD = "VBD"

// vbdRec is XAPI's VBD (virtual block device) class: a VDI plugged into a VM.
type vbdRec struct {
	UUID               string            `xapi:"uuid"`
	VM                 string            `xapi:"VM"`
	VDI                string            `xapi:"VDI"`
	Device             string            `xapi:"device"`
	Userdevice         string            `xapi:"userdevice,rw"`
	Bootable           bool              `xapi:"bootable,rw"`
	Mode               string            `xapi:"mode,rw"`
	Type               string            `xapi:"type,rw"`
	Unpluggable        bool              `xapi:"unpluggable,rw"`
	Empty              bool              `xapi:"empty"`
	CurrentlyAttached  bool              `xapi:"currently_attached"`
	OtherConfig        map[string]string `xapi:"other_config,rw"`
	QosAlgorithmType   string            `xapi:"qos_algorithm_type,rw"`
	QosAlgorithmParams map[string]string `xapi:"qos_algorithm_params,rw"`
	AllowedOperations  []string          `xapi:"allowed_operations"`
	CurrentOperations  map[string]string `xapi:"current_operations"`
}

func newVBDClass() *class { return newClass(classVBD, vbdRec{}) }

func (s *Server) registerVBD() {
	s.methods["VBD.create"] = &method{name: "VBD.create", params: []param{pRecord("args",
		fReq("VM", argString),
		fReq("VDI", argString),
		fReq("type", argString),
		fReq("empty", argBool),
		fReq("userdevice", argString),
		fReq("bootable", argBool),
		fReq("mode", argString),
		fReq("other_config", argStrMap),
		fOpt("qos_algorithm_type", argString, ""),
		fOpt("qos_algorithm_params", argStrMap, nil),
		fOpt("unpluggable", argBool, true))}, fn: s.vbdCreate}
	s.methods["VBD.destroy"] = &method{name: "VBD.destroy", params: []param{pRef("self", classVBD)}, fn: func(c *call) (any, error) {
		ref := c.ref(0)
		v, _ := lookup[vbdRec](s.db, classVBD, ref)
		if v.CurrentlyAttached {
			return nil, fail(CodeDeviceAlreadyAttached, ref)
		}
		s.removeVBD(ref)
		return "", nil
	}}
}

func (s *Server) vbdCreate(c *call) (any, error) {
	r := c.rec(0)
	vmRef := r.str("VM")
	vm, f := lookup[vmRec](s.db, classVM, vmRef)
	if f != nil {
		return nil, f
	}
	vdiRef := r.str("VDI")
	typ := r.str("type")
	if typ != "Disk" && typ != "CD" && typ != "Floppy" {
		return nil, fail(CodeFieldTypeError, "type")
	}
	empty := r.bool("empty")
	var vdi *vdiRec
	if vdiRef != NullRef || !empty || typ == "Disk" {
		if vdi, f = lookup[vdiRec](s.db, classVDI, vdiRef); f != nil {
			return nil, f
		}
	}
	userdevice := r.str("userdevice")
	bootable := r.bool("bootable")
	mode := r.str("mode")
	if mode != "RO" && mode != "RW" {
		return nil, fail(CodeFieldTypeError, "mode")
	}
	oc := r.strMap("other_config")
	qt := r.str("qos_algorithm_type")
	qp := r.strMap("qos_algorithm_params")
	unpluggable := r.bool("unpluggable")
	used := map[string]bool{}
	for _, other := range vm.VBDs {
		o, _ := lookup[vbdRec](s.db, classVBD, other)
		used[o.Userdevice] = true
	}
	if userdevice == "autodetect" {
		for i := 0; ; i++ {
			if !used[strconv.Itoa(i)] {
				userdevice = strconv.Itoa(i)
				break
			}
		}
	}
	if n, err := strconv.Atoi(userdevice); err != nil || n < 0 {
		return nil, fail(CodeFieldTypeError, "userdevice")
	}
	if used[userdevice] {
		return nil, fail(CodeDeviceAlreadyExists, userdevice)
	}
	v := &vbdRec{
		UUID: newUUID(), VM: vmRef, VDI: vdiRef, Userdevice: userdevice, Bootable: bootable, Mode: mode,
		Type: typ, Unpluggable: unpluggable, Empty: empty, OtherConfig: oc,
		QosAlgorithmType: qt, QosAlgorithmParams: qp,
		AllowedOperations: []string{"attach"}, CurrentOperations: map[string]string{},
	}
	ref := s.db.add(classVBD, v)
	vm.VBDs = append(vm.VBDs, ref)
	if vdi != nil {
		vdi.VBDs = append(vdi.VBDs, ref)
	}
	return ref, nil
}

// removeVBD deletes a VBD and its back-references.
func (s *Server) removeVBD(ref string) {
	v, f := lookup[vbdRec](s.db, classVBD, ref)
	if f != nil {
		return
	}
	if vm, f := lookup[vmRec](s.db, classVM, v.VM); f == nil {
		vm.VBDs = without(vm.VBDs, ref)
	}
	if vdi, f := lookup[vdiRec](s.db, classVDI, v.VDI); f == nil {
		vdi.VBDs = without(vdi.VBDs, ref)
	}
	s.db.remove(classVBD, ref)
}
