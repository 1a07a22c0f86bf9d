package models

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"gorm.io/gorm"
)

// HashAPIKey is how keys are stored: SHA-256 of the key (keys are 32 random bytes, so a fast
// hash is enough; there is nothing to brute-force).
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// NewAPIKeyString returns a fresh random key with a recognisable prefix.
func NewAPIKeyString() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "sysvm_" + hex.EncodeToString(b), nil
}

// ValidRole reports whether role is a known API role.
func ValidRole(role string) bool {
	return role == RoleAdmin || role == RoleOperator || role == RoleReadOnly
}

// CreateAPIKey stores a key (hashed) with a role; key empty generates one. It returns the
// clear key, which is shown once and never stored.
func (s *Store) CreateAPIKey(ctx context.Context, name, role, key string) (APIKey, string, error) {
	if !ValidRole(role) {
		return APIKey{}, "", fmt.Errorf("role %q: want admin, operator or read-only", role)
	}
	if key == "" {
		var err error
		if key, err = NewAPIKeyString(); err != nil {
			return APIKey{}, "", err
		}
	}
	if len(key) < 16 {
		return APIKey{}, "", fmt.Errorf("api key for %q: must be at least 16 characters", name)
	}
	row := APIKey{Name: name, Role: role, Hash: HashAPIKey(key), Prefix: key[:10]}
	var existing APIKey
	err := s.DB.WithContext(ctx).First(&existing, "hash = ?", row.Hash).Error
	if err == nil {
		return existing, key, nil
	}
	if !errors.Is(err, gorm.ErrRecordNotFound) {
		return APIKey{}, "", err
	}
	if err := s.DB.WithContext(ctx).Create(&row).Error; err != nil {
		return APIKey{}, "", fmt.Errorf("store api key %q: %w", name, err)
	}
	return row, key, nil
}

// Authenticate finds the key a caller presented.
func (s *Store) Authenticate(ctx context.Context, key string) (APIKey, error) {
	var row APIKey
	err := s.DB.WithContext(ctx).First(&row, "hash = ?", HashAPIKey(key)).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return APIKey{}, ErrNotFound
	}
	return row, err
}
