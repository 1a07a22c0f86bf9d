package api

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// TestRegisterTemplateValidation sends registerTemplate with each field wrong in turn and
// wants a 400 naming that field; a good one is stored with its URL's password sealed away.
func TestRegisterTemplateValidation(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		fx := seed(t, s)
		e := newEnv(t, s, Config{})
		e.fx = fx
		good := func() map[string]any {
			return map[string]any{"name": "SystemVM Template (KVM) 4.15.0", "hypervisor": "KVM", "format": "QCOW2",
				"url":    "http://127.0.0.1:1/systemvm/4.15/systemvmtemplate-4.15.0-kvm.qcow2.bz2",
				"zoneid": fx.zone1, "checksum": "{SHA-256}" + strings.Repeat("ab", 32), "templatetype": "SYSTEM",
				"version": "4.15.0", "rollout": false}
		}
		with := func(k string, v any) map[string]any { b := good(); b[k] = v; return b }
		without := func(k string) map[string]any { b := good(); delete(b, k); return b }
		for _, c := range []struct {
			what  string
			body  map[string]any
			field string
		}{
			{"no name", without("name"), "name"},
			{"no url", without("url"), "url"},
			{"ftp url", with("url", "ftp://h/x.qcow2.bz2"), "url"},
			{"url of another hypervisor's file", with("url", "http://h/systemvmtemplate-4.15.0-vmware.ova"), "url"},
			{"bad hypervisor", with("hypervisor", "bhyve"), "hypervisor"},
			{"format KVM does not take", with("format", "OVA"), "format"},
			{"unknown zone", with("zoneid", "no-such-zone"), "zoneid"},
			{"bad checksum", with("checksum", "{MD5}xyz"), "checksum"},
			{"short bare hex", with("checksum", "abcd"), "checksum"},
			{"user template", with("templatetype", "USER"), "templatetype"},
			{"no version", without("version"), "version"},
			{"bad version", with("version", "latest"), "version"},
			{"bad bits", with("bits", 16), "bits"},
		} {
			e.wantErr(e.do(http.MethodPost, "/templates", models.RoleAdmin, c.body), 400, CodeBadRequest, c.field, c.what)
		}
		e.wantErr(e.do(http.MethodPost, "/templates", models.RoleOperator, good()), 403, CodeForbidden, "", "operator registers")

		// All zones (-1), every guide file name, bare hex and {MD5}.
		for _, c := range []struct{ hv, url, sum string }{
			{"XenServer", "http://h/systemvmtemplate-4.15.0-xen.vhd.bz2", strings.Repeat("0a", 16)},
			{"VMware", "https://h/systemvmtemplate-4.15.0-vmware.ova", "{MD5}" + strings.Repeat("0b", 16)},
			{"Hyper-V", "http://h/systemvmtemplate-4.15.0-hyperv.vhd.zip", ""},
		} {
			b := good()
			b["name"], b["hypervisor"], b["url"], b["checksum"], b["zoneid"] = "SystemVM "+c.hv, c.hv, c.url, c.sum, "-1"
			delete(b, "format")
			r := e.want(e.do(http.MethodPost, "/templates", models.RoleAdmin, b), 201, "register "+c.hv)
			tpl := r.JSON["template"].(map[string]any)
			if tpl["zoneid"] != nil && tpl["zoneid"] != "" {
				t.Errorf("%s: zoneid %v, want all zones (empty)", c.hv, tpl["zoneid"])
			}
		}

		// A password in the URL is sealed; nobody sees it, the download reads it from the secret.
		b := good()
		b["url"] = "http://mirror:s3cret-pw@127.0.0.1:1/systemvmtemplate-4.15.0-kvm.qcow2.bz2"
		r := e.want(e.do(http.MethodPost, "/templates", models.RoleAdmin, b), 201, "register with credentials")
		id := r.JSON["template"].(map[string]any)["id"].(string)
		for _, role := range []string{models.RoleReadOnly, models.RoleAdmin} {
			for _, p := range []string{"/templates/" + id, "/templates"} {
				got := e.want(e.do(http.MethodGet, p, role, nil), 200, "read template")
				if strings.Contains(string(got.Raw), "s3cret-pw") {
					t.Errorf("GET %s as %s shows the URL's password: %s", p, role, got.Raw)
				}
				if !strings.Contains(string(got.Raw), "mirror:xxxxx@") {
					t.Errorf("GET %s as %s: want the redacted URL: %s", p, role, got.Raw)
				}
			}
		}
		var tpl models.Template
		modelstest.Must(t, s.DB.First(&tpl, "id = ?", id).Error, "load template")
		sealed, err := s.Secrets.GetSecret(context.Background(), tpl.URLSecretRef)
		modelstest.Must(t, err, "read URL secret")
		if !strings.Contains(string(sealed), "s3cret-pw") || strings.Contains(tpl.URL, "s3cret-pw") {
			t.Errorf("secret %q, stored URL %q: want the password only in the secret", sealed, tpl.URL)
		}
		// The same name twice for one hypervisor is refused (router.template names it).
		e.wantErr(e.do(http.MethodPost, "/templates", models.RoleAdmin, b), 400, CodeBadRequest, "name", "duplicate name")

		// A 64-bit template needs system offerings of at least 512 MB.
		modelstest.Must(t, s.DB.Create(&models.ServiceOffering{Name: "tiny-router", CPUs: 1, MemoryMB: 256,
			SystemVMType: models.TypeRouter}).Error, "offering")
		b = good()
		b["name"] = "another"
		r = e.do(http.MethodPost, "/templates", models.RoleAdmin, b)
		e.wantErr(r, 400, CodeBadRequest, "bits", "64-bit with a 256 MB offering")
		if _, msg, _ := r.errParts(); !strings.Contains(msg, "512 MB") || !strings.Contains(msg, "tiny-router") {
			t.Errorf("refusal %q should give the reason and name the offering", msg)
		}
		b["bits"] = 32
		e.want(e.do(http.MethodPost, "/templates", models.RoleAdmin, b), 201, "32-bit with a 256 MB offering")

		// Without Temporal the rollout cannot start: 503, and the answer says the template is registered.
		b = good()
		b["name"], b["rollout"], b["bits"] = "with rollout", true, 32
		r = e.do(http.MethodPost, "/templates", models.RoleAdmin, b)
		if _, msg, _ := r.errParts(); r.Status != 503 || !strings.Contains(msg, "is registered") {
			t.Errorf("register with rollout, no Temporal: %d %s", r.Status, r.Raw)
		}
	})
}
