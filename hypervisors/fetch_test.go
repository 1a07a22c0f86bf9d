package hypervisors

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseChecksum(t *testing.T) {
	data := []byte("systemvm")
	digests := map[string][]byte{}
	for algo, h := range map[string]hash.Hash{"md5": md5.New(), "sha1": sha1.New(), "sha256": sha256.New(), "sha512": sha512.New()} {
		h.Write(data)
		digests[algo] = h.Sum(nil)
	}
	hx := func(algo string) string { return hex.EncodeToString(digests[algo]) }
	for _, c := range []struct {
		in, algo string // algo "" = must be refused
	}{
		{"sha256:" + hx("sha256"), "sha256"},
		{"SHA256:" + strings.ToUpper(hx("sha256")), "sha256"},
		{"SHA-256:" + hx("sha256"), "sha256"},
		{"{SHA-256}" + hx("sha256"), "sha256"}, // CloudStack's own spelling
		{"{md5}" + hx("md5"), "md5"},
		{"md5:" + hx("md5"), "md5"},
		{"sha1:" + hx("sha1"), "sha1"},
		{"sha512:" + hx("sha512"), "sha512"},
		{"  sha256: " + hx("sha256") + " ", "sha256"},
		{hx("md5"), "md5"}, // bare hex of 32 digits is md5, as CloudStack takes it
		{hx("sha1"), "sha1"},
		{hx("sha256"), "sha256"},
		{hx("sha512"), "sha512"},
		{"sha256:" + hx("md5"), ""}, // wrong length for the algorithm
		{"md5:" + hx("sha256"), ""},
		{"crc32:1234abcd", ""},
		{"sha1:zz", ""},
		{"md5:" + strings.Repeat("z", 32), ""},
		{":" + hx("md5"), ""}, // a separator but no algorithm
		{"abc", ""},
		{strings.Repeat("a", 33), ""},
	} {
		sum, err := ParseChecksum(c.in)
		if (err == nil) != (c.algo != "") {
			t.Errorf("ParseChecksum(%q) = %v, %v; want ok=%v", c.in, sum, err, c.algo != "")
			continue
		}
		if c.algo == "" {
			continue
		}
		if want := c.algo + ":" + hx(c.algo); sum.String() != want {
			t.Errorf("ParseChecksum(%q) = %s, want %s", c.in, sum, want)
		}
		h := hashFunc(sum.algo)()
		h.Write(data)
		if err := sum.verify(h, "x"); err != nil {
			t.Errorf("ParseChecksum(%q) does not verify its own data: %v", c.in, err)
		}
		h.Write([]byte("more"))
		if err := sum.verify(h, "x"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "checksum mismatch") {
			t.Errorf("ParseChecksum(%q) verified other data: %v", c.in, err)
		}
	}
	for _, empty := range []string{"", "  "} {
		if sum, err := ParseChecksum(empty); err != nil || !sum.IsZero() || sum.String() != "" {
			t.Errorf("ParseChecksum(%q) = %+v, %v; want the zero Checksum", empty, sum, err)
		}
	}
}

// isolateTemp points the temporary directory at an empty one the test can inspect.
func isolateTemp(t *testing.T) string {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	return dir
}

func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func mustSum(t *testing.T, s string) Checksum {
	t.Helper()
	sum, err := ParseChecksum(s)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFetchTemplateHTTP(t *testing.T) {
	tmpDir := isolateTemp(t)
	body := make([]byte, 1<<20+17)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	sha := sha256.Sum256(body)
	sum := mustSum(t, "sha256:"+hex.EncodeToString(sha[:]))
	mux := http.NewServeMux()
	mux.HandleFunc("/systemvm.qcow2", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < len(body); i += 64 << 10 {
			_, _ = w.Write(body[i:min(i+64<<10, len(body))])
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/short", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body[:len(body)/2])
	})
	for _, code := range []int{http.StatusGone, http.StatusForbidden, http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusNoContent} {
		mux.HandleFunc("/status/"+strconv.Itoa(code), func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) })
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := testCtx(t)

	var calls int
	var last, lastTotal int64
	monotonic := true
	path, size, cleanup, err := FetchTemplate(ctx, srv.URL+"/systemvm.qcow2", sum, func(done, total int64) {
		if done < last {
			monotonic = false
		}
		calls++
		last, lastTotal = done, total
	})
	if err != nil {
		t.Fatalf("FetchTemplate: %v", err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, body) || size != int64(len(body)) {
		t.Fatalf("fetched %d bytes (size %d, err %v), want the %d served", len(got), size, err, len(body))
	}
	if filepath.Dir(path) != tmpDir || !strings.HasSuffix(path, ".qcow2") {
		t.Errorf("temporary file %s, want a .qcow2 in %s", path, tmpDir)
	}
	if calls < 2 || !monotonic || last != int64(len(body)) || lastTotal != int64(len(body)) {
		t.Errorf("progress: %d calls, monotonic %v, last %d/%d; want several up to %d/%d", calls, monotonic, last, lastTotal, len(body), len(body))
	}
	cleanup()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("cleanup left %s: %v", path, err)
	}

	// Without Content-Length the total is unknown (0); without a checksum nothing is verified.
	var totals []int64
	path, size, cleanup, err = FetchTemplate(ctx, srv.URL+"/chunked", Checksum{}, func(_, total int64) { totals = append(totals, total) })
	if err != nil || size != int64(len(body)) {
		t.Fatalf("chunked fetch: size %d, %v", size, err)
	}
	cleanup()
	if len(totals) == 0 || totals[0] != 0 {
		t.Errorf("chunked fetch reported totals %v, want 0 (unknown)", totals)
	}

	for _, c := range []struct {
		name, url string
		sum       Checksum
		want      error
	}{
		{"checksum mismatch", srv.URL + "/systemvm.qcow2", mustSum(t, "md5:"+strings.Repeat("0", 32)), ErrInvalid},
		{"404", srv.URL + "/missing.qcow2", sum, ErrNotFound},
		{"410", srv.URL + "/status/410", sum, ErrNotFound},
		{"403", srv.URL + "/status/403", sum, ErrInvalid},
		{"429", srv.URL + "/status/429", sum, ErrInvalid},
		{"500", srv.URL + "/status/500", sum, ErrUnreachable},
		{"503", srv.URL + "/status/503", sum, ErrUnreachable},
		{"204", srv.URL + "/status/204", sum, ErrUnreachable},
		{"body shorter than its length", srv.URL + "/short", sum, ErrUnreachable},
		{"unsupported scheme", "ftp://127.0.0.1/t.qcow2", sum, ErrInvalid},
		{"no URL", "", sum, ErrInvalid},
		{"unparsable URL", "http://[::1/x", sum, ErrInvalid},
	} {
		path, _, cleanup, err := FetchTemplate(ctx, c.url, c.sum, nil)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: FetchTemplate = %q, %v; want %v", c.name, path, err, c.want)
		}
		var he *Error
		if err != nil && (!errors.As(err, &he) || he.Op != "fetch template") {
			t.Errorf("%s: error %v is not a fetch template *Error", c.name, err)
		}
		if cleanup == nil {
			t.Errorf("%s: nil cleanup", c.name)
		}
	}
	if left := leftovers(t, tmpDir); len(left) != 0 {
		t.Errorf("failed fetches left %v in the temporary directory", left)
	}

	// A refused connection is retryable; the URL's password never shows in the error.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := strings.Replace(dead.URL, "http://", "http://admin:s3cret@", 1) + "/t.qcow2"
	dead.Close()
	_, _, _, err = FetchTemplate(ctx, deadURL, sum, nil)
	if !errors.Is(err, ErrUnreachable) || !Retryable(err) {
		t.Errorf("closed server: %v, want ErrUnreachable", err)
	}
	_, _, _, err404 := FetchTemplate(ctx, strings.Replace(srv.URL, "http://", "http://admin:s3cret@", 1)+"/missing", sum, nil)
	_, _, _, errParse := FetchTemplate(ctx, "http://admin:s3cret@[::1/x", sum, nil)
	for _, err := range []error{err, err404, errParse} {
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error %v holds the URL's password", err)
		}
	}
}

func TestFetchTemplateTLSAndCancel(t *testing.T) {
	tmpDir := isolateTemp(t)
	// A certificate the client does not trust is a final error: retrying will not help.
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("x")) }))
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	if _, _, _, err := FetchTemplate(testCtx(t), tlsSrv.URL+"/t.ova", Checksum{}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("untrusted certificate: %v, want ErrInvalid", err)
	}

	// The caller's context ending mid-download stops it and removes the partial file.
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(2<<20))
		_, _ = w.Write(make([]byte, 256<<10))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer stalled.Close()
	ctx, cancel := context.WithCancel(testCtx(t))
	start := time.Now()
	_, _, _, err := FetchTemplate(ctx, stalled.URL+"/t.qcow2", Checksum{}, func(done, _ int64) {
		if done > 0 {
			cancel()
		}
	})
	if err == nil || !Retryable(err) || time.Since(start) > 5*time.Second {
		t.Errorf("cancelled download: %v after %v, want a retryable error at once", err, time.Since(start))
	}
	if left := leftovers(t, tmpDir); len(left) != 0 {
		t.Errorf("cancelled download left %v", left)
	}
}

func TestFetchTemplateFile(t *testing.T) {
	dir := t.TempDir()
	body := []byte(strings.Repeat("sysvm template ", 5000))
	p := filepath.Join(dir, "systemvm.vhd")
	if err := os.WriteFile(p, body, 0o600); err != nil {
		t.Fatal(err)
	}
	m := md5.Sum(body)
	ctx := testCtx(t)

	var last, lastTotal int64
	path, size, cleanup, err := FetchTemplate(ctx, "file://"+p, mustSum(t, hex.EncodeToString(m[:])), func(done, total int64) { last, lastTotal = done, total })
	if err != nil || path != p || size != int64(len(body)) {
		t.Fatalf("FetchTemplate(file) = %q, %d, %v; want %q, %d", path, size, err, p, len(body))
	}
	if last != int64(len(body)) || lastTotal != int64(len(body)) {
		t.Errorf("progress ended at %d/%d, want %d/%d", last, lastTotal, len(body), len(body))
	}
	cleanup()
	if _, err := os.Stat(p); err != nil {
		t.Errorf("cleanup removed the caller's own file: %v", err)
	}
	// Without a checksum the file is not read, only sized.
	if _, size, _, err := FetchTemplate(ctx, "file://"+p, Checksum{}, func(int64, int64) { t.Error("progress without a checksum to compute") }); err != nil || size != int64(len(body)) {
		t.Errorf("FetchTemplate(file, no checksum) = %d, %v", size, err)
	}

	for _, c := range []struct {
		name, url string
		sum       Checksum
		want      error
	}{
		{"mismatch", "file://" + p, mustSum(t, "sha1:"+strings.Repeat("0", 40)), ErrInvalid},
		{"missing", "file://" + filepath.Join(dir, "nope.vhd"), Checksum{}, ErrNotFound},
		{"directory", "file://" + dir, Checksum{}, ErrInvalid},
	} {
		if _, _, _, err := FetchTemplate(ctx, c.url, c.sum, nil); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, _, _, err := FetchTemplate(ctx, "file://"+p, mustSum(t, "sha1:"+strings.Repeat("0", 40)), nil); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("mismatch error %v does not say so", err)
	}
}
