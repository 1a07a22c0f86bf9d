package kvm

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	libvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/sysvm/sysvm/hypervisors"
)

// SeedTemplate makes spec.Name present as a volume of spec.Pool on the storage connection.
// A volume of that name already there is returned as is. Otherwise the URL is fetched to a
// temporary file while being hashed, the checksum is verified (a mismatch is ErrInvalid and
// creates nothing), and only then is the volume created and the bytes uploaded. An empty URL
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
	algo, want, err := parseChecksum(spec.Checksum)
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

	tmp, size, err := fetch(ctx, spec.URL, algo, want, progress)
	if err != nil {
		return hypervisors.Template{}, hypervisors.Wrap(kindOf(err), op, spec.Name, err)
	}
	defer func() { _ = os.Remove(tmp) }()

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
	r := &progressReader{ctx: ctx, r: f, base: size, total: 2 * size, progress: progress}
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

// parseChecksum splits "<algo>:<hex>", "{algo}hex" or bare hex (md5) into a hash and the digest.
// An empty checksum gives a nil hash (nothing to verify).
func parseChecksum(s string) (func() hash.Hash, []byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil, nil
	}
	algo, hexDigest := "md5", s
	if i := strings.IndexByte(s, ':'); i >= 0 {
		algo, hexDigest = s[:i], s[i+1:]
	} else if strings.HasPrefix(s, "{") {
		if j := strings.IndexByte(s, '}'); j > 0 {
			algo, hexDigest = s[1:j], s[j+1:]
		}
	}
	var h func() hash.Hash
	var size int
	switch strings.ToLower(strings.ReplaceAll(algo, "-", "")) {
	case "md5":
		h, size = md5.New, md5.Size
	case "sha1":
		h, size = sha1.New, sha1.Size
	case "sha256":
		h, size = sha256.New, sha256.Size
	case "sha512":
		h, size = sha512.New, sha512.Size
	default:
		return nil, nil, fmt.Errorf("checksum algorithm %q is not supported (md5, sha1, sha256, sha512)", algo)
	}
	want, err := hex.DecodeString(strings.ToLower(hexDigest))
	if err != nil || len(want) != size {
		return nil, nil, fmt.Errorf("checksum %q is not a %s digest", s, algo)
	}
	return h, want, nil
}

// fetchError carries the contract kind of a failed fetch.
type fetchError struct {
	kind error
	err  error
}

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

func kindOf(err error) error {
	var fe *fetchError
	if errors.As(err, &fe) {
		return fe.kind
	}
	return hypervisors.ErrUnreachable
}

// fetch copies a file:// or http(s):// URL to a temporary file, hashing it on the way, and
// verifies the digest. It returns the file's path (the caller removes it) and its size.
func fetch(ctx context.Context, rawURL string, algo func() hash.Hash, want []byte, progress hypervisors.ProgressFunc) (string, int64, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", 0, &fetchError{hypervisors.ErrInvalid, fmt.Errorf("template URL: %w", err)}
	}
	var body io.ReadCloser
	var total int64
	switch strings.ToLower(u.Scheme) {
	case "file":
		f, err := os.Open(u.Path)
		if errors.Is(err, os.ErrNotExist) {
			return "", 0, &fetchError{hypervisors.ErrNotFound, fmt.Errorf("template file: %w", err)}
		}
		if err != nil {
			return "", 0, &fetchError{hypervisors.ErrInvalid, fmt.Errorf("template file: %w", err)}
		}
		if st, err := f.Stat(); err == nil {
			total = st.Size()
		}
		body = f
	case "http", "https":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
		if err != nil {
			return "", 0, &fetchError{hypervisors.ErrInvalid, fmt.Errorf("template URL: %w", err)}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", 0, &fetchError{hypervisors.ErrUnreachable, fmt.Errorf("download template: %w", err)}
		}
		switch {
		case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
			_ = resp.Body.Close()
			return "", 0, &fetchError{hypervisors.ErrNotFound, fmt.Errorf("download template: %s", resp.Status)}
		case resp.StatusCode >= 500:
			_ = resp.Body.Close()
			return "", 0, &fetchError{hypervisors.ErrUnreachable, fmt.Errorf("download template: %s", resp.Status)}
		case resp.StatusCode != http.StatusOK:
			_ = resp.Body.Close()
			return "", 0, &fetchError{hypervisors.ErrInvalid, fmt.Errorf("download template: %s", resp.Status)}
		}
		if resp.ContentLength > 0 {
			total = resp.ContentLength
		}
		body = resp.Body
	default:
		return "", 0, &fetchError{hypervisors.ErrInvalid, fmt.Errorf("template URL scheme %q is not supported (file, http, https)", u.Scheme)}
	}
	defer func() { _ = body.Close() }()

	tmp, err := os.CreateTemp("", "sysvm-template-*")
	if err != nil {
		return "", 0, &fetchError{hypervisors.ErrUnreachable, fmt.Errorf("temporary file: %w", err)}
	}
	ok := false
	defer func() {
		_ = tmp.Close()
		if !ok {
			_ = os.Remove(tmp.Name())
		}
	}()
	var h hash.Hash
	w := io.Writer(tmp)
	if algo != nil {
		h = algo()
		w = io.MultiWriter(tmp, h)
	}
	r := &progressReader{ctx: ctx, r: body, total: 2 * total, progress: progress}
	n, err := io.Copy(w, r)
	if err != nil {
		return "", 0, &fetchError{hypervisors.ErrUnreachable, fmt.Errorf("fetch template: %w", err)}
	}
	if total > 0 && n != total {
		return "", 0, &fetchError{hypervisors.ErrUnreachable, fmt.Errorf("fetch template: got %d of %d bytes", n, total)}
	}
	if h != nil {
		if got := h.Sum(nil); !bytes.Equal(got, want) {
			return "", 0, &fetchError{hypervisors.ErrInvalid, fmt.Errorf("checksum mismatch: got %x, want %x", got, want)}
		}
	}
	if err := tmp.Close(); err != nil {
		return "", 0, &fetchError{hypervisors.ErrUnreachable, fmt.Errorf("write template: %w", err)}
	}
	ok = true
	return tmp.Name(), n, nil
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

// progressReader reports bytes read (offset by base) and stops when ctx ends.
type progressReader struct {
	ctx         context.Context
	r           io.Reader
	base, total int64
	done        int64
	progress    hypervisors.ProgressFunc
}

func (p *progressReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	if n > 0 {
		p.done += int64(n)
		p.progress(p.base+p.done, p.total)
	}
	return n, err
}
