package xapisim

import (
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// serveXMLRPC answers XAPI's XML-RPC endpoint at /. Every answer is a struct with Status
// "Success" and Value, or Status "Failure" and ErrorDescription; XAPI never uses XML-RPC
// faults for API errors. Ints travel as decimal strings, as XAPI's wire protocol says.
func (s *Server) serveXMLRPC(w http.ResponseWriter, r *http.Request) {
	name, params, err := parseMethodCall(http.MaxBytesReader(w, r.Body, maxRPCBody))
	if err != nil {
		http.Error(w, "XML-RPC request: "+err.Error(), http.StatusBadRequest)
		return
	}
	res, err := s.dispatch(r.Context(), name, params)
	if errors.Is(err, errDrop) {
		dropConnection(w)
		return
	}
	var ans map[string]any
	var f *Failure
	switch {
	case err == nil:
		ans = map[string]any{"Status": "Success", "Value": res}
	case errors.As(err, &f):
		desc := make([]any, 0, len(f.Params)+1)
		desc = append(desc, f.Code)
		for _, p := range f.Params {
			desc = append(desc, p)
		}
		ans = map[string]any{"Status": "Failure", "ErrorDescription": desc}
	}
	w.Header().Set("Content-Type", "text/xml")
	_, _ = io.WriteString(w, `<?xml version="1.0"?><methodResponse><params><param>`+xmlValue(ans)+`</param></params></methodResponse>`)
}

// xmlValue encodes a wire value as an XML-RPC <value>.
func xmlValue(v any) string {
	var b strings.Builder
	writeXMLValue(&b, v)
	return b.String()
}

func writeXMLValue(b *strings.Builder, v any) {
	b.WriteString("<value>")
	switch x := v.(type) {
	case nil:
		b.WriteString("<nil/>")
	case string:
		_ = xml.EscapeText(b, []byte(x))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case int:
		b.WriteString(strconv.Itoa(x))
	case bool:
		if x {
			b.WriteString("<boolean>1</boolean>")
		} else {
			b.WriteString("<boolean>0</boolean>")
		}
	case float64:
		b.WriteString("<double>" + strconv.FormatFloat(x, 'f', -1, 64) + "</double>")
	case time.Time:
		b.WriteString("<dateTime.iso8601>" + x.UTC().Format(xapiTimeLayout) + "</dateTime.iso8601>")
	case []any:
		b.WriteString("<array><data>")
		for _, e := range x {
			writeXMLValue(b, e)
		}
		b.WriteString("</data></array>")
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString("<struct>")
		for _, k := range keys {
			b.WriteString("<member><name>")
			_ = xml.EscapeText(b, []byte(k))
			b.WriteString("</name>")
			writeXMLValue(b, x[k])
			b.WriteString("</member>")
		}
		b.WriteString("</struct>")
	default:
		_ = xml.EscapeText(b, []byte(fmt.Sprint(x)))
	}
	b.WriteString("</value>")
}

// parseMethodCall reads <methodCall><methodName/><params><param><value/>...</methodCall>.
func parseMethodCall(r io.Reader) (string, []any, error) {
	d := xml.NewDecoder(r)
	var name string
	params := []any{}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", nil, err
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		switch se.Name.Local {
		case "methodName":
			if name, err = readText(d); err != nil {
				return "", nil, err
			}
		case "value":
			v, err := decodeXMLValue(d)
			if err != nil {
				return "", nil, err
			}
			params = append(params, v)
		}
	}
	if name == "" {
		return "", nil, errors.New("no methodName")
	}
	return strings.TrimSpace(name), params, nil
}

// decodeXMLValue decodes the content of a <value> whose start tag was just read.
func decodeXMLValue(d *xml.Decoder) (any, error) {
	var text strings.Builder
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.CharData:
			text.Write(t)
		case xml.EndElement:
			return text.String(), nil // untyped value: a string
		case xml.StartElement:
			v, err := decodeTyped(d, t)
			if err != nil {
				return nil, err
			}
			if err := d.Skip(); err != nil { // the rest of <value>
				return nil, err
			}
			return v, nil
		}
	}
}

func decodeTyped(d *xml.Decoder, t xml.StartElement) (any, error) {
	switch t.Name.Local {
	case "string":
		return readText(d)
	case "int", "i4", "i8":
		s, err := readText(d)
		if err != nil {
			return nil, err
		}
		return strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	case "boolean":
		s, err := readText(d)
		if err != nil {
			return nil, err
		}
		return strings.TrimSpace(s) == "1", nil
	case "double":
		s, err := readText(d)
		if err != nil {
			return nil, err
		}
		return strconv.ParseFloat(strings.TrimSpace(s), 64)
	case "dateTime.iso8601":
		s, err := readText(d)
		if err != nil {
			return nil, err
		}
		return time.Parse(xapiTimeLayout, strings.TrimSpace(s))
	case "base64":
		s, err := readText(d)
		if err != nil {
			return nil, err
		}
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		return string(b), err
	case "nil":
		return nil, d.Skip()
	case "array":
		out := []any{}
		for {
			tok, err := d.Token()
			if err != nil {
				return nil, err
			}
			switch e := tok.(type) {
			case xml.StartElement:
				if e.Name.Local == "value" {
					v, err := decodeXMLValue(d)
					if err != nil {
						return nil, err
					}
					out = append(out, v)
				}
			case xml.EndElement:
				if e.Name.Local == "array" {
					return out, nil
				}
			}
		}
	case "struct":
		out := map[string]any{}
		var key string
		for {
			tok, err := d.Token()
			if err != nil {
				return nil, err
			}
			switch e := tok.(type) {
			case xml.StartElement:
				switch e.Name.Local {
				case "name":
					if key, err = readText(d); err != nil {
						return nil, err
					}
				case "value":
					v, err := decodeXMLValue(d)
					if err != nil {
						return nil, err
					}
					out[key] = v
				}
			case xml.EndElement:
				if e.Name.Local == "struct" {
					return out, nil
				}
			}
		}
	}
	return nil, fmt.Errorf("unknown XML-RPC type <%s>", t.Name.Local)
}

// readText reads character data up to the end of the current element.
func readText(d *xml.Decoder) (string, error) {
	var b strings.Builder
	for {
		tok, err := d.Token()
		if err != nil {
			return "", err
		}
		switch t := tok.(type) {
		case xml.CharData:
			b.Write(t)
		case xml.EndElement:
			return b.String(), nil
		case xml.StartElement:
			if err := d.Skip(); err != nil {
				return "", err
			}
		}
	}
}
