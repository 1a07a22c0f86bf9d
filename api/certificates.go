package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/operations"
	"github.com/sysvm/sysvm/workflows"
)

// EventCertificateUpload is the event type of an accepted certificate upload.
const EventCertificateUpload = "CERTIFICATE.UPLOAD"

// certificateUploadBody is uploadCustomCertificate's request. The private key is read only to
// be validated and sealed; it is never logged or answered.
type certificateUploadBody struct {
	Certificate  string `json:"certificate"`
	PrivateKey   string `json:"privatekey"`
	DomainSuffix string `json:"domainsuffix"`
	Name         string `json:"name"`
	ID           *int   `json:"id"`
}

// certificateView is a keystore entry as the API shows it: never a key.
type certificateView struct {
	ID            string      `json:"id"`
	Name          string      `json:"name"`
	Kind          string      `json:"kind"`
	Version       int         `json:"version"`
	Current       bool        `json:"current"`
	ChainPosition int         `json:"chainposition"`
	DomainSuffix  string      `json:"domainsuffix,omitempty"`
	Subject       string      `json:"subject"`
	Issuer        string      `json:"issuer"`
	DNSNames      []string    `json:"dnsnames"`
	SerialNumber  string      `json:"serialnumber"`
	KeyAlgorithm  string      `json:"keyalgorithm"`
	NotBefore     time.Time   `json:"notbefore"`
	NotAfter      time.Time   `json:"notafter"`
	DaysToExpiry  float64     `json:"daystoexpiry"`
	Fingerprint   string      `json:"fingerprint"`
	HasKey        bool        `json:"haskey"`
	Chain         []chainLink `json:"chain"`
	Certificate   string      `json:"certificate"`
	UploadedBy    string      `json:"uploadedby,omitempty"`
	Created       time.Time   `json:"created"`
}

// chainLink is one certificate of a verified chain above a server or intermediate certificate.
type chainLink struct {
	Fingerprint string `json:"fingerprint"`
	Name        string `json:"name,omitempty"`
	Subject     string `json:"subject,omitempty"`
	Position    int    `json:"chainposition,omitempty"`
}

func certificateSchemas() map[string]map[string]any {
	view := []string{"id", "name", "kind:string=server|root|intermediate", "version:int", "current:bool", "chainposition:int",
		"domainsuffix?", "subject", "issuer", "dnsnames:[]string", "serialnumber", "keyalgorithm", "notbefore:time", "notafter:time",
		"daystoexpiry:number", "fingerprint", "haskey:bool", "chain:[]@CertificateChainLink", "certificate", "uploadedby?", "created:time"}
	return map[string]map[string]any{
		"Certificate": objectSchema("a keystore entry (uploadCustomCertificate): never its private key", view...),
		"CertificateChainLink": objectSchema("a certificate of the verified chain, root last",
			"fingerprint", "name?", "subject?", "chainposition?:int"),
		"CertificateUpload": objectSchema("a certificate to upload: the server certificate with privatekey (PKCS#8) and domainsuffix, "+
			"or a root (id 1) or intermediate CA certificate (id 2, 3, ...) under a name",
			"certificate", "privatekey?", "domainsuffix?", "name?", "id?:int"),
		"CertificateUploaded": objectSchema("the stored certificate, what it replaced, and accepted problems",
			"certificate:@Certificate", "replaced?", "warnings:[]string"),
		"CertificateListing": objectSchema("the keystore", "count:int", "items:[]@Certificate"),
		"CertificateRotate":  objectSchema("which server certificate to roll out", "certificateid?"),
	}
}

func (s *Server) certificateRoutes() []Route {
	for name, sc := range certificateSchemas() {
		s.AddSchema(name, sc)
	}
	return []Route{
		{Method: http.MethodPost, Path: "/certificates", Role: models.RoleAdmin, Handler: s.uploadCertificate, Doc: Doc{
			OperationID: "uploadCustomCertificate", Summary: "Upload a console proxy certificate (server, intermediate or root)", Tag: "Certificates",
			Description: "Like CloudStack's uploadCustomCertificate. The server certificate comes with its unencrypted PKCS#8 privatekey " +
				"and a domainsuffix starting with *.; root (id 1) and intermediate (id 2, ...) CA certificates come key-less under a name. " +
				"Everything is validated before anything is stored (PEM syntax by block and line, key format, type and size, key match, " +
				"the chain to the uploaded root, validity, names covering the suffix, '+' turned into spaces by URL decoding); a refusal is a " +
				"400 naming the field. Uploading under a name again adds a version and makes it current; earlier versions are kept. " +
				"The key is sealed at rest and never answered. No system VM is touched: rotate to roll the certificate out.",
			Body: "CertificateUpload", BodyRequired: true,
			Responses: []Response{{Status: 201, Description: "stored", Schema: "CertificateUploaded"}}}},
		{Method: http.MethodGet, Path: "/certificates", Role: models.RoleReadOnly, Handler: s.listCertificates, Doc: Doc{
			OperationID: "listCertificates", Summary: "List the console proxy keystore (never a key)", Tag: "Certificates",
			Query:     []Param{{Name: "all", Type: "boolean", Description: "every version, not only the current ones"}},
			Responses: []Response{{Status: 200, Description: "the keystore", Schema: "CertificateListing"}}}},
		{Method: http.MethodPost, Path: "/certificates/rotate", Role: models.RoleOperator, Handler: s.rotateCertificates, Doc: Doc{
			OperationID: "rotateCertificates", Summary: "Roll the current (or a given) server certificate out to every CPVM and SSVM", Tag: "Certificates",
			Description: "Starts a " + workflows.CertificateRotationKind + " operation (workflow ID " + workflows.CertificateRotationWorkflowID +
				", one at a time): zone by zone, one VM at a time, each VM verified with a TLS handshake (the uploaded root, a name under " +
				"the suffix); a failing VM is rolled back to its previous certificate, the rotation stops and an alert names zone, VM and " +
				"reason. A zone's only CPVM is not restarted (alert). Progress per zone and VM is the operation's progress.",
			Body: "CertificateRotate",
			Responses: []Response{{Status: 202, Description: "the rotation started", Schema: "OperationEnvelope"},
				{Status: 409, Description: "a rotation is already running", Schema: "ConflictError"},
				{Status: 503, Description: "Temporal does not answer", Schema: "Error"}}}},
		{Method: http.MethodGet, Path: "/certificates/{id}", Role: models.RoleReadOnly, Handler: s.getCertificate, Doc: Doc{
			OperationID: "getCertificate", Summary: "One keystore entry (never its key)", Tag: "Certificates",
			Responses: []Response{{Status: 200, Description: "the certificate", Schema: "Certificate"}}}},
	}
}

// certificateBuffer is the expiry buffer setting as a duration.
func (s *Server) certificateBuffer(ctx context.Context) (time.Duration, error) {
	days, err := s.store.Settings.Int(ctx, "consoleproxy.certificate.expiry.buffer", models.Scope{})
	if err != nil {
		return 0, err
	}
	return time.Duration(days) * 24 * time.Hour, nil
}

func (s *Server) uploadCertificate(c echo.Context) error {
	var body certificateUploadBody
	if err := decodeBody(c, &body, false); err != nil {
		return err
	}
	ctx := c.Request().Context()
	buffer, err := s.certificateBuffer(ctx)
	if err != nil {
		return Internal(err, "read consoleproxy.certificate.expiry.buffer")
	}
	up := models.CertificateUpload{Certificate: body.Certificate, PrivateKey: body.PrivateKey, DomainSuffix: strings.TrimSpace(body.DomainSuffix),
		Name: strings.TrimSpace(body.Name)}
	if body.ID != nil {
		up.ChainPosition = *body.ID
	}
	by := ""
	if k, ok := Caller(c); ok {
		by = k.Name
	}
	res, err := s.store.UploadCertificate(ctx, up, by, time.Now(), buffer)
	var ce *models.CertificateError
	if errors.As(err, &ce) {
		return BadRequest(ce.Field, "%s", ce.Message)
	}
	if err != nil {
		return Internal(err, "store the certificate")
	}
	desc := "certificate " + res.Certificate.Name + " version " + strconv.Itoa(res.Certificate.Version) + " (" + res.Certificate.Kind + ", " +
		res.Certificate.Fingerprint + ") uploaded by " + by
	if err := s.store.AddEvent(ctx, models.Event{Type: EventCertificateUpload, Description: desc, ResourceType: "certificate",
		ResourceID: res.Certificate.ID}); err != nil {
		s.log.Warn("record certificate upload event", "certificate", res.Certificate.Name, "error", err)
	}
	chain, err := s.chainIndex(ctx)
	if err != nil {
		return err
	}
	out := map[string]any{"certificate": viewCertificate(res.Certificate, chain, time.Now()), "warnings": nonNil(res.Warnings)}
	if res.Replaced != nil {
		out["replaced"] = res.Replaced.ID
	}
	return c.JSON(http.StatusCreated, out)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// chainIndex maps fingerprints to every stored certificate, to name the links of a chain.
func (s *Server) chainIndex(ctx context.Context) (map[string]models.Certificate, error) {
	all, err := s.store.ListCertificates(ctx, true)
	if err != nil {
		return nil, Internal(err, "list certificates")
	}
	idx := make(map[string]models.Certificate, len(all))
	for _, c := range all {
		idx[c.Fingerprint] = c
	}
	return idx, nil
}

func viewCertificate(c models.Certificate, idx map[string]models.Certificate, now time.Time) certificateView {
	v := certificateView{ID: c.ID, Name: c.Name, Kind: c.Kind, Version: c.Version, Current: c.Current, ChainPosition: c.ChainPosition,
		DomainSuffix: c.DomainSuffix, Subject: c.Subject, Issuer: c.Issuer, DNSNames: nonNil(c.Names()), SerialNumber: c.SerialNumber,
		KeyAlgorithm: c.KeyAlgorithm, NotBefore: c.NotBefore, NotAfter: c.NotAfter, DaysToExpiry: float64(int(c.NotAfter.Sub(now).Hours()/24*10)) / 10,
		Fingerprint: c.Fingerprint, HasKey: c.KeyRef != "", Chain: []chainLink{}, Certificate: c.PEM, UploadedBy: c.UploadedBy, Created: c.CreatedAt}
	for _, fp := range models.SplitList(c.ChainFingerprints) {
		l := chainLink{Fingerprint: fp}
		if ch, ok := idx[fp]; ok {
			l.Name, l.Subject, l.Position = ch.Name, ch.Subject, ch.ChainPosition
		}
		v.Chain = append(v.Chain, l)
	}
	return v
}

func (s *Server) listCertificates(c echo.Context) error {
	ctx := c.Request().Context()
	all := false
	if v := c.QueryParam("all"); v != "" {
		b, err := parseBool("all", v)
		if err != nil {
			return err
		}
		all = b
	}
	rows, err := s.store.ListCertificates(ctx, all)
	if err != nil {
		return Internal(err, "list certificates")
	}
	idx, err := s.chainIndex(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	items := make([]certificateView, 0, len(rows))
	for _, r := range rows {
		items = append(items, viewCertificate(r, idx, now))
	}
	return ok(c, map[string]any{"count": len(items), "items": items})
}

func (s *Server) getCertificate(c echo.Context) error {
	row, err := getRow[models.Certificate](c, s.store.DB, c.Param("id"), "certificate")
	if err != nil {
		return err
	}
	idx, err := s.chainIndex(c.Request().Context())
	if err != nil {
		return err
	}
	return ok(c, viewCertificate(row, idx, time.Now()))
}

// certificateRotateBody is the optional body of POST /certificates/rotate.
type certificateRotateBody struct {
	CertificateID string `json:"certificateid"`
}

func (s *Server) rotateCertificates(c echo.Context) error {
	var body certificateRotateBody
	if err := decodeBody(c, &body, true); err != nil {
		return err
	}
	ctx := c.Request().Context()
	var cert *models.Certificate
	if body.CertificateID != "" {
		row, err := getRow[models.Certificate](c, s.store.DB, body.CertificateID, "certificate")
		if err != nil {
			return BadRequest("certificateid", "no certificate with id %s", body.CertificateID)
		}
		if row.Kind != models.CertServer {
			return BadRequest("certificateid", "certificate %s is a %s certificate; rotate a server certificate", row.Name, row.Kind)
		}
		cert = &row
	} else {
		cur, err := s.store.CurrentServerCertificate(ctx)
		if errors.Is(err, models.ErrNotFound) {
			return BadRequest("certificateid", "no server certificate uploaded yet: POST /certificates with certificate, privatekey and domainsuffix first")
		}
		if err != nil {
			return Internal(err, "read the server certificate")
		}
		cert = cur
	}
	id := cert.ID
	return s.StartOperation(ctx, c, operations.Spec{
		Target:   workflows.ZoneTarget(workflows.CertificateRotationWorkflowID, "", workflows.CertificateRotationKind),
		Workflow: workflows.CertificateRotationWorkflowName, TargetType: "certificate", TargetID: id,
		TargetName: cert.Name + " v" + strconv.Itoa(cert.Version),
		Input: func(opID string) any {
			return activities.CertRotationInput{OperationID: opID, CertificateID: id}
		},
	})
}
