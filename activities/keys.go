package activities

import (
	"context"
	"errors"
	"fmt"

	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
)

// SecretStore adapts the encrypted secret store to the SSH executor's interface.
type SecretStore struct{ *models.Secrets }

// GetSecret returns a secret, with absence reported as sshexec.ErrSecretNotFound.
func (s SecretStore) GetSecret(ctx context.Context, name string) ([]byte, error) {
	b, err := s.Secrets.GetSecret(ctx, name)
	if errors.Is(err, models.ErrSecretNotFound) {
		return nil, fmt.Errorf("%w: %s", sshexec.ErrSecretNotFound, name)
	}
	return b, err
}

// SystemVMKeyName is the secret holding the key pair system VMs accept on port 3922.
const SystemVMKeyName = "systemvm/ssh-key"

// SystemVMKeyPair loads the system VM key pair, generating and storing it (encrypted) once.
func SystemVMKeyPair(ctx context.Context, s *models.Secrets) (sshexec.KeyPair, error) {
	return sshexec.EnsureKeyPair(ctx, SecretStore{s}, SystemVMKeyName)
}
