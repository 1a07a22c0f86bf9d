package models

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Minimum key sizes of uploaded certificates and keys.
const (
	MinRSABits   = 2048
	MinECDSABits = 256
)

// Certificate kinds.
const (
	CertServer       = "server"
	CertRoot         = "root"
	CertIntermediate = "intermediate"
)

// ServerCertificateName is the name the server certificate is stored under when the upload
// names none, as CloudStack's keystore calls it.
const ServerCertificateName = "CPVMCertificate"

// CertificateUpload is one uploadCustomCertificate request: the server certificate with its
// PKCS#8 key and domain suffix, or a key-less root or intermediate CA certificate under a name
// and a chain position (1 = root).
type CertificateUpload struct {
	Certificate   string
	PrivateKey    string
	DomainSuffix  string
	Name          string
	ChainPosition int
}

// CertificateError is a refused upload: the field it is about and what is wrong, for an
// operator. It never contains key material.
type CertificateError struct {
	Field   string
	Message string
}

// Error is "field: message".
func (e *CertificateError) Error() string { return e.Field + ": " + e.Message }

func certErr(field, format string, args ...any) *CertificateError {
	return &CertificateError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// ValidCertificate is an upload that passed every check.
type ValidCertificate struct {
	Kind string
	// Leaf is the uploaded certificate (the first block of the field).
	Leaf *x509.Certificate
	// Bundled are further certificates given in the same field (intermediates after a server
	// certificate).
	Bundled []*x509.Certificate
	// KeyDER is the PKCS#8 private key (server certificates only).
	KeyDER []byte
	// Chain is the verified chain from the leaf to the root, leaf first.
	Chain []*x509.Certificate
	// Warnings are accepted problems (expiring within the buffer, no chain to verify).
	Warnings []string
}

// SampleConsoleHost is a console host under a `*.` suffix, as console URLs build them
// (1-2-3-4.consoleproxy.example.com for *.consoleproxy.example.com).
func SampleConsoleHost(suffix string) string { return "1-2-3-4" + strings.TrimPrefix(suffix, "*") }

// ValidateCertificateUpload checks an upload before anything is stored: PEM syntax, key
// format, type and size, that the key matches, the chain up to the uploaded root (chain is
// the stored current root and intermediates, by position; only they are trusted, never the
// system's pool), validity against now and the expiry buffer, and that the names cover the
// domain suffix. The error is a *CertificateError naming the field.
func ValidateCertificateUpload(up CertificateUpload, chain []*Certificate, now time.Time, buffer time.Duration) (*ValidCertificate, error) {
	if strings.TrimSpace(up.Certificate) == "" {
		return nil, certErr("certificate", "required: the PEM certificate")
	}
	certs, err := parseCertificates("certificate", up.Certificate)
	if err != nil {
		return nil, err
	}
	v := &ValidCertificate{Leaf: certs[0], Bundled: certs[1:]}
	if up.PrivateKey != "" {
		v.Kind = CertServer
	} else if up.ChainPosition == 1 {
		v.Kind = CertRoot
	} else {
		v.Kind = CertIntermediate
	}
	if v.Kind != CertServer {
		if up.Name == "" {
			return nil, certErr("name", "required for a CA certificate (without privatekey): the name it is stored under, e.g. root1 or intermed1")
		}
		if up.ChainPosition < 1 {
			return nil, certErr("id", "required for a CA certificate (without privatekey): its position in the chain, 1 for the root, 2 for the first intermediate")
		}
		if len(v.Bundled) > 0 {
			return nil, certErr("certificate", "%d certificates given; a CA certificate is uploaded one per name", len(certs))
		}
		if !v.Leaf.BasicConstraintsValid || !v.Leaf.IsCA {
			return nil, certErr("certificate", "%s is not a CA certificate (basic constraints CA:TRUE missing); a server certificate is uploaded with its privatekey",
				v.Leaf.Subject)
		}
	}
	if err := checkPublicKey("certificate", v.Leaf); err != nil {
		return nil, err
	}
	if up.DomainSuffix != "" || v.Kind == CertServer {
		if err := checkSuffix(up.DomainSuffix); err != nil {
			return nil, err
		}
	}
	if err := checkValidity("certificate", v.Leaf, now, buffer, &v.Warnings); err != nil {
		return nil, err
	}
	switch v.Kind {
	case CertServer:
		if v.KeyDER, err = parsePrivateKey(up.PrivateKey, v.Leaf); err != nil {
			return nil, err
		}
		if err := v.Leaf.VerifyHostname(SampleConsoleHost(up.DomainSuffix)); err != nil {
			return nil, certErr("domainsuffix", "the certificate's names (%s) do not cover %s: a console host such as %s would not match",
				certNames(v.Leaf), up.DomainSuffix, SampleConsoleHost(up.DomainSuffix))
		}
		if err := verifyChain(v, chain, now, x509.ExtKeyUsageServerAuth); err != nil {
			return nil, err
		}
	case CertRoot:
		if err := v.Leaf.CheckSignatureFrom(v.Leaf); err != nil || !bytesEqual(v.Leaf.RawIssuer, v.Leaf.RawSubject) {
			return nil, certErr("certificate", "%s is not a valid root (id 1): it is not self-signed (issuer %s): upload the root CA at id 1 and this one at a higher id",
				v.Leaf.Subject, v.Leaf.Issuer)
		}
		v.Chain = []*x509.Certificate{v.Leaf}
	case CertIntermediate:
		var below []*Certificate
		for _, c := range chain {
			if c.ChainPosition < up.ChainPosition && c.Name != up.Name {
				below = append(below, c)
			}
		}
		if err := verifyChain(v, below, now, x509.ExtKeyUsageAny); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

func parseCertificates(field, text string) ([]*x509.Certificate, error) {
	blocks, err := scanPEM(field, text)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for _, b := range blocks {
		if b.Type != "CERTIFICATE" {
			hint := ""
			if strings.Contains(b.Type, "PRIVATE KEY") {
				hint = ": a private key goes in privatekey"
			}
			return nil, certErr(field, "%s: want CERTIFICATE blocks only%s", b.where(), hint)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, certErr(field, "%s: not a valid X.509 certificate (%v): is it truncated?", b.where(), err)
		}
		out = append(out, c)
	}
	return out, nil
}

// parsePrivateKey accepts one unencrypted PKCS#8 key matching cert; PKCS#1, SEC1 and encrypted
// keys are refused with the openssl command that converts them.
func parsePrivateKey(text string, cert *x509.Certificate) ([]byte, error) {
	const f = "privatekey"
	blocks, err := scanPEM(f, text)
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 {
		return nil, certErr(f, "%d PEM blocks given; want exactly one PRIVATE KEY block", len(blocks))
	}
	b := blocks[0]
	switch {
	case b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED"):
		return nil, certErr(f, "%s: the key is encrypted; upload it unencrypted in PKCS#8: openssl pkcs8 -topk8 -nocrypt -in encrypted.key -out key.pk8.pem "+
			"(it asks for the pass phrase once; the key is encrypted at rest here)", b.where())
	case b.Type == "RSA PRIVATE KEY":
		return nil, certErr(f, "%s: a PKCS#1 key (BEGIN RSA PRIVATE KEY); convert it to PKCS#8: openssl pkcs8 -topk8 -nocrypt -in rsa.key -out key.pk8.pem", b.where())
	case b.Type == "EC PRIVATE KEY":
		return nil, certErr(f, "%s: a SEC1 EC key (BEGIN EC PRIVATE KEY); convert it to PKCS#8: openssl pkcs8 -topk8 -nocrypt -in ec.key -out key.pk8.pem", b.where())
	case b.Type == "CERTIFICATE":
		return nil, certErr(f, "%s: a certificate, not a key; the certificate goes in certificate", b.where())
	case b.Type != "PRIVATE KEY":
		return nil, certErr(f, "%s: want a PKCS#8 PRIVATE KEY block", b.where())
	}
	key, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, certErr(f, "%s: not a valid PKCS#8 key (%v): is it truncated?", b.where(), err)
	}
	var pub crypto.PublicKey
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return nil, certErr(f, "an RSA key of %d bits; at least %d are needed", bits, MinRSABits)
		}
		pub = k.Public()
	case *ecdsa.PrivateKey:
		if bits := k.Curve.Params().BitSize; bits < MinECDSABits {
			return nil, certErr(f, "an ECDSA key on %s; P-256 or larger is needed", k.Curve.Params().Name)
		}
		pub = k.Public()
	default:
		return nil, certErr(f, "a %T key; RSA (%d bits or more) or ECDSA (P-256 or larger) is needed", key, MinRSABits)
	}
	type equaler interface{ Equal(x crypto.PublicKey) bool }
	if e, ok := pub.(equaler); !ok || !e.Equal(cert.PublicKey) {
		return nil, certErr(f, "the key does not match the certificate %s (its public key differs): was the key of another certificate given?", cert.Subject)
	}
	return b.Bytes, nil
}

func checkPublicKey(field string, c *x509.Certificate) error {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return certErr(field, "%s has an RSA key of %d bits; at least %d are needed", c.Subject, bits, MinRSABits)
		}
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P224() || k.Curve.Params().BitSize < MinECDSABits {
			return certErr(field, "%s has an ECDSA key on %s; P-256 or larger is needed", c.Subject, k.Curve.Params().Name)
		}
	default:
		return certErr(field, "%s has a %s key; RSA or ECDSA is needed", c.Subject, c.PublicKeyAlgorithm)
	}
	return nil
}

func checkSuffix(s string) error {
	if s == "" {
		return certErr("domainsuffix", "required with a server certificate: the DNS suffix console hosts are named under, e.g. *.consoleproxy.example.com")
	}
	if !strings.HasPrefix(s, "*.") {
		return certErr("domainsuffix", "%q must start with *. (e.g. *.consoleproxy.example.com): console hosts are named <a-b-c-d> under it", s)
	}
	rest := strings.TrimPrefix(s, "*.")
	if net.ParseIP(rest) != nil || !strings.Contains(rest, ".") || len(rest) > 253 {
		return certErr("domainsuffix", "%q: want a DNS domain of two labels or more after *.", s)
	}
	for _, label := range strings.Split(rest, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return certErr("domainsuffix", "%q: label %q is not a DNS label", s, label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return certErr("domainsuffix", "%q: label %q has %q, not allowed in a DNS name", s, label, r)
			}
		}
	}
	return nil
}

func checkValidity(field string, c *x509.Certificate, now time.Time, buffer time.Duration, warnings *[]string) error {
	switch {
	case now.Before(c.NotBefore):
		return certErr(field, "%s is not valid yet: valid from %s (now %s)", c.Subject, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case !now.Before(c.NotAfter):
		return certErr(field, "%s expired on %s", c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
	case buffer > 0 && c.NotAfter.Sub(now) < buffer:
		*warnings = append(*warnings, fmt.Sprintf("%s expires on %s, within the expiry buffer of %s: renew it soon",
			c.Subject, c.NotAfter.UTC().Format(time.RFC3339), buffer))
	}
	return nil
}

// verifyChain verifies v.Leaf with the stored chain certificates as the only trust: the one at
// position 1 is the root, the others (and any bundled with the leaf) intermediates.
func verifyChain(v *ValidCertificate, chain []*Certificate, now time.Time, usage x509.ExtKeyUsage) error {
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	haveRoot := false
	for _, c := range chain {
		pc, err := c.Parsed()
		if err != nil {
			return fmt.Errorf("stored certificate %s: %w", c.Name, err)
		}
		if c.ChainPosition == 1 {
			roots.AddCert(pc)
			haveRoot = true
		} else {
			inters.AddCert(pc)
		}
	}
	for _, b := range v.Bundled {
		inters.AddCert(b)
	}
	selfSigned := bytesEqual(v.Leaf.RawIssuer, v.Leaf.RawSubject) &&
		v.Leaf.CheckSignature(v.Leaf.SignatureAlgorithm, v.Leaf.RawTBSCertificate, v.Leaf.Signature) == nil
	if !haveRoot {
		if v.Kind == CertServer && selfSigned {
			v.Chain = []*x509.Certificate{v.Leaf}
			v.Warnings = append(v.Warnings, "self-signed certificate and no root CA uploaded: browsers will not trust it (fine for dev)")
			return nil
		}
		return certErr("certificate", "no root CA certificate is stored to verify %s (issued by %s) against: upload the root first (id 1, name e.g. root1), then the intermediates, then this",
			v.Leaf.Subject, v.Leaf.Issuer)
	}
	chains, err := v.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{usage}})
	if err != nil {
		var ua x509.UnknownAuthorityError
		var inv x509.CertificateInvalidError
		switch {
		case errors.As(err, &ua):
			return certErr("certificate", "the chain does not verify: %s (issued by %s) does not lead to the uploaded root through the uploaded intermediates; "+
				"upload the missing intermediate (or the right root) first", v.Leaf.Subject, v.Leaf.Issuer)
		case errors.As(err, &inv):
			return certErr("certificate", "the chain does not verify: %v", inv)
		}
		return certErr("certificate", "the chain does not verify: %v", err)
	}
	v.Chain = chains[0]
	for _, c := range v.Chain[1:] {
		_ = checkValidity("certificate", c, now, 0, &v.Warnings)
	}
	return nil
}

func certNames(c *x509.Certificate) string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "none: no subject alternative names, CN " + c.Subject.CommonName + " is not used for names"
	}
	return strings.Join(names, ", ")
}
