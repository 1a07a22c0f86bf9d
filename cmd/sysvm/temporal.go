package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/sysvm/sysvm/codec"
)

// temporalConfig is how a process connects to Temporal: address and namespace, TLS (a CA to
// trust, a server name), mTLS (a client certificate and key), and an API key.
type temporalConfig struct {
	Address       string
	Namespace     string
	TLS           bool
	TLSCA         string
	TLSCert       string
	TLSKey        string
	TLSServerName string
	APIKey        string // secret
	// DialTimeout bounds the wait for Temporal to come up (0 = a minute).
	DialTimeout time.Duration
	// extra adjust the client's options before the codec is applied (telemetry: the metrics
	// handler and the tracing interceptor).
	extra []func(*client.Options)
}

func envBool(name string) bool {
	b, _ := strconv.ParseBool(os.Getenv(name))
	return b
}

// flags registers the connection flags on fs.
func (t *temporalConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&t.Address, "temporal", env("SYSVM_TEMPORAL_ADDRESS", ""), "Temporal frontend host:port (SYSVM_TEMPORAL_ADDRESS; dev default: start a dev server)")
	fs.StringVar(&t.Namespace, "namespace", env("SYSVM_TEMPORAL_NAMESPACE", "default"), "Temporal namespace (SYSVM_TEMPORAL_NAMESPACE)")
	fs.BoolVar(&t.TLS, "temporal-tls", envBool("SYSVM_TEMPORAL_TLS"), "connect to Temporal over TLS, trusting the system CAs unless -temporal-tls-ca is given; implied by the other TLS flags and by an API key (SYSVM_TEMPORAL_TLS)")
	fs.StringVar(&t.TLSCA, "temporal-tls-ca", env("SYSVM_TEMPORAL_TLS_CA", ""), "PEM file of the CA(s) that sign the Temporal frontend's certificate (SYSVM_TEMPORAL_TLS_CA)")
	fs.StringVar(&t.TLSCert, "temporal-tls-cert", env("SYSVM_TEMPORAL_TLS_CERT", ""), "PEM client certificate for mTLS, with -temporal-tls-key (SYSVM_TEMPORAL_TLS_CERT)")
	fs.StringVar(&t.TLSKey, "temporal-tls-key", env("SYSVM_TEMPORAL_TLS_KEY", ""), "PEM private key of the mTLS client certificate (SYSVM_TEMPORAL_TLS_KEY)")
	fs.StringVar(&t.TLSServerName, "temporal-tls-server-name", env("SYSVM_TEMPORAL_TLS_SERVER_NAME", ""), "name to verify the Temporal frontend's certificate against, when it differs from the address's host (SYSVM_TEMPORAL_TLS_SERVER_NAME)")
	fs.StringVar(&t.APIKey, "temporal-api-key", "", secretUsage("Temporal API key, sent as a bearer token over TLS (Temporal Cloud)", "SYSVM_TEMPORAL_API_KEY"))
}

// tlsConfig builds the TLS configuration; nil when TLS is not asked for.
func (t *temporalConfig) tlsConfig() (*tls.Config, error) {
	if !t.TLS && t.TLSCA == "" && t.TLSCert == "" && t.TLSKey == "" && t.TLSServerName == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.TLSServerName}
	if t.TLSCA != "" {
		pem, err := os.ReadFile(t.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("temporal-tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("temporal-tls-ca: %s holds no PEM certificate", t.TLSCA)
		}
		cfg.RootCAs = pool
	}
	switch {
	case t.TLSCert != "" && t.TLSKey != "":
		cert, err := tls.LoadX509KeyPair(t.TLSCert, t.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("temporal-tls-cert/temporal-tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case t.TLSCert != "":
		return nil, errors.New("temporal-tls-cert is set without temporal-tls-key (SYSVM_TEMPORAL_TLS_KEY)")
	case t.TLSKey != "":
		return nil, errors.New("temporal-tls-key is set without temporal-tls-cert (SYSVM_TEMPORAL_TLS_CERT)")
	}
	return cfg, nil
}

// clientOptions builds the SDK's options: connection security, credentials, the payload codec
// and the logger.
func (t *temporalConfig) clientOptions(c *codec.Codec, logger *slog.Logger) (client.Options, error) {
	if t.Address == "" {
		return client.Options{}, errors.New("temporal: SYSVM_TEMPORAL_ADDRESS (-temporal) is required (host:7233)")
	}
	tlsCfg, err := t.tlsConfig()
	if err != nil {
		return client.Options{}, err
	}
	o := client.Options{HostPort: t.Address, Namespace: t.Namespace,
		Logger:            tlog.NewStructuredLogger(logger.With("component", "temporal-sdk")),
		ConnectionOptions: client.ConnectionOptions{TLS: tlsCfg}}
	if t.APIKey != "" {
		// The SDK turns TLS on for an API key when none is configured.
		o.Credentials = client.NewAPIKeyStaticCredentials(t.APIKey)
	}
	for _, f := range t.extra {
		f(&o)
	}
	if c != nil {
		c.Apply(&o)
	}
	return o, nil
}

// dialTemporal connects to Temporal, waiting up to DialTimeout for it to come up. It is the
// one way every sysvm command reaches Temporal.
func (t *temporalConfig) dial(ctx context.Context, c *codec.Codec, logger *slog.Logger) (client.Client, error) {
	o, err := t.clientOptions(c, logger)
	if err != nil {
		return nil, err
	}
	wait := t.DialTimeout
	if wait <= 0 {
		wait = time.Minute
	}
	deadline := time.Now().Add(wait)
	for {
		cl, err := client.DialContext(ctx, o)
		if err == nil {
			if _, err = cl.CheckHealth(ctx, &client.CheckHealthRequest{}); err == nil {
				return cl, nil
			}
			cl.Close()
		}
		if time.Now().After(deadline) {
			return nil, redact(fmt.Errorf("connect to Temporal at %s: %w", t.Address, err), t.APIKey)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
