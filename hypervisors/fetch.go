package hypervisors

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
)

// Checksum is a parsed TemplateSpec.Checksum: the digest a template image must have. The zero
// value verifies nothing.
type Checksum struct {
	algo   string // "md5", "sha1", "sha256" or "sha512"; "" verifies nothing
	digest []byte
}

// ParseChecksum reads a TemplateSpec.Checksum: "<algo>:<hex>" or CloudStack's "{algo}hex",
// where algo is md5, sha1, sha256 or sha512 in any case and with or without a dash
// ("SHA-256"), or bare hex, which is md5 when it has 32 digits (as CloudStack takes it) and
// sha1, sha256 or sha512 when it has 40, 64 or 128 (no other algorithm has those lengths). An
// empty string gives the zero Checksum. The error says what is wrong; callers report it as
// ErrInvalid.
func ParseChecksum(s string) (Checksum, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Checksum{}, nil
	}
	algo, hexDigest, named := "", s, false
	if a, h, ok := strings.Cut(s, ":"); ok {
		algo, hexDigest, named = a, h, true
	} else if strings.HasPrefix(s, "{") {
		if j := strings.IndexByte(s, '}'); j > 0 {
			algo, hexDigest, named = s[1:j], s[j+1:], true
		}
	}
	hexDigest = strings.ToLower(strings.TrimSpace(hexDigest))
	algo = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(algo), "-", ""))
	switch {
	case named && algo == "":
		return Checksum{}, fmt.Errorf("checksum %q names no algorithm", s)
	case !named:
		switch len(hexDigest) {
		case 2 * md5.Size:
			algo = "md5"
		case 2 * sha1.Size:
			algo = "sha1"
		case 2 * sha256.Size:
			algo = "sha256"
		case 2 * sha512.Size:
			algo = "sha512"
		default:
			return Checksum{}, fmt.Errorf("checksum %q: bare hex must have 32 (md5), 40 (sha1), 64 (sha256) or 128 (sha512) digits", s)
		}
	}
	newHash := hashFunc(algo)
	if newHash == nil {
		return Checksum{}, fmt.Errorf("checksum algorithm %q is not supported (md5, sha1, sha256, sha512)", algo)
	}
	digest, err := hex.DecodeString(hexDigest)
	if size := newHash().Size(); err != nil || len(digest) != size {
		return Checksum{}, fmt.Errorf("checksum %q is not %d hex digits of %s", s, 2*size, algo)
	}
	return Checksum{algo: algo, digest: digest}, nil
}

func hashFunc(algo string) func() hash.Hash {
	switch algo {
	case "md5":
		return md5.New
	case "sha1":
		return sha1.New
	case "sha256":
		return sha256.New
	case "sha512":
		return sha512.New
	}
	return nil
}

// IsZero reports whether c verifies nothing (the spec gave no checksum).
func (c Checksum) IsZero() bool { return c.algo == "" }

// String renders c as "<algo>:<hex>", or "" for the zero Checksum.
func (c Checksum) String() string {
	if c.IsZero() {
		return ""
	}
	return c.algo + ":" + hex.EncodeToString(c.digest)
}

// verify compares the digest of what went through h with c; a mismatch is ErrInvalid.
func (c Checksum) verify(h hash.Hash, object string) error {
	if got := h.Sum(nil); !bytes.Equal(got, c.digest) {
		return Errorf(ErrInvalid, fetchOp, object, "checksum mismatch: %s is %x, want %x", c.algo, got, c.digest)
	}
	return nil
}

const fetchOp = "fetch template"

// FetchTemplate makes the template image at rawURL a verified local file, so a driver can
// check an image before it creates anything on the hypervisor and then upload or import it
// from disk.
//
// An http(s):// URL is downloaded to a temporary file while being hashed; cleanup removes it.
// A file:// URL is used where it is (hashed in place when sum is set); cleanup does nothing.
// size is the image's size in bytes. progress (may be nil) sees the bytes read against the
// image's size, 0 while unknown (no Content-Length); a file:// image without a checksum is
// not read, so it reports nothing.
//
// Errors are *Error values with Op "fetch template" and the URL (password redacted) as
// Object:
//   - ErrInvalid: an unparsable URL, a scheme other than file, http and https, a checksum
//     mismatch, a local path that cannot be read or is not a regular file, a server
//     certificate that does not verify, an HTTP 4xx other than 404 and 410;
//   - ErrNotFound: a missing local file, HTTP 404 or 410;
//   - ErrUnreachable: the server did not answer or broke off (transport errors, HTTP 5xx and
//     other answers than 200, a body shorter than its Content-Length), or ctx ended.
//
// A failure to write the temporary file is returned without a kind (retryable). On error
// nothing is left behind and cleanup is a no-op.
func FetchTemplate(ctx context.Context, rawURL string, sum Checksum, progress ProgressFunc) (path string, size int64, cleanup func(), err error) {
	noop := func() {}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the raw URL, which may hold a password: keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", 0, noop, Wrap(ErrInvalid, fetchOp, "", fmt.Errorf("template URL does not parse: %w", err))
	}
	switch u.Scheme {
	case "file":
		size, err := hashLocal(ctx, u, sum, progress)
		if err != nil {
			return "", 0, noop, err
		}
		return u.Path, size, noop, nil
	case "http", "https":
		path, size, err := download(ctx, u, sum, progress)
		if err != nil {
			return "", 0, noop, err
		}
		return path, size, func() { _ = os.Remove(path) }, nil
	}
	return "", 0, noop, Errorf(ErrInvalid, fetchOp, u.Redacted(), "URL scheme %q is not supported (file, http, https)", u.Scheme)
}

// hashLocal checks a local image and, when sum is set, verifies it; it returns its size.
func hashLocal(ctx context.Context, u *url.URL, sum Checksum, progress ProgressFunc) (int64, error) {
	obj := u.Redacted()
	f, err := os.Open(u.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, Wrap(ErrNotFound, fetchOp, obj, err)
	}
	if err != nil {
		return 0, Wrap(ErrInvalid, fetchOp, obj, err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return 0, Wrap(ErrInvalid, fetchOp, obj, err)
	}
	if !st.Mode().IsRegular() {
		return 0, Errorf(ErrInvalid, fetchOp, obj, "%s is not a regular file", u.Path)
	}
	if sum.IsZero() {
		return st.Size(), nil
	}
	h := hashFunc(sum.algo)()
	n, err := io.Copy(h, NewProgressReader(ctx, f, 0, st.Size(), progress))
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return 0, Wrap(ErrUnreachable, fetchOp, obj, ctxErr)
		}
		return 0, Wrap(ErrInvalid, fetchOp, obj, fmt.Errorf("read %s: %w", u.Path, err))
	}
	if err := sum.verify(h, obj); err != nil {
		return 0, err
	}
	return n, nil
}

// download copies an http(s) URL to a temporary file, hashing it on the way, and verifies it.
func download(ctx context.Context, u *url.URL, sum Checksum, progress ProgressFunc) (string, int64, error) {
	obj := u.Redacted()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", 0, Wrap(ErrInvalid, fetchOp, obj, err)
	}
	resp, err := http.DefaultClient.Do(req) // its errors name the URL without its password
	if err != nil {
		kind := ErrUnreachable
		if IsCertificateError(err) {
			kind = ErrInvalid // the URL or the trust store is wrong; retrying will not help
		}
		return "", 0, Wrap(kind, fetchOp, obj, err)
	}
	defer func() { _ = resp.Body.Close() }()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return "", 0, Errorf(ErrNotFound, fetchOp, obj, "HTTP %s", resp.Status)
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return "", 0, Errorf(ErrInvalid, fetchOp, obj, "HTTP %s", resp.Status)
	default:
		return "", 0, Errorf(ErrUnreachable, fetchOp, obj, "HTTP %s", resp.Status)
	}

	tmp, err := os.CreateTemp("", "sysvm-template-*"+tempSuffix(u.Path))
	if err != nil {
		return "", 0, fmt.Errorf("%s %s: temporary file: %w", fetchOp, obj, err)
	}
	done := false
	defer func() {
		if !done {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	total := max(resp.ContentLength, 0)
	body := NewProgressReader(ctx, resp.Body, 0, total, progress)
	w := io.Writer(tmp)
	var h hash.Hash
	if !sum.IsZero() {
		h = hashFunc(sum.algo)()
		w = io.MultiWriter(tmp, h)
	}
	n, err := io.Copy(w, body)
	switch {
	case err != nil && body.err != nil:
		return "", 0, Wrap(ErrUnreachable, fetchOp, obj, fmt.Errorf("download: %w", body.err))
	case err != nil:
		return "", 0, fmt.Errorf("%s %s: write %s: %w", fetchOp, obj, tmp.Name(), err)
	case total > 0 && n != total:
		return "", 0, Errorf(ErrUnreachable, fetchOp, obj, "download: got %d of %d bytes", n, total)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("%s %s: write %s: %w", fetchOp, obj, tmp.Name(), err)
	}
	if h != nil {
		if err := sum.verify(h, obj); err != nil {
			return "", 0, err
		}
	}
	done = true
	return tmp.Name(), n, nil
}

// tempSuffix keeps a short extension of the URL's path (".ova", ".qcow2") on the temporary
// file, for whoever looks at the temporary directory.
func tempSuffix(p string) string {
	ext := path.Ext(p)
	if len(ext) < 2 || len(ext) > 8 {
		return ""
	}
	for _, c := range ext[1:] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return ""
		}
	}
	return ext
}
