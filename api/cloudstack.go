package api

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/models"
)

// The CloudStack-compatible command API: GET or POST (form) /client/api?command=…, signed as
// CloudStack signs requests (cloudstack_auth.go), answered in CloudStack's envelopes, JSON or
// (read commands) XML. Every command runs the REST API's own operation (found by its
// operation ID) with its parameters translated, so the filters, the checks (a destroyed VM, a
// setting's validation, one operation per VM) and the operation engine are the REST API's;
// this layer only translates names and shapes. docs/cloudstack-api.md lists the commands.

// CloudStackPath is where the command API is served.
const CloudStackPath = "/client/api"

// csVersion is the CloudStack API level the command API follows (listCapabilities).
const csVersion = "4.19.0.0"

// csTimeLayout is how CloudStack writes dates (yyyy-MM-dd'T'HH:mm:ssZ).
const csTimeLayout = "2006-01-02T15:04:05-0700"

// csTime formats a time as CloudStack does, in UTC.
func csTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(csTimeLayout)
}

// CloudStack's error codes (ApiErrorCode) and the exception codes (CSExceptionErrorCode) the
// answers carry.
const (
	csErrUnauthorized = 401
	csErrParam        = 431
	csErrUnsupported  = 432
	csErrInternal     = 530
	csErrUnavailable  = 534

	csExcCloudRuntime        = 4250
	csExcConcurrentOperation = 4300
	csExcInvalidParameter    = 4350
	csExcPermissionDenied    = 4365
	csExcResourceUnavailable = 4380
	csExcServerAPI           = 9999
)

// csError is an error as the command API answers it: the HTTP status is errorcode.
type csError struct {
	code, csCode int
	text         string
	cause        error
}

func (e *csError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%d: %s: %v", e.code, e.text, e.cause)
	}
	return fmt.Sprintf("%d: %s", e.code, e.text)
}

func csParamError(format string, args ...any) *csError {
	return &csError{code: csErrParam, csCode: csExcInvalidParameter, text: fmt.Sprintf(format, args...)}
}

// csFromREST maps a REST API error to the command API's.
func csFromREST(err error) *csError {
	var ce *csError
	if errors.As(err, &ce) {
		return ce
	}
	e := toAPIError(err)
	switch {
	case e.Status == http.StatusBadRequest || e.Status == http.StatusNotFound:
		text := e.Message
		if e.Field != "" && !strings.Contains(strings.ToLower(text), strings.ToLower(e.Field)) {
			text = e.Field + ": " + text // the refusal names the bad parameter, as the REST API's field does
		}
		return &csError{code: csErrParam, csCode: csExcInvalidParameter, text: text}
	case e.Status == http.StatusConflict && e.Extra["operation"] != nil:
		return &csError{code: csErrInternal, csCode: csExcConcurrentOperation, text: e.Message}
	case e.Status == http.StatusConflict:
		return &csError{code: csErrParam, csCode: csExcInvalidParameter, text: e.Message}
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return &csError{code: csErrUnauthorized, csCode: csExcPermissionDenied, text: e.Message}
	case e.Status == http.StatusServiceUnavailable:
		return &csError{code: csErrUnavailable, csCode: csExcResourceUnavailable, text: e.Message, cause: e.Err}
	}
	return &csError{code: csErrInternal, csCode: csExcCloudRuntime, text: e.Message, cause: e.Err}
}

// csParamSpec documents one parameter of a command (listApis).
type csParamSpec struct {
	Name        string
	Type        string // uuid, string, boolean, integer, date
	Description string
	Required    bool
}

// csFieldSpec documents one response field of a command (listApis).
type csFieldSpec struct{ Name, Type, Description string }

// csCall is one command being served.
type csCall struct {
	s      *Server
	cmd    *csCommand
	key    models.APIKey
	params url.Values
	// origin is the request's scheme and host, to make links absolute as CloudStack does.
	origin string
}

// get returns a parameter's value ("" when absent).
func (c *csCall) get(name string) string { return c.params.Get(name) }

// csCommand is one entry of the command table.
type csCommand struct {
	Name        string
	Description string
	// Async commands answer a job (jobid) to poll with queryAsyncJobResult.
	Async bool
	// Role is the least role of the sysvm key that may run the command.
	Role     string
	Params   []csParamSpec
	Response []csFieldSpec
	// Paged adds page and pagesize.
	Paged bool
	// Run serves the command: it returns the members of the <command>response object.
	Run func(c *csCall, ctx context.Context) (map[string]any, error)
}

// csIgnored are parameters CloudStack's clients send that sysvm accepts and ignores: sysvm has
// no projects, and every list is of everything the key may see (listall, isrecursive).
var csIgnored = []string{"listall", "isrecursive", "projectid", "details", "_"}

// csProtocol are the parameters of the protocol itself.
var csProtocol = []string{"command", "response", "apikey", "signature", "signatureversion", "expires"}

// csCommands is the command table, by name. Later operations add their commands as one entry.
func (s *Server) csCommands() map[string]*csCommand {
	s.csOnce.Do(func() {
		s.csTable = map[string]*csCommand{}
		for _, c := range csCommandTable() {
			if c.Paged {
				c.Params = append(c.Params,
					csParamSpec{Name: "page", Type: "integer", Description: "the page, from 1"},
					csParamSpec{Name: "pagesize", Type: "integer", Description: fmt.Sprintf("items per page (1 to %d)", MaxPageSize)})
			}
			s.csTable[c.Name] = c
		}
	})
	return s.csTable
}

// mountCloudStack (called by New) serves the command API and mounts the REST endpoints of the
// CloudStack key pairs.
func (s *Server) mountCloudStack() error {
	for name, schema := range csKeySchemas() {
		s.AddSchema(name, schema)
	}
	for _, r := range s.csKeyRoutes() {
		if err := s.Handle(r); err != nil {
			return err
		}
	}
	s.e.GET(CloudStackPath, s.serveCloudStack)
	s.e.POST(CloudStackPath, s.serveCloudStack)
	return nil
}

// serveCloudStack serves one command.
func (s *Server) serveCloudStack(c echo.Context) error {
	ctx := c.Request().Context()
	req := c.Request()
	if err := req.ParseForm(); err != nil {
		return s.csWrite(c, "", "json", nil, csParamError("cannot read the request parameters: %v", err))
	}
	params := req.Form
	command := params.Get("command")
	format := "xml"
	if v, _ := csParam(params, "response"); strings.EqualFold(v, "json") {
		format = "json"
	}
	if command == "" {
		return s.csWrite(c, "", format, nil, csParamError("command is required (command=listRouters, ...)"))
	}
	key, err := s.csAuthenticate(ctx, params, time.Now())
	var ae *csAuthError
	if errors.As(err, &ae) {
		s.log.Debug("cloudstack request not verified", "command", command, "reason", ae.reason)
		return s.csWrite(c, command, format, nil, &csError{code: csErrUnauthorized, text: csAuthFailed})
	}
	if err != nil {
		return s.csWrite(c, command, format, nil, &csError{code: csErrInternal, csCode: csExcCloudRuntime,
			text: "cannot check the request's credentials: database unavailable", cause: err})
	}
	c.Set(callerKey, key)
	cmd, found := s.csCommands()[command]
	if !found {
		return s.csWrite(c, command, format, nil, &csError{code: csErrUnsupported, csCode: csExcServerAPI,
			text: fmt.Sprintf("The given command %s does not exist or it is not available for user (listApis lists the commands sysvm serves)", command)})
	}
	if roleRank(key.Role) < roleRank(cmd.Role) {
		return s.csWrite(c, command, format, nil, &csError{code: csErrUnauthorized, csCode: csExcPermissionDenied,
			text: fmt.Sprintf("The given command '%s' is not available for API key %s: it has role %s and %s needs role %s or higher",
				command, key.Name, key.Role, command, cmd.Role)})
	}
	if err := cmd.checkParams(params); err != nil {
		return s.csWrite(c, command, format, nil, err)
	}
	out, err := cmd.Run(&csCall{s: s, cmd: cmd, key: key, params: params, origin: c.Scheme() + "://" + req.Host}, ctx)
	return s.csWrite(c, command, format, out, err)
}

// checkParams refuses unknown parameters (a misspelt filter would otherwise list everything)
// and missing required ones, in CloudStack's words.
func (cmd *csCommand) checkParams(params url.Values) error {
	known := map[string]bool{}
	for _, p := range cmd.Params {
		known[p.Name] = true
	}
	var unknown []string
	for name := range params {
		l := strings.ToLower(name)
		if known[l] || slices.Contains(csProtocol, l) || slices.Contains(csIgnored, l) {
			continue
		}
		unknown = append(unknown, name)
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		var names []string
		for _, p := range cmd.Params {
			names = append(names, p.Name)
		}
		return csParamError("Unknown parameter %s for API command %s (accepted: %s)", strings.Join(unknown, ", "), cmd.Name,
			strings.Join(names, ", "))
	}
	// Parameter names are case-insensitive in CloudStack: keep the lowercase form.
	for name, vs := range params {
		if l := strings.ToLower(name); l != name {
			params[l] = append(params[l], vs...)
		}
	}
	for _, p := range cmd.Params {
		if p.Required && params.Get(p.Name) == "" {
			return csParamError("Unable to execute API command %s due to missing parameter %s", strings.ToLower(cmd.Name), p.Name)
		}
	}
	return nil
}

// csWrite answers a command: out inside {"<command>response": …}, or the error there with the
// error code as the HTTP status.
func (s *Server) csWrite(c echo.Context, command, format string, out map[string]any, err error) error {
	name := strings.ToLower(command) + "response"
	if command == "" {
		name = "errorresponse"
	}
	status := http.StatusOK
	if err != nil {
		ce := csFromREST(err)
		if ce.code >= 500 {
			attrs := []any{"command", command, "errorcode", ce.code, "errortext", ce.text}
			if ce.cause != nil {
				attrs = append(attrs, "cause", ce.cause.Error())
			}
			level := slog.LevelError
			if ce.code == csErrUnavailable {
				level = slog.LevelWarn
			}
			s.log.Log(c.Request().Context(), level, "cloudstack command failed", attrs...)
		}
		status = ce.code
		out = map[string]any{"uuidList": []any{}, "errorcode": ce.code, "errortext": ce.text}
		if ce.csCode != 0 {
			out["cserrorcode"] = ce.csCode
		}
	}
	if out == nil {
		out = map[string]any{}
	}
	if format == "json" {
		b, merr := json.Marshal(map[string]any{name: out})
		if merr != nil {
			return fmt.Errorf("encode %s: %w", name, merr)
		}
		return c.Blob(status, "application/json; charset=UTF-8", b)
	}
	b, merr := csXML(name, out)
	if merr != nil {
		return fmt.Errorf("encode %s as XML: %w", name, merr)
	}
	return c.Blob(status, "text/xml; charset=UTF-8", b)
}

// csXML writes a response as CloudStack's XML serializer does: the response element with a
// cloud-stack-version attribute, one element per field, lists as repeated elements.
func csXML(name string, out map[string]any) ([]byte, error) {
	// Round-trip through JSON so structs are seen with their field names.
	raw, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	var v map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	enc := xml.NewEncoder(&buf)
	start := xml.StartElement{Name: xml.Name{Local: name}, Attr: []xml.Attr{{Name: xml.Name{Local: "cloud-stack-version"}, Value: csVersion}}}
	if err := enc.EncodeToken(start); err != nil {
		return nil, err
	}
	if err := csXMLMembers(enc, v); err != nil {
		return nil, err
	}
	if err := enc.EncodeToken(start.End()); err != nil {
		return nil, err
	}
	if err := enc.Flush(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func csXMLMembers(enc *xml.Encoder, m map[string]any) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := csXMLValue(enc, k, m[k]); err != nil {
			return err
		}
	}
	return nil
}

func csXMLValue(enc *xml.Encoder, name string, v any) error {
	if list, isList := v.([]any); isList {
		for _, it := range list {
			if err := csXMLValue(enc, name, it); err != nil {
				return err
			}
		}
		return nil
	}
	start := xml.StartElement{Name: xml.Name{Local: name}}
	if err := enc.EncodeToken(start); err != nil {
		return err
	}
	switch t := v.(type) {
	case map[string]any:
		if err := csXMLMembers(enc, t); err != nil {
			return err
		}
	case nil:
	default:
		if err := enc.EncodeToken(xml.CharData(fmt.Sprint(t))); err != nil {
			return err
		}
	}
	return enc.EncodeToken(start.End())
}

// csList is the members of a list answer: count and the items under their object name, or
// nothing for an empty list (as CloudStack writes it).
func csList[T any](object string, count int64, items []T) map[string]any {
	out := map[string]any{}
	if count > 0 {
		out["count"] = count
	}
	if len(items) > 0 {
		out[object] = items
	}
	return out
}

// The REST operations the commands run.

// csRESTResponse is what a REST operation answered.
type csRESTResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *csRESTResponse) Header() http.Header         { return r.header }
func (r *csRESTResponse) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *csRESTResponse) WriteHeader(status int)      { r.status = status }

// restCall runs the REST operation operationID on behalf of the caller, with path parameters,
// query parameters and a JSON body (nil for none), through the operation's own parameter guard
// and handler, and decodes its JSON answer into out (nil to drop it). A REST error is returned
// as it is (csFromREST maps it).
func (c *csCall) restCall(ctx context.Context, operationID string, path map[string]string, query url.Values, body, out any) error {
	s := c.s
	s.mu.Lock()
	var route *Route
	for i := range s.routes {
		if s.routes[i].Doc.OperationID == operationID {
			route = &s.routes[i]
			break
		}
	}
	s.mu.Unlock()
	if route == nil {
		return fmt.Errorf("cloudstack %s: REST operation %s is not mounted", c.cmd.Name, operationID)
	}
	if roleRank(c.key.Role) < roleRank(route.Role) {
		return &csError{code: csErrUnauthorized, csCode: csExcPermissionDenied,
			text: fmt.Sprintf("API key %s has role %s; this use of %s needs role %s or higher", c.key.Name, c.key.Role, c.cmd.Name, route.Role)}
	}
	var rd *bytes.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("cloudstack %s: encode body: %w", c.cmd.Name, err)
		}
		rd = bytes.NewReader(raw)
	}
	u := Prefix + route.Path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var req *http.Request
	var err error
	if rd != nil {
		req, err = http.NewRequestWithContext(ctx, route.Method, u, rd)
	} else {
		req, err = http.NewRequestWithContext(ctx, route.Method, u, http.NoBody)
	}
	if err != nil {
		return fmt.Errorf("cloudstack %s: %w", c.cmd.Name, err)
	}
	if rd != nil {
		req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	}
	w := &csRESTResponse{header: http.Header{}, status: http.StatusOK}
	ec := s.e.NewContext(req, w)
	ec.Set(callerKey, c.key)
	var names, values []string
	for k, v := range path {
		names = append(names, k)
		values = append(values, v)
	}
	ec.SetParamNames(names...)
	ec.SetParamValues(values...)
	if err := s.queryGuard(route.Doc)(route.Handler)(ec); err != nil {
		return err
	}
	if w.status >= 400 {
		return fmt.Errorf("cloudstack %s: REST %s answered %d", c.cmd.Name, operationID, w.status)
	}
	if out == nil || w.body.Len() == 0 {
		return nil
	}
	if err := json.Unmarshal(w.body.Bytes(), out); err != nil {
		return fmt.Errorf("cloudstack %s: decode the answer of %s: %w", c.cmd.Name, operationID, err)
	}
	return nil
}
