package models

import (
	"time"

	"gorm.io/gorm"
)

// baselineSchema is migration 0001: the schema of the last release that migrated with
// AutoMigrate (every table of AllModels and health_recreations, which the worker created),
// frozen here as it was. On an empty database it creates the tables; on a database that release
// created it finds every table and column already there and changes nothing, so such a database
// is adopted with its data. The types are copies, not the live models: a later change to a
// model is a migration of its own, and this one keeps describing the same schema.
func baselineSchema(tx *gorm.DB) error {
	type Base struct {
		ID        string `gorm:"primaryKey;size:36"`
		CreatedAt time.Time
		UpdatedAt time.Time
	}
	type Zone struct {
		Base
		Name            string `gorm:"size:255;uniqueIndex"`
		NetworkType     string `gorm:"size:32"`
		DNS1            string `gorm:"size:64"`
		InternalDNS1    string `gorm:"size:64"`
		AllocationState string `gorm:"size:32"`
	}
	type Pod struct {
		Base
		ZoneID  string `gorm:"size:36;index"`
		Name    string `gorm:"size:255"`
		Gateway string `gorm:"size:64"`
		Netmask string `gorm:"size:64"`
		StartIP string `gorm:"size:64"`
		EndIP   string `gorm:"size:64"`
	}
	type Cluster struct {
		Base
		ZoneID          string `gorm:"size:36;index"`
		PodID           string `gorm:"size:36;index"`
		Name            string `gorm:"size:255"`
		HypervisorType  string `gorm:"size:32"`
		Endpoint        string `gorm:"size:512"`
		Username        string `gorm:"size:255"`
		CredentialRef   string `gorm:"size:255"`
		Datacenter      string `gorm:"size:255"`
		Insecure        bool
		AllocationState string `gorm:"size:32"`
	}
	type Host struct {
		Base
		ZoneID         string `gorm:"size:36;index"`
		PodID          string `gorm:"size:36;index"`
		ClusterID      string `gorm:"size:36;index"`
		Name           string `gorm:"size:255"`
		HypervisorType string `gorm:"size:32"`
		Endpoint       string `gorm:"size:512"`
		Address        string `gorm:"size:255"`
		State          string `gorm:"size:32"`
		StateReason    string `gorm:"size:1024"`
		CPUs           int
		CPUMHz         int
		MemoryMB       int64
		Version        string `gorm:"size:64"`
	}
	type StoragePool struct {
		Base
		ZoneID        string `gorm:"size:36;index"`
		PodID         string `gorm:"size:36"`
		ClusterID     string `gorm:"size:36;index"`
		Name          string `gorm:"size:255"`
		Scope         string `gorm:"size:16"`
		Type          string `gorm:"size:64"`
		Path          string `gorm:"size:512"`
		CapacityBytes int64
		UsedBytes     int64
		State         string `gorm:"size:32"`
	}
	type SecondaryStore struct {
		Base
		ZoneID   string `gorm:"size:36;index"`
		Name     string `gorm:"size:255"`
		URL      string `gorm:"size:512"`
		Protocol string `gorm:"size:32"`
	}
	type Domain struct {
		Base
		ParentID string `gorm:"size:36"`
		Name     string `gorm:"size:255"`
		Path     string `gorm:"size:1024"`
	}
	type Account struct {
		Base
		DomainID string `gorm:"size:36;index"`
		Name     string `gorm:"size:255"`
		Type     string `gorm:"size:32"`
	}
	type VPC struct {
		Base
		ZoneID    string `gorm:"size:36;index"`
		DomainID  string `gorm:"size:36"`
		AccountID string `gorm:"size:36"`
		Name      string `gorm:"size:255"`
		CIDR      string `gorm:"size:64"`
		Redundant bool
		State     string `gorm:"size:32"`
	}
	type Network struct {
		Base
		ZoneID    string `gorm:"size:36;index"`
		DomainID  string `gorm:"size:36;index"`
		AccountID string `gorm:"size:36;index"`
		VPCID     string `gorm:"size:36;index"`
		Name      string `gorm:"size:255"`
		Type      string `gorm:"size:32"`
		Redundant bool
		Gateway   string `gorm:"size:64"`
		CIDR      string `gorm:"size:64"`
		Services  string `gorm:"size:512"`
		State     string `gorm:"size:32"`
	}
	type ServiceOffering struct {
		Base
		Name         string `gorm:"size:255"`
		CPUs         int
		CPUMHz       int
		MemoryMB     int
		SystemVMType string `gorm:"size:32"`
	}
	type SystemVM struct {
		Base
		Name               string `gorm:"size:255;index"`
		Type               string `gorm:"size:32;index"`
		State              string `gorm:"size:32;index"`
		ZoneID             string `gorm:"size:36;index"`
		PodID              string `gorm:"size:36;index"`
		ClusterID          string `gorm:"size:36;index"`
		HostID             string `gorm:"size:36;index"`
		StoragePoolID      string `gorm:"size:36"`
		HypervisorType     string `gorm:"size:32"`
		TemplateID         string `gorm:"size:36"`
		Version            string `gorm:"size:64"`
		ServiceOfferingID  string `gorm:"size:36"`
		CPUs               int
		MemoryMB           int
		PublicIP           string `gorm:"size:64"`
		PrivateIP          string `gorm:"size:64"`
		LinkLocalIP        string `gorm:"size:64"`
		PublicMAC          string `gorm:"size:32"`
		PrivateMAC         string `gorm:"size:32"`
		LinkLocalMAC       string `gorm:"size:32"`
		NetworkID          string `gorm:"size:36;index"`
		VPCID              string `gorm:"size:36;index"`
		DomainID           string `gorm:"size:36;index"`
		AccountID          string `gorm:"size:36;index"`
		IsRedundant        bool
		RedundantState     string `gorm:"size:16"`
		ActiveViewers      int
		HealthChecksFailed bool
		RemovedAt          *time.Time
	}
	type Template struct {
		Base
		Name       string `gorm:"size:255;index"`
		Hypervisor string `gorm:"size:32"`
		Format     string `gorm:"size:32"`
		URL        string `gorm:"size:1024"`
		Checksum   string `gorm:"size:200"`
		Type       string `gorm:"size:32"`
		Version    string `gorm:"size:64"`
		ZoneID     string `gorm:"size:36"`
		SizeBytes  int64
		State      string `gorm:"size:32"`
	}
	type TemplatePoolRef struct {
		Base
		TemplateID  string `gorm:"size:36;uniqueIndex:idx_tpl_pool"`
		PoolID      string `gorm:"size:36;uniqueIndex:idx_tpl_pool"`
		State       string `gorm:"size:32"`
		DownloadPct int
		InstallPath string `gorm:"size:1024"`
	}
	type Event struct {
		Base
		Type         string `gorm:"size:64;index"`
		Level        string `gorm:"size:16"`
		Description  string `gorm:"type:text"`
		ResourceType string `gorm:"size:32"`
		ResourceID   string `gorm:"size:36;index"`
		ZoneID       string `gorm:"size:36;index"`
		OperationID  string `gorm:"size:36;index"`
	}
	type Alert struct {
		Base
		Type         string `gorm:"size:64;index"`
		Severity     string `gorm:"size:16"`
		Subject      string `gorm:"size:512"`
		Description  string `gorm:"type:text"`
		ResourceType string `gorm:"size:32"`
		ResourceID   string `gorm:"size:36;index"`
		ZoneID       string `gorm:"size:36;index"`
		ClearedAt    *time.Time
	}
	type Operation struct {
		Base
		Kind        string `gorm:"size:64;index"`
		TargetType  string `gorm:"size:32"`
		TargetID    string `gorm:"size:36;index"`
		ZoneID      string `gorm:"size:36;index"`
		WorkflowID  string `gorm:"size:255;index"`
		RunID       string `gorm:"size:64"`
		Status      string `gorm:"size:16;index"`
		Result      string `gorm:"type:text"`
		Error       string `gorm:"type:text"`
		RequestedBy string `gorm:"size:255"`
		CompletedAt *time.Time
	}
	type OperationStep struct {
		OperationID string    `gorm:"primaryKey;size:36"`
		Step        string    `gorm:"primaryKey;size:64"`
		CompletedAt time.Time `gorm:"index"`
		Detail      string    `gorm:"size:1024"`
	}
	type APIKey struct {
		Base
		Name   string `gorm:"size:255"`
		Role   string `gorm:"size:16"`
		Hash   string `gorm:"size:64;uniqueIndex"`
		Prefix string `gorm:"size:16"`
	}
	type Secret struct {
		Name       string `gorm:"primaryKey;size:255"`
		Kind       string `gorm:"size:32"`
		Ciphertext []byte `gorm:"type:blob"`
		UpdatedAt  time.Time
	}
	type HostKey struct {
		Address   string `gorm:"primaryKey;size:255"`
		Key       []byte `gorm:"type:blob"`
		CreatedAt time.Time
	}
	type HealthCheckResult struct {
		RouterID            string `gorm:"primaryKey;size:36"`
		CheckName           string `gorm:"primaryKey;size:128"`
		CheckType           string `gorm:"size:16"`
		Success             bool
		LastUpdated         time.Time
		Details             string `gorm:"type:text"`
		ConsecutiveFailures int
	}
	type GuestVM struct {
		Base
		ZoneID    string `gorm:"size:36;index"`
		NetworkID string `gorm:"size:36;index"`
		AccountID string `gorm:"size:36;index"`
		Name      string `gorm:"size:255"`
		MAC       string `gorm:"size:32"`
		IP        string `gorm:"size:64"`
		State     string `gorm:"size:32;index"`
	}
	type PortForwardingRule struct {
		Base
		NetworkID      string `gorm:"size:36;index"`
		PublicIP       string `gorm:"size:64"`
		PublicPort     int
		PublicEndPort  int
		PrivateIP      string `gorm:"size:64"`
		PrivatePort    int
		PrivateEndPort int
		Protocol       string `gorm:"size:8"`
	}
	type LoadBalancerBackend struct {
		Base
		RuleID string `gorm:"size:36;index"`
		IP     string `gorm:"size:64"`
		Port   int
	}
	type LoadBalancerRule struct {
		Base
		NetworkID  string `gorm:"size:36;index"`
		PublicIP   string `gorm:"size:64"`
		PublicPort int
		Algorithm  string `gorm:"size:32"`
		MaxConn    int
		Backends   []LoadBalancerBackend `gorm:"foreignKey:RuleID;constraint:OnDelete:CASCADE"`
	}
	type Setting struct {
		Name      string `gorm:"primaryKey;size:128"`
		Scope     string `gorm:"primaryKey;size:16"`
		ScopeID   string `gorm:"primaryKey;size:36"`
		Value     string `gorm:"type:text"`
		UpdatedAt time.Time
	}
	type HealthRecreation struct {
		OperationID string `gorm:"primaryKey;size:36"`
		RouterID    string `gorm:"size:36;index:idx_health_recreation_router"`
		CheckName   string `gorm:"size:128;index:idx_health_recreation_router"`
		ZoneID      string `gorm:"size:36;index"`
		Failures    int
		CreatedAt   time.Time `gorm:"index"`
	}
	return tx.AutoMigrate(
		&Zone{}, &Pod{}, &Cluster{}, &Host{}, &StoragePool{}, &SecondaryStore{},
		&Domain{}, &Account{}, &VPC{}, &Network{}, &ServiceOffering{}, &SystemVM{},
		&Template{}, &TemplatePoolRef{}, &Setting{}, &Event{}, &Alert{}, &Operation{},
		&OperationStep{}, &APIKey{}, &Secret{}, &HostKey{}, &HealthCheckResult{},
		&GuestVM{}, &PortForwardingRule{}, &LoadBalancerRule{}, &LoadBalancerBackend{},
		&HealthRecreation{},
	)
}
