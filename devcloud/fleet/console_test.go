package fleet

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/hypervisors/sshexec/sshtest"
	"github.com/sysvm/sysvm/internal/certtest"
	"github.com/sysvm/sysvm/models"
)

func keyPair(t *testing.T, cert, key string) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair([]byte(cert), []byte(key))
	require.NoError(t, err)
	return c
}

// tlsHandshake dials addr with TLS trusting only roots, for name, and returns the served chain.
func tlsHandshake(addr, name string, roots *x509.CertPool) ([]*x509.Certificate, error) {
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates, nil
}

// A simulated CPVM, driven over real SSH with the sysvm-console program, serves the dev
// default until given a certificate, then after a restart the uploaded chain (verified by a
// TLS client with only the uploaded root, for a name under the suffix); a broken one serves
// the default again. Sessions need a valid, unexpired, unused token for this proxy, and are
// counted while open.
func TestConsoleEndpointsOverSSH(t *testing.T) {
	key := sshtest.NewSigner(t)
	dev := certtest.Issue(certtest.Options{CN: "sysvm dev console", DNSNames: []string{"*.consoleproxy.dev.test"}}, nil)
	tokenKey, err := consoles.TokenKey([]byte("0123456789abcdef0123456789abcdef"))
	require.NoError(t, err)
	cons, err := NewConsoles(ConsoleOptions{TokenKey: tokenKey, Default: keyPair(t, dev.CertPEM(), dev.KeyPEM())})
	require.NoError(t, err)
	t.Cleanup(cons.Close)
	f := testFleet(t, key, Options{Commands: map[string]CommandFunc{ConsoleCommand: cons.Command()}})
	spec := kvmSpec(1, "kvm-host-1")
	spec.ID, spec.Name, spec.Type = "v-1-VM", "v-1-VM", models.TypeCPVM
	require.NoError(t, f.Add(spec))
	c := mustRouterClient(t, f, spec.ID, key)

	status := func() ConsoleStatus {
		t.Helper()
		code, out, errOut, err := remote(c, nil, ConsoleCommand, "status")
		require.NoError(t, err)
		require.Equal(t, 0, code, errOut)
		st, err := ParseConsoleStatus([]byte(out))
		require.NoError(t, err)
		return st
	}
	st := status()
	require.NotEmpty(t, st.Addr)
	assert.True(t, strings.HasPrefix(st.Addr, "127.0.0.1:"))
	assert.Equal(t, models.Fingerprint(dev.Cert.Raw), st.Fingerprint, "dev default served first")

	p := certtest.NewPKI("*.consoleproxy.example.com", certtest.P256)
	roots := x509.NewCertPool()
	roots.AddCert(p.Root.Cert)
	_, err = tlsHandshake(st.Addr, "1-2-3-4.consoleproxy.example.com", roots)
	require.Error(t, err, "the dev default must not verify against the uploaded root")

	in, _ := json.Marshal(ConsoleInstall{CertificatePEM: p.Server.CertPEM() + p.Intermediate.CertPEM(), KeyPEM: p.Server.KeyPEM()})
	code, _, errOut, err := remote(c, in, ConsoleCommand, "install")
	require.NoError(t, err)
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, models.Fingerprint(dev.Cert.Raw), status().Fingerprint, "installed is served only after a restart")
	code, _, errOut, err = remote(c, nil, ConsoleCommand, "restart")
	require.NoError(t, err)
	require.Equal(t, 0, code, errOut)
	st = status()
	assert.Equal(t, 1, st.Restarts)
	chain, err := tlsHandshake(st.Addr, "1-2-3-4.consoleproxy.example.com", roots)
	require.NoError(t, err, "the served chain verifies with the uploaded root for a name under the suffix")
	require.Len(t, chain, 2)
	assert.Equal(t, p.Server.Cert.Raw, chain[0].Raw)
	_, err = tlsHandshake(st.Addr, "console.other.org", roots)
	require.Error(t, err, "a name outside the suffix")

	// Bad input to the program.
	code, _, errOut, err = remote(c, []byte(`{"certificate":"x","key":"y"}`), ConsoleCommand, "install")
	require.NoError(t, err)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "install certificate")

	// Sessions.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "1-2-3-4.consoleproxy.example.com"}}}
	open := func(token string) (*http.Response, error) {
		return client.Get("https://" + st.Addr + "/console?token=" + token)
	}
	tok, err := consoles.Sign(tokenKey, consoles.Claims{VMID: "guest-1", ProxyID: spec.ID, Expires: time.Now().Add(time.Minute).Unix()})
	require.NoError(t, err)
	resp, err := open(tok)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "console of guest-1\n", line)
	assert.Equal(t, 1, status().Sessions)

	refused := func(token, why string) {
		t.Helper()
		r, err := open(token)
		require.NoError(t, err)
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		assert.Equal(t, http.StatusForbidden, r.StatusCode, why)
		assert.Contains(t, string(body), why)
	}
	refused(tok, "already used")
	expired, _ := consoles.Sign(tokenKey, consoles.Claims{VMID: "guest-1", ProxyID: spec.ID, Expires: time.Now().Add(-time.Second).Unix()})
	refused(expired, "expired")
	other, _ := consoles.TokenKey([]byte("another master key, 32 bytes...."))
	forged, _ := consoles.Sign(other, consoles.Claims{VMID: "guest-1", ProxyID: spec.ID, Expires: time.Now().Add(time.Minute).Unix()})
	refused(forged, "forged")
	payload, sig, _ := strings.Cut(tok, ".")
	refused(payload+"x."+sig, "forged")
	wrong, _ := consoles.Sign(tokenKey, consoles.Claims{VMID: "guest-1", ProxyID: "v-2-VM", Expires: time.Now().Add(time.Minute).Unix()})
	refused(wrong, "another console proxy")
	assert.Equal(t, 1, status().Sessions, "refused sessions are not counted")
	resp.Body.Close()
	require.Eventually(t, func() bool { return status().Sessions == 0 }, 5*time.Second, 20*time.Millisecond, "a closed session is no longer counted")

	// A broken CPVM serves the default after its restart.
	require.NoError(t, cons.BreakNextRestart(spec.ID, true))
	require.NoError(t, cons.Restart(spec.ID))
	st = status()
	assert.Equal(t, models.Fingerprint(dev.Cert.Raw), st.Fingerprint)
	_, err = tlsHandshake(st.Addr, "1-2-3-4.consoleproxy.example.com", roots)
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	require.True(t, errors.As(err, &uerr) || errors.As(err, &herr), "want a verification failure, got %v", err)
}

// Console hosts and URLs follow the settings.
func TestConsoleURLs(t *testing.T) {
	assert.Equal(t, "1-2-3-4.example.com", consoles.Host("*.example.com", "1.2.3.4"))
	assert.Equal(t, "console.example.com", consoles.Host("console.example.com", "1.2.3.4"))
	assert.Equal(t, "1.2.3.4", consoles.Host("", "1.2.3.4"))
	assert.Equal(t, "https://1-2-3-4.example.com:8443/resource/noVNC/vnc.html?port=8443&token=T&websocket=wss",
		consoles.URL(consoles.URLOptions{Domain: "*.example.com", SSL: true, NoVNC: true}, "1.2.3.4", "T"))
	assert.Equal(t, "http://1.2.3.4/console?token=T", consoles.URL(consoles.URLOptions{}, "1.2.3.4", "T"))
}
