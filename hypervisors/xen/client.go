package xen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// client is a small typed XAPI client over JSON-RPC v2 (POST <endpoint>/jsonrpc), the wire
// format of the current XenServer SDKs and XCP-ng 8. It holds one session and logs in again,
// once, when XAPI says SESSION_INVALID (xapi restart, master change, session timeout).
type client struct {
	http *http.Client
	log  *slog.Logger
	user string
	pass string
	id   atomic.Int64

	mu      sync.Mutex
	base    string // scheme://host[:port] of the pool master
	session string
}

func newClient(endpoint, user, pass string, insecure bool, log *slog.Logger) (*client, error) {
	u, err := url.Parse(strings.TrimRight(endpoint, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("XAPI endpoint %q is not an http(s) URL", redactURL(endpoint))
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
	}
	if insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // Connection.Insecure: labs and simulators only.
	}
	return &client{
		http: &http.Client{Transport: tr}, log: log, user: user, pass: pass,
		base: u.Scheme + "://" + u.Host,
	}, nil
}

type rpcRequest struct {
	JSONRPC string `json:"jsonrpc"`
	Method  string `json:"method"`
	Params  []any  `json:"params"`
	ID      int64  `json:"id"`
}

type rpcResponse struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	} `json:"error"`
	ID json.RawMessage `json:"id"`
}

// maxAnswer bounds one JSON-RPC answer (get_all_records of a big pool is a few MB).
const maxAnswer = 256 << 20

// rpc makes one JSON-RPC call as is (the caller adds the session). Its error never holds the
// password or a session ID: a Failure's parameters (SESSION_INVALID names the session) and a
// transport error's text are scrubbed.
func (c *client) rpc(ctx context.Context, base, method string, params []any, out any) error {
	err := c.rawRPC(ctx, base, method, params, out)
	if err == nil {
		return nil
	}
	secrets := []string{c.pass}
	if len(params) > 0 {
		if s, ok := params[0].(string); ok && method != "session.login_with_password" {
			secrets = append(secrets, s) // the session ID of a session call
		}
	}
	return scrub(err, secrets...)
}

func (c *client) rawRPC(ctx context.Context, base, method string, params []any, out any) error {
	id := c.id.Add(1)
	body, err := json.Marshal(rpcRequest{JSONRPC: "2.0", Method: method, Params: params, ID: id})
	if err != nil {
		return fmt.Errorf("%s: encode request: %w", method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/jsonrpc", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "sysvm-xen")
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return &transportError{method: method, err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return &transportError{method: method, err: fmt.Errorf("HTTP %s", resp.Status)}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return &transportError{method: method, err: fmt.Errorf("read answer: %w", err)}
	}
	var ans rpcResponse
	if err := json.Unmarshal(raw, &ans); err != nil {
		return &transportError{method: method, err: fmt.Errorf("decode answer: %w", err)}
	}
	c.log.Debug("xapi call", "method", method, "took", time.Since(start))
	if ans.Error != nil {
		f := &Failure{Method: method, Code: ans.Error.Message, Params: []string{}}
		if len(ans.Error.Data) > 0 && string(ans.Error.Data) != "null" {
			var data []any
			if err := json.Unmarshal(ans.Error.Data, &data); err == nil {
				for _, d := range data {
					f.Params = append(f.Params, fmt.Sprint(d))
				}
			} else {
				f.Params = append(f.Params, string(ans.Error.Data))
			}
		}
		return f
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(ans.Result, out); err != nil {
		return &transportError{method: method, err: fmt.Errorf("decode result: %w", err)}
	}
	return nil
}

// login opens a session. A pool member answers HOST_IS_SLAVE with the master's address;
// the client then logs in to the master (same scheme and port) once.
func (c *client) login(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loginLocked(ctx)
}

func (c *client) loginLocked(ctx context.Context) error {
	var sess string
	params := []any{c.user, c.pass, "2.20", "sysvm"}
	err := c.rpc(ctx, c.base, "session.login_with_password", params, &sess)
	var f *Failure
	if errors.As(err, &f) && f.Code == "HOST_IS_SLAVE" && len(f.Params) > 0 {
		u, _ := url.Parse(c.base)
		host := f.Params[0]
		if port := u.Port(); port != "" {
			host = net.JoinHostPort(host, port)
		}
		master := u.Scheme + "://" + host
		c.log.Info("xapi endpoint is a pool member, logging in to the master", "master", master)
		if err = c.rpc(ctx, master, "session.login_with_password", params, &sess); err == nil {
			c.base = master
		}
	}
	if err != nil {
		return err
	}
	c.session = sess
	return nil
}

func (c *client) current() (base, session string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base, c.session
}

// relogin replaces a session XAPI no longer knows, unless another call already did.
func (c *client) relogin(ctx context.Context, stale string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session != stale {
		return nil
	}
	c.log.Info("xapi session invalid, logging in again", "endpoint", c.base)
	return c.loginLocked(ctx)
}

// call makes a session call: params follow the session id. On SESSION_INVALID it logs in
// again and retries once.
func (c *client) call(ctx context.Context, method string, out any, params ...any) error {
	base, sess := c.current()
	err := c.rpc(ctx, base, method, append([]any{sess}, params...), out)
	if !isCode(err, "SESSION_INVALID") {
		return err
	}
	if lerr := c.relogin(ctx, sess); lerr != nil {
		return lerr
	}
	stale := sess
	base, sess = c.current()
	// The stale session is scrubbed too: a second SESSION_INVALID may still name it.
	return scrub(c.rpc(ctx, base, method, append([]any{sess}, params...), out), stale)
}

// put streams a body to an XAPI HTTP handler (e.g. /import_raw_vdi). The session travels as
// a session_id cookie, which XAPI's HTTP handlers read before the query string, so it never
// appears in a URL (and so in no url.Error, proxy log or access log). open is called for each
// attempt so the body can be replayed after a re-login. Its error never holds the session ID.
func (c *client) put(ctx context.Context, path string, query url.Values, size int64, open func() (io.ReadCloser, error)) error {
	for attempt := 0; ; attempt++ {
		base, sess := c.current()
		retry, err := c.putOnce(ctx, base+path, path, query, sess, size, open)
		if retry && attempt == 0 {
			if err := c.relogin(ctx, sess); err != nil {
				return err
			}
			continue
		}
		return scrub(err, sess, c.pass)
	}
}

// putOnce is one attempt of put; retry says the session was refused (401, 403).
func (c *client) putOnce(ctx context.Context, target, path string, query url.Values, sess string, size int64,
	open func() (io.ReadCloser, error)) (retry bool, err error) {
	body, err := open()
	if err != nil {
		return false, err
	}
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, target, body)
	if err != nil {
		body.Close()
		return false, fmt.Errorf("PUT %s: %w", path, err)
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.AddCookie(&http.Cookie{Name: "session_id", Value: sess})
	resp, err := c.http.Do(req)
	if err != nil {
		return false, &transportError{method: "PUT " + path, err: err}
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return false, nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return true, &httpError{path: path, status: resp.StatusCode, body: strings.TrimSpace(string(msg))}
	}
	return false, &httpError{path: path, status: resp.StatusCode, body: strings.TrimSpace(string(msg))}
}

// httpError is a non-200 answer of an XAPI HTTP handler.
type httpError struct {
	path   string
	status int
	body   string
}

func (e *httpError) Error() string {
	return fmt.Sprintf("PUT %s: HTTP %d %s", e.path, e.status, e.body)
}

// logout ends the session (best effort).
func (c *client) logout(ctx context.Context) error {
	base, sess := c.current()
	if sess == "" {
		return nil
	}
	err := c.rpc(ctx, base, "session.logout", []any{sess}, nil)
	c.mu.Lock()
	c.session = ""
	c.mu.Unlock()
	c.http.CloseIdleConnections()
	return err
}

// xint decodes a XAPI int from JSON-RPC (a number) or XML-RPC-style JSON (a string).
type xint int64

func (x *xint) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "null" || s == "" {
		*x = 0
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return fmt.Errorf("XAPI int %s: %w", b, err)
		}
		n = int64(f)
	}
	*x = xint(n)
	return nil
}
