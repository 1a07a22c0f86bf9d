package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/sysvm/sysvm/models"
)

// config is every setting of the sysvm processes; each flag defaults to its SYSVM_* variable.
type config struct {
	DataDir           string
	DBDSN             string
	SecretKey         string
	TemporalAddress   string
	TemporalNamespace string
	TemporalUI        string
	APIAddr           string
	APIKey            string
	// clientOptions adjust the Temporal client's options (telemetry: metrics and tracing).
	clientOptions []func(*client.Options)
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// flags registers the shared flags on fs.
func (c *config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data", env("SYSVM_DATA_DIR", ".data"), "directory for dev state (SYSVM_DATA_DIR)")
	fs.StringVar(&c.DBDSN, "db", env("SYSVM_DB_DSN", ""), "database: mysql://user:pass@tcp(host:3306)/db or sqlite://path (SYSVM_DB_DSN; dev default sqlite://<data>/sysvm.db)")
	fs.StringVar(&c.SecretKey, "secret-key", env("SYSVM_SECRET_KEY", ""), "base64 32-byte master key encrypting secrets at rest (SYSVM_SECRET_KEY; dev default <data>/secret.key)")
	fs.StringVar(&c.TemporalAddress, "temporal", env("SYSVM_TEMPORAL_ADDRESS", ""), "Temporal frontend host:port (SYSVM_TEMPORAL_ADDRESS; dev default: start a dev server)")
	fs.StringVar(&c.TemporalNamespace, "namespace", env("SYSVM_TEMPORAL_NAMESPACE", "default"), "Temporal namespace (SYSVM_TEMPORAL_NAMESPACE)")
	fs.StringVar(&c.TemporalUI, "temporal-ui", env("SYSVM_TEMPORAL_UI", "http://localhost:8233"), "Temporal Web UI base URL for links (SYSVM_TEMPORAL_UI)")
	fs.StringVar(&c.APIAddr, "listen", env("SYSVM_API_ADDR", ":8080"), "API listen address (SYSVM_API_ADDR)")
	fs.StringVar(&c.APIKey, "api-key", env("SYSVM_API_KEY", ""), "admin API key to ensure at start (SYSVM_API_KEY; dev default <data>/admin.key)")
}

// parseConfig parses a command's flags; extra registers the command's own flags.
func parseConfig(name string, args []string, extra func(fs *flag.FlagSet)) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c.flags(fs)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return c, nil
}

// masterKey returns the secret master key: the flag/variable, or in dev a key file.
func (c *config) masterKey(dev bool) ([]byte, error) {
	if c.SecretKey != "" {
		return models.ParseMasterKey(c.SecretKey)
	}
	if !dev {
		return nil, fmt.Errorf("SYSVM_SECRET_KEY is required (base64 of 32 random bytes: `head -c32 /dev/urandom | base64`)")
	}
	return models.LoadOrCreateMasterKey(filepath.Join(c.DataDir, "secret.key"))
}

// openStore opens and migrates the database.
func (c *config) openStore(ctx context.Context, dev bool) (*models.Store, error) {
	key, err := c.masterKey(dev)
	if err != nil {
		return nil, err
	}
	dsn := c.DBDSN
	if dsn == "" {
		if !dev {
			return nil, fmt.Errorf("SYSVM_DB_DSN is required (mysql://user:pass@tcp(host:3306)/sysvm)")
		}
		if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
			return nil, err
		}
		dsn = "sqlite://" + filepath.Join(c.DataDir, "sysvm.db")
	}
	return models.Open(ctx, dsn, key)
}

// dialTemporal connects to Temporal, waiting up to a minute for it to come up.
func (c *config) dialTemporal(ctx context.Context, logger *slog.Logger) (client.Client, error) {
	if c.TemporalAddress == "" {
		return nil, fmt.Errorf("SYSVM_TEMPORAL_ADDRESS is required (host:7233)")
	}
	deadline := time.Now().Add(time.Minute)
	for {
		opts := client.Options{HostPort: c.TemporalAddress, Namespace: c.TemporalNamespace,
			Logger: tlog.NewStructuredLogger(logger.With("component", "temporal-sdk"))}
		c.applyClientOptions(&opts)
		cl, err := client.Dial(opts)
		if err == nil {
			if _, err = cl.CheckHealth(ctx, &client.CheckHealthRequest{}); err == nil {
				return cl, nil
			}
			cl.Close()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to Temporal at %s: %w", c.TemporalAddress, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// ensureAdminKey stores the admin key (hashed) and returns it; in dev an absent key is
// generated once and kept in <data>/admin.key.
func (c *config) ensureAdminKey(ctx context.Context, s *models.Store, dev bool) (string, error) {
	key := c.APIKey
	path := filepath.Join(c.DataDir, "admin.key")
	if key == "" && dev {
		if b, err := os.ReadFile(path); err == nil {
			key = string(trimNL(b))
		}
	}
	if key == "" && !dev {
		return "", nil
	}
	_, clear, err := s.CreateAPIKey(ctx, "admin", models.RoleAdmin, key)
	if err != nil {
		return "", err
	}
	if dev && c.APIKey == "" {
		if err := os.WriteFile(path, []byte(clear+"\n"), 0o600); err != nil {
			return "", err
		}
	}
	return clear, nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
