package devcloud

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sysvm/sysvm/models"
)

// TemplateImage is one small, real system VM template image built for the dev cloud and the
// tests, named as the CloudStack guide names them (systemvmtemplate-4.15.0-kvm.qcow2.bz2, ...).
type TemplateImage struct {
	// Hypervisor is KVM, VMware, XenServer or Hyperv; Format is what registerTemplate takes.
	Hypervisor string `json:"hypervisor"`
	Format     string `json:"format"`
	File       string `json:"file"`
	Path       string `json:"path"`
	Size       int64  `json:"size"`
	// SHA256 is the digest of the file as served (compressed when it is).
	SHA256 string `json:"sha256"`
	// ImageSize is the size of the image once decompressed.
	ImageSize int64 `json:"imageSize"`
}

// BuildTemplateImages writes one image per hypervisor into dir, each holding dataBytes of random
// data (so it neither compresses away nor is sparse): a qcow2 (qemu-img) compressed with the
// bzip2 CLI, a VHD (qemu-img's vpc) compressed with bzip2, an OVA (a tar of an OVF descriptor
// and a streamOptimized VMDK made by qemu-img) and a VHD in a zip. It needs qemu-img
// (Debian's qemu-utils), bzip2 and zip.
func BuildTemplateImages(ctx context.Context, dir, version string, dataBytes int64) ([]TemplateImage, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, tool := range []string{"qemu-img", "bzip2", "zip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is needed to build template images (apt-get install qemu-utils bzip2 zip): %w", tool, err)
		}
	}
	work, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(work) }()
	raw := filepath.Join(work, "disk.raw")
	if err := writeRandom(raw, dataBytes); err != nil {
		return nil, err
	}
	run := func(name string, args ...string) error {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	base := "systemvmtemplate-" + version
	var out []TemplateImage
	add := func(hv, format, file string, imageSize int64) error {
		p := filepath.Join(dir, file)
		sum, size, err := sha256File(p)
		if err != nil {
			return err
		}
		out = append(out, TemplateImage{Hypervisor: hv, Format: format, File: file, Path: p, Size: size, SHA256: sum, ImageSize: imageSize})
		return nil
	}
	// KVM: qcow2, bzip2.
	qcow := filepath.Join(dir, base+"-kvm.qcow2")
	if err := run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow); err != nil {
		return nil, err
	}
	qsize := fileSize(qcow)
	if err := run("bzip2", "-f", "-1", qcow); err != nil {
		return nil, err
	}
	if err := add("KVM", "QCOW2", base+"-kvm.qcow2.bz2", qsize); err != nil {
		return nil, err
	}
	// XenServer: VHD, bzip2.
	vhd := filepath.Join(dir, base+"-xen.vhd")
	if err := run("qemu-img", "convert", "-f", "raw", "-O", "vpc", raw, vhd); err != nil {
		return nil, err
	}
	vsize := fileSize(vhd)
	if err := run("bzip2", "-f", "-1", vhd); err != nil {
		return nil, err
	}
	if err := add("XenServer", "VHD", base+"-xen.vhd.bz2", vsize); err != nil {
		return nil, err
	}
	// VMware: OVA = tar(OVF, streamOptimized VMDK).
	vmdk := filepath.Join(work, "systemvm-disk1.vmdk")
	if err := run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, vmdk); err != nil {
		return nil, err
	}
	ova := filepath.Join(dir, base+"-vmware.ova")
	if err := WriteOVA(ova, vmdk, dataBytes); err != nil {
		return nil, err
	}
	if err := add("VMware", "OVA", base+"-vmware.ova", fileSize(ova)); err != nil {
		return nil, err
	}
	// Hyper-V: VHD in a zip.
	hvhd := filepath.Join(work, base+"-hyperv.vhd")
	if err := run("qemu-img", "convert", "-f", "raw", "-O", "vpc", raw, hvhd); err != nil {
		return nil, err
	}
	zipPath := filepath.Join(dir, base+"-hyperv.vhd.zip")
	_ = os.Remove(zipPath)
	cmd := exec.CommandContext(ctx, "zip", "-q", "-j", "-1", zipPath, hvhd)
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("zip: %w: %s", err, b)
	}
	if err := add("Hyperv", "VHD", base+"-hyperv.vhd.zip", fileSize(hvhd)); err != nil {
		return nil, err
	}
	return out, nil
}

func writeRandom(p string, n int64) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

func sha256File(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// WriteOVA tars an OVF descriptor and the VMDK (capacity bytes of disk) into an OVA.
func WriteOVA(ova, vmdk string, capacity int64) error {
	f, err := os.Create(ova)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	tw := tar.NewWriter(f)
	st, err := os.Stat(vmdk)
	if err != nil {
		return err
	}
	desc := []byte(fmt.Sprintf(ovfTemplate, st.Size(), capacity))
	if err := tw.WriteHeader(&tar.Header{Name: "systemvm.ovf", Mode: 0o644, Size: int64(len(desc)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(desc); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "systemvm-disk1.vmdk", Mode: 0o644, Size: st.Size(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	in, err := os.Open(vmdk)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	if _, err := io.Copy(tw, in); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

const ovfTemplate = `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:href="systemvm-disk1.vmdk" ovf:id="file1" ovf:size="%d"/>
  </References>
  <DiskSection>
    <Info>Virtual disks</Info>
    <Disk ovf:capacity="%d" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1"
        ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>Networks</Info>
    <Network ovf:name="Management"><Description>management</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="systemvm">
    <Info>A system VM</Info>
    <Name>systemvm</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian11_64Guest"><Info>OS</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>systemvm</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>1 virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>512MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>512</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>disk0</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`

// TemplateFault makes the template server misbehave for one file.
type TemplateFault struct {
	// Delay is slept before every 32 KiB written (a slow server).
	Delay time.Duration
	// CutAfter breaks the connection once this many bytes of a response went out (0: never).
	CutAfter int64
	// CutOnce cuts only the first response of the file.
	CutOnce bool
	// Corrupt flips the first byte of every response (wrong bytes).
	Corrupt bool
}

// TemplateRequest is one request the template server answered.
type TemplateRequest struct {
	Path   string
	Range  string
	Status int
	// Served is the body bytes sent.
	Served int64
}

// TemplateServer serves a directory of template images on loopback, plain or TLS, with Range
// and If-Range support (http.ServeContent, ETag from the file's size and time) and faults. It
// records every request and the bytes it served.
type TemplateServer struct {
	// URL is the server's base URL (http://127.0.0.1:port or https://...).
	URL string
	// Client trusts the server's certificate (for TLS).
	Client *http.Client
	srv    *httptest.Server
	dir    string

	mu       sync.Mutex
	faults   map[string]TemplateFault
	cut      map[string]bool
	requests []TemplateRequest
	onServe  func(path string, served int64)
}

// StartTemplateServer serves dir on 127.0.0.1; tls serves HTTPS with a self-signed certificate.
func StartTemplateServer(dir string, tls bool) *TemplateServer {
	s := &TemplateServer{dir: dir, faults: map[string]TemplateFault{}, cut: map[string]bool{}}
	h := http.HandlerFunc(s.serve)
	if tls {
		s.srv = httptest.NewTLSServer(h)
	} else {
		s.srv = httptest.NewServer(h)
	}
	s.URL, s.Client = s.srv.URL, s.srv.Client()
	return s
}

// Close stops the server.
func (s *TemplateServer) Close() { s.srv.Close() }

// SetFault sets (or with the zero value clears) the fault of one file (its URL path, "/x.ova").
func (s *TemplateServer) SetFault(p string, f TemplateFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[p] = f
	delete(s.cut, p)
}

// OnServe calls f after every chunk written, with the bytes of this response so far.
func (s *TemplateServer) OnServe(f func(path string, served int64)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onServe = f
}

// Requests lists the requests answered so far.
func (s *TemplateServer) Requests() []TemplateRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TemplateRequest(nil), s.requests...)
}

func (s *TemplateServer) serve(w http.ResponseWriter, r *http.Request) {
	p := path.Clean("/" + r.URL.Path)
	f, err := os.Open(filepath.Join(s.dir, filepath.FromSlash(p)))
	if err != nil {
		http.NotFound(w, r)
		s.record(TemplateRequest{Path: p, Range: r.Header.Get("Range"), Status: 404})
		return
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		http.NotFound(w, r)
		s.record(TemplateRequest{Path: p, Range: r.Header.Get("Range"), Status: 404})
		return
	}
	s.mu.Lock()
	fault := s.faults[p]
	cut := fault.CutAfter > 0 && !(fault.CutOnce && s.cut[p])
	if cut {
		s.cut[p] = true
	}
	onServe := s.onServe
	s.mu.Unlock()
	cw := &countingWriter{ResponseWriter: w, fault: fault, cut: cut, path: p, onServe: onServe}
	w.Header().Set("ETag", `"`+strconv.FormatInt(st.Size(), 16)+"-"+strconv.FormatInt(st.ModTime().UnixNano(), 16)+`"`)
	defer func() {
		s.record(TemplateRequest{Path: p, Range: r.Header.Get("Range"), Status: cw.status, Served: cw.n})
		if v := recover(); v != nil {
			panic(v)
		}
	}()
	http.ServeContent(cw, r, st.Name(), st.ModTime(), f)
}

func (s *TemplateServer) record(r TemplateRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
}

// countingWriter counts body bytes and applies a fault.
type countingWriter struct {
	http.ResponseWriter
	fault   TemplateFault
	cut     bool
	path    string
	n       int64
	status  int
	onServe func(string, int64)
}

func (c *countingWriter) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.fault.Delay > 0 {
		time.Sleep(c.fault.Delay)
	}
	if c.fault.Corrupt && c.n == 0 && len(b) > 0 {
		b = append([]byte{b[0] ^ 0xff}, b[1:]...)
	}
	if c.cut && c.n+int64(len(b)) > c.fault.CutAfter {
		keep := c.fault.CutAfter - c.n
		if keep > 0 {
			n, _ := c.ResponseWriter.Write(b[:keep])
			c.n += int64(n)
		}
		if fl, ok := c.ResponseWriter.(http.Flusher); ok {
			fl.Flush()
		}
		panic(http.ErrAbortHandler) // the connection is closed mid-body
	}
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	if c.onServe != nil {
		c.onServe(c.path, c.n)
	}
	return n, err
}

// DevTemplates is `sysvm dev`'s local template server: it builds the guide's four images (16
// MiB of data each, once, kept in dataDir/templates), serves them on 127.0.0.1, and points each
// zone's secondary store that is not a local directory (the demo's nfs:// stores) at
// dataDir/secondary/<zone>, so a rollout's download lands on this machine. Without qemu-img it
// returns the reason and no server.
func DevTemplates(ctx context.Context, store *models.Store, dataDir string) (*TemplateServer, []TemplateImage, error) {
	dir := filepath.Join(dataDir, "templates")
	imgs, err := readImages(dir)
	if err != nil {
		if imgs, err = BuildTemplateImages(ctx, dir, "4.16.0", 16<<20); err != nil {
			return nil, nil, err
		}
		if err := writeImages(dir, imgs); err != nil {
			return nil, nil, err
		}
	}
	var stores []models.SecondaryStore
	if err := store.DB.WithContext(ctx).Find(&stores).Error; err != nil {
		return nil, nil, err
	}
	for _, st := range stores {
		if strings.HasPrefix(st.URL, "file://") || strings.HasPrefix(st.URL, "/") {
			continue
		}
		local := filepath.Join(dataDir, "secondary", st.ZoneID)
		if err := os.MkdirAll(local, 0o755); err != nil {
			return nil, nil, err
		}
		if err := store.DB.WithContext(ctx).Model(&models.SecondaryStore{}).Where("id = ?", st.ID).
			Updates(map[string]any{"url": "file://" + local, "protocol": "file"}).Error; err != nil {
			return nil, nil, err
		}
	}
	return StartTemplateServer(dir, false), imgs, nil
}

const imagesIndex = "images.json"

func readImages(dir string) ([]TemplateImage, error) {
	b, err := os.ReadFile(filepath.Join(dir, imagesIndex))
	if err != nil {
		return nil, err
	}
	var imgs []TemplateImage
	if err := json.Unmarshal(b, &imgs); err != nil {
		return nil, err
	}
	for _, im := range imgs {
		if _, err := os.Stat(im.Path); err != nil {
			return nil, err
		}
	}
	return imgs, nil
}

func writeImages(dir string, imgs []TemplateImage) error {
	b, err := json.MarshalIndent(imgs, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, imagesIndex), b, 0o644)
}
