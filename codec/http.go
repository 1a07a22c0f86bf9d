package codec

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"go.temporal.io/sdk/converter"
)

// maxBody bounds a codec request: a page of history payloads, as the UI sends it.
const maxBody = 8 << 20

// ErrUnauthorized and ErrForbidden are what an Authorize function returns for a request without
// usable credentials and for credentials that may not decode; the handler answers 401 and 403.
var (
	ErrUnauthorized = errors.New("codec endpoint: missing or unknown credentials")
	ErrForbidden    = errors.New("codec endpoint: these credentials may not use the codec")
)

// HandlerOptions configure the codec HTTP endpoint.
type HandlerOptions struct {
	// Authorize admits a request (nil error), or refuses it with an error wrapping
	// ErrUnauthorized (401) or ErrForbidden (403); any other error answers 503. Nil admits every request: only for a
	// listener on loopback that serves a development UI.
	Authorize func(r *http.Request) error
	// AllowOrigins are the browser origins (the Temporal Web UI's, e.g. http://localhost:8233)
	// allowed to call the endpoint with credentials; "*" allows any origin, without credentials.
	AllowOrigins []string
	// Logger records refused requests (slog.Default when nil).
	Logger *slog.Logger
}

// Handler serves the Temporal remote codec protocol under any prefix: POST <prefix>/encode and
// POST <prefix>/decode with a JSON body {"payloads": [...]} (the SDK's
// converter.NewPayloadCodecHTTPHandler does the work). It answers CORS preflights for the
// allowed origins without credentials, as browsers send them. A GET of any other path
// authenticates too, answering 401 with a Basic challenge without credentials: opening the
// endpoint in a browser once stores the API key (as the password) for the UI's credentialed
// requests.
func (c *Codec) Handler(o HandlerOptions) http.Handler {
	inner := converter.NewPayloadCodecHTTPHandler(c)
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cors(w, r, o.AllowOrigins)
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if o.Authorize != nil {
			if err := o.Authorize(r); err != nil {
				log.Warn("codec endpoint refused a request", "path", r.URL.Path, "remote", r.RemoteAddr, "error", err)
				if errors.Is(err, ErrForbidden) {
					http.Error(w, "forbidden: this API key may not use the codec endpoint (an operator or admin key can)", http.StatusForbidden)
					return
				}
				if !errors.Is(err, ErrUnauthorized) {
					http.Error(w, "cannot check the credentials now", http.StatusServiceUnavailable)
					return
				}
				w.Header().Set("WWW-Authenticate", `Basic realm="sysvm codec", charset="UTF-8"`)
				w.Header().Add("WWW-Authenticate", `Bearer realm="sysvm codec"`)
				http.Error(w, "unauthorized: send Authorization: Bearer <sysvm API key>", http.StatusUnauthorized)
				return
			}
		}
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintf(w, "sysvm payload codec: POST %s/encode or %s/decode; current key %s\n",
				strings.TrimSuffix(r.URL.Path, "/"), strings.TrimSuffix(r.URL.Path, "/"), c.KeyID())
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, POST, OPTIONS")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		inner.ServeHTTP(w, r)
	})
}

// cors sets the CORS answer for an allowed origin; other origins get no CORS headers, so a
// browser refuses to hand them the answer.
func cors(w http.ResponseWriter, r *http.Request, allow []string) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	w.Header().Add("Vary", "Origin")
	h := w.Header()
	switch {
	case slices.Contains(allow, origin):
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
	case slices.Contains(allow, "*"):
		h.Set("Access-Control-Allow-Origin", "*")
	default:
		return
	}
	h.Set("Access-Control-Allow-Methods", "POST, GET, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Content-Type, X-Namespace, Authorization, Authorization-Extras")
	h.Set("Access-Control-Max-Age", "600")
}

// Credential returns the API key a request carries: the token of "Authorization: Bearer <key>"
// (what `temporal --codec-auth` and the UI's "pass access token" send) or the password of
// Basic authentication (what a browser sends after the Basic challenge); "" when neither.
func Credential(r *http.Request) string {
	scheme, value, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok {
		return ""
	}
	value = strings.TrimSpace(value)
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		return value
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(value)
		if err != nil {
			return ""
		}
		_, pass, _ := strings.Cut(string(raw), ":")
		return pass
	}
	return ""
}
