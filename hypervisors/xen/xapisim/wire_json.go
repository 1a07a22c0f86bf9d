package xapisim

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"
)

// maxRPCBody bounds one RPC request body.
const maxRPCBody = 16 << 20

type jsonRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	ID      json.RawMessage `json:"id"`
}

// serveJSONRPC answers XAPI's JSON-RPC endpoint. A request with "jsonrpc":"2.0" gets a v2
// answer ({"jsonrpc","result"|"error","id"}; a failure is {"code":1,"message":CODE,
// "data":[params]}, xapi's error_code_lit being 1); any other request gets a v1 answer
// ({"result","error","id"} with error the whole ErrorDescription list).
func (s *Server) serveJSONRPC(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRPCBody))
	if err != nil {
		http.Error(w, "request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	var req jsonRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil || req.Method == "" {
		writeJSON(w, map[string]any{"jsonrpc": "2.0", "id": nil,
			"error": map[string]any{"code": -32700, "message": "Parse error"}})
		return
	}
	params := []any{}
	if len(req.Params) > 0 && string(req.Params) != "null" {
		pd := json.NewDecoder(bytes.NewReader(req.Params))
		pd.UseNumber()
		if err := pd.Decode(&params); err != nil {
			writeJSON(w, map[string]any{"jsonrpc": "2.0", "id": rawID(req.ID),
				"error": map[string]any{"code": -32602, "message": "Invalid params"}})
			return
		}
	}
	res, err := s.dispatch(r.Context(), req.Method, params)
	if errors.Is(err, errDrop) {
		dropConnection(w)
		return
	}
	v2 := req.JSONRPC == "2.0"
	out := map[string]any{"id": rawID(req.ID)}
	if v2 {
		out["jsonrpc"] = "2.0"
	}
	var f *Failure
	switch {
	case err == nil:
		out["result"] = jsonValue(res)
		if !v2 {
			out["error"] = nil
		}
	case errors.As(err, &f):
		data := make([]any, len(f.Params))
		for i, p := range f.Params {
			data[i] = p
		}
		if v2 {
			out["error"] = map[string]any{"code": 1, "message": f.Code, "data": data}
		} else {
			desc := make([]any, 0, len(data)+1)
			out["result"], out["error"] = nil, append(append(desc, f.Code), data...)
		}
	}
	writeJSON(w, out)
}

func rawID(id json.RawMessage) any {
	if len(id) == 0 {
		return nil
	}
	return id
}

// jsonValue renders datetimes as XAPI does on JSON-RPC ("20240102T03:04:05Z").
func jsonValue(v any) any {
	switch x := v.(type) {
	case time.Time:
		return x.UTC().Format(xapiTimeLayout)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonValue(e)
		}
		return out
	}
	return v
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode answer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// dropConnection closes the client's connection without an HTTP answer.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}
