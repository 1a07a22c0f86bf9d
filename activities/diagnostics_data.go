package activities

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/diagnostics"
	"github.com/sysvm/sysvm/models"
)

// SettingDiagnosticsMaxAge is how long a diagnostics data archive is kept (seconds).
const SettingDiagnosticsMaxAge = "diagnostics.data.max.file.age"

// maxEntryBytes bounds one collected file or command output in an archive.
const maxEntryBytes = 4 << 20

// DiagnosticsDataInput asks CollectDiagnosticsData for an archive of a system VM.
type DiagnosticsDataInput struct {
	OperationID string `json:"operationId"`
	VMID        string `json:"vmId"`
	// Files are named extra files (absolute paths) beyond the defaults.
	Files []string `json:"files,omitempty"`
}

// DiagnosticsArchiveInfo describes a collected archive (the operation's result); the API
// turns ArchiveID into an expiring download link.
type DiagnosticsArchiveInfo struct {
	ArchiveID string    `json:"archiveId"`
	VMID      string    `json:"vmId"`
	Name      string    `json:"name,omitempty"`
	FileName  string    `json:"fileName"`
	SizeBytes int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	ExpiresAt time.Time `json:"expires"`
	// Collected and Missing name the entries the archive holds and those the VM could not
	// give (a file that does not exist, a command that failed), with the reason.
	Collected []string `json:"collected"`
	Missing   []string `json:"missing,omitempty"`
}

// CollectDiagnosticsData (getDiagnosticsData) runs the default collection commands and reads
// the default and named files of a running system VM over SSH (each an argument vector, no
// shell), packs them with a MANIFEST.txt into a tar.gz and stores it as a DiagnosticsArchive
// that expires after diagnostics.data.max.file.age. An entry the VM cannot give is listed as
// missing, not a failure. Expired archives are removed first. A retry of the same operation
// returns the archive already stored.
func (a *Activities) CollectDiagnosticsData(ctx context.Context, in DiagnosticsDataInput) (DiagnosticsArchiveInfo, error) {
	if err := diagnostics.ValidateFiles(in.Files); err != nil {
		return DiagnosticsArchiveInfo{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeNotAllowed, err)
	}
	if _, err := RemoveExpiredDiagnosticsArchives(ctx, a.Store, time.Now()); err != nil {
		return DiagnosticsArchiveInfo{}, err
	}
	if in.OperationID != "" {
		var done models.DiagnosticsArchive
		err := a.Store.DB.WithContext(ctx).Omit("data").Where("operation_id = ?", in.OperationID).Take(&done).Error
		if err == nil {
			return archiveInfoOf(done, ""), nil
		}
		if !errors.Is(err, gorm.ErrRecordNotFound) {
			return DiagnosticsArchiveInfo{}, fmt.Errorf("read diagnostics archive of operation %s: %w", in.OperationID, err)
		}
	}
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, in.VMID); err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return DiagnosticsArchiveInfo{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("system VM %s not found", in.VMID), ErrTypeNotFound, err)
		}
		return DiagnosticsArchiveInfo{}, fmt.Errorf("load system VM %s: %w", in.VMID, err)
	}
	if vm.State != models.StateRunning {
		return DiagnosticsArchiveInfo{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s %s is %s: diagnostics data is collected only from a Running system VM", vm.Type, vm.Name, vm.State), ErrTypeNotAllowed, nil)
	}
	if a.Exec == nil {
		return DiagnosticsArchiveInfo{}, temporal.NewNonRetryableApplicationError(
			"no SSH executor is configured: diagnostics cannot reach system VMs", ErrTypeDiagnostics, nil)
	}
	t, err := StoreTargets{Store: a.Store}.TargetFor(ctx, vm)
	if err != nil {
		return DiagnosticsArchiveInfo{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeDiagnostics, err)
	}
	maxAge, err := a.Store.Settings.Int(ctx, SettingDiagnosticsMaxAge, models.Scope{})
	if err != nil {
		return DiagnosticsArchiveInfo{}, fmt.Errorf("read %s: %w", SettingDiagnosticsMaxAge, err)
	}
	entries := diagnostics.DefaultEntries(vm.Type, vm.IsRouter())
	for _, f := range in.Files {
		entries = append(entries, diagnostics.FileEntry(f))
	}
	now := time.Now().UTC()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	info := DiagnosticsArchiveInfo{VMID: vm.ID, Name: vm.Name}
	var manifest strings.Builder
	fmt.Fprintf(&manifest, "diagnostics data of %s (%s on %s), collected %s\n", vm.Name, vm.Type, vm.HypervisorType, now.Format(time.RFC3339))
	seen := map[string]bool{}
	err = heartbeatWhile(ctx, "collect diagnostics data", func() error {
		for _, e := range entries {
			if seen[e.Name] {
				continue
			}
			seen[e.Name] = true
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			res, err := a.Exec.Run(rctx, t, append([]string{"timeout", "20"}, e.Argv...), nil)
			cancel()
			cmd := strings.Join(e.Argv, " ")
			switch {
			case err != nil:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				info.Missing = append(info.Missing, fmt.Sprintf("%s: %v", e.Name, err))
				fmt.Fprintf(&manifest, "MISSING %s (%s): %v\n", e.Name, cmd, err)
				continue
			case res.ExitCode != 0:
				reason := strings.TrimSpace(string(res.Stderr))
				info.Missing = append(info.Missing, fmt.Sprintf("%s: exit %d: %s", e.Name, res.ExitCode, reason))
				fmt.Fprintf(&manifest, "MISSING %s (%s): exit %d: %s\n", e.Name, cmd, res.ExitCode, reason)
				continue
			}
			data := res.Stdout
			note := ""
			if len(data) > maxEntryBytes || res.Truncated {
				if len(data) > maxEntryBytes {
					data = data[:maxEntryBytes]
				}
				note = " (truncated)"
			}
			if err := add(e.Name, data); err != nil {
				return fmt.Errorf("archive %s: %w", e.Name, err)
			}
			info.Collected = append(info.Collected, e.Name)
			fmt.Fprintf(&manifest, "OK %s (%s): %d bytes%s\n", e.Name, cmd, len(data), note)
		}
		return nil
	})
	if err != nil {
		return DiagnosticsArchiveInfo{}, fmt.Errorf("collect diagnostics data of %s: %w", vm.Name, err)
	}
	if err := add("MANIFEST.txt", []byte(manifest.String())); err != nil {
		return DiagnosticsArchiveInfo{}, err
	}
	if err := tw.Close(); err != nil {
		return DiagnosticsArchiveInfo{}, err
	}
	if err := gz.Close(); err != nil {
		return DiagnosticsArchiveInfo{}, err
	}
	sum := sha256.Sum256(buf.Bytes())
	row := models.DiagnosticsArchive{Base: models.Base{ID: models.NewID()}, SystemVMID: vm.ID, OperationID: in.OperationID,
		FileName: diagnostics.ArchiveName(vm.Name, now.Format("20060102T150405Z")), SizeBytes: int64(buf.Len()),
		SHA256: hex.EncodeToString(sum[:]), Manifest: manifest.String(), Data: buf.Bytes(),
		ExpiresAt: now.Add(time.Duration(maxAge) * time.Second)}
	if err := a.Store.DB.WithContext(ctx).Create(&row).Error; err != nil {
		return DiagnosticsArchiveInfo{}, fmt.Errorf("store diagnostics archive of %s: %w", vm.Name, err)
	}
	out := archiveInfoOf(row, vm.Name)
	out.Collected, out.Missing = info.Collected, info.Missing
	return out, nil
}

func archiveInfoOf(r models.DiagnosticsArchive, name string) DiagnosticsArchiveInfo {
	return DiagnosticsArchiveInfo{ArchiveID: r.ID, VMID: r.SystemVMID, Name: name, FileName: r.FileName, SizeBytes: r.SizeBytes,
		SHA256: r.SHA256, ExpiresAt: r.ExpiresAt}
}

// RemoveExpiredDiagnosticsArchives deletes the archives whose time (diagnostics.data.max.file.age
// when collected) has passed; the collect activity and every archive read call it.
func RemoveExpiredDiagnosticsArchives(ctx context.Context, s *models.Store, now time.Time) (int64, error) {
	res := s.DB.WithContext(ctx).Where("expires_at <= ?", now.UTC()).Delete(&models.DiagnosticsArchive{})
	if res.Error != nil {
		return 0, fmt.Errorf("remove expired diagnostics archives: %w", res.Error)
	}
	return res.RowsAffected, nil
}
