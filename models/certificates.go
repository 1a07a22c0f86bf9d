package models

// The console proxy keystore: uploaded server, intermediate and root certificates, every
// version kept, and which certificate each system VM serves. Private keys live in the Secrets
// store (encrypted at rest); a row holds only the reference (KeyRef).

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// SecretKindCertificateKey is the Secrets kind of a certificate's private key.
const SecretKindCertificateKey = "certificate-key"

// Certificate is one uploaded version of a keystore entry: the server certificate (with a
// key, held in Secrets) or a CA certificate of the chain (key-less, by position; 1 = root).
// Uploading under the same name adds a version and makes it current; earlier versions stay
// for rollback.
type Certificate struct {
	Base
	Name    string `gorm:"size:255;uniqueIndex:idx_cert_name_version" json:"name"`
	Version int    `gorm:"uniqueIndex:idx_cert_name_version" json:"version"`
	// Current marks the version in use for its name.
	Current bool   `gorm:"column:is_current;index" json:"current"`
	Kind    string `gorm:"size:16" json:"kind"` // server | root | intermediate
	// ChainPosition is CloudStack's id: 1 for the root, 2... for intermediates; 0 for a server
	// certificate.
	ChainPosition int    `json:"chainposition"`
	DomainSuffix  string `gorm:"size:255" json:"domainsuffix,omitempty"`
	// PEM is the certificate (a server certificate's bundled intermediates included).
	PEM          string    `gorm:"type:text" json:"certificate"`
	Subject      string    `gorm:"size:1024" json:"subject"`
	Issuer       string    `gorm:"size:1024" json:"issuer"`
	DNSNames     string    `gorm:"size:2048" json:"-"`
	SerialNumber string    `gorm:"size:128" json:"serialnumber"`
	KeyAlgorithm string    `gorm:"size:32" json:"keyalgorithm"`
	NotBefore    time.Time `json:"notbefore"`
	NotAfter     time.Time `gorm:"index" json:"notafter"`
	// Fingerprint is the SHA-256 of the DER certificate, colon-separated hex.
	Fingerprint string `gorm:"size:128;index" json:"fingerprint"`
	// KeyRef names the Secrets entry of the private key (server certificates); never shown.
	KeyRef string `gorm:"size:255" json:"-"`
	// ChainFingerprints are the fingerprints of the verified chain above the certificate at
	// upload, root last, comma-separated.
	ChainFingerprints string `gorm:"type:text" json:"-"`
	UploadedBy        string `gorm:"size:255" json:"uploadedby,omitempty"`
}

// TableName keeps the table's name plain.
func (Certificate) TableName() string { return "certificates" }

// Names are the certificate's DNS names.
func (c *Certificate) Names() []string { return SplitList(c.DNSNames) }

// Parsed is the certificate's first block, parsed.
func (c *Certificate) Parsed() (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(c.PEM))
	if b == nil {
		return nil, fmt.Errorf("certificate %s v%d: no PEM block stored", c.Name, c.Version)
	}
	return x509.ParseCertificate(b.Bytes)
}

// SystemVMCertificate records which server certificate a system VM serves (and the one it
// served before, the rollback target).
type SystemVMCertificate struct {
	VMID          string    `gorm:"primaryKey;size:36" json:"vmid"`
	CertificateID string    `gorm:"size:36;index" json:"certificateid"`
	PreviousID    string    `gorm:"size:36" json:"previouscertificateid,omitempty"`
	OperationID   string    `gorm:"size:36" json:"operationid,omitempty"`
	UpdatedAt     time.Time `json:"updated"`
}

// certificatesMigration is the keystore's migration step.
func certificatesMigration(tx *gorm.DB) error {
	type Certificate struct {
		ID                string `gorm:"primaryKey;size:36"`
		CreatedAt         time.Time
		UpdatedAt         time.Time
		Name              string `gorm:"size:255;uniqueIndex:idx_cert_name_version"`
		Version           int    `gorm:"uniqueIndex:idx_cert_name_version"`
		Current           bool   `gorm:"column:is_current;index"`
		Kind              string `gorm:"size:16"`
		ChainPosition     int
		DomainSuffix      string `gorm:"size:255"`
		PEM               string `gorm:"type:text"`
		Subject           string `gorm:"size:1024"`
		Issuer            string `gorm:"size:1024"`
		DNSNames          string `gorm:"size:2048"`
		SerialNumber      string `gorm:"size:128"`
		KeyAlgorithm      string `gorm:"size:32"`
		NotBefore         time.Time
		NotAfter          time.Time `gorm:"index"`
		Fingerprint       string    `gorm:"size:128;index"`
		KeyRef            string    `gorm:"size:255"`
		ChainFingerprints string    `gorm:"type:text"`
		UploadedBy        string    `gorm:"size:255"`
	}
	type SystemVMCertificate struct {
		VMID          string `gorm:"primaryKey;size:36"`
		CertificateID string `gorm:"size:36;index"`
		PreviousID    string `gorm:"size:36"`
		OperationID   string `gorm:"size:36"`
		UpdatedAt     time.Time
	}
	// A step may run again on a database that has it (its record lost): create what is missing.
	for _, m := range []any{&Certificate{}, &SystemVMCertificate{}} {
		if tx.Migrator().HasTable(m) {
			continue
		}
		if err := tx.Migrator().CreateTable(m); err != nil {
			return fmt.Errorf("create table of %T: %w", m, err)
		}
	}
	return nil
}

// Fingerprint is the SHA-256 fingerprint of a DER certificate, colon-separated upper hex.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// CurrentCertificateChain is the current root and intermediates, by position.
func (s *Store) CurrentCertificateChain(ctx context.Context) ([]*Certificate, error) {
	var rows []*Certificate
	err := s.DB.WithContext(ctx).Where("is_current = ? AND kind <> ?", true, CertServer).Order("chain_position").Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read certificate chain: %w", err)
	}
	return rows, nil
}

// CurrentServerCertificate is the current server certificate (ErrNotFound when none).
func (s *Store) CurrentServerCertificate(ctx context.Context) (*Certificate, error) {
	var c Certificate
	err := s.DB.WithContext(ctx).Where("is_current = ? AND kind = ?", true, CertServer).Order("created_at DESC").First(&c).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read server certificate: %w", err)
	}
	return &c, nil
}

// ListCertificates lists the keystore: the current versions, or every version with all.
func (s *Store) ListCertificates(ctx context.Context, all bool) ([]Certificate, error) {
	q := s.DB.WithContext(ctx).Order("kind DESC, chain_position, name, version DESC")
	if !all {
		q = q.Where("is_current = ?", true)
	}
	var rows []Certificate
	if err := q.Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	return rows, nil
}

// CertificateUploadResult is what an accepted upload stored.
type CertificateUploadResult struct {
	Certificate Certificate
	// Replaced is the version it replaced (nil for a new name).
	Replaced *Certificate
	Warnings []string
}

// UploadCertificate validates an upload (ValidateCertificateUpload) and stores it as the
// current version of its name, the key sealed in Secrets. A refused upload is a
// *CertificateError and stores nothing.
func (s *Store) UploadCertificate(ctx context.Context, up CertificateUpload, by string, now time.Time, buffer time.Duration) (*CertificateUploadResult, error) {
	if up.PrivateKey != "" && up.Name == "" {
		up.Name = ServerCertificateName
	}
	chain, err := s.CurrentCertificateChain(ctx)
	if err != nil {
		return nil, err
	}
	v, err := ValidateCertificateUpload(up, chain, now, buffer)
	if err != nil {
		return nil, err
	}
	if v.Kind != CertServer {
		for _, c := range chain {
			if c.ChainPosition == up.ChainPosition && c.Name != up.Name {
				return nil, certErr("id", "chain position %d is held by %s; upload under name %s to replace it, or use another id", up.ChainPosition, c.Name, c.Name)
			}
		}
	}
	row := Certificate{Base: Base{ID: NewID()}, Name: up.Name, Current: true, Kind: v.Kind, DomainSuffix: up.DomainSuffix,
		Subject: v.Leaf.Subject.String(), Issuer: v.Leaf.Issuer.String(), DNSNames: strings.Join(v.Leaf.DNSNames, ","),
		SerialNumber: v.Leaf.SerialNumber.Text(16), KeyAlgorithm: keyAlgorithm(v.Leaf),
		NotBefore: v.Leaf.NotBefore.UTC(), NotAfter: v.Leaf.NotAfter.UTC(), Fingerprint: Fingerprint(v.Leaf.Raw), UploadedBy: by}
	if v.Kind != CertServer {
		row.ChainPosition = up.ChainPosition
	}
	var pemText strings.Builder
	for _, c := range append([]*x509.Certificate{v.Leaf}, v.Bundled...) {
		_ = pem.Encode(&pemText, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	row.PEM = pemText.String()
	var fps []string
	for _, c := range v.Chain[1:] {
		fps = append(fps, Fingerprint(c.Raw))
	}
	row.ChainFingerprints = strings.Join(fps, ",")
	if v.Kind == CertServer {
		row.KeyRef = "certificate-key:" + row.ID
		if err := s.Secrets.Put(ctx, row.KeyRef, SecretKindCertificateKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: v.KeyDER})); err != nil {
			return nil, fmt.Errorf("store the key of %s: %w", row.Name, err)
		}
	}
	res := &CertificateUploadResult{Warnings: v.Warnings}
	err = s.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var prev Certificate
		err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("name = ?", row.Name).Order("version DESC").First(&prev).Error
		switch {
		case errors.Is(err, gorm.ErrRecordNotFound):
			row.Version = 1
		case err != nil:
			return err
		default:
			row.Version = prev.Version + 1
			var cur Certificate
			if err := tx.Where("name = ? AND is_current = ?", row.Name, true).First(&cur).Error; err == nil {
				res.Replaced = &cur
			}
			if err := tx.Model(&Certificate{}).Where("name = ?", row.Name).Update("is_current", false).Error; err != nil {
				return err
			}
		}
		return tx.Create(&row).Error
	})
	if err != nil {
		return nil, fmt.Errorf("store certificate %s: %w", row.Name, err)
	}
	res.Certificate = row
	return res, nil
}

func keyAlgorithm(c *x509.Certificate) string {
	switch c.PublicKeyAlgorithm {
	case x509.RSA:
		return "RSA"
	case x509.ECDSA:
		return "ECDSA"
	}
	return c.PublicKeyAlgorithm.String()
}

// CertificateKeyPEM returns a server certificate's private key (PEM, PKCS#8) from Secrets. Only
// activities that hand the key to a system VM call it; it is never returned or logged.
func (s *Store) CertificateKeyPEM(ctx context.Context, c *Certificate) ([]byte, error) {
	if c.KeyRef == "" {
		return nil, fmt.Errorf("certificate %s v%d has no key", c.Name, c.Version)
	}
	return s.Secrets.GetSecret(ctx, c.KeyRef)
}

// CertificateBundle is what a system VM serves: the server certificate's PEM followed by the
// chain's intermediates (the root last), and the key.
func (s *Store) CertificateBundle(ctx context.Context, id string) (certPEM, keyPEM []byte, cert *Certificate, err error) {
	var c Certificate
	if err := s.Get(ctx, &c, id); err != nil {
		return nil, nil, nil, fmt.Errorf("certificate %s: %w", id, err)
	}
	key, err := s.CertificateKeyPEM(ctx, &c)
	if err != nil {
		return nil, nil, nil, err
	}
	out := []byte(c.PEM)
	if c.ChainFingerprints != "" {
		want := SplitList(c.ChainFingerprints)
		var chain []Certificate
		if err := s.DB.WithContext(ctx).Where("fingerprint IN ?", want).Find(&chain).Error; err != nil {
			return nil, nil, nil, fmt.Errorf("certificate %s chain: %w", c.Name, err)
		}
		byFP := map[string]Certificate{}
		for _, ch := range chain {
			byFP[ch.Fingerprint] = ch
		}
		for _, fp := range want {
			if ch, ok := byFP[fp]; ok && !strings.Contains(string(out), strings.TrimSpace(ch.PEM)) {
				out = append(out, ch.PEM...)
			}
		}
	}
	return out, key, &c, nil
}

// ServedCertificates maps the IDs of system VMs not destroyed to the certificate each serves.
func (s *Store) ServedCertificates(ctx context.Context) (map[string]SystemVMCertificate, error) {
	var rows []SystemVMCertificate
	// A destroyed VM serves nothing (the old CPVM a rotation replaced).
	live := s.DB.Model(&SystemVM{}).Select("id").Where("state <> ?", StateDestroyed)
	if err := s.DB.WithContext(ctx).Where("vm_id IN (?)", live).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read served certificates: %w", err)
	}
	out := make(map[string]SystemVMCertificate, len(rows))
	for _, r := range rows {
		out[r.VMID] = r
	}
	return out, nil
}

// SetServedCertificate records that a VM now serves a certificate, keeping what it served
// before as the rollback target (unless it is the same one again).
func (s *Store) SetServedCertificate(ctx context.Context, vmID, certID, operationID string) error {
	return s.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var cur SystemVMCertificate
		err := tx.First(&cur, "vm_id = ?", vmID).Error
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
			return err
		}
		row := SystemVMCertificate{VMID: vmID, CertificateID: certID, PreviousID: cur.PreviousID, OperationID: operationID, UpdatedAt: time.Now().UTC()}
		if cur.CertificateID != "" && cur.CertificateID != certID {
			row.PreviousID = cur.CertificateID
		}
		return tx.Clauses(clause.OnConflict{UpdateAll: true}).Create(&row).Error
	})
}

// CertificateExpiry is a certificate's remaining validity.
type CertificateExpiry struct {
	Name     string
	Version  int
	NotAfter time.Time
	Days     float64
}

// CertificateExpiries lists the current certificates with the days until each expires
// (negative once expired), by name.
func (s *Store) CertificateExpiries(ctx context.Context, now time.Time) ([]CertificateExpiry, error) {
	rows, err := s.ListCertificates(ctx, false)
	if err != nil {
		return nil, err
	}
	out := make([]CertificateExpiry, 0, len(rows))
	for _, r := range rows {
		out = append(out, CertificateExpiry{Name: r.Name, Version: r.Version, NotAfter: r.NotAfter, Days: r.NotAfter.Sub(now).Hours() / 24})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
