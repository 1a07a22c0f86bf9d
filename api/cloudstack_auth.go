package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/models"
)

// CloudStack API key pairs: each sysvm API key may get one apikey/secretkey pair for the
// CloudStack-compatible command API (/client/api), with the key's role. The pair is stored with
// the secrets store (encrypted at rest) under a name derived from the sysvm key's ID, so no
// table changes: the apikey carries that ID (its first 32 hex digits are the ID without dashes),
// the secret key is shown once when the pair is created and never again.

// csKeySecretKind is the kind of the secrets holding CloudStack key pairs.
const csKeySecretKind = "cloudstack-keypair"

// csAuthFailed is the text CloudStack answers (401) to a request whose credentials or signature
// do not verify. It says nothing of which part failed, as CloudStack's does not.
const csAuthFailed = "unable to verify user credentials and/or request signature"

// csKeyPair is what is stored (encrypted) for a sysvm API key.
type csKeyPair struct {
	APIKey    string    `json:"apikey"`
	SecretKey string    `json:"secretkey"`
	Created   time.Time `json:"created"`
}

// csKeySecretName is the secret holding the key pair of a sysvm API key.
func csKeySecretName(keyID string) string { return "cloudstack-keys/" + keyID }

// newCSKeyPair makes a fresh pair for a sysvm key: the apikey is the key ID's 32 hex digits
// followed by 32 random hex digits; the secret key is 64 random bytes, base64url without
// padding (86 characters, the length of CloudStack's).
func newCSKeyPair(keyID string) (csKeyPair, error) {
	id := strings.ReplaceAll(keyID, "-", "")
	if len(id) != 32 {
		return csKeyPair{}, fmt.Errorf("cloudstack key pair: API key ID %q is not a UUID", keyID)
	}
	r := make([]byte, 16)
	if _, err := rand.Read(r); err != nil {
		return csKeyPair{}, fmt.Errorf("cloudstack key pair: random: %w", err)
	}
	sec := make([]byte, 64)
	if _, err := rand.Read(sec); err != nil {
		return csKeyPair{}, fmt.Errorf("cloudstack key pair: random: %w", err)
	}
	return csKeyPair{APIKey: id + hex.EncodeToString(r), SecretKey: base64.RawURLEncoding.EncodeToString(sec),
		Created: time.Now().UTC().Truncate(time.Second)}, nil
}

// keyIDOfCSAPIKey returns the sysvm key ID an apikey names, or false when it has not the form
// newCSKeyPair makes.
func keyIDOfCSAPIKey(apiKey string) (string, bool) {
	if len(apiKey) != 64 {
		return "", false
	}
	if _, err := hex.DecodeString(apiKey); err != nil {
		return "", false
	}
	h := strings.ToLower(apiKey[:32])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], true
}

// loadCSKeyPair reads the stored pair of a sysvm key (models.ErrSecretNotFound when none).
func (s *Server) loadCSKeyPair(ctx context.Context, keyID string) (csKeyPair, error) {
	raw, err := s.store.Secrets.GetSecret(ctx, csKeySecretName(keyID))
	if err != nil {
		return csKeyPair{}, err
	}
	var p csKeyPair
	if err := json.Unmarshal(raw, &p); err != nil {
		return csKeyPair{}, fmt.Errorf("cloudstack key pair of %s: %w", keyID, err)
	}
	return p, nil
}

// javaURLEncode encodes a value as java.net.URLEncoder.encode(v, "UTF-8") does, then writes
// spaces as %20 instead of +, which is how CloudStack encodes each value before signing:
// letters, digits and . - * _ are kept; every other byte of the UTF-8 form is %XX.
func javaURLEncode(v string) string {
	var b strings.Builder
	const hexdig = "0123456789ABCDEF"
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '-', c == '*', c == '_':
			b.WriteByte(c)
		case c == ' ':
			b.WriteString("%20")
		default:
			b.WriteByte('%')
			b.WriteByte(hexdig[c>>4])
			b.WriteByte(hexdig[c&15])
		}
	}
	return b.String()
}

// csStringToSign is what CloudStack signs: every parameter but signature, sorted by name (as
// sent, byte order), each name=encoded value, joined with &, the whole lowercased. A parameter
// given twice counts with its first value, as CloudStack reads it.
func csStringToSign(params url.Values) string {
	names := make([]string, 0, len(params))
	for name := range params {
		if strings.EqualFold(name, "signature") {
			continue
		}
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, name := range names {
		v := ""
		if vs := params[name]; len(vs) > 0 {
			v = vs[0]
		}
		parts = append(parts, name+"="+javaURLEncode(v))
	}
	return strings.ToLower(strings.Join(parts, "&"))
}

// csParam returns a parameter's first value, its name matched without regard to case (as
// CloudStack matches apiKey, signatureVersion and expires).
func csParam(params url.Values, name string) (string, bool) {
	if vs, found := params[name]; found && len(vs) > 0 {
		return vs[0], true
	}
	for k, vs := range params {
		if strings.EqualFold(k, name) && len(vs) > 0 {
			return vs[0], true
		}
	}
	return "", false
}

// parseCSExpires reads an expires value: ISO 8601 with an offset, as CloudStack's
// DateUtil.parseTZDateString does (2026-12-01T20:03:04+0000), also with +00:00 or Z.
func parseCSExpires(v string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02T15:04:05-0700", "2006-01-02T15:04:05Z07:00", "2006-01-02T15:04:05.000-0700"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("expires %q is not an ISO 8601 time with offset (2026-12-01T20:03:04+0000)", v)
}

// csAuthError is why a request did not verify. The client sees only csAuthFailed; the reason
// (never a signature) is logged at debug level.
type csAuthError struct{ reason string }

func (e *csAuthError) Error() string { return "cloudstack auth: " + e.reason }

// csAuthenticate verifies a signed request and returns the sysvm API key it acts as.
//
// As CloudStack: apiKey and signature are required; signatureVersion=3 requires an expires in
// the future; the signature is base64 of the HMAC of csStringToSign under the secret key.
// HMAC-SHA1 is CloudStack's; HMAC-SHA512 is accepted too, told apart by the signature's length
// (20 or 64 bytes), for clients that sign with it (CloudMonkey's HmacSHA512 profiles). The
// comparison is constant-time; the computed signature is never logged nor returned.
func (s *Server) csAuthenticate(ctx context.Context, params url.Values, now time.Time) (models.APIKey, error) {
	sig, hasSig := csParam(params, "signature")
	apiKey, hasKey := csParam(params, "apikey")
	if !hasSig || !hasKey || sig == "" || apiKey == "" {
		return models.APIKey{}, &csAuthError{"missing apiKey or signature"}
	}
	if ver, _ := csParam(params, "signatureversion"); ver == "3" {
		exp, found := csParam(params, "expires")
		if !found {
			return models.APIKey{}, &csAuthError{"signatureVersion 3 without expires"}
		}
		t, err := parseCSExpires(exp)
		if err != nil {
			return models.APIKey{}, &csAuthError{err.Error()}
		}
		if t.Before(now) {
			return models.APIKey{}, &csAuthError{"request expired at " + t.UTC().Format(time.RFC3339)}
		}
	}
	keyID, okForm := keyIDOfCSAPIKey(apiKey)
	if !okForm {
		return models.APIKey{}, &csAuthError{"apiKey is not a sysvm CloudStack key"}
	}
	pair, err := s.loadCSKeyPair(ctx, keyID)
	if errors.Is(err, models.ErrSecretNotFound) {
		return models.APIKey{}, &csAuthError{"no key pair for API key " + keyID}
	}
	if err != nil {
		return models.APIKey{}, fmt.Errorf("read the key pair of API key %s: %w", keyID, err)
	}
	if !hmac.Equal([]byte(pair.APIKey), []byte(apiKey)) {
		return models.APIKey{}, &csAuthError{"apiKey of API key " + keyID + " was replaced"}
	}
	given, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return models.APIKey{}, &csAuthError{"signature is not base64"}
	}
	var h func() hash.Hash
	switch len(given) {
	case sha1.Size:
		h = sha1.New
	case sha512.Size:
		h = sha512.New
	default:
		return models.APIKey{}, &csAuthError{fmt.Sprintf("signature of %d bytes is neither HMAC-SHA1 nor HMAC-SHA512", len(given))}
	}
	mac := hmac.New(h, []byte(pair.SecretKey))
	mac.Write([]byte(csStringToSign(params)))
	if !hmac.Equal(mac.Sum(nil), given) {
		return models.APIKey{}, &csAuthError{"signature does not match (API key " + keyID + ")"}
	}
	var k models.APIKey
	err = s.store.Get(ctx, &k, keyID)
	if errors.Is(err, models.ErrNotFound) {
		return models.APIKey{}, &csAuthError{"API key " + keyID + " was deleted"}
	}
	if err != nil {
		return models.APIKey{}, fmt.Errorf("read API key %s: %w", keyID, err)
	}
	return k, nil
}

// REST endpoints of the key pairs.

func (s *Server) csKeyRoutes() []Route {
	return []Route{
		{Method: http.MethodPost, Path: "/api-keys/{id}/cloudstack-keys", Role: models.RoleAdmin, Handler: s.createCSKeys, Doc: Doc{
			OperationID: "createCloudStackKeys", Summary: "Create (or replace) the CloudStack apikey/secretkey pair of an API key",
			Tag: "API keys",
			Description: "The pair signs requests to the CloudStack-compatible command API (/client/api) with the API key's role. " +
				"The secret key is in this answer only (it is kept encrypted); creating a pair again replaces the previous one, " +
				"whose signatures stop verifying at once.",
			Responses: []Response{{Status: 201, Description: "the pair, with its secret key shown once", Schema: "CloudStackKeysCreated"}}}},
		{Method: http.MethodGet, Path: "/api-keys/{id}/cloudstack-keys", Role: models.RoleAdmin, Handler: s.getCSKeys, Doc: Doc{
			OperationID: "getCloudStackKeys", Summary: "Show the CloudStack apikey of an API key (never its secret key)", Tag: "API keys",
			Responses: []Response{{Status: 200, Description: "the apikey", Schema: "CloudStackKeys"}}}},
	}
}

// csKeysView is a key pair as the REST API shows it.
type csKeysView struct {
	APIKeyID  string    `json:"apikeyid"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	APIKey    string    `json:"apikey"`
	SecretKey string    `json:"secretkey,omitempty"`
	Created   time.Time `json:"created"`
}

func (s *Server) createCSKeys(c echo.Context) error {
	ctx := c.Request().Context()
	k, err := getRow[models.APIKey](c, s.store.DB, c.Param("id"), "API key")
	if err != nil {
		return err
	}
	pair, err := newCSKeyPair(k.ID)
	if err != nil {
		return Internal(err, "create a CloudStack key pair")
	}
	raw, err := json.Marshal(pair)
	if err != nil {
		return Internal(err, "encode a CloudStack key pair")
	}
	if err := s.store.Secrets.Put(ctx, csKeySecretName(k.ID), csKeySecretKind, raw); err != nil {
		return Internal(err, "store the CloudStack key pair of %s", k.Name)
	}
	s.recordKeyEvent(c, "APIKEY.CLOUDSTACK.CREATE", fmt.Sprintf("CloudStack key pair of API key %s (%s) created, apikey %s",
		k.Name, k.Role, pair.APIKey), k.ID)
	return c.JSON(http.StatusCreated, csKeysView{APIKeyID: k.ID, Name: k.Name, Role: k.Role, APIKey: pair.APIKey,
		SecretKey: pair.SecretKey, Created: pair.Created})
}

func (s *Server) getCSKeys(c echo.Context) error {
	ctx := c.Request().Context()
	k, err := getRow[models.APIKey](c, s.store.DB, c.Param("id"), "API key")
	if err != nil {
		return err
	}
	pair, err := s.loadCSKeyPair(ctx, k.ID)
	if errors.Is(err, models.ErrSecretNotFound) {
		return NotFound("API key %s has no CloudStack key pair; POST %s/api-keys/%s/cloudstack-keys creates one", k.Name, Prefix, k.ID)
	}
	if err != nil {
		return Internal(err, "read the CloudStack key pair of %s", k.Name)
	}
	return ok(c, csKeysView{APIKeyID: k.ID, Name: k.Name, Role: k.Role, APIKey: pair.APIKey, Created: pair.Created})
}

// csKeySchemas are the OpenAPI schemas of the key pair endpoints.
func csKeySchemas() map[string]map[string]any {
	return map[string]map[string]any{
		"CloudStackKeysCreated": objectSchema("a CloudStack key pair with its secret key (shown once)",
			"apikeyid", "name", "role", "apikey", "secretkey", "created:time"),
		"CloudStackKeys": objectSchema("a CloudStack apikey (the secret key is never shown again)",
			"apikeyid", "name", "role", "apikey", "created:time"),
	}
}
