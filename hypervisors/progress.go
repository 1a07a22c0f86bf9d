package hypervisors

import (
	"context"
	"errors"
	"io"
)

// ProgressReader passes reads through to another reader, reporting each one to a
// ProgressFunc, and stops with ctx's error once ctx has ended, so a copy from a local file
// (which would not notice otherwise) ends when the caller gives up. Drivers wrap the image
// they upload in one.
type ProgressReader struct {
	ctx         context.Context
	r           io.Reader
	base, total int64
	n           int64
	progress    ProgressFunc
	err         error // the first read error other than io.EOF
}

// NewProgressReader reads r, calling progress(base+n, total) after every read that returned
// bytes, n being the bytes read so far: base lets one ProgressFunc follow several steps (a
// download and then an upload, several files). progress may be nil.
func NewProgressReader(ctx context.Context, r io.Reader, base, total int64, progress ProgressFunc) *ProgressReader {
	if progress == nil {
		progress = func(int64, int64) {}
	}
	return &ProgressReader{ctx: ctx, r: r, base: base, total: total, progress: progress}
}

// Read reads from the underlying reader, or fails with ctx's error once ctx has ended.
func (p *ProgressReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		if p.err == nil {
			p.err = err
		}
		return 0, err
	}
	n, err := p.r.Read(b)
	if n > 0 {
		p.n += int64(n)
		p.progress(p.base+p.n, p.total)
	}
	if err != nil && !errors.Is(err, io.EOF) && p.err == nil {
		p.err = err
	}
	return n, err
}

// N is the number of bytes read so far.
func (p *ProgressReader) N() int64 { return p.n }
