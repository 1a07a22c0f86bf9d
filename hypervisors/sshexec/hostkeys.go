package sshexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"

	"golang.org/x/crypto/ssh"
)

// HostKeyStore records the SSH host key first seen at each address (trust on first use).
// Keys are SSH wire-format public keys (ssh.PublicKey.Marshal). Addresses are the strings
// Target.HostKeyAddress and Target.VMKeyAddress return.
type HostKeyStore interface {
	// LookupHostKey returns the recorded key for address; ok is false when none is recorded.
	LookupHostKey(ctx context.Context, address string) (key []byte, ok bool, err error)
	// RecordHostKey records key for address.
	RecordHostKey(ctx context.Context, address string, key []byte) error
}

// ErrHostKeyChanged is wrapped by errors for a host whose key differs from the recorded one.
var ErrHostKeyChanged = errors.New("host key changed")

// HostKeyChangedError says a host presented a key other than the one recorded for it. The
// connection is refused; if the change is expected (the VM was rebuilt under the same name),
// the operator removes the recorded key from the store and the next connection records the new
// one.
type HostKeyChangedError struct {
	// Address is the host key address (see Target.VMKeyAddress).
	Address string
	// Recorded is the fingerprint of the recorded key; Presented that of the key offered now.
	Recorded, Presented string
}

// Error names the address and both fingerprints.
func (e *HostKeyChangedError) Error() string {
	return fmt.Sprintf("host key for %s changed: recorded %s, presented %s; refusing to connect "+
		"(remove the recorded key if the VM was rebuilt)", e.Address, e.Recorded, e.Presented)
}

// Unwrap makes errors.Is(err, ErrHostKeyChanged) true.
func (e *HostKeyChangedError) Unwrap() error { return ErrHostKeyChanged }

// fingerprintWire returns the SHA256 fingerprint of a wire-format key.
func fingerprintWire(key []byte) string {
	pub, err := ssh.ParsePublicKey(key)
	if err != nil {
		return fmt.Sprintf("(unparsable recorded key, %d bytes)", len(key))
	}
	return ssh.FingerprintSHA256(pub)
}

// refusal holds the reason a host key callback refused a key; the callback runs on the SSH
// handshake goroutine, which may outlive a timed-out NewClientConn.
type refusal struct {
	mu  sync.Mutex
	err error
}

func (r *refusal) set(err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
	return err
}

func (r *refusal) get() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// hostKeyAlgorithms orders the host key algorithms so that those matching a recorded key come
// first: the handshake then negotiates that key rather than another type the same server also
// holds (OpenSSH does the same for known hosts). The other algorithms stay offered, so a server
// whose key type changed is still reached and refused with both fingerprints named. Nil (the
// library's default) when the recorded key does not parse.
func hostKeyAlgorithms(known []byte) []string {
	pub, err := ssh.ParsePublicKey(known)
	if err != nil {
		return nil
	}
	preferred := []string{pub.Type()}
	if pub.Type() == ssh.KeyAlgoRSA {
		preferred = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	out := append([]string{}, preferred...)
	rest := append(ssh.SupportedAlgorithms().HostKeys, ssh.InsecureAlgorithms().HostKeys...)
	for _, a := range rest {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// tofuCallback builds a host key callback for address given what the store holds for it
// (known, ok): with no recorded key it records the presented one; otherwise the presented key
// must be the recorded one. The ctx is for store access during the handshake. A refusal is
// also stored in refused so the caller can classify it even if the handshake rewraps it.
func tofuCallback(ctx context.Context, store HostKeyStore, address string, known []byte, ok bool, log *slog.Logger, refused *refusal) ssh.HostKeyCallback {
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		presented := key.Marshal()
		if !ok {
			if err := store.RecordHostKey(ctx, address, presented); err != nil {
				return refused.set(fmt.Errorf("record host key for %s: %w", address, err))
			}
			log.Info("recorded new SSH host key (trust on first use)",
				"address", address, "fingerprint", ssh.FingerprintSHA256(key))
			return nil
		}
		if bytes.Equal(known, presented) {
			return nil
		}
		return refused.set(&HostKeyChangedError{Address: address, Recorded: fingerprintWire(known),
			Presented: ssh.FingerprintSHA256(key)})
	}
}

// MemoryHostKeyStore is a HostKeyStore held in memory, for development and tests. Safe for
// concurrent use. Its zero value is ready to use.
type MemoryHostKeyStore struct {
	mu   sync.Mutex
	keys map[string][]byte
}

// LookupHostKey returns the key recorded for address.
func (m *MemoryHostKeyStore) LookupHostKey(_ context.Context, address string) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.keys[address]
	return append([]byte(nil), k...), ok, nil
}

// RecordHostKey records key for address.
func (m *MemoryHostKeyStore) RecordHostKey(_ context.Context, address string, key []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys == nil {
		m.keys = map[string][]byte{}
	}
	m.keys[address] = append([]byte(nil), key...)
	return nil
}

// ForgetHostKey removes the key recorded for address, so the next connection records anew.
func (m *MemoryHostKeyStore) ForgetHostKey(_ context.Context, address string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keys, address)
	return nil
}

// Addresses lists the addresses with a recorded key.
func (m *MemoryHostKeyStore) Addresses() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.keys))
	for a := range m.keys {
		out = append(out, a)
	}
	return out
}
