package activities

import (
	"archive/zip"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// unpack turns the downloaded file into the image file: bz2 and gz are decompressed as a
// stream, a zip's image entry (the .vhd of Hyper-V's .vhd.zip) is extracted, anything else (an
// OVA, a plain qcow2) is renamed. The image is written to "<image>.tmp" and renamed when
// complete, so a crash never leaves a half image under its final name. progress sees the
// compressed bytes read.
func unpack(ctx context.Context, downloaded, image, compression string, progress func(done int64)) (int64, error) {
	if compression == "" {
		if err := os.Rename(downloaded, image); err != nil {
			return 0, fmt.Errorf("keep %s: %w", downloaded, err)
		}
		st, err := os.Stat(image)
		if err != nil {
			return 0, err
		}
		return st.Size(), nil
	}
	tmp := image + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", tmp, err)
	}
	ok := false
	defer func() {
		_ = out.Close()
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	var src io.Reader
	var closer io.Closer
	switch compression {
	case "bz2", "gz":
		in, err := os.Open(downloaded)
		if err != nil {
			return 0, err
		}
		closer = in
		counted := &countingReader{ctx: ctx, r: in, progress: progress}
		if compression == "bz2" {
			src = bzip2.NewReader(counted)
		} else {
			gz, err := gzip.NewReader(counted)
			if err != nil {
				_ = in.Close()
				return 0, final(ErrTypeDownload, "the download is not gzip: %v", err)
			}
			src = gz
		}
	case "zip":
		zr, err := zip.OpenReader(downloaded)
		if err != nil {
			return 0, final(ErrTypeDownload, "the download is not a zip archive: %v", err)
		}
		closer = zr
		entry := pickZipEntry(zr.File, path.Base(image))
		if entry == nil {
			_ = zr.Close()
			return 0, final(ErrTypeDownload, "the zip archive holds no image file")
		}
		rc, err := entry.Open()
		if err != nil {
			_ = zr.Close()
			return 0, final(ErrTypeDownload, "open %s in the zip archive: %v", entry.Name, err)
		}
		defer func() { _ = rc.Close() }()
		src = &countingReader{ctx: ctx, r: rc, progress: progress}
	default:
		return 0, fmt.Errorf("unknown compression %q", compression)
	}
	defer func() { _ = closer.Close() }()
	n, err := io.CopyBuffer(out, src, make([]byte, downloadBufferSize))
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, final(ErrTypeDownload, "decompress %s (%s): %v", path.Base(downloaded), compression, err)
	}
	if err := out.Sync(); err != nil {
		return 0, err
	}
	if err := out.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, image); err != nil {
		return 0, err
	}
	ok = true
	_ = os.Remove(downloaded)
	return n, nil
}

// pickZipEntry is the entry named like the image, else the first regular file that is not
// a directory or metadata.
func pickZipEntry(files []*zip.File, want string) *zip.File {
	var first *zip.File
	for _, f := range files {
		if f.FileInfo().IsDir() || strings.HasPrefix(path.Base(f.Name), ".") {
			continue
		}
		if path.Base(f.Name) == want {
			return f
		}
		if first == nil {
			first = f
		}
	}
	return first
}

// countingReader reports the bytes read and stops once ctx ends.
type countingReader struct {
	ctx      context.Context
	r        io.Reader
	n        int64
	progress func(done int64)
}

func (c *countingReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(b)
	c.n += int64(n)
	if n > 0 && c.progress != nil {
		c.progress(c.n)
	}
	return n, err
}
