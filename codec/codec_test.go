package codec

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/encoding/protojson"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func mustNew(t *testing.T, master []byte, previous ...[]byte) *Codec {
	t.Helper()
	c, err := New(master, previous...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func clearPayload(t *testing.T, v any) *common.Payload {
	t.Helper()
	p, err := converter.GetDefaultDataConverter().ToPayload(v)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRoundTripHidesTheClearText(t *testing.T) {
	c := mustNew(t, key(1))
	in := clearPayload(t, map[string]string{"password": "hunter2-clear"})
	enc, err := c.Encode([]*common.Payload{in})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(enc[0].Metadata[converter.MetadataEncoding]); got != EncodingEncrypted {
		t.Errorf("encoding %q, want %q", got, EncodingEncrypted)
	}
	if got := string(enc[0].Metadata[MetadataKeyID]); got != c.KeyID() || !strings.HasPrefix(got, "sysvm-") {
		t.Errorf("key id %q, want %q", got, c.KeyID())
	}
	if bytes.Contains(enc[0].Data, []byte("hunter2")) || bytes.Contains(enc[0].Data, []byte("json/plain")) {
		t.Error("encrypted payload holds clear data or metadata")
	}
	again, _ := c.Encode([]*common.Payload{in})
	if bytes.Equal(again[0].Data, enc[0].Data) {
		t.Error("two encodings of one payload are equal: nonce reused")
	}
	dec, err := c.Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]string
	if err := converter.GetDefaultDataConverter().FromPayload(dec[0], &out); err != nil || out["password"] != "hunter2-clear" {
		t.Fatalf("decoded %v, %v", out, err)
	}
}

func TestCodecKeyIsNotTheMasterKey(t *testing.T) {
	// The codec key is derived, so a payload sealed with the master key itself (as the at-rest
	// box would) does not open, and vice versa.
	a, b := mustNew(t, key(1)), mustNew(t, key(2))
	if a.KeyID() == b.KeyID() {
		t.Fatal("two master keys gave one key id")
	}
	if strings.Contains(a.KeyID(), base64.StdEncoding.EncodeToString(key(1))[:8]) {
		t.Error("key id reveals the master key")
	}
}

func TestDecodePassesUnencryptedPayloadsThrough(t *testing.T) {
	c := mustNew(t, key(1))
	old := clearPayload(t, "recorded before the codec")
	dec, err := c.Decode([]*common.Payload{old})
	if err != nil || dec[0] != old {
		t.Fatalf("unencrypted payload not passed through: %v %v", dec, err)
	}
}

func TestWrongKeyFailsCleanly(t *testing.T) {
	enc, err := mustNew(t, key(1)).Encode([]*common.Payload{clearPayload(t, "x")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = mustNew(t, key(2)).Decode(enc)
	if !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), "SYSVM_SECRET_KEY") {
		t.Fatalf("wrong key: %v", err)
	}
	// A tampered payload under the right key id fails authentication, naming the key.
	enc[0].Data[len(enc[0].Data)-1] ^= 1
	if _, err := mustNew(t, key(1)).Decode(enc); err == nil || !strings.Contains(err.Error(), "decrypt payload") {
		t.Fatalf("tampered payload: %v", err)
	}
	enc[0].Data = enc[0].Data[:4]
	if _, err := mustNew(t, key(1)).Decode(enc); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("truncated payload: %v", err)
	}
	if _, err := New(key(1)[:16]); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Fatalf("short master key: %v", err)
	}
}

func TestRotationDecodesUnderPreviousKeys(t *testing.T) {
	old := mustNew(t, key(1))
	enc, _ := old.Encode([]*common.Payload{clearPayload(t, "before rotation")})
	rotated := mustNew(t, key(2), key(1))
	if rotated.KeyID() == old.KeyID() {
		t.Fatal("rotated codec seals under the old key")
	}
	dec, err := rotated.Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	var s string
	if err := converter.GetDefaultDataConverter().FromPayload(dec[0], &s); err != nil || s != "before rotation" {
		t.Fatalf("decoded %q %v", s, err)
	}
}

// post sends payloads to the endpoint as the Web UI does.
func post(t *testing.T, url string, payloads []*common.Payload, header http.Header) (*http.Response, []byte) {
	t.Helper()
	body, err := protojson.Marshal(&common.Payloads{Payloads: payloads})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header = header.Clone()
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// decodeAnswer parses the endpoint's answer into payloads.
func decodeAnswer(t *testing.T, b []byte) []*common.Payload {
	t.Helper()
	var out common.Payloads
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	return out.Payloads
}

func TestHandlerAuthCORSAndProtocol(t *testing.T) {
	c := mustNew(t, key(1))
	h := c.Handler(HandlerOptions{AllowOrigins: []string{"http://localhost:8233"}, Authorize: func(r *http.Request) error {
		switch Credential(r) {
		case "admin-key":
			return nil
		case "read-key":
			return ErrForbidden
		}
		return ErrUnauthorized
	}})
	mux := http.NewServeMux()
	mux.Handle("/codec/", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// Preflight from the UI's origin: answered without credentials.
	req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/codec/decode", nil)
	req.Header.Set("Origin", "http://localhost:8233")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "http://localhost:8233" ||
		resp.Header.Get("Access-Control-Allow-Credentials") != "true" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "X-Namespace") {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	req.Header.Set("Origin", "http://evil.example")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("another origin allowed: %v", resp.Header)
	}

	enc, _ := c.Encode([]*common.Payload{clearPayload(t, "clear-text-42")})
	resp, _ = post(t, srv.URL+"/codec/decode", enc, http.Header{})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(strings.Join(resp.Header.Values("WWW-Authenticate"), ","), "Basic") {
		t.Errorf("no credentials: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = post(t, srv.URL+"/codec/decode", enc, http.Header{"Authorization": {"Bearer read-key"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("read-only key: %d", resp.StatusCode)
	}
	for _, auth := range []string{"Bearer admin-key", "Basic " + base64.StdEncoding.EncodeToString([]byte("ui:admin-key"))} {
		resp, b := post(t, srv.URL+"/codec/decode", enc, http.Header{"Authorization": {auth}})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", auth, resp.StatusCode, b)
		}
		if got := decodeAnswer(t, b); len(got) != 1 || string(got[0].Data) != `"clear-text-42"` {
			t.Errorf("%s: decoded %v", auth, got)
		}
	}
	// encode then decode through the endpoint.
	resp, b := post(t, srv.URL+"/codec/encode", []*common.Payload{clearPayload(t, "via-http")}, http.Header{"Authorization": {"Bearer admin-key"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("encode: %d %s", resp.StatusCode, b)
	}
	sealed := decodeAnswer(t, b)
	if bytes.Contains(sealed[0].Data, []byte("via-http")) {
		t.Error("encode answered clear data")
	}
	if dec, err := c.Decode(sealed); err != nil || string(dec[0].Data) != `"via-http"` {
		t.Errorf("decode of the endpoint's encoding: %v %v", dec, err)
	}

	// The endpoint of another key refuses the payload with a clear error.
	other := httptest.NewServer(mustNew(t, key(9)).Handler(HandlerOptions{}))
	defer other.Close()
	resp, b = post(t, other.URL+"/decode", enc, http.Header{})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "does not hold") {
		t.Errorf("wrong key endpoint: %d %s", resp.StatusCode, b)
	}
}
