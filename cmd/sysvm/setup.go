package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/codec"
	"github.com/sysvm/sysvm/models"
)

// app is the shared setup of every sysvm command: the parsed configuration, the logger, the
// master key and the payload codec derived from it, and, when a command asks for them, the
// store, the Temporal client and the admin key. Commands stay thin: they call what they need
// and close the app when done.
type app struct {
	dev    bool
	cfg    *config
	log    *slog.Logger
	master []byte
	codec  *codec.Codec
	store  *models.Store
	tc     client.Client
	closes []func()
}

// setup parses a command's flags (extra adds its own), and loads the master key and the codec.
// In dev mode absent settings get the dev defaults (key files under the data directory).
func setup(logger *slog.Logger, name string, args []string, dev bool, extra func(fs *flag.FlagSet)) (*app, error) {
	cfg, err := parseConfig(name, args, nil, extra)
	if err != nil {
		return nil, err
	}
	a := &app{dev: dev, cfg: cfg, log: logger}
	if dev {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
	}
	if a.master, err = a.masterKey(); err != nil {
		return nil, err
	}
	if a.codec, err = codec.New(a.master); err != nil {
		return nil, err
	}
	return a, nil
}

// close releases what the app opened, last first.
func (a *app) close() {
	for i := len(a.closes) - 1; i >= 0; i-- {
		a.closes[i]()
	}
	a.closes = nil
}

func (a *app) onClose(f func()) { a.closes = append(a.closes, f) }

// masterKey returns the secret master key: the flag/variable, or in dev a key file.
func (a *app) masterKey() ([]byte, error) {
	if a.cfg.SecretKey != "" {
		return models.ParseMasterKey(a.cfg.SecretKey)
	}
	if !a.dev {
		return nil, errors.New("SYSVM_SECRET_KEY is required (base64 of 32 random bytes: `head -c32 /dev/urandom | base64`)")
	}
	return models.LoadOrCreateMasterKey(filepath.Join(a.cfg.DataDir, "secret.key"))
}

// openStore opens the database for a command that serves from it: dev migrates it; api and
// worker refuse a schema that is not the one they know (the error says to run `sysvm migrate`).
func (a *app) openStore(ctx context.Context) (*models.Store, error) {
	store, err := a.openDatabase(ctx)
	if err != nil {
		return nil, err
	}
	if a.dev {
		_, err = store.Migrate(ctx)
	} else {
		err = store.RequireCurrentSchema(ctx)
	}
	if err != nil {
		return nil, err
	}
	return store, nil
}

// openDatabase connects to the database without looking at its schema (`sysvm migrate`); it is
// the one place a command opens the store. The DSN's password never appears in an error.
func (a *app) openDatabase(ctx context.Context) (*models.Store, error) {
	dsn := a.cfg.DBDSN
	if dsn == "" {
		if !a.dev {
			return nil, errors.New("SYSVM_DB_DSN is required (mysql://user:pass@tcp(host:3306)/sysvm)")
		}
		dsn = "sqlite://" + filepath.Join(a.cfg.DataDir, "sysvm.db")
	}
	store, err := models.Open(ctx, dsn, a.master)
	if err != nil {
		return nil, redact(fmt.Errorf("open database: %w", err), dsnPassword(dsn))
	}
	a.store = store
	a.onClose(func() { _ = store.Close() })
	return store, nil
}

// dialTemporal connects to Temporal with the configured TLS, credentials and the codec.
func (a *app) dialTemporal(ctx context.Context) (client.Client, error) {
	tc, err := a.cfg.Temporal.dial(ctx, a.codec, a.log)
	if err != nil {
		return nil, err
	}
	a.tc = tc
	a.onClose(tc.Close)
	return tc, nil
}

// ensureAdminKey stores the admin key (hashed) and returns it; in dev an absent key is
// generated once and kept in <data>/admin.key. Outside dev an absent key is left alone.
func (a *app) ensureAdminKey(ctx context.Context) (string, error) {
	key := a.cfg.APIKey
	path := filepath.Join(a.cfg.DataDir, "admin.key")
	if key == "" && a.dev {
		if b, err := os.ReadFile(path); err == nil {
			key = string(trimNL(b))
		}
	}
	if key == "" && !a.dev {
		return "", nil
	}
	_, clear, err := a.store.CreateAPIKey(ctx, "admin", models.RoleAdmin, key)
	if err != nil {
		return "", err
	}
	if a.dev && a.cfg.APIKey == "" {
		if err := os.WriteFile(path, []byte(clear+"\n"), 0o600); err != nil {
			return "", err
		}
	}
	return clear, nil
}

// codecHandler is the codec endpoint behind API-key authentication: an operator or admin key,
// sent as a bearer token (the CLI's --codec-auth) or as the Basic password (a browser).
func (a *app) codecHandler() http.Handler {
	return a.codec.Handler(codec.HandlerOptions{AllowOrigins: a.cfg.codecOrigins(), Logger: a.log,
		Authorize: func(r *http.Request) error {
			key := codec.Credential(r)
			if key == "" {
				return codec.ErrUnauthorized
			}
			k, err := a.store.Authenticate(r.Context(), key)
			if errors.Is(err, models.ErrNotFound) {
				return codec.ErrUnauthorized
			}
			if err != nil {
				return fmt.Errorf("check API key: %w", err)
			}
			if k.Role != models.RoleAdmin && k.Role != models.RoleOperator {
				return fmt.Errorf("%w: key %s has role %s", codec.ErrForbidden, k.Name, k.Role)
			}
			return nil
		}})
}

// codecPath is where the API port serves the codec endpoint.
const codecPath = "/codec"

// withCodec serves the codec endpoint under /codec/ next to the API.
func (a *app) withCodec(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(codecPath+"/", a.codecHandler())
	mux.Handle("/", api)
	return mux
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
