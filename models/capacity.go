package models

import (
	"time"

	"gorm.io/gorm"
)

// PublicIPRange is a range of a zone's public network (CloudStack's public VLAN IP range,
// createVlanIpRange): new CPVMs and SSVMs get their public IP from it.
type PublicIPRange struct {
	Base
	ZoneID  string `gorm:"size:36;index" json:"zoneid"`
	VLAN    string `gorm:"size:64" json:"vlan,omitempty"`
	Gateway string `gorm:"size:64" json:"gateway"`
	Netmask string `gorm:"size:64" json:"netmask"`
	StartIP string `gorm:"size:64" json:"startip"`
	EndIP   string `gorm:"size:64" json:"endip"`
}

// CapacityState is the last capacity scan of one system VM type (CPVM or SSVM) in one zone:
// what it measured and decided, and the surplus streak that lets the pool shrink only after
// demand stayed low for several scans (hysteresis).
type CapacityState struct {
	ZoneID string `gorm:"primaryKey;size:36" json:"zoneid"`
	Type   string `gorm:"primaryKey;size:32" json:"systemvmtype"`
	// Demand is the sessions (CPVM: console sessions; SSVM: running transfer commands) the
	// scan measured; Running the VMs running after the scan (those it found, plus its
	// deploys, less its destroys); Target the pool size the settings ask for.
	Demand  int `json:"demand"`
	Running int `json:"running"`
	Target  int `json:"target"`
	// SessionMax, Standby and LaunchMax are the settings the scan used.
	SessionMax int `json:"sessionmax"`
	Standby    int `json:"standby"`
	LaunchMax  int `json:"launchmax"`
	// SurplusScans counts consecutive scans that saw more running VMs than the target.
	SurplusScans int `json:"surplusscans"`
	// LastScanAt is the last scan; LastScaleAt the last scan that started or destroyed a VM.
	LastScanAt  *time.Time `json:"lastscan,omitempty"`
	LastScaleAt *time.Time `json:"lastscale,omitempty"`
	// LastScan is the workflow ID of the last scan; LastError what failed in it ("" if none).
	LastScan  string    `gorm:"size:255" json:"lastscanworkflowid,omitempty"`
	LastError string    `gorm:"type:text" json:"lasterror,omitempty"`
	UpdatedAt time.Time `json:"updated"`
}

// capacityMigration creates the public IP ranges and the capacity scan states (0007).
func capacityMigration(tx *gorm.DB) error {
	type PublicIPRange struct {
		ID        string `gorm:"primaryKey;size:36"`
		CreatedAt time.Time
		UpdatedAt time.Time
		ZoneID    string `gorm:"size:36;index"`
		VLAN      string `gorm:"size:64"`
		Gateway   string `gorm:"size:64"`
		Netmask   string `gorm:"size:64"`
		StartIP   string `gorm:"size:64"`
		EndIP     string `gorm:"size:64"`
	}
	type CapacityState struct {
		ZoneID       string `gorm:"primaryKey;size:36"`
		Type         string `gorm:"primaryKey;size:32"`
		Demand       int
		Running      int
		Target       int
		SessionMax   int
		Standby      int
		LaunchMax    int
		SurplusScans int
		LastScanAt   *time.Time
		LastScaleAt  *time.Time
		LastScan     string `gorm:"size:255"`
		LastError    string `gorm:"type:text"`
		UpdatedAt    time.Time
	}
	return tx.AutoMigrate(&PublicIPRange{}, &CapacityState{})
}
