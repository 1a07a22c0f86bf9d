// Package certtest builds test PKIs with crypto/x509: a root, intermediates and server
// certificates (RSA or ECDSA), as PEM, for the certificate validation, rotation and console
// proxy tests and for `sysvm dev`.
package certtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Issued is a certificate with its key.
type Issued struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CertPEM is the certificate as PEM.
func (i *Issued) CertPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.Cert.Raw}))
}

// KeyPEM is the key as unencrypted PKCS#8 PEM.
func (i *Issued) KeyPEM() string {
	der, err := x509.MarshalPKCS8PrivateKey(i.Key)
	if err != nil {
		panic(fmt.Sprintf("certtest: marshal key: %v", err))
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// PKCS1PEM is an RSA key as PKCS#1 (BEGIN RSA PRIVATE KEY).
func (i *Issued) PKCS1PEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(i.Key.(*rsa.PrivateKey))}))
}

// Algo chooses a key type.
type Algo string

// Key types.
const (
	RSA2048 Algo = "rsa2048"
	RSA1024 Algo = "rsa1024"
	P256    Algo = "p256"
	P384    Algo = "p384"
	P224    Algo = "p224"
)

// NewKey generates a key.
func NewKey(a Algo) crypto.Signer {
	var k crypto.Signer
	var err error
	switch a {
	case RSA1024:
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	case P256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case P384:
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case P224:
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	default:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		panic(fmt.Sprintf("certtest: generate %s key: %v", a, err))
	}
	return k
}

// Options of one certificate.
type Options struct {
	CN        string
	DNSNames  []string
	NotBefore time.Time
	NotAfter  time.Time
	Algo      Algo
	CA        bool
	// Key is used instead of a new key.
	Key crypto.Signer
}

var serial int64 = 1000

// Issue signs a certificate with parent (nil: self-signed).
func Issue(o Options, parent *Issued) *Issued {
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	key := o.Key
	if key == nil {
		key = NewKey(o.Algo)
	}
	serial++
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial + time.Now().UnixNano()%1000000*1000),
		Subject:      pkix.Name{CommonName: o.CN, Organization: []string{"sysvm test"}},
		DNSNames:     o.DNSNames,
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
	}
	if o.CA {
		tpl.IsCA, tpl.BasicConstraintsValid = true, true
		tpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tpl.BasicConstraintsValid = true
		tpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		tpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	signer, parentCert := key, tpl
	if parent != nil {
		signer, parentCert = parent.Key, parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, parentCert, key.Public(), signer)
	if err != nil {
		panic(fmt.Sprintf("certtest: create %s: %v", o.CN, err))
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(fmt.Sprintf("certtest: parse %s: %v", o.CN, err))
	}
	return &Issued{Cert: c, Key: key}
}

// PKI is a three-level chain: root, intermediate, and a server certificate for a suffix.
type PKI struct {
	Root, Intermediate, Server *Issued
	Suffix                     string
}

// NewPKI builds a root and an intermediate CA and a server certificate for suffix
// (*.consoleproxy.example.com), all with keys of algo.
func NewPKI(suffix string, algo Algo) *PKI {
	root := Issue(Options{CN: "sysvm test root", CA: true, Algo: algo, NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour)}, nil)
	inter := Issue(Options{CN: "sysvm test intermediate", CA: true, Algo: algo, NotAfter: time.Now().Add(5 * 365 * 24 * time.Hour)}, root)
	server := Issue(Options{CN: suffix, DNSNames: []string{suffix}, Algo: algo}, inter)
	return &PKI{Root: root, Intermediate: inter, Server: server, Suffix: suffix}
}

// NewPKIWithPlus is NewPKI with a server certificate and key whose PEM text both hold a '+',
// for tests of the URL-decoding corruption ('+' read as a space): the base64 of random DER has
// none a few times in a hundred, which would make such a test flaky.
func NewPKIWithPlus(suffix string, algo Algo) *PKI {
	for i := 0; ; i++ {
		p := NewPKI(suffix, algo)
		if (strings.Contains(p.Server.CertPEM(), "+") && strings.Contains(p.Server.KeyPEM(), "+")) || i == 200 {
			return p
		}
	}
}

// ServerFor issues another server certificate from the PKI's intermediate.
func (p *PKI) ServerFor(o Options) *Issued {
	if o.CN == "" {
		o.CN = p.Suffix
	}
	if o.DNSNames == nil {
		o.DNSNames = []string{p.Suffix}
	}
	return Issue(o, p.Intermediate)
}
