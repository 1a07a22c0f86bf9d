// Package consoles is the console access of system VMs and guest VMs through a console proxy
// VM: the console host a URL names (consoleproxy.url.domain), the URL itself
// (consoleproxy.sslEnabled, novnc.console.default) and the signed, expiring, single-use
// session token a CPVM accepts (an HMAC under a key derived from the master key). The API
// signs tokens; the CPVM (the simulated one in devcloud/fleet) verifies them.
package consoles

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Ports of a CPVM's console endpoint.
const (
	PortSSL   = 8443
	PortPlain = 80
)

// DefaultTokenTTL is how long a console token is accepted after it is signed.
const DefaultTokenTTL = 2 * time.Minute

// Errors of Verify and Replay.Use, for errors.Is.
var (
	ErrForged  = errors.New("console token: forged or damaged (signature does not verify)")
	ErrExpired = errors.New("console token: expired")
	ErrReused  = errors.New("console token: already used")
	ErrWrongVM = errors.New("console token: issued for another console proxy")
)

// TokenKey derives the token signing key from the master key (HKDF-SHA256), so the master key
// itself never leaves the control plane.
func TokenKey(master []byte) ([]byte, error) {
	k, err := hkdf.Key(sha256.New, master, nil, "sysvm console session token v1", 32)
	if err != nil {
		return nil, fmt.Errorf("derive console token key: %w", err)
	}
	return k, nil
}

// Claims are what a token grants: one console session of one VM through one CPVM, once,
// before Expires.
type Claims struct {
	// VMID is the VM whose console is opened; VMName its name.
	VMID   string `json:"vm"`
	VMName string `json:"vmname,omitempty"`
	// ProxyID is the CPVM that must serve the session, by the name it knows itself by (its
	// hypervisor instance name).
	ProxyID string `json:"proxy"`
	// Expires is a Unix time in seconds.
	Expires int64 `json:"exp"`
	// Nonce makes the token single-use.
	Nonce string `json:"nonce"`
}

// Sign makes a token for claims (a fresh nonce when it has none): base64url(JSON).base64url(HMAC).
func Sign(key []byte, c Claims) (string, error) {
	if c.Nonce == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		c.Nonce = base64.RawURLEncoding.EncodeToString(b)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	payload := base64.RawURLEncoding.EncodeToString(body)
	return payload + "." + base64.RawURLEncoding.EncodeToString(mac(key, payload)), nil
}

func mac(key []byte, payload string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(payload))
	return h.Sum(nil)
}

// Verify checks a token's signature and expiry (not its single use: see Replay).
func Verify(key []byte, token string, now time.Time) (Claims, error) {
	payload, sig, ok := strings.Cut(token, ".")
	if !ok {
		return Claims{}, ErrForged
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac(key, payload)) {
		return Claims{}, ErrForged
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return Claims{}, ErrForged
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil {
		return Claims{}, ErrForged
	}
	if now.Unix() >= c.Expires {
		return c, fmt.Errorf("%w at %s", ErrExpired, time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	}
	return c, nil
}

// Replay remembers the nonces of used tokens until they expire, so each is accepted once.
type Replay struct {
	mu   sync.Mutex
	seen map[string]int64
}

// Use records a token's nonce, failing with ErrReused when it was used before.
func (r *Replay) Use(c Claims, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]int64{}
	}
	for n, exp := range r.seen {
		if now.Unix() >= exp {
			delete(r.seen, n)
		}
	}
	if _, ok := r.seen[c.Nonce]; ok {
		return ErrReused
	}
	r.seen[c.Nonce] = c.Expires
	return nil
}

// Host is the console host of a CPVM with public IP ip under consoleproxy.url.domain: for
// `*.example.com` the IP's dashed form under the domain (1-2-3-4.example.com), any other value
// as it is (a load balancer's name), empty the raw IP.
func Host(domain, ip string) string {
	domain = strings.TrimSpace(domain)
	switch {
	case domain == "":
		return ip
	case strings.HasPrefix(domain, "*."):
		parsed := net.ParseIP(ip)
		if parsed == nil {
			return ip
		}
		if v4 := parsed.To4(); v4 != nil {
			return strings.ReplaceAll(v4.String(), ".", "-") + domain[1:]
		}
		return strings.ReplaceAll(parsed.String(), ":", "-") + domain[1:]
	}
	return domain
}

// URLOptions are the settings a console URL follows.
type URLOptions struct {
	// Domain is consoleproxy.url.domain.
	Domain string
	// SSL is consoleproxy.sslEnabled: https on 8443 (wss for noVNC's websocket).
	SSL bool
	// NoVNC is novnc.console.default: the noVNC viewer page rather than the legacy applet.
	NoVNC bool
}

// URL is the console URL of a session through the CPVM with public IP ip, carrying token.
func URL(o URLOptions, ip, token string) string {
	scheme, port := "http", PortPlain
	if o.SSL {
		scheme, port = "https", PortSSL
	}
	hostport := net.JoinHostPort(Host(o.Domain, ip), strconv.Itoa(port))
	if port == PortPlain {
		hostport = Host(o.Domain, ip)
	}
	path := "/console"
	q := url.Values{"token": {token}}
	if o.NoVNC {
		path = "/resource/noVNC/vnc.html"
		ws := "ws"
		if o.SSL {
			ws = "wss"
		}
		q.Set("websocket", ws)
		q.Set("port", strconv.Itoa(port))
	}
	return scheme + "://" + hostport + path + "?" + q.Encode()
}

// Endpoint is a console proxy's (or SSVM upload) endpoint as its VM reports it: where it
// serves TLS and what (the simulated fleet's endpoints in dev, GET /api/v1/dev/consoles).
type Endpoint struct {
	VMID     string `json:"vmid"`
	Name     string `json:"name"`
	Type     string `json:"systemvmtype"`
	ZoneID   string `json:"zoneid"`
	Instance string `json:"instancename"`
	// Addr is where it serves TLS; empty while it does not (restarting, stopped).
	Addr string `json:"addr"`
	// Fingerprint is the SHA-256 fingerprint of the served leaf certificate.
	Fingerprint string `json:"fingerprint"`
	Sessions    int    `json:"activeviewersessions"`
	Restarts    int    `json:"restarts"`
}
