package xapisim

import (
	"net/http"
	"strings"
)

// ImportRawVDIMethod names the raw VDI import handler in Fault.Method and CallCount.
const ImportRawVDIMethod = "PUT /import_raw_vdi"

// How a request to an XAPI HTTP handler carried its credentials (see HTTPAuthCount).
const (
	AuthCookie = "cookie" // a session_id cookie
	AuthQuery  = "query"  // a session_id query parameter
	AuthBasic  = "basic"  // HTTP basic auth with a user name and password
)

// httpAuth authenticates a request to an HTTP handler as XAPI's Xapi_http.assert_credentials_ok
// does, and returns 0 when it may go on, or the HTTP status and body of the refusal:
//   - a session_id cookie, or else a session_id query parameter, must name a live session
//     (401 otherwise, even when an Authorization header is present too);
//   - without a session_id, HTTP basic auth is a login for this one request (401 when refused);
//   - any other Authorization scheme is an internal error ("Unknown authorization header");
//   - nothing at all is 401 (XAPI would try a client certificate, which xapisim does not use).
//
// It runs with the server lock held and counts how the caller authenticated.
func (s *Server) httpAuth(r *http.Request) (status int, msg string) {
	how, sess := "", ""
	if c, err := r.Cookie("session_id"); err == nil {
		how, sess = AuthCookie, c.Value
	} else if q := r.URL.Query(); q.Has("session_id") {
		how, sess = AuthQuery, q.Get("session_id")
	}
	if how != "" {
		if _, ok := s.db.classes[classSession].objs[sess]; !ok {
			return http.StatusUnauthorized, "Unauthorized"
		}
		s.httpAuths[how]++
		return 0, ""
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return http.StatusUnauthorized, "Unauthorized"
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		scheme, _, _ := strings.Cut(auth, " ")
		return http.StatusInternalServerError, "Unknown authorization header: " + scheme
	}
	if user != s.opts.Username || pass != s.opts.Password {
		return http.StatusUnauthorized, "Unauthorized"
	}
	s.httpAuths[AuthBasic]++
	return 0, ""
}

// HTTPAuthCount is how many requests to the HTTP handlers were let in with credentials carried
// the given way (AuthCookie, AuthQuery or AuthBasic).
func (s *Server) HTTPAuthCount(how string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpAuths[how]
}
