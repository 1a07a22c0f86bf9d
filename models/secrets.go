package models

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// SecretBox encrypts secrets at rest with AES-256-GCM under a master key that never enters the
// database.
type SecretBox struct{ aead cipher.AEAD }

// NewSecretBox builds a box from a 32-byte master key.
func NewSecretBox(key []byte) (*SecretBox, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("secret master key: want 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &SecretBox{aead: aead}, nil
}

// Seal encrypts plaintext; the name is bound as additional data so a ciphertext cannot be
// moved to another secret's row.
func (b *SecretBox) Seal(name string, plaintext []byte) ([]byte, error) {
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return b.aead.Seal(nonce, nonce, plaintext, []byte(name)), nil
}

// Open decrypts what Seal produced.
func (b *SecretBox) Open(name string, ciphertext []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(ciphertext) < n {
		return nil, fmt.Errorf("secret %s: ciphertext too short", name)
	}
	pt, err := b.aead.Open(nil, ciphertext[:n], ciphertext[n:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("secret %s: cannot decrypt (wrong master key?): %w", name, err)
	}
	return pt, nil
}

// ParseMasterKey decodes a base64 master key (as in SYSVM_SECRET_KEY).
func ParseMasterKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("secret master key: not base64: %w", err)
	}
	if len(k) != 32 {
		return nil, fmt.Errorf("secret master key: want 32 bytes after base64, got %d", len(k))
	}
	return k, nil
}

// LoadOrCreateMasterKey reads a base64 key file, creating it (mode 0600) with a random key
// when it does not exist. Used by `sysvm dev`; production passes SYSVM_SECRET_KEY.
func LoadOrCreateMasterKey(path string) ([]byte, error) {
	if b, err := os.ReadFile(path); err == nil {
		return ParseMasterKey(string(b))
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

// ErrSecretNotFound is returned for an unknown secret name.
var ErrSecretNotFound = errors.New("secret not found")

// Secrets stores named secrets encrypted. It satisfies the SSH executor's SecretStore.
type Secrets struct {
	db  *gorm.DB
	box *SecretBox
}

// Box returns the secret box that seals secrets at rest (the Temporal payload codec, package
// codec, derives its own key from the master key and does not use this box).
func (s *Secrets) Box() *SecretBox { return s.box }

// PutSecret stores (or replaces) a secret.
func (s *Secrets) PutSecret(ctx context.Context, name string, value []byte) error {
	return s.Put(ctx, name, "", value)
}

// Put stores (or replaces) a secret of a kind.
func (s *Secrets) Put(ctx context.Context, name, kind string, value []byte) error {
	ct, err := s.box.Seal(name, value)
	if err != nil {
		return err
	}
	row := Secret{Name: name, Kind: kind, Ciphertext: ct, UpdatedAt: time.Now().UTC()}
	if err := s.db.WithContext(ctx).Clauses(clause.OnConflict{UpdateAll: true}).Create(&row).Error; err != nil {
		return fmt.Errorf("store secret %s: %w", name, err)
	}
	return nil
}

// GetSecret returns a secret's plaintext, or an error wrapping ErrSecretNotFound.
func (s *Secrets) GetSecret(ctx context.Context, name string) ([]byte, error) {
	var row Secret
	err := s.db.WithContext(ctx).First(&row, "name = ?", name).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrSecretNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read secret %s: %w", name, err)
	}
	return s.box.Open(name, row.Ciphertext)
}

// LookupHostKey returns the SSH host key recorded for an address.
func (s *Secrets) LookupHostKey(ctx context.Context, address string) ([]byte, bool, error) {
	var row HostKey
	err := s.db.WithContext(ctx).First(&row, "address = ?", address).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return row.Key, true, nil
}

// RecordHostKey records an address's SSH host key (trust on first use).
func (s *Secrets) RecordHostKey(ctx context.Context, address string, key []byte) error {
	return s.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).
		Create(&HostKey{Address: address, Key: key, CreatedAt: time.Now().UTC()}).Error
}

// ForgetHostKey drops a recorded SSH host key, e.g. when a system VM is rebuilt under the same
// name and will present a new key.
func (s *Secrets) ForgetHostKey(ctx context.Context, address string) error {
	return s.db.WithContext(ctx).Where("address = ?", address).Delete(&HostKey{}).Error
}
