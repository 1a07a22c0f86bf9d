package sshexec_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/internal/testenv"
)

func TestGenerateKeyPair(t *testing.T) {
	kp := testKey(t)
	pub := pubKey(t, kp)
	if pub.Type() != ssh.KeyAlgoRSA {
		t.Fatalf("key type %s", pub.Type())
	}
	if n := pub.(ssh.CryptoPublicKey).CryptoPublicKey().(*rsa.PublicKey).N.BitLen(); n != sshexec.RSAKeyBits {
		t.Fatalf("RSA key of %d bits", n)
	}
	if !strings.HasPrefix(kp.AuthorizedKey, "ssh-rsa AAAA") || !strings.HasSuffix(kp.AuthorizedKey, " "+sshexec.KeyComment) ||
		strings.ContainsAny(kp.AuthorizedKey, "\n") {
		t.Fatalf("authorized key line %q", kp.AuthorizedKey)
	}
	if !strings.HasPrefix(string(kp.PrivatePEM), "-----BEGIN RSA PRIVATE KEY-----") {
		t.Fatal("private key is not PKCS#1 PEM")
	}
	// The private and public halves belong together.
	signer, err := kp.Signer()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := signer.Sign(rand.Reader, []byte("challenge"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Verify([]byte("challenge"), sig); err != nil {
		t.Fatalf("signature does not verify with the authorized key: %v", err)
	}
	// Printing or logging the pair never shows the private key.
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("key", "kp", kp)
	for _, s := range []string{fmt.Sprint(kp), fmt.Sprintf("%v %+v %s", kp, kp, kp), logged.String()} {
		if strings.Contains(s, "PRIVATE") || strings.Contains(s, string(kp.PrivatePEM[40:80])) {
			t.Fatalf("private key leaked into %q", s)
		}
		if !strings.Contains(s, "SHA256:") {
			t.Errorf("fingerprint missing from %q", s)
		}
	}
}

// TestPrivateKeyWorksWithOpenSSH checks the PEM is what OpenSSH tools read (it is installed on
// hosts as id_rsa.cloud): ssh-keygen -y derives the same public key from it.
func TestPrivateKeyWorksWithOpenSSH(t *testing.T) {
	keygen, err := exec.LookPath("ssh-keygen")
	testenv.Require(t, "ssh-keygen (package openssh-client)", err)
	kp := testKey(t)
	path := filepath.Join(t.TempDir(), "id_rsa.cloud")
	if err := os.WriteFile(path, kp.PrivatePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(keygen, "-y", "-f", path).Output()
	if err != nil {
		t.Fatalf("ssh-keygen -y: %v", err)
	}
	want := strings.TrimSuffix(kp.AuthorizedKey, " "+sshexec.KeyComment)
	if got := strings.Fields(string(out)); len(got) < 2 || got[0]+" "+got[1] != want {
		t.Fatalf("ssh-keygen derived %q, want %q", out, want)
	}
}

func TestBootArg(t *testing.T) {
	kp := testKey(t)
	k, v := sshexec.BootArg(kp.AuthorizedKey)
	if k != "authorized_key" {
		t.Fatalf("boot arg key %q", k)
	}
	if strings.ContainsAny(v, " \t\n") {
		t.Fatalf("boot arg value has blanks: %q", v)
	}
	dec, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		t.Fatal(err)
	}
	if string(dec) != kp.AuthorizedKey+"\n" {
		t.Fatalf("decoded %q", dec)
	}
	// What the VM writes to authorized_keys parses back to the same key.
	pub, _, _, _, err := ssh.ParseAuthorizedKey(dec)
	if err != nil || string(pub.Marshal()) != string(pubKey(t, kp).Marshal()) {
		t.Fatalf("decoded key does not parse back: %v", err)
	}
	// A line with a trailing newline already is not doubled.
	if _, v2 := sshexec.BootArg(kp.AuthorizedKey + "\n"); v2 != v {
		t.Error("trailing newline changed the boot arg")
	}
}

type failingStore struct{ sshexec.MemorySecretStore }

func (*failingStore) GetSecret(context.Context, string) ([]byte, error) {
	return nil, errors.New("store offline")
}

type countingStore struct {
	sshexec.MemorySecretStore
	puts int
}

func (c *countingStore) PutSecret(ctx context.Context, name string, v []byte) error {
	c.puts++
	return c.MemorySecretStore.PutSecret(ctx, name, v)
}

func TestEnsureKeyPair(t *testing.T) {
	ctx := context.Background()
	store := &countingStore{}
	first, err := sshexec.EnsureKeyPair(ctx, store, "systemvm.ssh")
	if err != nil {
		t.Fatal(err)
	}
	if store.puts != 1 || pubKey(t, first).Type() != ssh.KeyAlgoRSA {
		t.Fatalf("first call: %d puts, %v", store.puts, first)
	}
	again, err := sshexec.EnsureKeyPair(ctx, store, "systemvm.ssh")
	if err != nil {
		t.Fatal(err)
	}
	if store.puts != 1 || again.AuthorizedKey != first.AuthorizedKey || string(again.PrivatePEM) != string(first.PrivatePEM) {
		t.Fatal("second call did not load the stored key")
	}
	raw, err := store.GetSecret(ctx, "systemvm.ssh")
	if err != nil || string(raw) != string(first.PrivatePEM) {
		t.Fatalf("stored secret is not the private key PEM: %v", err)
	}
	if _, err := store.GetSecret(ctx, "other"); !errors.Is(err, sshexec.ErrSecretNotFound) {
		t.Fatalf("missing secret: %v", err)
	}
	// A store error other than not-found is not papered over with a new key.
	if _, err := sshexec.EnsureKeyPair(ctx, &failingStore{}, "systemvm.ssh"); err == nil || !strings.Contains(err.Error(), "store offline") {
		t.Fatalf("failing store: %v", err)
	}
	// A corrupt stored key is an error, not silently replaced.
	bad := &sshexec.MemorySecretStore{}
	_ = bad.PutSecret(ctx, "k", []byte("not a key"))
	if _, err := sshexec.EnsureKeyPair(ctx, bad, "k"); err == nil {
		t.Fatal("corrupt key accepted")
	}
}

// TestOpenSSHClientUsesGeneratedKey logs in with the real OpenSSH client using the generated
// PEM as its identity, as a person following Access's steps would with id_rsa.cloud (OpenSSH 8.8+
// refuses SHA-1 RSA signatures, so this also checks rsa-sha2 works end to end).
func TestOpenSSHClientUsesGeneratedKey(t *testing.T) {
	sshBin, err := exec.LookPath("ssh")
	testenv.Require(t, "the OpenSSH client ssh (package openssh-client)", err)
	kp := testKey(t)
	srv := vmServer(t, "127.0.0.1:0", nil)
	keyFile := filepath.Join(t.TempDir(), "id_rsa.cloud")
	if err := os.WriteFile(keyFile, kp.PrivatePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, sshBin, "-F", "/dev/null", "-i", keyFile, "-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR", "-p", strconv.Itoa(srv.Port()), "root@"+srv.Host(), "echo", "ok").CombinedOutput()
	if err != nil || string(out) != "ok\n" {
		t.Fatalf("ssh -i id_rsa.cloud: %v: %s", err, out)
	}
}
