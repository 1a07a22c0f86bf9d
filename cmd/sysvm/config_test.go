package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysvm/sysvm/models"
)

// secretEnv puts a secret in every secret-bearing variable and returns the values.
func secretEnv(t *testing.T) []string {
	t.Helper()
	master := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	vals := map[string]string{
		"SYSVM_SECRET_KEY":       master,
		"SYSVM_API_KEY":          "sysvm_admin-key-AAAA1111",
		"SYSVM_DB_DSN":           "mysql://root:db-password-BBBB2222@tcp(127.0.0.1:1)/sysvm",
		"SYSVM_TEMPORAL_API_KEY": "temporal-api-key-CCCC3333",
	}
	t.Setenv("SYSVM_DATA_DIR", t.TempDir())
	var out []string
	for k, v := range vals {
		t.Setenv(k, v)
		out = append(out, v)
	}
	return append(out, "db-password-BBBB2222")
}

// captureStderr runs f with os.Stderr redirected, returning what it wrote there.
func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); done <- b }()
	func() {
		defer func() { os.Stderr = old }()
		f()
	}()
	_ = w.Close()
	return string(<-done)
}

// TestFlagsNeverPrintSecrets runs every command's flag parsing with secrets in the
// environment: neither -h nor a mistyped flag, nor the error returned, shows any of them.
func TestFlagsNeverPrintSecrets(t *testing.T) {
	secrets := secretEnv(t)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	cmds := map[string]func(context.Context, *slog.Logger, []string) error{
		"api": runAPI, "worker": runWorker, "migrate": runMigrate, "dev": runDev}
	for name, run := range cmds {
		for _, args := range [][]string{{"-h"}, {"-secret-kye", "x"}, {"-nope"}} {
			var err error
			out := captureStderr(t, func() { err = run(context.Background(), logger, args) })
			if err == nil {
				t.Fatalf("%s %v: no error", name, args)
			}
			text := out + err.Error() + logs.String()
			for _, s := range secrets {
				if strings.Contains(text, s) {
					t.Errorf("%s %v printed a secret %q:\n%s", name, args, s, text)
				}
			}
			if args[0] == "-h" {
				for _, want := range []string{"-secret-key", "SYSVM_SECRET_KEY, which is set", "-temporal-tls-ca", "-temporal-api-key"} {
					if !strings.Contains(out, want) {
						t.Errorf("%s -h lacks %q:\n%s", name, want, out)
					}
				}
			}
		}
	}
}

func TestSecretsAreReadFromTheEnvironmentAfterParsing(t *testing.T) {
	secretEnv(t)
	c, err := parseConfig("api", nil, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.APIKey != "sysvm_admin-key-AAAA1111" || c.Temporal.APIKey != "temporal-api-key-CCCC3333" ||
		!strings.Contains(c.DBDSN, "db-password") || c.SecretKey == "" {
		t.Errorf("secrets not read from the environment: %+v", c)
	}
	c, err = parseConfig("api", []string{"-api-key", "from-flag"}, io.Discard, nil)
	if err != nil || c.APIKey != "from-flag" {
		t.Errorf("a flag does not override the variable: %q %v", c.APIKey, err)
	}
	if _, err := parseConfig("api", []string{"stray"}, io.Discard, nil); err == nil || !strings.Contains(err.Error(), `"stray"`) {
		t.Errorf("stray argument: %v", err)
	}
}

func TestStoreErrorHidesTheDSNPassword(t *testing.T) {
	secretEnv(t)
	a, err := setup(slog.New(slog.NewTextHandler(io.Discard, nil)), "api", nil, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	_, err = a.openStore(context.Background())
	if err == nil {
		t.Fatal("opened a database on port 1")
	}
	if strings.Contains(err.Error(), "db-password-BBBB2222") || !strings.Contains(err.Error(), "open database") {
		t.Errorf("store error: %v", err)
	}
	if got := dsnPassword("mysql://u:p@ss:w@tcp(h:1)/d"); got != "p@ss:w" {
		t.Errorf("dsnPassword = %q", got)
	}
}

func TestCodecOrigins(t *testing.T) {
	c := &config{TemporalUI: "http://localhost:8233/namespaces/default"}
	if got := c.codecOrigins(); len(got) != 1 || got[0] != "http://localhost:8233" {
		t.Errorf("default origins %v", got)
	}
	c.CodecOrigins = "https://ui.example, https://ui2.example/"
	if got := c.codecOrigins(); len(got) != 2 || got[1] != "https://ui2.example" {
		t.Errorf("origins %v", got)
	}
}

// TestCodecEndpointOnTheAPIPort serves the API handler with the codec under /codec/ as `sysvm
// api` does, on a real SQLite store: the codec wants an operator or admin key; everything
// else reaches the API.
func TestCodecEndpointOnTheAPIPort(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SYSVM_SECRET_KEY", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	t.Setenv("SYSVM_DB_DSN", "sqlite://"+filepath.Join(dir, "sysvm.db"))
	a, err := setup(slog.New(slog.NewTextHandler(io.Discard, nil)), "api", nil, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	ctx := context.Background()
	// As `sysvm migrate` leaves it: api refuses an unmigrated schema.
	store, err := a.openDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, role := range []string{models.RoleAdmin, models.RoleOperator, models.RoleReadOnly} {
		if _, keys[role], err = store.CreateAPIKey(ctx, "k-"+role, role, ""); err != nil {
			t.Fatal(err)
		}
	}
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	srv := httptest.NewServer(a.withCodec(api))
	defer srv.Close()

	call := func(path, key string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(`{"payloads":[]}`))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		key  string
		want int
	}{{"", 401}, {"sysvm_unknown", 401}, {keys[models.RoleReadOnly], 403}, {keys[models.RoleOperator], 200}, {keys[models.RoleAdmin], 200}} {
		if got := call("/codec/decode", c.key); got != c.want {
			t.Errorf("decode with key %q = %d, want %d", c.key, got, c.want)
		}
	}
	if got := call("/api/v1/zones", ""); got != http.StatusTeapot {
		t.Errorf("API path = %d, want the API handler", got)
	}
}
