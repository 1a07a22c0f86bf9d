// Package models is sysvm's inventory and records, as gorm types, with a Store that opens
// MySQL/MariaDB or the embedded SQLite and migrates both. Temporal holds the state of runs; this
// package holds what the cloud is made of (zones to system VMs), settings, events, alerts,
// health check results and the operation journal that points at each run.
package models

import (
	"time"
)

// Base is the common primary key and timestamps. IDs are UUIDs, as CloudStack's API shows them.
type Base struct {
	ID        string    `gorm:"primaryKey;size:36" json:"id"`
	CreatedAt time.Time `json:"created"`
	UpdatedAt time.Time `json:"-"`
}

// Zone is an availability zone.
type Zone struct {
	Base
	Name            string `gorm:"size:255;uniqueIndex" json:"name"`
	NetworkType     string `gorm:"size:32" json:"networktype"` // Advanced | Basic
	DNS1            string `gorm:"size:64" json:"dns1"`
	InternalDNS1    string `gorm:"size:64" json:"internaldns1"`
	AllocationState string `gorm:"size:32" json:"allocationstate"` // Enabled | Disabled
}

// Pod is a rack-level group of clusters inside a zone.
type Pod struct {
	Base
	ZoneID  string `gorm:"size:36;index" json:"zoneid"`
	Name    string `gorm:"size:255" json:"name"`
	Gateway string `gorm:"size:64" json:"gateway"`
	Netmask string `gorm:"size:64" json:"netmask"`
	StartIP string `gorm:"size:64" json:"startip"`
	EndIP   string `gorm:"size:64" json:"endip"`
}

// Cluster is a set of hosts of one hypervisor type sharing primary storage. The cluster holds
// the management endpoint (vCenter, XAPI pool master, or the libvirt URI pattern) and a
// reference to its encrypted credential.
type Cluster struct {
	Base
	ZoneID         string `gorm:"size:36;index" json:"zoneid"`
	PodID          string `gorm:"size:36;index" json:"podid"`
	Name           string `gorm:"size:255" json:"name"`
	HypervisorType string `gorm:"size:32" json:"hypervisortype"`
	Endpoint       string `gorm:"size:512" json:"-"`
	Username       string `gorm:"size:255" json:"-"`
	// CredentialRef names the encrypted secret holding the endpoint password.
	CredentialRef   string `gorm:"size:255" json:"-"`
	Datacenter      string `gorm:"size:255" json:"-"`
	Insecure        bool   `json:"-"`
	AllocationState string `gorm:"size:32" json:"allocationstate"`
}

// Host states.
const (
	HostUp           = "Up"
	HostDisconnected = "Disconnected"
)

// Host is one hypervisor host.
type Host struct {
	Base
	ZoneID         string `gorm:"size:36;index" json:"zoneid"`
	PodID          string `gorm:"size:36;index" json:"podid"`
	ClusterID      string `gorm:"size:36;index" json:"clusterid"`
	Name           string `gorm:"size:255" json:"name"`
	HypervisorType string `gorm:"size:32" json:"hypervisor"`
	// Endpoint is the host's own management endpoint where the hypervisor needs one (KVM).
	Endpoint string `gorm:"size:512" json:"-"`
	// Address is where the platform reaches the host over SSH (the KVM/Xen access path).
	Address     string `gorm:"size:255" json:"ipaddress"`
	State       string `gorm:"size:32" json:"state"`
	StateReason string `gorm:"size:1024" json:"statereason,omitempty"`
	CPUs        int    `json:"cpunumber"`
	CPUMHz      int    `json:"cpuspeed"`
	MemoryMB    int64  `json:"memorytotal"`
	Version     string `gorm:"size:64" json:"hypervisorversion"`
}

// StoragePool is a primary storage pool (cluster- or zone-wide).
type StoragePool struct {
	Base
	ZoneID        string `gorm:"size:36;index" json:"zoneid"`
	PodID         string `gorm:"size:36" json:"podid,omitempty"`
	ClusterID     string `gorm:"size:36;index" json:"clusterid,omitempty"`
	Name          string `gorm:"size:255" json:"name"`
	Scope         string `gorm:"size:16" json:"scope"` // CLUSTER | ZONE
	Type          string `gorm:"size:64" json:"type"`
	Path          string `gorm:"size:512" json:"path"`
	CapacityBytes int64  `json:"disksizetotal"`
	UsedBytes     int64  `json:"disksizeused"`
	State         string `gorm:"size:32" json:"state"`
}

// SecondaryStore is a zone's image store (templates, ISOs, snapshots).
type SecondaryStore struct {
	Base
	ZoneID   string `gorm:"size:36;index" json:"zoneid"`
	Name     string `gorm:"size:255" json:"name"`
	URL      string `gorm:"size:512" json:"url"`
	Protocol string `gorm:"size:32" json:"protocol"`
}

// Domain is an account hierarchy node (ROOT at the top).
type Domain struct {
	Base
	ParentID string `gorm:"size:36" json:"parentdomainid,omitempty"`
	Name     string `gorm:"size:255" json:"name"`
	Path     string `gorm:"size:1024" json:"path"`
}

// Account is a tenant account inside a domain.
type Account struct {
	Base
	DomainID string `gorm:"size:36;index" json:"domainid"`
	Name     string `gorm:"size:255" json:"name"`
	Type     string `gorm:"size:32" json:"accounttype"` // Admin | User
}

// Network types.
const (
	NetworkIsolated = "Isolated"
	NetworkShared   = "Shared"
	NetworkVPCTier  = "VPCTier"
)

// VPC is a virtual private cloud, served by one router (or a redundant pair).
type VPC struct {
	Base
	ZoneID    string `gorm:"size:36;index" json:"zoneid"`
	DomainID  string `gorm:"size:36" json:"domainid"`
	AccountID string `gorm:"size:36" json:"accountid"`
	Name      string `gorm:"size:255" json:"name"`
	CIDR      string `gorm:"size:64" json:"cidr"`
	Redundant bool   `json:"redundantvpcrouter"`
	State     string `gorm:"size:32" json:"state"`
}

// Network is a guest network (isolated, shared, or a VPC tier) and what its router serves.
type Network struct {
	Base
	ZoneID    string `gorm:"size:36;index" json:"zoneid"`
	DomainID  string `gorm:"size:36;index" json:"domainid"`
	AccountID string `gorm:"size:36;index" json:"accountid"`
	VPCID     string `gorm:"size:36;index" json:"vpcid,omitempty"`
	Name      string `gorm:"size:255" json:"name"`
	Type      string `gorm:"size:32" json:"type"`
	Redundant bool   `json:"redundantrouter"`
	Gateway   string `gorm:"size:64" json:"gateway"`
	CIDR      string `gorm:"size:64" json:"cidr"`
	// Services is the comma list of services the network gets from its router:
	// Dhcp, Dns, Lb, UserData, SourceNat, StaticNat, PortForwarding, Firewall, Vpn.
	Services string `gorm:"size:512" json:"services"`
	State    string `gorm:"size:32" json:"state"`
}

// ServiceOffering is a compute offering for system VMs.
type ServiceOffering struct {
	Base
	Name         string `gorm:"size:255" json:"name"`
	CPUs         int    `json:"cpunumber"`
	CPUMHz       int    `json:"cpuspeed"`
	MemoryMB     int    `json:"memory"`
	SystemVMType string `gorm:"size:32" json:"systemvmtype"`
}

// System VM types, as CloudStack's API names them.
const (
	TypeSSVM   = "secondarystoragevm"
	TypeCPVM   = "consoleproxy"
	TypeRouter = "domainrouter"
)

// System VM states, as CloudStack's API names them.
const (
	StateStarting  = "Starting"
	StateRunning   = "Running"
	StateStopping  = "Stopping"
	StateStopped   = "Stopped"
	StateDestroyed = "Destroyed"
	StateError     = "Error"
)

// Redundant states of a router.
const (
	RedundantPrimary = "PRIMARY"
	RedundantBackup  = "BACKUP"
	RedundantUnknown = "UNKNOWN"
)

// SystemVM is an SSVM, a CPVM or a virtual router.
type SystemVM struct {
	Base
	// Name is the CloudStack name (s-1-VM, v-2-VM, r-3-VM); it stays across recreations.
	Name string `gorm:"size:255;index" json:"name"`
	// InstanceName is the name the hypervisor knows the VM by; a make-before-break recreate
	// builds the replacement under a new one (r-3-VM-1a2b3c4d). Empty means Name (rows made
	// before recreations named their replacements). Use HypervisorName to read it.
	InstanceName string `gorm:"size:255;index" json:"instancename,omitempty"`
	// LastError is why the last lifecycle operation failed, set with State Error (or on a
	// settled Running/Stopped VM whose operation failed); empty after a success.
	LastError string `gorm:"type:text" json:"lasterror,omitempty"`
	// DestroyOperationID is the operation that admitted this VM's destroy: the only-router
	// check counts other routers without it, so two destroys of a pair cannot both pass.
	DestroyOperationID string     `gorm:"size:36;index" json:"-"`
	Type               string     `gorm:"size:32;index" json:"systemvmtype"`
	State              string     `gorm:"size:32;index" json:"state"`
	ZoneID             string     `gorm:"size:36;index" json:"zoneid"`
	PodID              string     `gorm:"size:36;index" json:"podid"`
	ClusterID          string     `gorm:"size:36;index" json:"clusterid"`
	HostID             string     `gorm:"size:36;index" json:"hostid"`
	StoragePoolID      string     `gorm:"size:36" json:"storageid"`
	HypervisorType     string     `gorm:"size:32" json:"hypervisor"`
	TemplateID         string     `gorm:"size:36" json:"templateid"`
	Version            string     `gorm:"size:64" json:"version"`
	ServiceOfferingID  string     `gorm:"size:36" json:"serviceofferingid"`
	CPUs               int        `json:"cpunumber"`
	MemoryMB           int        `json:"memory"`
	PublicIP           string     `gorm:"size:64" json:"publicip"`
	PrivateIP          string     `gorm:"size:64" json:"privateip"`
	LinkLocalIP        string     `gorm:"size:64" json:"linklocalip"`
	PublicMAC          string     `gorm:"size:32" json:"publicmacaddress"`
	PrivateMAC         string     `gorm:"size:32" json:"privatemacaddress"`
	LinkLocalMAC       string     `gorm:"size:32" json:"linklocalmacaddress"`
	NetworkID          string     `gorm:"size:36;index" json:"guestnetworkid,omitempty"`
	VPCID              string     `gorm:"size:36;index" json:"vpcid,omitempty"`
	DomainID           string     `gorm:"size:36;index" json:"domainid,omitempty"`
	AccountID          string     `gorm:"size:36;index" json:"accountid,omitempty"`
	IsRedundant        bool       `json:"isredundantrouter"`
	RedundantState     string     `gorm:"size:16" json:"redundantstate,omitempty"`
	ActiveViewers      int        `json:"activeviewersessions"`
	HealthChecksFailed bool       `json:"healthchecksfailed"`
	RemovedAt          *time.Time `json:"removed,omitempty"`
}

// HypervisorName is the name the hypervisor knows the VM by: InstanceName, or Name for rows
// that have none.
func (v *SystemVM) HypervisorName() string {
	if v.InstanceName != "" {
		return v.InstanceName
	}
	return v.Name
}

// IsRouter reports whether the VM is a virtual router.
func (v *SystemVM) IsRouter() bool { return v.Type == TypeRouter }

// Template states in a storage pool or image store.
const (
	TemplateDownloading = "Downloading"
	TemplateReady       = "Ready"
	TemplateError       = "Error"
)

// Template is a registered template; system VM templates have Type SYSTEM.
type Template struct {
	Base
	Name       string `gorm:"size:255;index" json:"name"`
	Hypervisor string `gorm:"size:32" json:"hypervisor"`
	Format     string `gorm:"size:32" json:"format"`
	URL        string `gorm:"size:1024" json:"url"`
	Checksum   string `gorm:"size:200" json:"checksum"`
	Type       string `gorm:"size:32" json:"templatetype"` // SYSTEM | ROUTING | USER
	Version    string `gorm:"size:64" json:"version"`
	ZoneID     string `gorm:"size:36" json:"zoneid,omitempty"`
	SizeBytes  int64  `json:"size"`
	State      string `gorm:"size:32" json:"status"`
	// Bits is 64 or 32 (CloudStack's registerTemplate bits); a 64-bit system template needs
	// system offerings of at least 512 MB.
	Bits int `json:"bits"`
	// URLSecretRef names the encrypted secret holding the full URL when it carries
	// credentials; URL then holds it with the password redacted.
	URLSecretRef string `gorm:"size:255" json:"-"`
	// MinVersionSet: a rollout of this template set minreq.sysvmtemplate.version, whose value
	// before is PreviousMinVersion (restored by a rollback).
	MinVersionSet      bool   `json:"minversionset"`
	PreviousMinVersion string `gorm:"size:64" json:"-"`
}

// Template download and install states of a zone (TemplateZoneRef.Status) and a pool
// (TemplatePoolRef.State), as CloudStack shows them.
const (
	TemplateDownloadComplete = "Download Complete"
	TemplateInstalling       = "Installing"
	TemplateFailed           = "Failed"
)

// TemplateZoneRef is a template's download into one zone's secondary store and its switch in
// that zone: what the zone's SSVM role downloaded, how far, and the router.template value the
// switch replaced (restored by a rollback).
type TemplateZoneRef struct {
	Base
	TemplateID string `gorm:"size:36;uniqueIndex:idx_tpl_zone" json:"templateid"`
	ZoneID     string `gorm:"size:36;uniqueIndex:idx_tpl_zone" json:"zoneid"`
	StoreID    string `gorm:"size:36" json:"storeid"`
	// SSVM is the name of the zone's secondary storage VM whose role did the download.
	SSVM string `gorm:"column:ssvm;size:255" json:"ssvm,omitempty"`
	// Status is "x% Downloaded", "Download Complete", "Installing", "Ready" or "Failed: <reason>".
	Status      string `gorm:"size:1024" json:"status"`
	DownloadPct int    `json:"downloadpercent"`
	BytesDone   int64  `json:"downloadedbytes"`
	BytesTotal  int64  `json:"totalbytes"`
	// InstallPath is the image in the secondary store, decompressed.
	InstallPath string `gorm:"size:1024" json:"installpath,omitempty"`
	// Checksum is the digest of the downloaded bytes ("<algo>:<hex>").
	Checksum string `gorm:"size:200" json:"checksum,omitempty"`
	// Switched: router.template.<hypervisor> of the zone names this template since SwitchedAt.
	Switched   bool       `json:"switched"`
	SwitchedAt *time.Time `json:"switchedat,omitempty"`
	// PreviousTemplate is the zone's router.template.<hypervisor> override before the switch;
	// PreviousSet is false when the zone had none (a rollback then removes the override).
	PreviousTemplate string `gorm:"size:255" json:"previoustemplate,omitempty"`
	PreviousSet      bool   `json:"-"`
}

// TemplatePoolRef is a template's presence in one primary storage pool.
type TemplatePoolRef struct {
	Base
	TemplateID  string `gorm:"size:36;uniqueIndex:idx_tpl_pool" json:"templateid"`
	PoolID      string `gorm:"size:36;uniqueIndex:idx_tpl_pool" json:"storageid"`
	State       string `gorm:"size:32" json:"state"`
	DownloadPct int    `json:"downloadpercent"`
	InstallPath string `gorm:"size:1024" json:"installpath"`
	ZoneID      string `gorm:"size:36" json:"zoneid,omitempty"`
	PoolName    string `gorm:"size:255" json:"storagename,omitempty"`
	// Checksum is the digest of the downloaded image this pool was seeded from: a later rollout
	// of the same bytes skips the pool.
	Checksum  string `gorm:"size:200" json:"checksum,omitempty"`
	SizeBytes int64  `json:"size"`
	// Error says why the last seed failed (State Failed).
	Error string `gorm:"type:text" json:"error,omitempty"`
}

// Event is an audit record of something that happened.
type Event struct {
	Base
	Type         string `gorm:"size:64;index" json:"type"` // e.g. SYSTEMVM.START, ROUTER.HEALTH.CHECKS
	Level        string `gorm:"size:16" json:"level"`      // INFO | WARN | ERROR
	Description  string `gorm:"type:text" json:"description"`
	ResourceType string `gorm:"size:32" json:"resourcetype,omitempty"`
	ResourceID   string `gorm:"size:36;index" json:"resourceid,omitempty"`
	ZoneID       string `gorm:"size:36;index" json:"zoneid,omitempty"`
	OperationID  string `gorm:"size:36;index" json:"operationid,omitempty"`
}

// Alert is something an operator must look at.
type Alert struct {
	Base
	Type         string     `gorm:"size:64;index" json:"type"`
	Severity     string     `gorm:"size:16" json:"severity"` // WARN | CRITICAL
	Subject      string     `gorm:"size:512" json:"subject"`
	Description  string     `gorm:"type:text" json:"description"`
	ResourceType string     `gorm:"size:32" json:"resourcetype,omitempty"`
	ResourceID   string     `gorm:"size:36;index" json:"resourceid,omitempty"`
	ZoneID       string     `gorm:"size:36;index" json:"zoneid,omitempty"`
	ClearedAt    *time.Time `json:"cleared,omitempty"`
}

// Operation statuses.
const (
	OpRunning   = "running"
	OpCompleted = "completed"
	OpFailed    = "failed"
	OpCanceled  = "canceled"
)

// Operation is the journal entry of one long operation: what it acts on and which Temporal
// workflow runs it. The run's live state is Temporal's; the final status, result and error are
// recorded here by the workflow's last step so lists need no call per row.
type Operation struct {
	Base
	Kind        string     `gorm:"size:64;index" json:"kind"`
	TargetType  string     `gorm:"size:32" json:"targettype"`
	TargetID    string     `gorm:"size:36;index" json:"targetid"`
	ZoneID      string     `gorm:"size:36;index" json:"zoneid,omitempty"`
	WorkflowID  string     `gorm:"size:255;index" json:"workflowId"`
	RunID       string     `gorm:"size:64" json:"runId"`
	Status      string     `gorm:"size:16;index" json:"status"`
	Result      string     `gorm:"type:text" json:"-"`
	Error       string     `gorm:"type:text" json:"error,omitempty"`
	RequestedBy string     `gorm:"size:255" json:"requestedBy"`
	CompletedAt *time.Time `json:"completed,omitempty"`
}

// OperationStep journals a completed step of an operation, so a retried step is not done twice.
type OperationStep struct {
	OperationID string    `gorm:"primaryKey;size:36" json:"operationid"`
	Step        string    `gorm:"primaryKey;size:64" json:"step"`
	CompletedAt time.Time `gorm:"index" json:"completed"`
	Detail      string    `gorm:"size:1024" json:"detail,omitempty"`
}

// API key roles.
const (
	RoleAdmin    = "admin"
	RoleOperator = "operator"
	RoleReadOnly = "read-only"
)

// APIKey is an API credential; only a hash of the key is stored.
type APIKey struct {
	Base
	Name   string `gorm:"size:255" json:"name"`
	Role   string `gorm:"size:16" json:"role"`
	Hash   string `gorm:"size:64;uniqueIndex" json:"-"`
	Prefix string `gorm:"size:16" json:"prefix"`
}

// Secret is an encrypted value (hypervisor password, private key); see SecretBox.
type Secret struct {
	Name       string `gorm:"primaryKey;size:255"`
	Kind       string `gorm:"size:32"`
	Ciphertext []byte `gorm:"type:blob"`
	UpdatedAt  time.Time
}

// HostKey is an SSH host key recorded on first use.
type HostKey struct {
	Address   string `gorm:"primaryKey;size:255"`
	Key       []byte `gorm:"type:blob"`
	CreatedAt time.Time
}

// HealthCheckResult is the last result of one health check on one router.
type HealthCheckResult struct {
	RouterID    string    `gorm:"primaryKey;size:36" json:"-"`
	CheckName   string    `gorm:"primaryKey;size:128" json:"checkname"`
	CheckType   string    `gorm:"size:16" json:"checktype"`
	Success     bool      `json:"success"`
	LastUpdated time.Time `json:"lastupdated"`
	Details     string    `gorm:"type:text" json:"details"`
	// ConsecutiveFailures counts failed runs in a row, for recreation rules.
	ConsecutiveFailures int `json:"-"`
	// FailureCountedBy is the sweep run (its key: workflow ID, first run ID and kind) that last
	// counted a failure of this check into ConsecutiveFailures: a retried batch of the same
	// sweep finds its key and does not count the failure again.
	FailureCountedBy string `gorm:"size:255" json:"-"`
}

// AllModels lists the model of every table. The tables are created and changed by the
// migrations (migrate.go), never from these types directly; TestMigrationsCoverModels checks
// that the migrations give every field of these types its column and index.
func AllModels() []any {
	return []any{
		&Zone{}, &Pod{}, &Cluster{}, &Host{}, &StoragePool{}, &SecondaryStore{},
		&Domain{}, &Account{}, &VPC{}, &Network{}, &ServiceOffering{}, &SystemVM{},
		&Template{}, &TemplatePoolRef{}, &TemplateZoneRef{}, &Setting{}, &Event{}, &Alert{}, &Operation{},
		&OperationStep{}, &APIKey{}, &Secret{}, &HostKey{}, &HealthCheckResult{},
		&GuestVM{}, &PortForwardingRule{}, &LoadBalancerRule{}, &LoadBalancerBackend{},
		&HealthRecreation{}, &DiagnosticsResult{}, &DiagnosticsArchive{}, &Certificate{}, &SystemVMCertificate{},
		&PublicIPRange{}, &CapacityState{},
	}
}
