package vmware

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"

	"github.com/sysvm/sysvm/hypervisors"
)

const (
	simUser = "sysvm"
	simPass = "s3cret-Pa55"
)

// sim is an in-process vcsim (VPX model) serving HTTPS on loopback.
type sim struct {
	model *simulator.Model
	srv   *simulator.Server
	conn  hypervisors.Connection
}

// startSim starts a vCenter simulator with the given shape; no VMs, no standalone hosts.
func startSim(t *testing.T, dcs, clusters, hostsPerCluster int) *sim {
	t.Helper()
	m := simulator.VPX()
	m.Datacenter = dcs
	m.Cluster = clusters
	m.ClusterHost = hostsPerCluster
	m.Host = 0
	m.Machine = 0
	m.Autostart = false
	m.Datastore = 1
	m.Portgroup = 1
	if err := m.Create(); err != nil {
		t.Fatalf("create vcsim model: %v", err)
	}
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(simUser, simPass)}
	m.Service.TLS = new(tls.Config)
	srv := m.Service.NewServer()
	t.Cleanup(func() {
		srv.Close()
		m.Remove()
	})
	u := *srv.URL
	u.User = nil
	return &sim{model: m, srv: srv, conn: hypervisors.Connection{
		Type: hypervisors.VMware, Endpoint: u.String(), Username: simUser, Password: simPass, Insecure: true,
	}}
}

func (s *sim) open(t *testing.T) *Driver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := Open(ctx, s.conn)
	if err != nil {
		t.Fatalf("connect to vcsim: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// ovfDescriptor is a small but complete OVF 1.x descriptor: one VM with 1 vCPU, 256 MB,
// an LSI Logic SCSI controller, one disk backed by the disk file in the archive and one
// vmxnet3 NIC (which CreateVM must replace by the spec's NICs).
const ovfDescriptor = `<?xml version="1.0" encoding="UTF-8"?>
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
    <Disk ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1"
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
        <rasd:ElementName>256MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>256</rasd:VirtualQuantity>
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
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>Management</rasd:Connection>
        <rasd:ElementName>ethernet0</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`

// writeOVA writes an OVA (a tar of the descriptor and a disk file of diskSize random bytes)
// into dir and returns its path and sha256.
func writeOVA(t *testing.T, dir string, diskSize int) (string, string) {
	t.Helper()
	disk := make([]byte, diskSize)
	if _, err := rand.Read(disk); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "systemvm.ova")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(f, h))
	add := func(name string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	add("systemvm.ovf", []byte(fmt.Sprintf(ovfDescriptor, diskSize)))
	add("systemvm-disk1.vmdk", disk)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, hex.EncodeToString(h.Sum(nil))
}
