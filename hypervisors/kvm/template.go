package kvm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	libvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/sysvm/sysvm/hypervisors"
)

// SeedTemplate makes spec.Name present as a volume of spec.Pool on the storage connection.
// A volume of that name already there is returned as is. Otherwise the image is fetched and
// its checksum verified by hypervisors.FetchTemplate (a mismatch is ErrInvalid and creates
// nothing), and only then is the volume created and the bytes uploaded. An empty URL
// makes an empty volume of spec.SizeBytes. progress receives bytes fetched plus bytes uploaded
// against a total of twice the image size (0 while the size is unknown).
func (d *Driver) SeedTemplate(ctx context.Context, spec hypervisors.TemplateSpec, progress hypervisors.ProgressFunc) (hypervisors.Template, error) {
	const op = "seed template"
	if spec.Name == "" || spec.Pool == "" {
		return hypervisors.Template{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name, "template needs a name and a pool")
	}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	format, err := volumeFormat(spec.Format, spec.URL)
	if err != nil {
		return hypervisors.Template{}, hypervisors.Wrap(hypervisors.ErrInvalid, op, spec.Name, err)
	}
	sum, err := hypervisors.ParseChecksum(spec.Checksum)
	if err != nil {
		return hypervisors.Template{}, hypervisors.Wrap(hypervisors.ErrInvalid, op, spec.Name, err)
	}

	unlock := d.locks.Lock("template\x00" + spec.Pool + "\x00" + spec.Name)
	defer unlock()

	l, err := d.storage.get(ctx)
	if err != nil {
		return hypervisors.Template{}, err
	}
	pool, err := l.StoragePoolLookupByName(spec.Pool)
	if err != nil {
		return hypervisors.Template{}, classify(op, spec.Name, fmt.Errorf("pool %s: %w", spec.Pool, err))
	}
	if vol, err := l.StorageVolLookupByName(pool, spec.Name); err == nil {
		return volumeTemplate(l, spec.Pool, vol)
	} else if !isCode(err, libvirt.ErrNoStorageVol) {
		return hypervisors.Template{}, classify(op, spec.Name, err)
	}

	if spec.URL == "" {
		if spec.SizeBytes <= 0 {
			return hypervisors.Template{}, hypervisors.Errorf(hypervisors.ErrInvalid, op, spec.Name, "a template without URL needs SizeBytes")
		}
		vol, err := createVolume(l, pool, spec.Name, format, uint64(spec.SizeBytes))
		if err != nil {
			return hypervisors.Template{}, classify(op, spec.Name, err)
		}
		progress(spec.SizeBytes, spec.SizeBytes)
		d.log.Info("empty template volume created", "template", spec.Name, "pool", spec.Pool, "bytes", spec.SizeBytes)
		return volumeTemplate(l, spec.Pool, vol)
	}

	// Fetching is the first half of the progress, uploading the second.
	tmp, size, cleanup, err := hypervisors.FetchTemplate(ctx, spec.URL, sum, func(done, total int64) { progress(done, 2*total) })
	if err != nil {
		return hypervisors.Template{}, fmt.Errorf("%s %s: %w", op, spec.Name, err)
	}
	defer cleanup()

	capacity := uint64(size)
	if format == "qcow2" {
		vs, err := qcow2VirtualSize(tmp)
		if err != nil {
			return hypervisors.Template{}, hypervisors.Wrap(hypervisors.ErrInvalid, op, spec.Name, err)
		}
		capacity = vs
	}
	if spec.SizeBytes > 0 && uint64(spec.SizeBytes) > capacity {
		capacity = uint64(spec.SizeBytes)
	}
	// The bytes go to "<name>.part" first and reach the template's own name only complete: a
	// seed interrupted mid-upload never leaves a volume that later seeds would take as done.
	partName := spec.Name + partSuffix
	if old, err := l.StorageVolLookupByName(pool, partName); err == nil {
		d.log.Warn("removing the leftover of an interrupted template seed", "volume", partName)
		if err := l.StorageVolDelete(old, libvirt.StorageVolDeleteNormal); err != nil && !isCode(err, libvirt.ErrNoStorageVol) {
			return hypervisors.Template{}, classify(op, spec.Name, fmt.Errorf("remove %s: %w", partName, err))
		}
	}
	part, err := createVolume(l, pool, partName, format, capacity)
	if err != nil {
		return hypervisors.Template{}, classify(op, spec.Name, err)
	}
	defer d.dropVolume(l, part)
	if err := d.upload(ctx, l, part, tmp, size, progress); err != nil {
		return hypervisors.Template{}, classify(op, spec.Name, err)
	}
	vol, err := cloneVolume(l, pool, part, spec.Name, format, capacity)
	if err != nil {
		return hypervisors.Template{}, classify(op, spec.Name, err)
	}
	progress(2*size, 2*size)
	d.log.Info("template seeded", "template", spec.Name, "pool", spec.Pool, "bytes", size, "format", format)
	return volumeTemplate(l, spec.Pool, vol)
}

// partSuffix names the volume a template is uploaded to before it is complete.
const partSuffix = ".part"

// cloneVolume copies a volume to a new one of the given name, format and capacity.
func cloneVolume(l *libvirt.Libvirt, pool libvirt.StoragePool, from libvirt.StorageVol, name, format string, capacity uint64) (libvirt.StorageVol, error) {
	v := libvirtxml.StorageVolume{
		Name:     name,
		Capacity: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: capacity},
		Target:   &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: format}},
	}
	doc, err := v.Marshal()
	if err != nil {
		return libvirt.StorageVol{}, fmt.Errorf("marshal volume %s: %w", name, err)
	}
	vol, err := l.StorageVolCreateXMLFrom(pool, doc, from, 0)
	if err != nil {
		return libvirt.StorageVol{}, fmt.Errorf("copy %s to %s: %w", from.Name, name, err)
	}
	return vol, nil
}

// upload streams the verified file into the volume. libvirt's test driver stores volumes
// without data and refuses uploads: there the volume is kept empty (and logged); on any other
// driver a refused upload is an error.
func (d *Driver) upload(ctx context.Context, l *libvirt.Libvirt, vol libvirt.StorageVol, path string, size int64, progress hypervisors.ProgressFunc) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open fetched template: %w", err)
	}
	defer func() { _ = f.Close() }()
	r := hypervisors.NewProgressReader(ctx, f, size, 2*size, progress)
	err = l.StorageVolUpload(vol, r, 0, uint64(size), 0)
	if err != nil && (isCode(err, libvirt.ErrNoSupport) || errors.Is(err, libvirt.ErrUnsupported)) && d.storage.testDriver() {
		d.log.Warn("libvirt's test driver keeps no volume data; template volume left without its bytes", "volume", vol.Name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("upload to volume %s: %w", vol.Name, err)
	}
	return nil
}

// createVolume creates a volume from a libvirtxml StorageVolume.
func createVolume(l *libvirt.Libvirt, pool libvirt.StoragePool, name, format string, capacity uint64) (libvirt.StorageVol, error) {
	v := libvirtxml.StorageVolume{
		Name:       name,
		Capacity:   &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: capacity},
		Allocation: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: 0},
		Target:     &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: format}},
	}
	doc, err := v.Marshal()
	if err != nil {
		return libvirt.StorageVol{}, fmt.Errorf("marshal volume %s: %w", name, err)
	}
	vol, err := l.StorageVolCreateXML(pool, doc, 0)
	if err != nil {
		return libvirt.StorageVol{}, fmt.Errorf("create volume %s: %w", name, err)
	}
	return vol, nil
}

// volumeTemplate describes a template volume.
func volumeTemplate(l *libvirt.Libvirt, pool string, vol libvirt.StorageVol) (hypervisors.Template, error) {
	_, capacity, _, err := l.StorageVolGetInfo(vol)
	if err != nil {
		return hypervisors.Template{}, classify("template info", vol.Name, err)
	}
	path, err := l.StorageVolGetPath(vol)
	if err != nil {
		return hypervisors.Template{}, classify("template info", vol.Name, err)
	}
	return hypervisors.Template{Name: vol.Name, Pool: pool, SizeBytes: int64(capacity), Ref: path}, nil
}

// volumeFormat maps a CloudStack format name to libvirt's volume format; an empty one is taken
// from the URL's extension (QCOW2 when it says nothing).
func volumeFormat(format, rawURL string) (string, error) {
	f := strings.ToUpper(strings.TrimSpace(format))
	if f == "" {
		u := strings.ToLower(rawURL)
		switch {
		case strings.HasSuffix(u, ".raw"), strings.HasSuffix(u, ".img"):
			f = "RAW"
		default:
			f = "QCOW2"
		}
	}
	switch f {
	case "QCOW2":
		return "qcow2", nil
	case "RAW":
		return "raw", nil
	}
	return "", fmt.Errorf("format %q is not one KVM takes (QCOW2, RAW)", format)
}

// qcow2VirtualSize reads the virtual disk size from a qcow2 header; a file that is not qcow2
// is an error.
func qcow2VirtualSize(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open template: %w", err)
	}
	defer func() { _ = f.Close() }()
	var hdr [32]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return 0, fmt.Errorf("template is not a qcow2 image: %w", err)
	}
	if string(hdr[0:4]) != "QFI\xfb" {
		return 0, errors.New("template is not a qcow2 image (bad magic)")
	}
	return binary.BigEndian.Uint64(hdr[24:32]), nil
}
