package models

import "time"

// DiagnosticsResult is one diagnostics command (ping, traceroute, arping) run inside a system
// VM, as runDiagnostics answers it: the argument vector that ran, its output and exit code.
type DiagnosticsResult struct {
	Base
	SystemVMID  string `gorm:"size:36;index:idx_diagnostics_vm" json:"systemvmid"`
	OperationID string `gorm:"size:36;index" json:"operationid"`
	Type        string `gorm:"size:32" json:"type"`
	IPAddress   string `gorm:"size:64" json:"ipaddress"`
	Params      string `gorm:"size:255" json:"params"`
	// Command is the argument vector, joined by spaces for reading (it ran without a shell).
	Command    string    `gorm:"type:text" json:"command"`
	Stdout     string    `gorm:"type:text" json:"stdout"`
	Stderr     string    `gorm:"type:text" json:"stderr"`
	ExitCode   int       `json:"exitcode"`
	TimedOut   bool      `json:"timedout"`
	DurationMs int64     `json:"durationms"`
	RanAt      time.Time `gorm:"index:idx_diagnostics_vm" json:"ranat"`
}

// DiagnosticsArchive is a getDiagnosticsData archive (tar.gz) of files and command outputs
// collected from a system VM. It is kept in the database, so whichever API process serves the
// download link reads what the worker collected, and removed once ExpiresAt passes
// (diagnostics.data.max.file.age).
type DiagnosticsArchive struct {
	Base
	SystemVMID  string `gorm:"size:36;index" json:"systemvmid"`
	OperationID string `gorm:"size:36;index" json:"operationid"`
	FileName    string `gorm:"size:255" json:"filename"`
	SizeBytes   int64  `json:"size"`
	SHA256      string `gorm:"size:64" json:"sha256"`
	// Manifest lists what the archive holds and what could not be collected, one line each.
	Manifest  string    `gorm:"type:text" json:"manifest"`
	Data      []byte    `json:"-"`
	ExpiresAt time.Time `gorm:"index" json:"expires"`
}
