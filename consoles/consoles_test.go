package consoles

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Tokens verify under their key only, expire, and are accepted once.
func TestTokens(t *testing.T) {
	k1, err := TokenKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := TokenKey([]byte("fedcba9876543210fedcba9876543210"))
	if string(k1) == string(k2) || len(k1) != 32 {
		t.Fatal("keys of two master keys are equal or not 32 bytes")
	}
	now := time.Now()
	tok, err := Sign(k1, Claims{VMID: "vm", ProxyID: "v-1-VM", Expires: now.Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Verify(k1, tok, now)
	if err != nil || c.VMID != "vm" || c.Nonce == "" {
		t.Fatalf("verify = %+v, %v", c, err)
	}
	if _, err := Verify(k2, tok, now); !errors.Is(err, ErrForged) {
		t.Errorf("another key: %v", err)
	}
	if _, err := Verify(k1, strings.Replace(tok, ".", "x.", 1), now); !errors.Is(err, ErrForged) {
		t.Errorf("tampered payload: %v", err)
	}
	if _, err := Verify(k1, tok, now.Add(2*time.Minute)); !errors.Is(err, ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	var r Replay
	if err := r.Use(c, now); err != nil {
		t.Fatal(err)
	}
	if err := r.Use(c, now); !errors.Is(err, ErrReused) {
		t.Errorf("second use: %v", err)
	}
}
