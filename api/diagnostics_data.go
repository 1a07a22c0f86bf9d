package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/diagnostics"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// diagnosticsLinkKey names the secret that signs diagnostics archive download links.
const diagnosticsLinkKey = "diagnostics-link-key"

// diagnosticsDataBody is the body of POST .../diagnostics/data (getDiagnosticsData).
type diagnosticsDataBody struct {
	// Files are named extra files (absolute paths) to collect beyond the defaults.
	Files []string `json:"files"`
}

// DiagnosticsArchive is the answer of GET /diagnostics-archives/{id}: the archive and its
// download link, valid until the archive expires.
type DiagnosticsArchive struct {
	models.DiagnosticsArchive
	// URL downloads the archive without an API key until Expires (a signed link).
	URL string `json:"url"`
}

func (s *Server) diagnosticsDataRoutes() []Route {
	var out []Route
	for _, target := range []struct{ path, typ, what, op string }{
		{"/system-vms", TargetSystemVM, "system VM (SSVM or CPVM)", "SystemVM"},
		{"/routers", TargetRouter, "virtual router", "Router"},
	} {
		out = append(out, Route{Method: http.MethodPost, Path: target.path + "/{id}/diagnostics/data", Role: models.RoleOperator,
			Handler: s.getDiagnosticsData(target.typ), Doc: Doc{
				OperationID: "getDiagnosticsData" + target.op, Tag: "Diagnostics",
				Summary: "Collect files and command outputs of a " + target.what + " into an archive",
				Description: "CloudStack's getDiagnosticsData. Collects iptables-save, ip addr, ip rule, ip route, /etc/hosts and " +
					"/var/log/cloud.log (on a router also dnsmasq, DHCP hosts, haproxy configuration and the health checks' results) " +
					"plus the named files (absolute paths of letters, digits, '-', '_', '.' and '/'), each over SSH as an argument " +
					"vector, into a tar.gz with a MANIFEST.txt saying what could not be collected. The operation's result names the " +
					"archive (archiveId); GET /api/v1/diagnostics-archives/{archiveId} gives its download link. The archive and the " +
					"link expire after diagnostics.data.max.file.age seconds.",
				Body: "DiagnosticsDataRequest",
				Responses: []Response{{Status: 202, Description: "the operation started", Schema: "OperationEnvelope"},
					{Status: 409, Description: "the VM is not Running, or already has a running operation (named in operation)", Schema: "ConflictError"},
					{Status: 503, Description: "Temporal is unavailable", Schema: "Error"}}}})
	}
	out = append(out,
		Route{Method: http.MethodGet, Path: "/diagnostics-archives/{id}", Role: models.RoleReadOnly, Handler: s.getDiagnosticsArchive,
			Doc: Doc{OperationID: "getDiagnosticsArchive", Tag: "Diagnostics", Summary: "A diagnostics archive and its download link",
				Description: "The archive's size, checksum, manifest and expiry, and url: a link signed by sysvm that downloads it " +
					"without an API key until the archive expires. Expired archives are removed.",
				Responses: []Response{{Status: 200, Description: "the archive", Schema: "DiagnosticsArchive"}}}},
		Route{Method: http.MethodGet, Path: "/diagnostics-archives/{id}/download", Handler: s.downloadDiagnosticsArchive,
			Doc: Doc{OperationID: "downloadDiagnosticsArchive", Tag: "Diagnostics", Summary: "Download a diagnostics archive (signed link)",
				Description: "No key needed: expires and signature come from the link GET /diagnostics-archives/{id} gives. " +
					"403 for a bad signature, 410 once the link or the archive expired.",
				Query: []Param{{Name: "expires", Type: "integer", Description: "Unix time the link expires"},
					{Name: "signature", Type: "string", Description: "HMAC-SHA256 of the archive ID and expires"}},
				Responses: []Response{{Status: 200, Description: "the tar.gz archive (application/gzip)"},
					{Status: 410, Description: "the link or the archive expired", Schema: "Error"}}}})
	return out
}

// mountDiagnosticsData adds the getDiagnosticsData schemas and routes.
func (s *Server) mountDiagnosticsData() error {
	s.AddSchema("DiagnosticsDataRequest", objectSchema("getDiagnosticsData: extra files to collect", "files?:[]string"))
	s.AddSchema("DiagnosticsArchive", objectSchema("a diagnostics data archive",
		"id", "systemvmid", "operationid", "filename", "size:int", "sha256", "manifest", "expires:time", "created:time", "url"))
	for _, r := range s.diagnosticsDataRoutes() {
		if err := s.Handle(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) getDiagnosticsData(targetType string) echo.HandlerFunc {
	return func(c echo.Context) error {
		var body diagnosticsDataBody
		if err := decodeBody(c, &body, true); err != nil {
			return err
		}
		if err := diagnostics.ValidateFiles(body.Files); err != nil {
			var de *diagnostics.Error
			if errors.As(err, &de) {
				return BadRequest(de.Field, "%s", de.Message)
			}
			return BadRequest("files", "%v", err)
		}
		vm, err := s.diagnosticsVM(c, targetType)
		if err != nil {
			return err
		}
		if vm.State != models.StateRunning {
			return Conflict("%s %s is %s: diagnostics data is collected only from a Running system VM", vm.Type, vm.Name, vm.State)
		}
		return s.StartOperation(c.Request().Context(), c, operations.Spec{
			Target:     workflows.VMTarget(vm.ID, vm.Type, vm.ZoneID, workflows.DiagnosticsDataOperationKind),
			Workflow:   workflows.DiagnosticsDataWorkflowName,
			TargetType: targetType, TargetID: vm.ID, TargetName: vm.Name,
			Input: func(opID string) any {
				return workflows.DiagnosticsDataInput{OperationID: opID, VMID: vm.ID, Files: body.Files}
			},
			Memo: map[string]any{"vmType": vm.Type},
		})
	}
}

// linkKey returns the key signing download links, made once and kept encrypted in secrets.
func (s *Server) linkKey(ctx context.Context) ([]byte, error) {
	key, err := s.store.Secrets.GetSecret(ctx, diagnosticsLinkKey)
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, models.ErrSecretNotFound) {
		return nil, err
	}
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	if err := s.store.Secrets.PutSecret(ctx, diagnosticsLinkKey, fresh); err != nil {
		return nil, err
	}
	// Read back: of two servers making the key at once, the stored one signs.
	return s.store.Secrets.GetSecret(ctx, diagnosticsLinkKey)
}

func linkSignature(key []byte, id string, expires int64) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "diagnostics-archive\n%s\n%d", id, expires)
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Server) getDiagnosticsArchive(c echo.Context) error {
	ctx := c.Request().Context()
	if _, err := activities.RemoveExpiredDiagnosticsArchives(ctx, s.store, time.Now()); err != nil {
		return Internal(err, "remove expired diagnostics archives")
	}
	var row models.DiagnosticsArchive
	err := s.store.DB.WithContext(ctx).Omit("data").Where("id = ?", c.Param("id")).Take(&row).Error
	if err != nil {
		if isNotFound(err) {
			return NotFound("no diagnostics archive with id %s (archives are removed after %s)", c.Param("id"), activities.SettingDiagnosticsMaxAge)
		}
		return Internal(err, "read diagnostics archive %s", c.Param("id"))
	}
	key, err := s.linkKey(ctx)
	if err != nil {
		return Internal(err, "diagnostics link key")
	}
	exp := row.ExpiresAt.Unix()
	q := url.Values{"expires": {strconv.FormatInt(exp, 10)}, "signature": {linkSignature(key, row.ID, exp)}}
	return ok(c, DiagnosticsArchive{DiagnosticsArchive: row, URL: "/api/v1/diagnostics-archives/" + row.ID + "/download?" + q.Encode()})
}

func (s *Server) downloadDiagnosticsArchive(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("id")
	exp, err := strconv.ParseInt(c.QueryParam("expires"), 10, 64)
	if err != nil {
		return BadRequest("expires", "expires must be the link's Unix time")
	}
	key, err := s.linkKey(ctx)
	if err != nil {
		return Internal(err, "diagnostics link key")
	}
	if !hmac.Equal([]byte(linkSignature(key, id, exp)), []byte(c.QueryParam("signature"))) {
		return &Error{Status: http.StatusForbidden, Code: CodeForbidden, Field: "signature",
			Message: "the link's signature does not match: get a fresh link from GET /api/v1/diagnostics-archives/" + id}
	}
	now := time.Now()
	if _, err := activities.RemoveExpiredDiagnosticsArchives(ctx, s.store, now); err != nil {
		return Internal(err, "remove expired diagnostics archives")
	}
	if now.Unix() >= exp {
		return &Error{Status: http.StatusGone, Code: CodeNotFound, Message: fmt.Sprintf("the link of diagnostics archive %s expired at %s",
			id, time.Unix(exp, 0).UTC().Format(time.RFC3339))}
	}
	var row models.DiagnosticsArchive
	if err := s.store.DB.WithContext(ctx).Where("id = ?", id).Take(&row).Error; err != nil {
		if isNotFound(err) {
			return &Error{Status: http.StatusGone, Code: CodeNotFound, Message: fmt.Sprintf("diagnostics archive %s was removed", id)}
		}
		return Internal(err, "read diagnostics archive %s", id)
	}
	c.Response().Header().Set(echo.HeaderContentDisposition, fmt.Sprintf("attachment; filename=%q", row.FileName))
	c.Response().Header().Set("X-Checksum-Sha256", row.SHA256)
	return c.Blob(http.StatusOK, "application/gzip", row.Data)
}

func isNotFound(err error) bool { return errors.Is(err, gorm.ErrRecordNotFound) }
