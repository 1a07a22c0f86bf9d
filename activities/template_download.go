package activities

import (
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
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/hypervisors"
)

// Error types of the template activities (temporal.ApplicationError types), final: a retry
// would fail the same way.
const (
	// ErrTypeChecksum: the downloaded bytes do not have the registered checksum.
	ErrTypeChecksum = "ChecksumMismatch"
	// ErrTypeDownload: the URL is refused for good (404, 4xx, a bad scheme, a bad archive).
	ErrTypeDownload = "DownloadFailed"
)

// DownloadProgress is the heartbeat of a template download: how far the partial file is, so a
// retry on another worker resumes there with an HTTP Range request.
type DownloadProgress struct {
	Offset int64 `json:"offset"`
	Total  int64 `json:"total"`
	// Percent is Offset of Total (0 while the total is unknown).
	Percent int    `json:"percent"`
	ETag    string `json:"etag,omitempty"`
	// LastModified validates a resume when the server gives no ETag.
	LastModified string `json:"lastModified,omitempty"`
}

// downloadBufferSize is the copy buffer of a download: memory stays this size (plus the HTTP
// stack's own small buffers) whatever the image size.
const downloadBufferSize = 1 << 20

// stallTimeout ends a download whose server has sent nothing for this long (retried).
const stallTimeout = 60 * time.Second

// digester hashes with the algorithm of a checksum (sha256 when none is registered, so every
// download has a digest a later rollout can compare).
type digester struct {
	algo string
	want []byte // nil: nothing to verify
	h    hash.Hash
}

func newDigester(sum hypervisors.Checksum) *digester {
	algo, hexDigest, _ := strings.Cut(sum.String(), ":")
	d := &digester{algo: algo}
	if algo == "" {
		d.algo = "sha256"
	} else {
		d.want, _ = hex.DecodeString(hexDigest)
	}
	d.reset()
	return d
}

func (d *digester) reset() {
	switch d.algo {
	case "md5":
		d.h = md5.New()
	case "sha1":
		d.h = sha1.New()
	case "sha512":
		d.h = sha512.New()
	default:
		d.h = sha256.New()
	}
}

// sum is the digest so far as "<algo>:<hex>".
func (d *digester) sum() string { return d.algo + ":" + hex.EncodeToString(d.h.Sum(nil)) }

// verify compares the digest with the registered one; a mismatch names both.
func (d *digester) verify() error {
	if d.want == nil {
		return nil
	}
	if got := d.h.Sum(nil); hex.EncodeToString(got) != hex.EncodeToString(d.want) {
		return fmt.Errorf("checksum mismatch: expected %s:%s, actual %s:%x", d.algo, hex.EncodeToString(d.want), d.algo, got)
	}
	return nil
}

// downloader streams one URL into a partial file, resuming where the file ends.
type downloader struct {
	client *http.Client
	url    string // the full URL, credentials included: never logged, never returned
	object string // the URL with its password redacted, for errors
	part   string
	dig    *digester
	// report is called after every read with the bytes in the file and the total (0 unknown).
	report func(p DownloadProgress)
}

// finalError marks an error a retry cannot fix.
type finalError struct {
	typ string
	err error
}

func (e *finalError) Error() string { return e.err.Error() }
func (e *finalError) Unwrap() error { return e.err }

func final(typ string, format string, args ...any) error {
	return &finalError{typ: typ, err: fmt.Errorf(format, args...)}
}

// asTemporal makes a finalError non-retryable for Temporal; other errors stay retryable.
func asTemporal(err error) error {
	var fe *finalError
	if errors.As(err, &fe) {
		return temporal.NewNonRetryableApplicationError(err.Error(), fe.typ, nil)
	}
	return err
}

// run downloads into the partial file. prev is the last heartbeat (zero on a first attempt):
// the file is resumed from its size with a Range request validated by prev's ETag (or
// Last-Modified), so a changed image restarts from zero. The digest covers the whole file.
func (dl *downloader) run(ctx context.Context, prev DownloadProgress) (DownloadProgress, error) {
	if err := os.MkdirAll(filepath.Dir(dl.part), 0o755); err != nil {
		return prev, fmt.Errorf("download directory: %w", err)
	}
	f, err := os.OpenFile(dl.part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return prev, fmt.Errorf("open %s: %w", dl.part, err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return prev, err
	}
	offset := st.Size()
	if prev.Total > 0 && offset > prev.Total {
		offset = 0 // longer than the image: not ours
	}
	// The digest covers the bytes already there: read them back (from disk, bounded buffer).
	dl.dig.reset()
	if offset > 0 {
		if _, err := io.CopyBuffer(dl.dig.h, io.NewSectionReader(f, 0, offset), make([]byte, 256<<10)); err != nil {
			return prev, fmt.Errorf("read back %s: %w", dl.part, err)
		}
	}

	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, dl.url, nil)
	if err != nil {
		return prev, final(ErrTypeDownload, "template URL %s: %v", dl.object, redactErr(err, dl.url, dl.object))
	}
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		switch {
		case prev.ETag != "":
			req.Header.Set("If-Range", prev.ETag)
		case prev.LastModified != "":
			req.Header.Set("If-Range", prev.LastModified)
		}
	}
	resp, err := dl.client.Do(req)
	if err != nil {
		if hypervisors.IsCertificateError(err) {
			return prev, final(ErrTypeDownload, "download %s: %v", dl.object, redactErr(err, dl.url, dl.object))
		}
		return prev, fmt.Errorf("download %s: %v", dl.object, redactErr(err, dl.url, dl.object))
	}
	defer func() { _ = resp.Body.Close() }()
	p := DownloadProgress{ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
	switch {
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			return prev, fmt.Errorf("download %s: asked for bytes from %d, the server sent %q", dl.object, offset, resp.Header.Get("Content-Range"))
		}
		p.Offset, p.Total = offset, total
	case resp.StatusCode == http.StatusOK:
		// A first request, or the image changed (If-Range failed), or no Range support: from 0.
		if err := f.Truncate(0); err != nil {
			return prev, err
		}
		dl.dig.reset()
		p.Offset, p.Total = 0, max(resp.ContentLength, 0)
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && offset > 0:
		if _, total, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && total == offset {
			p.Offset, p.Total = offset, total
			dl.report(p)
			return p, nil // the file was complete already
		}
		_ = f.Truncate(0)
		return prev, fmt.Errorf("download %s: the server refused to resume at %d; starting again", dl.object, offset)
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return prev, final(ErrTypeDownload, "download %s: HTTP %s", dl.object, resp.Status)
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return prev, final(ErrTypeDownload, "download %s: HTTP %s", dl.object, resp.Status)
	default:
		return prev, fmt.Errorf("download %s: HTTP %s", dl.object, resp.Status)
	}
	if _, err := f.Seek(p.Offset, io.SeekStart); err != nil {
		return prev, err
	}
	dl.report(p)

	// A watchdog ends a stalled transfer; every read that brings bytes resets it.
	stall := time.AfterFunc(stallTimeout, func() { cancel(errors.New("no bytes for " + stallTimeout.String())) })
	defer stall.Stop()
	buf := make([]byte, downloadBufferSize)
	// The hash runs on its own goroutine, overlapping the file write of the same chunk: the
	// pipe hands the chunk over (the hasher copies it into its own buffer), then the file gets it.
	pr, pw := io.Pipe()
	hashed := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(dl.dig.h, pr, make([]byte, downloadBufferSize))
		hashed <- err
	}()
	hashing := true
	endHash := func(err error) error {
		if !hashing {
			return nil
		}
		hashing = false
		_ = pw.CloseWithError(err)
		return <-hashed
	}
	defer func() { _ = endHash(errors.New("download ended")) }()
	w := io.MultiWriter(pw, f)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			stall.Reset(stallTimeout)
			if _, err := w.Write(buf[:n]); err != nil {
				return p, fmt.Errorf("write %s: %w", dl.part, err)
			}
			p.Offset += int64(n)
			if p.Total > 0 {
				p.Percent = int(p.Offset * 100 / p.Total)
			}
			dl.report(p)
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			if c := context.Cause(sctx); c != nil && ctx.Err() == nil {
				rerr = c
			}
			return p, fmt.Errorf("download %s: broke off at byte %d: %v", dl.object, p.Offset, redactErr(rerr, dl.url, dl.object))
		}
	}
	if p.Total > 0 && p.Offset != p.Total {
		return p, fmt.Errorf("download %s: got %d of %d bytes", dl.object, p.Offset, p.Total)
	}
	if err := endHash(nil); err != nil {
		return p, fmt.Errorf("hash %s: %w", dl.part, err)
	}
	if err := f.Sync(); err != nil {
		return p, fmt.Errorf("sync %s: %w", dl.part, err)
	}
	p.Total = p.Offset
	return p, nil
}

// parseContentRange reads "bytes start-end/total" (or "bytes */total").
func parseContentRange(s string) (start, total int64, ok bool) {
	s, found := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, false
	}
	total, err := strconv.ParseInt(tot, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if rng == "*" {
		return 0, total, true
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err = strconv.ParseInt(a, 10, 64)
	return start, total, err == nil
}

// redactErr keeps a URL's password out of an error's text.
func redactErr(err error, full, redacted string) error {
	if err == nil || full == redacted {
		return err
	}
	msg := strings.ReplaceAll(err.Error(), full, redacted)
	if u, perr := url.Parse(full); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return errors.New(msg)
}

// RedactURL shows a URL without its password (user:xxxxx@), as read-only callers and logs see it.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// imageNames gives the file a download is stored as and the file of the image once
// decompressed: systemvmtemplate-4.15.0-kvm.qcow2.bz2 -> .qcow2.bz2.part, .qcow2. An OVA is a
// tar VMware imports as is: it is kept.
func imageNames(rawURL string) (download, image, compression string) {
	base := "template"
	if u, err := url.Parse(rawURL); err == nil {
		if b := path.Base(u.Path); b != "" && b != "/" && b != "." {
			base = b
		}
	}
	base = strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, base)
	image = base
	lower := strings.ToLower(base)
	for _, ext := range []string{".bz2", ".zip", ".gz"} {
		if strings.HasSuffix(lower, ext) && len(base) > len(ext) {
			image, compression = base[:len(base)-len(ext)], ext[1:]
			break
		}
	}
	return base, image, compression
}

// heartbeat reports download progress to Temporal (when running as an activity).
func heartbeat(ctx context.Context, details any) {
	if activity.IsActivity(ctx) {
		activity.RecordHeartbeat(ctx, details)
	}
}
