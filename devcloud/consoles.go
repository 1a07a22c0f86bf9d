package devcloud

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/models"
)

// devConsoleSecret is the Secrets entry of the dev default console certificate.
const devConsoleSecret = "dev-console-certificate"

// DevConsoleDomain is the name the dev default console certificate covers.
const DevConsoleDomain = "*.consoleproxy.dev.local"

// DevConsoleCertificate is the dev default certificate the simulated SSVMs and CPVMs serve
// until they are given one: self-signed for DevConsoleDomain, generated once and kept
// encrypted in the Secrets store.
func DevConsoleCertificate(ctx context.Context, store *models.Store) (tls.Certificate, error) {
	var pair struct{ Cert, Key string }
	b, err := store.Secrets.GetSecret(ctx, devConsoleSecret)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &pair); err != nil {
			return tls.Certificate{}, fmt.Errorf("dev console certificate: %w", err)
		}
	case errors.Is(err, models.ErrSecretNotFound):
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "sysvm dev console"},
			DNSNames: []string{DevConsoleDomain}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true}
		der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
		if err != nil {
			return tls.Certificate{}, err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return tls.Certificate{}, err
		}
		pair.Cert = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		pair.Key = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
		raw, _ := json.Marshal(pair)
		if err := store.Secrets.Put(ctx, devConsoleSecret, models.SecretKindCertificateKey, raw); err != nil {
			return tls.Certificate{}, err
		}
	default:
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair([]byte(pair.Cert), []byte(pair.Key))
}

// StartConsoles builds the simulated console endpoints of the dev fleet: the dev default
// certificate and the console token key derived from the master key. Give
// Consoles.Command() to fleet.Options.Commands under fleet.ConsoleCommand.
func StartConsoles(ctx context.Context, store *models.Store, master []byte, log *slog.Logger) (*fleet.Consoles, error) {
	cert, err := DevConsoleCertificate(ctx, store)
	if err != nil {
		return nil, fmt.Errorf("dev console certificate: %w", err)
	}
	tk, err := consoles.TokenKey(master)
	if err != nil {
		return nil, err
	}
	return fleet.NewConsoles(fleet.ConsoleOptions{TokenKey: tk, Default: cert, Logger: log})
}
