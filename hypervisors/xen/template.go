package xen

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sysvm/sysvm/hypervisors"
)

// findTemplate resolves a system VM template by name: a VM template with a disk, in the SR
// srRef when given.
func (d *driver) findTemplate(ctx context.Context, name, srRef string) (string, vdiRecord, error) {
	var refs []string
	if err := d.c.call(ctx, "VM.get_by_name_label", &refs, name); err != nil {
		return "", vdiRecord{}, err
	}
	for _, ref := range refs {
		var r vmRecord
		if err := d.c.call(ctx, "VM.get_record", &r, ref); err != nil {
			if isCode(err, "HANDLE_INVALID") {
				continue
			}
			return "", vdiRecord{}, err
		}
		if !r.IsATemplate || r.IsASnapshot {
			continue
		}
		for _, vbdRef := range r.VBDs {
			var b vbdRecord
			if err := d.c.call(ctx, "VBD.get_record", &b, vbdRef); err != nil {
				return "", vdiRecord{}, err
			}
			if b.Type != "Disk" || b.VDI == nullRef {
				continue
			}
			var v vdiRecord
			if err := d.c.call(ctx, "VDI.get_record", &v, b.VDI); err != nil {
				return "", vdiRecord{}, err
			}
			if srRef == "" || v.SR == srRef {
				return ref, v, nil
			}
		}
	}
	where := ""
	if srRef != "" {
		where = " in that SR"
	}
	return "", vdiRecord{}, hypervisors.Errorf(hypervisors.ErrNotFound, "find template", name, "no VM template %q with a disk%s", name, where)
}

// SeedTemplate imports a VHD into a new VDI of the SR spec.Pool (the pool's default SR when
// empty) and wraps it in a VM template named spec.Name, cloned from "Other install media".
// The source (file:// or http(s)://) is fetched and its checksum verified before anything is
// created; an empty URL makes an empty VDI of SizeBytes. A template of that name with its
// disk in that SR is returned as is. progress follows the upload to XAPI.
func (d *driver) SeedTemplate(ctx context.Context, spec hypervisors.TemplateSpec, progress hypervisors.ProgressFunc) (hypervisors.Template, error) {
	const op = "seed template"
	if spec.Name == "" {
		return hypervisors.Template{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, "", "template has no name")
	}
	if f := strings.ToUpper(spec.Format); f != "" && f != "VHD" {
		return hypervisors.Template{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name, "format %q: XenServer templates are VHD", spec.Format)
	}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	srRef, sr, err := d.findSR(ctx, spec.Pool)
	if err != nil {
		return hypervisors.Template{}, wrap(op, spec.Name, err)
	}
	unlock := d.locks.Lock("tpl:" + spec.Name + "@" + srRef)
	defer unlock()
	if _, vdi, err := d.findTemplate(ctx, spec.Name, srRef); err == nil {
		return hypervisors.Template{Name: spec.Name, Pool: sr.NameLabel, SizeBytes: int64(vdi.VirtualSize), Ref: vdi.UUID}, nil
	} else if !errors.Is(err, hypervisors.ErrNotFound) {
		return hypervisors.Template{}, wrap(op, spec.Name, err)
	}

	src, err := d.fetch(ctx, spec)
	if err != nil {
		return hypervisors.Template{}, wrap(op, spec.Name, err)
	}
	defer src.cleanup()

	d.log.Info("seeding template", "template", spec.Name, "sr", sr.NameLabel, "bytes", src.size)
	var vdiRef string
	err = d.c.call(ctx, "VDI.create", &vdiRef, map[string]any{
		"name_label": spec.Name, "name_description": "sysvm system VM template disk", "SR": srRef,
		"virtual_size": src.virtual, "type": "user", "sharable": false, "read_only": false,
		"other_config": map[string]string{otherConfigTemplate: spec.Name}, "sm_config": map[string]string{},
		"xenstore_data": map[string]string{}, "tags": []string{},
	})
	if err != nil {
		return hypervisors.Template{}, wrap(op, spec.Name, err)
	}
	var tplRef string
	undo := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if tplRef != "" {
			if err := d.c.call(cctx, "VM.destroy", nil, tplRef); err != nil {
				d.log.Error("cleaning up a half-made template failed", "template", spec.Name, "err", err)
			}
		}
		if err := d.c.call(cctx, "VDI.destroy", nil, vdiRef); err != nil {
			d.log.Error("cleaning up a half-imported VDI failed", "template", spec.Name, "err", err)
		}
	}
	if src.path != "" {
		err := d.c.put(ctx, "/import_raw_vdi", url.Values{"vdi": {vdiRef}, "format": {"vhd"}}, src.size,
			func() (io.ReadCloser, error) {
				f, err := os.Open(src.path)
				if err != nil {
					return nil, err
				}
				return struct {
					io.Reader
					io.Closer
				}{hypervisors.NewProgressReader(ctx, f, 0, src.size, progress), f}, nil
			})
		if err != nil {
			undo()
			return hypervisors.Template{}, wrap(op, spec.Name, err)
		}
	}
	progress(src.size, src.size)
	if tplRef, err = d.makeTemplateVM(ctx, spec.Name, vdiRef); err != nil {
		undo()
		return hypervisors.Template{}, wrap(op, spec.Name, err)
	}
	var vdi vdiRecord
	if err := d.c.call(ctx, "VDI.get_record", &vdi, vdiRef); err != nil {
		return hypervisors.Template{}, wrap(op, spec.Name, err)
	}
	return hypervisors.Template{Name: spec.Name, Pool: sr.NameLabel, SizeBytes: int64(vdi.VirtualSize), Ref: vdi.UUID}, nil
}

// makeTemplateVM clones the stock base template and gives it the disk as its boot device.
// The clone of a template is a template, which is what we want.
func (d *driver) makeTemplateVM(ctx context.Context, name, vdiRef string) (string, error) {
	var refs []string
	if err := d.c.call(ctx, "VM.get_by_name_label", &refs, BaseTemplate); err != nil {
		return "", err
	}
	base := ""
	for _, ref := range refs {
		var r vmRecord
		if err := d.c.call(ctx, "VM.get_record", &r, ref); err != nil {
			return "", err
		}
		if r.IsATemplate {
			base = ref
			break
		}
	}
	if base == "" {
		return "", hypervisors.Errorf(hypervisors.ErrNotFound, "find base template", BaseTemplate, "the pool has no %q template", BaseTemplate)
	}
	var ref string
	if err := d.c.call(ctx, "VM.clone", &ref, base, name); err != nil {
		return "", err
	}
	err := func() error {
		var vbd string
		if err := d.c.call(ctx, "VBD.create", &vbd, map[string]any{
			"VM": ref, "VDI": vdiRef, "userdevice": "0", "bootable": true, "mode": "RW", "type": "Disk",
			"empty": false, "other_config": map[string]string{"owner": "true"}, "qos_algorithm_type": "",
			"qos_algorithm_params": map[string]string{}, "unpluggable": false,
		}); err != nil {
			return err
		}
		for _, c := range []struct {
			method string
			args   []any
		}{
			{"VM.set_name_description", []any{"sysvm system VM template"}},
			{"VM.set_HVM_boot_params", []any{map[string]string{"order": "c"}}},
			{"VM.remove_from_other_config", []any{"install-methods"}},
			{"VM.add_to_other_config", []any{otherConfigTemplate, name}},
		} {
			if err := d.c.call(ctx, c.method, nil, append([]any{ref}, c.args...)...); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = d.c.call(cctx, "VM.destroy", nil, ref)
		return "", err
	}
	return ref, nil
}

// source is a verified template image on local disk.
type source struct {
	path    string // empty for an empty disk
	size    int64  // bytes to upload
	virtual int64  // the disk's virtual size
	cleanup func()
}

// fetch makes the template image local and verifies its checksum (hypervisors.FetchTemplate),
// then reads its VHD footer. The fetch reports no progress: progress follows the upload.
func (d *driver) fetch(ctx context.Context, spec hypervisors.TemplateSpec) (*source, error) {
	if spec.URL == "" {
		if spec.Checksum != "" {
			return nil, hypervisors.Errorf(hypervisors.ErrInvalid, "fetch template", spec.Name, "a checksum was given but no URL")
		}
		if spec.SizeBytes <= 0 {
			return nil, hypervisors.Errorf(hypervisors.ErrInvalid, "fetch template", spec.Name, "an empty template needs SizeBytes > 0")
		}
		return &source{virtual: spec.SizeBytes, cleanup: func() {}}, nil
	}
	sum, err := hypervisors.ParseChecksum(spec.Checksum)
	if err != nil {
		return nil, hypervisors.Wrap(hypervisors.ErrInvalid, "fetch template", spec.Name, err)
	}
	path, size, cleanup, err := hypervisors.FetchTemplate(ctx, spec.URL, sum, nil)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", spec.Name, err)
	}
	src := &source{path: path, size: size, cleanup: cleanup}
	if src.virtual, err = vhdVirtualSize(src.path); err != nil {
		src.cleanup()
		return nil, hypervisors.Wrap(hypervisors.ErrInvalid, "fetch template", spec.Name, err)
	}
	return src, nil
}

// vhdVirtualSize reads the VHD footer (the file's last 512 bytes) and returns the disk's
// size, checking the footer's cookie and checksum.
func vhdVirtualSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Size() < 512 {
		return 0, fmt.Errorf("%s is %d bytes: too short for a VHD", path, st.Size())
	}
	foot := make([]byte, 512)
	if _, err := f.ReadAt(foot, st.Size()-512); err != nil {
		return 0, err
	}
	if !bytes.Equal(foot[:8], []byte("conectix")) {
		return 0, fmt.Errorf("%s is not a VHD (no footer cookie)", path)
	}
	var sum uint32
	for i, b := range foot {
		if i < 64 || i >= 68 {
			sum += uint32(b)
		}
	}
	if ^sum != binary.BigEndian.Uint32(foot[64:68]) {
		return 0, fmt.Errorf("%s: VHD footer checksum mismatch", path)
	}
	return int64(binary.BigEndian.Uint64(foot[48:56])), nil
}
