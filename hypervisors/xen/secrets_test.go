package xen

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/xen/xapisim"
)

// TestNoSecretInErrors: the session travels to XAPI's import handler as a session_id cookie,
// never in the URL, and no error the driver returns holds the session ID or the password, even
// when the upload's connection drops (a url.Error names the URL) or XAPI echoes the session.
func TestNoSecretInErrors(t *testing.T) {
	s := startSim(t, xapisim.Options{})
	ctx := ctxT(t)
	src, sum, _ := writeVHD(t, 64)
	sessions := s.srv.SessionRefs()
	if len(sessions) != 1 {
		t.Fatalf("%d live sessions after Connect, want 1", len(sessions))
	}
	sess := sessions[0]
	leaks := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error", what)
		}
		secrets := map[string]bool{sess: true, url.QueryEscape(sess): true, s.conn.Password: true}
		for _, ref := range s.srv.SessionRefs() {
			secrets[ref], secrets[url.QueryEscape(ref)] = true, true
		}
		for secret := range secrets {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: error %q holds a secret (%q)", what, err, secret)
			}
		}
	}
	spec := func(name string) hypervisors.TemplateSpec {
		return hypervisors.TemplateSpec{Name: name, URL: src, Format: "VHD", Checksum: "sha256:" + sum}
	}

	// The connection drops mid-upload: a transport error, whose url.Error names the URL.
	s.srv.InjectFault(xapisim.Fault{Method: xapisim.ImportRawVDIMethod, Drop: true, Times: 1})
	_, err := s.d.SeedTemplate(ctx, spec("tpl-drop"), nil)
	leaks("dropped upload", err)
	if !errors.Is(err, hypervisors.ErrUnreachable) {
		t.Errorf("dropped upload = %v, want ErrUnreachable", err)
	}
	if !strings.Contains(err.Error(), "import_raw_vdi") {
		t.Errorf("dropped upload = %v, want the handler named", err)
	}

	// XAPI answers the upload with a failure that echoes the session.
	s.srv.InjectFault(xapisim.Fault{Method: xapisim.ImportRawVDIMethod, Code: "VDI_IO_ERROR", Params: []string{"session " + sess}, Times: 1})
	_, err = s.d.SeedTemplate(ctx, spec("tpl-fail"), nil)
	leaks("failed upload", err)

	// A JSON-RPC call fails with SESSION_INVALID naming the session, before and after the
	// re-login.
	s.srv.InjectFault(xapisim.Fault{Method: "SR.get_all_records", Code: "SESSION_INVALID", Params: []string{sess}, Times: 2})
	_, err = s.d.StoragePools(ctx)
	leaks("SESSION_INVALID twice", err)
	s.srv.ClearFaults()

	// A working upload authenticates with the cookie only, never the query string.
	cookies, queries := s.srv.HTTPAuthCount(xapisim.AuthCookie), s.srv.HTTPAuthCount(xapisim.AuthQuery)
	if _, err := s.d.SeedTemplate(ctx, spec("tpl-ok"), nil); err != nil {
		t.Fatalf("SeedTemplate: %v", err)
	}
	if got := s.srv.HTTPAuthCount(xapisim.AuthCookie) - cookies; got != 1 {
		t.Errorf("upload authenticated %d times by session_id cookie, want 1", got)
	}
	if got := s.srv.HTTPAuthCount(xapisim.AuthQuery) - queries; got != 0 {
		t.Errorf("upload sent session_id in the query string %d times, want never", got)
	}
}

// TestConnectErrorHoldsNoPassword: an endpoint URL with user info (a password) is redacted in
// the error of a refused Connect.
func TestConnectErrorHoldsNoPassword(t *testing.T) {
	conn := hypervisors.Connection{Type: hypervisors.XenServer, Endpoint: "http://root:hunter2-secret@127.0.0.1:1/?session_id=abc",
		Username: "root", Password: "hunter2-secret"}
	_, err := Connect(ctxT(t), conn)
	if err == nil {
		t.Fatal("Connect to a closed port succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "session_id") {
		t.Errorf("Connect error %q holds the password or the query", err)
	}
}
