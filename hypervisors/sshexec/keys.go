package sshexec

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// RSAKeyBits is the size of the RSA keys GenerateKeyPair makes.
//
// Why RSA and not ed25519: the system VM key pair is the one CloudStack operators know as
// /root/.ssh/id_rsa.cloud on KVM/XenServer hosts and /var/lib/cloudstack/management/.ssh/id_rsa
// on the management server. It is copied to hypervisor hosts (including XenServer dom0 and
// RHEL-family KVM hosts that may run in FIPS mode, where OpenSSH refuses ed25519) and used by
// people and existing scripts with `ssh -i`. RSA works everywhere that path leads; 3072 bits is
// the NIST-recommended size for use beyond 2030. Generating it costs about a second, once.
const RSAKeyBits = 3072

// KeyComment is the comment written at the end of generated authorized_keys lines.
const KeyComment = "sysvm-systemvm"

// KeyPair is the system VM SSH key pair. PrivatePEM is secret: never log it. Its String and
// LogValue methods show only the public fingerprint.
type KeyPair struct {
	// PrivatePEM is the private key, PEM encoded ("RSA PRIVATE KEY", PKCS#1, as `ssh-keygen
	// -m PEM` writes it, so it can be installed as id_rsa.cloud and used by OpenSSH as is).
	PrivatePEM []byte `json:"-"`
	// AuthorizedKey is the public key as one authorized_keys line without a trailing newline,
	// e.g. "ssh-rsa AAAA... sysvm-systemvm".
	AuthorizedKey string `json:"authorizedKey"`
}

// GenerateKeyPair makes a new RSA-3072 key pair (see RSAKeyBits for why RSA).
func GenerateKeyPair() (KeyPair, error) {
	priv, err := rsa.GenerateKey(rand.Reader, RSAKeyBits)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate RSA-%d key: %w", RSAKeyBits, err)
	}
	block := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}
	return ParseKeyPair(pem.EncodeToMemory(block))
}

// ParseKeyPair builds a KeyPair from a PEM private key of any type x/crypto/ssh reads (PKCS#1,
// PKCS#8, OpenSSH format; RSA, ECDSA or ed25519), deriving its authorized_keys line.
func ParseKeyPair(privatePEM []byte) (KeyPair, error) {
	signer, err := ssh.ParsePrivateKey(privatePEM)
	if err != nil {
		return KeyPair{}, fmt.Errorf("parse private key: %w", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " " + KeyComment
	return KeyPair{PrivatePEM: privatePEM, AuthorizedKey: line}, nil
}

// Signer returns the private key as an ssh.Signer.
func (k KeyPair) Signer() (ssh.Signer, error) {
	if len(k.PrivatePEM) == 0 {
		return nil, errors.New("key pair has no private key")
	}
	s, err := ssh.ParsePrivateKey(k.PrivatePEM)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	return s, nil
}

// PublicKey parses the authorized_keys line.
func (k KeyPair) PublicKey() (ssh.PublicKey, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.AuthorizedKey))
	if err != nil {
		return nil, fmt.Errorf("parse authorized key: %w", err)
	}
	return pub, nil
}

// Fingerprint is the public key's SHA256 fingerprint as OpenSSH prints it ("SHA256:..."), or
// "" when the public key does not parse.
func (k KeyPair) Fingerprint() string {
	pub, err := k.PublicKey()
	if err != nil {
		return ""
	}
	return ssh.FingerprintSHA256(pub)
}

// String shows the key type and fingerprint only, never the private key.
func (k KeyPair) String() string {
	return fmt.Sprintf("KeyPair(%s)", k.Fingerprint())
}

// LogValue keeps the private key out of slog output.
func (k KeyPair) LogValue() slog.Value {
	return slog.StringValue(k.String())
}

// BootArgKey is the boot argument that carries the system VM's authorized key.
const BootArgKey = "authorized_key"

// BootArg returns the boot argument that gives a new system VM its authorized key:
// ("authorized_key", base64 of the authorized_keys line with a trailing newline), as CloudStack
// passes it in the system VM cmdline. The value holds no spaces, so it is safe in a cmdline.
func BootArg(pub string) (key, value string) {
	line := strings.TrimSpace(pub) + "\n"
	return BootArgKey, base64.StdEncoding.EncodeToString([]byte(line))
}

// ErrSecretNotFound is wrapped by SecretStore.GetSecret when no secret has that name.
var ErrSecretNotFound = errors.New("secret not found")

// SecretStore keeps named secrets (the integrator plugs in the encrypted secret store).
type SecretStore interface {
	// GetSecret returns the secret's value, or an error wrapping ErrSecretNotFound.
	GetSecret(ctx context.Context, name string) ([]byte, error)
	// PutSecret creates or replaces a secret.
	PutSecret(ctx context.Context, name string, value []byte) error
}

// EnsureKeyPair loads the key pair kept under name, generating and storing it the first time.
// The private key PEM is the stored value; the public part is derived from it. After storing a
// new key it reads the secret back, so callers agree on whatever the store holds; still, call it
// from one place at start-up: the interface has no compare-and-swap to stop two processes that
// both find no key from writing two different ones.
func EnsureKeyPair(ctx context.Context, s SecretStore, name string) (KeyPair, error) {
	pemBytes, err := s.GetSecret(ctx, name)
	switch {
	case err == nil:
		kp, err := ParseKeyPair(pemBytes)
		if err != nil {
			return KeyPair{}, fmt.Errorf("load key pair %q: %w", name, err)
		}
		return kp, nil
	case !errors.Is(err, ErrSecretNotFound):
		return KeyPair{}, fmt.Errorf("load key pair %q: %w", name, err)
	}
	kp, err := GenerateKeyPair()
	if err != nil {
		return KeyPair{}, fmt.Errorf("create key pair %q: %w", name, err)
	}
	if err := s.PutSecret(ctx, name, kp.PrivatePEM); err != nil {
		return KeyPair{}, fmt.Errorf("store key pair %q: %w", name, err)
	}
	pemBytes, err = s.GetSecret(ctx, name)
	if err != nil {
		return KeyPair{}, fmt.Errorf("re-read key pair %q: %w", name, err)
	}
	kp, err = ParseKeyPair(pemBytes)
	if err != nil {
		return KeyPair{}, fmt.Errorf("re-read key pair %q: %w", name, err)
	}
	return kp, nil
}

// MemorySecretStore is a SecretStore held in memory, for development and tests. Safe for
// concurrent use. Its zero value is ready to use.
type MemorySecretStore struct {
	mu      sync.Mutex
	secrets map[string][]byte
}

// GetSecret returns a copy of the named secret or an error wrapping ErrSecretNotFound.
func (m *MemorySecretStore) GetSecret(_ context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.secrets[name]
	if !ok {
		return nil, fmt.Errorf("secret %q: %w", name, ErrSecretNotFound)
	}
	return append([]byte(nil), v...), nil
}

// PutSecret stores a copy of value under name.
func (m *MemorySecretStore) PutSecret(_ context.Context, name string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.secrets == nil {
		m.secrets = map[string][]byte{}
	}
	m.secrets[name] = append([]byte(nil), value...)
	return nil
}
