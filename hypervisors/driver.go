// Package hypervisors is the one place where hypervisors differ. Workflows and activities reach
// KVM, VMware and XenServer only through the Driver contract defined here; each implementation
// lives in its own subpackage (kvm, vmware, xen) and is chosen by a Registry built at start-up.
//
// The three subpackages share one file layout: doc.go (package doc and the mapping onto the
// hypervisor), driver.go (Connect, Type, Capabilities, Close, hosts and storage pools), vm.go
// (the VM lifecycle and reading VMs back), template.go (SeedTemplate), errors.go (mapping the
// hypervisor's errors onto the kinds in errors.go here), plus the driver's own transport:
// kvm/endpoint.go and kvm/domainxml.go, vmware/inventory.go, xen/client.go and xen/records.go.
package hypervisors

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// Type names a hypervisor family, spelled as CloudStack spells it.
type Type string

// The hypervisor families sysvm drives.
const (
	KVM       Type = "KVM"
	VMware    Type = "VMware"
	XenServer Type = "XenServer"
)

// ParseType turns a user-supplied hypervisor name into a Type, case-insensitively.
func ParseType(s string) (Type, error) {
	switch lower(s) {
	case "kvm":
		return KVM, nil
	case "vmware":
		return VMware, nil
	case "xenserver", "xen", "xcp-ng":
		return XenServer, nil
	}
	return "", fmt.Errorf("unknown hypervisor %q (want KVM, VMware or XenServer)", s)
}

// SettingSuffix is the suffix of router.template.<suffix> for this hypervisor.
func (t Type) SettingSuffix() string { return lower(string(t)) }

// LinkLocalControl is Capabilities.LinkLocalControl of every driver of the family, known
// without connecting: whether its system VMs are reached through their host on their
// link-local control address (KVM, XenServer) rather than on their private IP (VMware). The
// access path to a system VM needs it, and reaching 10,000 routers must not need a session with
// each one's hypervisor endpoint. The conformance suite checks each driver agrees.
func (t Type) LinkLocalControl() bool {
	switch t {
	case KVM, XenServer:
		return true
	}
	return false
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Connection says how to reach one hypervisor endpoint: a vCenter, a XAPI pool master, or a
// libvirt daemon. It is built from the inventory (cluster and host rows); Password is the
// decrypted secret and must never be logged or persisted by a driver.
type Connection struct {
	Type Type
	// Endpoint is the address of the management endpoint:
	//   KVM:    a libvirt URI as go-libvirt dials it, e.g. "unix:///run/libvirt/libvirt-sock?uri=test:///default"
	//           or "tcp://10.0.0.5:16509?uri=qemu:///system";
	//   VMware: the vCenter SDK URL, e.g. "https://vc.example.com/sdk";
	//   Xen:    the XAPI pool master URL, e.g. "https://xen1.example.com".
	Endpoint string
	// Hosts maps a host name to its own endpoint where the hypervisor needs one connection per
	// host (KVM). Empty for VMware and Xen, whose endpoint manages the whole cluster.
	Hosts    map[string]string
	Username string
	Password string `json:"-"`
	// Insecure skips TLS certificate verification (simulators and lab setups only).
	Insecure bool
	// Datacenter narrows a VMware connection to one datacenter (optional).
	Datacenter string
}

// String describes the connection without its secret.
func (c Connection) String() string {
	return fmt.Sprintf("%s %s (user %q)", c.Type, c.Endpoint, c.Username)
}

// Capabilities tell callers what a driver can do, so no code outside hypervisors/ branches on
// the hypervisor type.
type Capabilities struct {
	// LiveMigration: MigrateVM works on a running VM.
	LiveMigration bool
	// HotScale: ScaleVM works on a running VM; otherwise the VM must be stopped first.
	HotScale bool
	// LinkLocalControl: system VMs are reached through their host on a link-local (169.254/16)
	// control address (KVM, XenServer); otherwise directly on their private IP (VMware).
	LinkLocalControl bool
	// TemplateFormats lists the disk formats SeedTemplate accepts (e.g. "QCOW2", "OVA", "VHD").
	TemplateFormats []string
}

// HostInfo describes one hypervisor host.
type HostInfo struct {
	Name     string `json:"name"`
	UUID     string `json:"uuid"`
	CPUs     int    `json:"cpus"`
	CPUMHz   int    `json:"cpuMhz"`
	MemoryMB int64  `json:"memoryMb"`
	Version  string `json:"version"`
	// Connected is false when the host is known but not answering.
	Connected bool `json:"connected"`
}

// StoragePool describes one primary storage pool (libvirt pool, VMware datastore, Xen SR).
type StoragePool struct {
	Name          string `json:"name"`
	UUID          string `json:"uuid"`
	Type          string `json:"type"`
	CapacityBytes int64  `json:"capacityBytes"`
	FreeBytes     int64  `json:"freeBytes"`
}

// TemplateSpec asks for a system VM template to be present in a storage pool.
type TemplateSpec struct {
	// Name is the template's unique name in the pool; seeding the same name twice is a no-op.
	Name string `json:"name"`
	// URL is http(s):// or file:// (a local file); empty means an empty placeholder disk of
	// SizeBytes, used by simulators.
	URL    string `json:"url"`
	Format string `json:"format"`
	// Checksum is "<algo>:<hex>" or "{algo}hex" (md5, sha1, sha256, sha512), or bare hex: md5
	// (32 digits; 40, 64 or 128 digits are sha1, sha256, sha512); empty skips it. ParseChecksum
	// reads it and FetchTemplate verifies it before a driver creates anything.
	Checksum  string `json:"checksum"`
	SizeBytes int64  `json:"sizeBytes"`
	Pool      string `json:"pool"`
}

// Template is a template present in a pool.
type Template struct {
	Name      string `json:"name"`
	Pool      string `json:"pool"`
	SizeBytes int64  `json:"sizeBytes"`
	// Ref is the driver's own handle (volume path, VM template inventory path, VDI UUID).
	Ref string `json:"ref"`
}

// ProgressFunc receives progress of a long driver call; total is 0 when unknown.
type ProgressFunc func(done, total int64)

// NICKind is the role of a system VM's network interface.
type NICKind string

// The NIC roles of a system VM.
const (
	NICControl NICKind = "control" // link-local on KVM/Xen, the management (private) NIC on VMware
	NICPublic  NICKind = "public"
	NICPrivate NICKind = "private"
	NICGuest   NICKind = "guest"
)

// NIC is one network interface of a VM.
type NIC struct {
	Kind    NICKind `json:"kind"`
	Network string  `json:"network"` // bridge / port group / Xen network name
	MAC     string  `json:"mac"`
	IP      string  `json:"ip"`
	Netmask string  `json:"netmask"`
	Gateway string  `json:"gateway"`
}

// VMSpec is what CreateVM needs to build a system VM.
type VMSpec struct {
	// Name is the instance name (e.g. "r-12-VM"); it identifies the VM in every later call.
	Name     string `json:"name"`
	Host     string `json:"host"`
	Pool     string `json:"pool"`
	Template string `json:"template"`
	CPUs     int    `json:"cpus"`
	CPUMHz   int    `json:"cpuMhz"`
	MemoryMB int    `json:"memoryMb"`
	NICs     []NIC  `json:"nics"`
	// BootArgs tell the system VM its role and addresses (CloudStack's cmdline:
	// type=domainrouter name=r-12-VM eth0ip=169.254.3.4 ... authorized_key=<base64>).
	BootArgs map[string]string `json:"bootArgs"`
}

// BootArgsString renders boot arguments as CloudStack's space-separated key=value cmdline,
// with keys sorted so the result is stable.
func BootArgsString(args map[string]string) string {
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := ""
	for i, k := range keys {
		if i > 0 {
			out += " "
		}
		out += k + "=" + args[k]
	}
	return out
}

// PowerState is a VM's power state as the hypervisor reports it.
type PowerState string

// The power states drivers report.
const (
	PowerRunning PowerState = "Running"
	PowerStopped PowerState = "Stopped"
	PowerPaused  PowerState = "Paused"
	PowerUnknown PowerState = "Unknown"
)

// VMInfo is what the hypervisor knows about a VM.
type VMInfo struct {
	Name     string            `json:"name"`
	UUID     string            `json:"uuid"`
	Host     string            `json:"host"`
	Pool     string            `json:"pool"`
	Template string            `json:"template"`
	State    PowerState        `json:"state"`
	CPUs     int               `json:"cpus"`
	MemoryMB int               `json:"memoryMb"`
	NICs     []NIC             `json:"nics"`
	BootArgs map[string]string `json:"bootArgs,omitempty"`
	// BootTime is when the VM last powered on or rebooted, as the hypervisor records it
	// (vSphere runtime.bootTime, XAPI VM_metrics.start_time); zero when the driver cannot tell
	// (libvirt keeps no boot time) or the VM is off. A reboot retried after an unrecorded
	// success compares it with the time seen before the first try.
	BootTime time.Time `json:"bootTime,omitempty"`
}

// VMStats are a running VM's counters.
type VMStats struct {
	CPUTimeNs    uint64 `json:"cpuTimeNs"`
	MemoryUsedMB int    `json:"memoryUsedMb"`
	NetRxBytes   uint64 `json:"netRxBytes"`
	NetTxBytes   uint64 `json:"netTxBytes"`
	DiskReadB    uint64 `json:"diskReadBytes"`
	DiskWriteB   uint64 `json:"diskWriteBytes"`
}

// Driver is the contract every hypervisor implementation fulfils. All methods are safe for
// concurrent use on different VMs. Errors are wrapped *Error values whose Kind is one of the
// sentinel errors below, so errors.Is(err, ErrNotFound) works.
//
// Idempotency rules, so that a retried activity never does a step twice:
//   - CreateVM of a name that exists returns ErrAlreadyExists (callers treat it as done);
//   - StartVM of a running VM and StopVM of a stopped VM return nil;
//   - DestroyVM of an unknown VM returns ErrNotFound (callers treat it as done);
//   - SeedTemplate of a template already in the pool returns it without copying again;
//   - RebootVM of a stopped VM returns ErrBadState.
type Driver interface {
	// Type is the hypervisor family.
	Type() Type
	// Capabilities of this driver and connection.
	Capabilities() Capabilities
	// Close releases the connection.
	Close() error

	// Hosts lists the hosts behind this connection.
	Hosts(ctx context.Context) ([]HostInfo, error)
	// HostInfo describes one host by name.
	HostInfo(ctx context.Context, host string) (HostInfo, error)
	// StoragePools lists the primary storage pools with their free space.
	StoragePools(ctx context.Context) ([]StoragePool, error)
	// SeedTemplate makes a template present in a pool, verifying its checksum.
	SeedTemplate(ctx context.Context, spec TemplateSpec, progress ProgressFunc) (Template, error)

	// CreateVM defines a system VM (stopped) from a seeded template.
	CreateVM(ctx context.Context, spec VMSpec) (VMInfo, error)
	// StartVM powers a VM on.
	StartVM(ctx context.Context, name string) error
	// StopVM shuts a VM down; force powers it off at once.
	StopVM(ctx context.Context, name string, force bool) error
	// RebootVM restarts a running VM.
	RebootVM(ctx context.Context, name string) error
	// DestroyVM removes a VM and its disks; a running VM is powered off first.
	DestroyVM(ctx context.Context, name string) error
	// MigrateVM moves a VM to another host of the same cluster.
	MigrateVM(ctx context.Context, name, targetHost string) error
	// ScaleVM changes CPU count and memory.
	ScaleVM(ctx context.Context, name string, cpus, memoryMB int) error
	// GetVM inspects one VM.
	GetVM(ctx context.Context, name string) (VMInfo, error)
	// VMStats reads a running VM's counters.
	VMStats(ctx context.Context, name string) (VMStats, error)
	// ListVMs lists every VM behind the connection.
	ListVMs(ctx context.Context) ([]VMInfo, error)
}

// Connector opens a Driver for a connection.
type Connector func(ctx context.Context, conn Connection) (Driver, error)
