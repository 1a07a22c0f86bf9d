package kvm

import (
	"encoding/xml"
	"fmt"
	"sort"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/sysvm/sysvm/hypervisors"
)

// MetadataNamespace is the XML namespace of sysvm's element in a domain's <metadata>.
const MetadataNamespace = "https://github.com/sysvm/sysvm/xmlns/libvirt/1"

// Default bridges when a NIC names no network: CloudStack's link-local bridge for the control
// NIC and its default traffic label for the others.
const (
	DefaultControlBridge = "cloud0"
	DefaultBridge        = "cloudbr0"
)

// guestAgentChannel is the virtio-serial channel of the QEMU guest agent, the path through which
// a CloudStack KVM host delivers the cmdline into a system VM.
const guestAgentChannel = "org.qemu.guest_agent.0"

// Metadata is sysvm's element in a domain's <metadata>: what CreateVM was asked for that the
// domain XML itself cannot carry.
type Metadata struct {
	XMLName xml.Name `xml:"https://github.com/sysvm/sysvm/xmlns/libvirt/1 instance"`
	// Template is the template volume the root disk was cloned from.
	Template string `xml:"template,omitempty"`
	// Pool is the storage pool holding the root disk.
	Pool string `xml:"pool,omitempty"`
	// RootVolume is the path of the root disk's volume, removed with the VM.
	RootVolume string `xml:"rootVolume,omitempty"`
	// Cmdline is hypervisors.BootArgsString(args), for people reading the XML.
	Cmdline string `xml:"cmdline"`
	// Args are the boot arguments, one element each, so values survive exactly.
	Args []MetadataArg `xml:"arg"`
	// NICs carry each NIC's role and addresses, keyed by MAC.
	NICs []MetadataNIC `xml:"nic"`
}

// MetadataArg is one boot argument.
type MetadataArg struct {
	Key   string `xml:"key,attr"`
	Value string `xml:",chardata"`
}

// MetadataNIC is what sysvm knows of one NIC beyond its MAC and bridge.
type MetadataNIC struct {
	MAC     string `xml:"mac,attr"`
	Kind    string `xml:"kind,attr"`
	IP      string `xml:"ip,attr,omitempty"`
	Netmask string `xml:"netmask,attr,omitempty"`
	Gateway string `xml:"gateway,attr,omitempty"`
}

// BootArgs returns the arguments as a map (nil when there are none).
func (m Metadata) BootArgs() map[string]string {
	if len(m.Args) == 0 {
		return nil
	}
	out := make(map[string]string, len(m.Args))
	for _, a := range m.Args {
		out[a.Key] = a.Value
	}
	return out
}

// encode renders the element in its namespace, as libvirt then stores it.
func (m Metadata) encode() (string, error) {
	b, err := xml.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("marshal sysvm metadata: %w", err)
	}
	return string(b), nil
}

// decodeMetadata finds sysvm's element in a domain's metadata; ok is false when it has none.
func decodeMetadata(md *libvirtxml.DomainMetadata) (Metadata, bool, error) {
	if md == nil || strings.TrimSpace(md.XML) == "" {
		return Metadata{}, false, nil
	}
	dec := xml.NewDecoder(strings.NewReader(md.XML))
	for {
		tok, err := dec.Token()
		if err != nil {
			// io.EOF: no sysvm element among the metadata children.
			return Metadata{}, false, nil
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Space != MetadataNamespace || se.Name.Local != "instance" {
			if ok {
				if err := dec.Skip(); err != nil {
					return Metadata{}, false, fmt.Errorf("read domain metadata: %w", err)
				}
			}
			continue
		}
		var m Metadata
		if err := dec.DecodeElement(&m, &se); err != nil {
			return Metadata{}, false, fmt.Errorf("decode sysvm metadata: %w", err)
		}
		return m, true, nil
	}
}

// domainParams is what buildDomain needs beyond the spec.
type domainParams struct {
	// Type is the domain type: "test", "kvm" or "qemu"; Arch the guest arch for kvm/qemu.
	Type, Arch string
	// RootPath is the root volume's path; RootFormat its format ("qcow2" or "raw").
	RootPath, RootFormat string
}

// buildDomain renders the domain of a system VM from the spec, as typed libvirtxml structs.
func buildDomain(spec hypervisors.VMSpec, p domainParams) (*libvirtxml.Domain, error) {
	args := make([]MetadataArg, 0, len(spec.BootArgs))
	for k, v := range spec.BootArgs {
		args = append(args, MetadataArg{Key: k, Value: v})
	}
	sort.Slice(args, func(i, j int) bool { return args[i].Key < args[j].Key })
	md := Metadata{
		Template: spec.Template, Pool: spec.Pool, RootVolume: p.RootPath,
		Cmdline: hypervisors.BootArgsString(spec.BootArgs), Args: args,
	}
	ifaces := make([]libvirtxml.DomainInterface, 0, len(spec.NICs))
	for i, n := range spec.NICs {
		if n.MAC == "" {
			return nil, fmt.Errorf("NIC %d (%s) has no MAC", i, n.Kind)
		}
		bridge := n.Network
		if bridge == "" {
			bridge = DefaultBridge
			if n.Kind == hypervisors.NICControl {
				bridge = DefaultControlBridge
			}
		}
		ifaces = append(ifaces, libvirtxml.DomainInterface{
			MAC:    &libvirtxml.DomainInterfaceMAC{Address: strings.ToLower(n.MAC)},
			Source: &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: bridge}},
			Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
		})
		md.NICs = append(md.NICs, MetadataNIC{
			MAC: strings.ToLower(n.MAC), Kind: string(n.Kind), IP: n.IP, Netmask: n.Netmask, Gateway: n.Gateway,
		})
	}
	mdXML, err := md.encode()
	if err != nil {
		return nil, err
	}
	port0 := uint(0)
	dom := &libvirtxml.Domain{
		Type:          p.Type,
		Name:          spec.Name,
		Description:   "CloudStack system VM managed by sysvm",
		Metadata:      &libvirtxml.DomainMetadata{XML: mdXML},
		Memory:        &libvirtxml.DomainMemory{Value: uint(spec.MemoryMB), Unit: "MiB"},
		CurrentMemory: &libvirtxml.DomainCurrentMemory{Value: uint(spec.MemoryMB), Unit: "MiB"},
		VCPU:          &libvirtxml.DomainVCPU{Placement: "static", Value: uint(spec.CPUs)},
		OS: &libvirtxml.DomainOS{
			Type:        &libvirtxml.DomainOSType{Type: "hvm", Arch: p.Arch},
			BootDevices: []libvirtxml.DomainBootDevice{{Dev: "hd"}},
		},
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}},
		Clock:      &libvirtxml.DomainClock{Offset: "utc"},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Disks: []libvirtxml.DomainDisk{{
				Device: "disk",
				Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: p.RootFormat},
				Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: p.RootPath}},
				Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"},
			}},
			Interfaces: ifaces,
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
				Target: &libvirtxml.DomainSerialTarget{Port: &port0},
			}},
			Consoles: []libvirtxml.DomainConsole{{
				Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
				Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: &port0},
			}},
			Channels: []libvirtxml.DomainChannel{{
				Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind"}},
				Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: guestAgentChannel}},
			}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "virtio"},
		},
	}
	if spec.CPUMHz > 0 {
		dom.CPUTune = &libvirtxml.DomainCPUTune{Shares: &libvirtxml.DomainCPUTuneShares{Value: uint(spec.CPUs * spec.CPUMHz)}}
	}
	return dom, nil
}

// vmFromDomain reads what the contract reports of a VM from its domain XML.
func vmFromDomain(dom *libvirtxml.Domain) (hypervisors.VMInfo, error) {
	vi := hypervisors.VMInfo{Name: dom.Name, UUID: dom.UUID, State: hypervisors.PowerUnknown}
	if dom.VCPU != nil {
		vi.CPUs = int(dom.VCPU.Value)
	}
	if dom.Memory != nil {
		mb, err := toMiB(uint64(dom.Memory.Value), dom.Memory.Unit)
		if err != nil {
			return vi, err
		}
		vi.MemoryMB = int(mb)
	}
	md, ok, err := decodeMetadata(dom.Metadata)
	if err != nil {
		return vi, err
	}
	byMAC := map[string]MetadataNIC{}
	if ok {
		vi.Template, vi.Pool, vi.BootArgs = md.Template, md.Pool, md.BootArgs()
		for _, n := range md.NICs {
			byMAC[strings.ToLower(n.MAC)] = n
		}
	}
	if dom.Devices != nil {
		for _, ifc := range dom.Devices.Interfaces {
			nic := hypervisors.NIC{}
			if ifc.MAC != nil {
				nic.MAC = strings.ToLower(ifc.MAC.Address)
			}
			if ifc.Source != nil {
				switch {
				case ifc.Source.Bridge != nil:
					nic.Network = ifc.Source.Bridge.Bridge
				case ifc.Source.Network != nil:
					nic.Network = ifc.Source.Network.Network
				}
			}
			if m, ok := byMAC[nic.MAC]; ok {
				nic.Kind = hypervisors.NICKind(m.Kind)
				nic.IP, nic.Netmask, nic.Gateway = m.IP, m.Netmask, m.Gateway
			}
			vi.NICs = append(vi.NICs, nic)
		}
	}
	return vi, nil
}

// toMiB converts a libvirt memory amount to MiB (libvirt's default unit is KiB).
func toMiB(v uint64, unit string) (uint64, error) {
	switch strings.ToLower(unit) {
	case "", "k", "kib":
		return v / 1024, nil
	case "kb":
		return v * 1000 / (1 << 20), nil
	case "m", "mib":
		return v, nil
	case "mb":
		return v * 1000 * 1000 / (1 << 20), nil
	case "g", "gib":
		return v * 1024, nil
	case "gb":
		return v * 1000 * 1000 * 1000 / (1 << 20), nil
	case "b", "bytes":
		return v / (1 << 20), nil
	}
	return 0, fmt.Errorf("unknown memory unit %q", unit)
}

// diskPaths lists the file paths of a domain's disks.
func diskPaths(dom *libvirtxml.Domain) []string {
	var out []string
	if dom.Devices == nil {
		return nil
	}
	for _, d := range dom.Devices.Disks {
		if d.Source != nil && d.Source.File != nil && d.Source.File.File != "" {
			out = append(out, d.Source.File.File)
		}
	}
	return out
}
