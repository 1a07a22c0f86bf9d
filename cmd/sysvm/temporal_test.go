package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// pki is a throwaway CA with a server certificate for 127.0.0.1 and temporal.test and a client
// certificate, written as PEM files.
type pki struct {
	dir                       string
	caFile, certFile, keyFile string // client cert and key
	pool                      *x509.CertPool
	server                    tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sysvm test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage, names []string, ips []net.IP) ([]byte, []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "sysvm test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: names, IPAddresses: ips,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	p := &pki{dir: dir, caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "client.pem"),
		keyFile: filepath.Join(dir, "client.key"), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	write := func(path string, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	cc, ck := issue(2, x509.ExtKeyUsageClientAuth, nil, nil)
	write(p.certFile, cc)
	write(p.keyFile, ck)
	sc, sk := issue(3, x509.ExtKeyUsageServerAuth, []string{"temporal.test"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if p.server, err = tls.X509KeyPair(sc, sk); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeFrontend is a gRPC server on loopback answering the health check the SDK's dial makes,
// recording the authorization metadata it receives.
type fakeFrontend struct {
	addr string
	mu   sync.Mutex
	auth []string
}

func startFrontend(t *testing.T, tlsCfg *tls.Config) *fakeFrontend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFrontend{addr: l.Addr().String()}
	opts := []grpc.ServerOption{grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo,
		h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		f.mu.Lock()
		f.auth = append(f.auth, md.Get("authorization")...)
		f.mu.Unlock()
		return h(ctx, req)
	})}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	s := grpc.NewServer(opts...)
	hs := health.NewServer()
	hs.SetServingStatus("temporal.api.workflowservice.v1.WorkflowService", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	workflowservice.RegisterWorkflowServiceServer(s, systemInfo{})
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return f
}

// systemInfo answers the GetSystemInfo call of the SDK's dial; every other method is unimplemented.
type systemInfo struct {
	workflowservice.UnimplementedWorkflowServiceServer
}

func (systemInfo) GetSystemInfo(context.Context, *workflowservice.GetSystemInfoRequest) (*workflowservice.GetSystemInfoResponse, error) {
	return &workflowservice.GetSystemInfoResponse{}, nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func dialOnce(t *testing.T, tc temporalConfig) error {
	t.Helper()
	tc.Namespace, tc.DialTimeout = "default", 300*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := tc.dial(ctx, nil, quiet())
	if err == nil {
		cl.Close()
	}
	return err
}

// TestTemporalTLSAndMTLS dials real gRPC servers on loopback: a TLS frontend is reached only
// with its CA; one that requires client certificates only with the client pair; a plain one
// refuses a TLS client; an API key travels as a bearer token over TLS.
func TestTemporalTLSAndMTLS(t *testing.T) {
	p := newPKI(t)
	tlsSrv := startFrontend(t, &tls.Config{Certificates: []tls.Certificate{p.server}})
	if err := dialOnce(t, temporalConfig{Address: tlsSrv.addr, TLSCA: p.caFile}); err != nil {
		t.Errorf("TLS with the CA: %v", err)
	}
	if err := dialOnce(t, temporalConfig{Address: tlsSrv.addr, TLS: true}); err == nil ||
		!strings.Contains(err.Error(), "certificate") {
		t.Errorf("TLS without the CA: %v, want a certificate error", err)
	}
	if err := dialOnce(t, temporalConfig{Address: tlsSrv.addr}); err == nil {
		t.Error("a plain client reached a TLS-only frontend")
	}
	// The certificate names temporal.test; -temporal-tls-server-name verifies against it.
	if err := dialOnce(t, temporalConfig{Address: tlsSrv.addr, TLSCA: p.caFile, TLSServerName: "temporal.test"}); err != nil {
		t.Errorf("server name temporal.test: %v", err)
	}
	if err := dialOnce(t, temporalConfig{Address: tlsSrv.addr, TLSCA: p.caFile, TLSServerName: "other.test"}); err == nil {
		t.Error("a wrong server name was accepted")
	}

	mtls := startFrontend(t, &tls.Config{Certificates: []tls.Certificate{p.server}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.pool})
	if err := dialOnce(t, temporalConfig{Address: mtls.addr, TLSCA: p.caFile}); err == nil {
		t.Error("mTLS frontend accepted a client without a certificate")
	}
	if err := dialOnce(t, temporalConfig{Address: mtls.addr, TLSCA: p.caFile, TLSCert: p.certFile, TLSKey: p.keyFile}); err != nil {
		t.Errorf("mTLS with the client certificate: %v", err)
	}

	plain := startFrontend(t, nil)
	err := dialOnce(t, temporalConfig{Address: plain.addr, TLSCA: p.caFile})
	if err == nil || !strings.Contains(err.Error(), "tls") {
		t.Errorf("TLS client on a plain frontend: %v, want a TLS handshake error", err)
	}

	if err := dialOnce(t, temporalConfig{Address: tlsSrv.addr, TLSCA: p.caFile, APIKey: "tk-secret"}); err != nil {
		t.Fatalf("API key over TLS: %v", err)
	}
	tlsSrv.mu.Lock()
	got := strings.Join(tlsSrv.auth, ",")
	tlsSrv.mu.Unlock()
	if !strings.Contains(got, "Bearer tk-secret") {
		t.Errorf("frontend saw authorization %q, want the API key as a bearer token", got)
	}
}

func TestTemporalOptionBuilding(t *testing.T) {
	p := newPKI(t)
	if cfg, err := (&temporalConfig{Address: "h:7233"}).tlsConfig(); cfg != nil || err != nil {
		t.Errorf("no TLS asked: %v %v", cfg, err)
	}
	if cfg, err := (&temporalConfig{TLS: true}).tlsConfig(); err != nil || cfg == nil || cfg.RootCAs != nil {
		t.Errorf("-temporal-tls alone: want system roots, got %v %v", cfg, err)
	}
	cfg, err := (&temporalConfig{TLSCA: p.caFile, TLSCert: p.certFile, TLSKey: p.keyFile, TLSServerName: "temporal.test"}).tlsConfig()
	if err != nil || cfg.RootCAs == nil || len(cfg.Certificates) != 1 || cfg.ServerName != "temporal.test" || cfg.MinVersion < tls.VersionTLS12 {
		t.Errorf("full TLS config: %+v %v", cfg, err)
	}
	for _, c := range []struct {
		tc   temporalConfig
		want string
	}{
		{temporalConfig{TLSCA: filepath.Join(p.dir, "missing.pem")}, "temporal-tls-ca"},
		{temporalConfig{TLSCA: p.keyFile}, "no PEM certificate"},
		{temporalConfig{TLSCert: p.certFile}, "without temporal-tls-key"},
		{temporalConfig{TLSKey: p.keyFile}, "without temporal-tls-cert"},
		{temporalConfig{TLSCert: p.caFile, TLSKey: p.keyFile}, "temporal-tls-cert/temporal-tls-key"},
	} {
		if _, err := c.tc.tlsConfig(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.tc, err, c.want)
		}
	}
	if _, err := (&temporalConfig{}).clientOptions(nil, quiet()); err == nil || !strings.Contains(err.Error(), "SYSVM_TEMPORAL_ADDRESS") {
		t.Errorf("no address: %v", err)
	}
	o, err := (&temporalConfig{Address: "h:7233", Namespace: "ns", APIKey: "k"}).clientOptions(nil, quiet())
	if err != nil || o.Credentials == nil || o.HostPort != "h:7233" || o.Namespace != "ns" {
		t.Errorf("API key options: %+v %v", o, err)
	}
	t.Setenv("SYSVM_DATA_DIR", t.TempDir())
	a, err := setup(quiet(), "worker", nil, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	a.cfg.Temporal.Address = "h:7233"
	if o, err = a.cfg.Temporal.clientOptions(a.codec, quiet()); err != nil || o.DataConverter == nil || o.FailureConverter == nil {
		t.Errorf("client options lack the codec: %v", err)
	}
}
