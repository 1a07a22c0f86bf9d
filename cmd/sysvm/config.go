package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
)

// config is every setting of the sysvm processes. A plain setting's flag defaults to its
// SYSVM_* variable; a secret's flag has no default and the variable is read after parsing,
// so neither `-h` nor a flag error can print a secret.
type config struct {
	DataDir    string
	DBDSN      string // secret: may hold the database password
	SecretKey  string // secret
	TemporalUI string
	APIAddr    string
	APIKey     string // secret
	// CodecOrigins are the browser origins allowed to call the codec endpoint (the Web UI's).
	CodecOrigins string
	Temporal     temporalConfig
}

// secretVar is a secret setting: its flag and the variable it falls back to.
type secretVar struct {
	flag, env string
	dst       *string
}

func (c *config) secrets() []secretVar {
	return []secretVar{
		{"db", "SYSVM_DB_DSN", &c.DBDSN},
		{"secret-key", "SYSVM_SECRET_KEY", &c.SecretKey},
		{"api-key", "SYSVM_API_KEY", &c.APIKey},
		{"temporal-api-key", "SYSVM_TEMPORAL_API_KEY", &c.Temporal.APIKey},
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// secretUsage describes a secret flag: where it is read from and whether that is set, never
// the value.
func secretUsage(text, name string) string {
	state := "unset"
	if os.Getenv(name) != "" {
		state = "set"
	}
	return fmt.Sprintf("%s (secret; default from %s, which is %s; prefer the variable: flags show in ps)", text, name, state)
}

// flags registers the shared flags on fs.
func (c *config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data", env("SYSVM_DATA_DIR", ".data"), "directory for dev state (SYSVM_DATA_DIR)")
	fs.StringVar(&c.DBDSN, "db", "", secretUsage("database: mysql://user:pass@tcp(host:3306)/db or sqlite://path; dev default sqlite://<data>/sysvm.db", "SYSVM_DB_DSN"))
	fs.StringVar(&c.SecretKey, "secret-key", "", secretUsage("base64 32-byte master key: encrypts secrets at rest and, through a derived key, Temporal payloads; dev default <data>/secret.key", "SYSVM_SECRET_KEY"))
	fs.StringVar(&c.TemporalUI, "temporal-ui", env("SYSVM_TEMPORAL_UI", "http://localhost:8233"), "Temporal Web UI base URL for links (SYSVM_TEMPORAL_UI)")
	fs.StringVar(&c.CodecOrigins, "codec-origins", env("SYSVM_CODEC_ORIGINS", ""), "comma-separated browser origins allowed to call the codec endpoint (SYSVM_CODEC_ORIGINS; default the origin of -temporal-ui)")
	fs.StringVar(&c.APIAddr, "listen", env("SYSVM_API_ADDR", ":8080"), "API listen address (SYSVM_API_ADDR)")
	fs.StringVar(&c.APIKey, "api-key", "", secretUsage("admin API key to ensure at start; dev default <data>/admin.key", "SYSVM_API_KEY"))
	c.Temporal.flags(fs)
}

// parseConfig parses a command's flags; extra registers the command's own flags. Usage and
// errors go to out (stderr when nil). Secrets not given as flags are then read from their
// variables.
func parseConfig(name string, args []string, out io.Writer, extra func(fs *flag.FlagSet)) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("sysvm "+name, flag.ContinueOnError)
	if out != nil {
		fs.SetOutput(out)
	}
	c.flags(fs)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("sysvm %s: unexpected argument %q (flags only; see -h)", name, fs.Arg(0))
	}
	for _, s := range c.secrets() {
		if *s.dst == "" {
			*s.dst = os.Getenv(s.env)
		}
	}
	return c, nil
}

// codecOrigins are the allowed origins: -codec-origins, else the Web UI's origin.
func (c *config) codecOrigins() []string {
	var out []string
	for _, o := range strings.Split(c.CodecOrigins, ",") {
		if o = strings.TrimRight(strings.TrimSpace(o), "/"); o != "" {
			out = append(out, o)
		}
	}
	if len(out) == 0 && c.TemporalUI != "" {
		if u, err := url.Parse(c.TemporalUI); err == nil && u.Scheme != "" && u.Host != "" {
			out = append(out, u.Scheme+"://"+u.Host)
		}
	}
	return out
}

// dsnPassword is the password inside a mysql:// DSN ("" when none).
func dsnPassword(dsn string) string {
	rest, ok := strings.CutPrefix(dsn, "mysql://")
	if !ok {
		return ""
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pass, _ := strings.Cut(rest[:at], ":")
	return pass
}

// redacted hides secret strings in an error's text; Unwrap still reaches the cause.
type redacted struct {
	err     error
	secrets []string
}

func (r *redacted) Error() string {
	s := r.err.Error()
	for _, secret := range r.secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "***")
		}
	}
	return s
}

func (r *redacted) Unwrap() error { return r.err }

// redact wraps err so its text never shows any of secrets.
func redact(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	var already *redacted
	if errors.As(err, &already) {
		secrets = append(secrets, already.secrets...)
	}
	return &redacted{err: err, secrets: secrets}
}
