package xapisim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// serveImportRawVDI is XAPI's HTTP handler PUT /import_raw_vdi?vdi=&format=[&task_id=]: it
// writes the request body into an existing VDI. The caller authenticates as for every XAPI
// HTTP handler (see httpAuth). format is "raw" (default) or "vhd"; a VHD must carry a valid
// footer and fit the VDI. With task_id the task's progress and outcome are updated as the data
// arrives. Faults injected for ImportRawVDIMethod apply after authentication.
func (s *Server) serveImportRawVDI(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format := q.Get("format")
	if format == "" {
		format = "raw"
	}
	if format != "raw" && format != "vhd" {
		http.Error(w, fmt.Sprintf("%s(format, %s)", CodeValueNotSupported, format), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	if status, msg := s.httpAuth(r); status != 0 {
		s.mu.Unlock()
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="xapi"`)
		}
		http.Error(w, msg, status)
		return
	}
	s.calls[ImportRawVDIMethod]++
	if f := s.faults.match(ImportRawVDIMethod); f != nil {
		s.mu.Unlock()
		if f.Drop {
			dropConnection(w)
			return
		}
		http.Error(w, fail(f.Code, f.Params...).Error(), http.StatusInternalServerError)
		return
	}
	vdiRef := q.Get("vdi")
	if _, ok := s.db.classes[classVDI].objs[vdiRef]; !ok {
		if ref, ok := s.db.classes[classVDI].byUUID(vdiRef); ok {
			vdiRef = ref
		}
	}
	vdi, f := lookup[vdiRec](s.db, classVDI, vdiRef)
	if f == nil {
		f = busy(classVDI, vdiRef, vdi)
	}
	if f == nil {
		for _, b := range vdi.VBDs {
			if vbd, _ := lookup[vbdRec](s.db, classVBD, b); vbd.CurrentlyAttached {
				f = fail(CodeVDIInUse, vdiRef, "import")
			}
		}
	}
	if f != nil {
		s.mu.Unlock()
		status := http.StatusInternalServerError
		if f.Code == CodeHandleInvalid {
			status = http.StatusNotFound
		}
		http.Error(w, f.Error(), status)
		return
	}
	taskRef := q.Get("task_id")
	if _, ok := s.db.classes[classTask].objs[taskRef]; !ok {
		taskRef = s.newTask("VDI.import_raw")
	}
	opID := newRef()
	vdi.CurrentOperations[opID] = "import"
	size := vdi.VirtualSize
	s.mu.Unlock()

	n, sum, ferr := s.receive(r.Body, format, size, vdiRef, taskRef, r.ContentLength)
	if ferr == nil && s.opts.OpDelay > 0 {
		select {
		case <-time.After(s.opts.OpDelay):
		case <-s.stopCtx.Done():
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	delete(vdi.CurrentOperations, opID)
	if ferr != nil {
		s.completeTask(taskRef, nil, ferr)
		status := http.StatusInternalServerError
		if ferr.Code == CodeVDITooSmall || ferr.Code == CodeVDIIOError {
			status = http.StatusBadRequest
		}
		http.Error(w, ferr.Error(), status)
		return
	}
	if sr, f := lookup[srRec](s.db, classSR, vdi.SR); f == nil && !sr.thick() {
		sr.PhysicalUtilisation += n - vdi.PhysicalUtilisation
		vdi.PhysicalUtilisation = n
	}
	s.content[vdi.UUID] = vdiContent{Size: n, SHA256: sum}
	s.completeTask(taskRef, "", nil)
	w.WriteHeader(http.StatusOK)
}

// receive streams the body, hashing it, checking it fits the VDI and, for VHD, that it
// ends with a valid footer describing a disk no larger than the VDI.
func (s *Server) receive(body io.Reader, format string, vdiSize int64, vdiRef, taskRef string, length int64) (int64, string, *Failure) {
	h := sha256.New()
	var tail [vhdFooterSize]byte
	var n int64
	buf := make([]byte, 256<<10)
	limit := vdiSize
	if format == "vhd" {
		limit += 3 << 20 // room for a dynamic VHD's metadata
	}
	for {
		k, err := body.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			// Keep the last 512 bytes seen: the VHD footer.
			if k >= vhdFooterSize {
				copy(tail[:], buf[k-vhdFooterSize:k])
			} else {
				copy(tail[:], tail[k:])
				copy(tail[vhdFooterSize-k:], buf[:k])
			}
			n += int64(k)
			if n > limit {
				return n, "", fail(CodeVDITooSmall, vdiRef, strconv.FormatInt(n, 10))
			}
			if length > 0 {
				s.mu.Lock()
				s.setTaskProgress(taskRef, float64(n)/float64(length))
				s.mu.Unlock()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, "", fail(CodeVDIIOError, "reading the import stream: "+err.Error())
		}
	}
	if format == "vhd" {
		if n < vhdFooterSize {
			return n, "", fail(CodeVDIIOError, "stream too short for a VHD")
		}
		foot, err := parseVHDFooter(tail[:])
		if err != nil {
			return n, "", fail(CodeVDIIOError, "invalid VHD: "+err.Error())
		}
		if foot.CurrentSize > vdiSize {
			return n, "", fail(CodeVDITooSmall, vdiRef, strconv.FormatInt(foot.CurrentSize, 10))
		}
		if foot.DiskType == vhdTypeFixed && n != foot.CurrentSize+vhdFooterSize {
			return n, "", fail(CodeVDIIOError, fmt.Sprintf("fixed VHD of %d bytes has %d bytes of data", foot.CurrentSize, n-vhdFooterSize))
		}
		if foot.DiskType != vhdTypeFixed && foot.DiskType != vhdTypeDynamic {
			return n, "", fail(CodeVDIIOError, fmt.Sprintf("unsupported VHD disk type %d", foot.DiskType))
		}
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
