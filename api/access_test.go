package api

import (
	"strings"
	"testing"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

func TestAccessPath(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		e := newEnv(t, s, Config{})
		f := seed(t, s)
		op := models.RoleReadOnly

		// KVM: through the host the router runs on, to its link-local IP, with the host's key.
		r := e.want(e.do("GET", "/routers/"+f.r4+"/access", op, nil), 200, "router access")
		if r.JSON["path"] != "host-linklocal" || r.JSON["address"] != "169.254.2.4" || r.JSON["port"] != float64(3922) {
			t.Errorf("KVM router access = %v", r.JSON)
		}
		cmd, _ := r.JSON["command"].(string)
		if !strings.Contains(cmd, "ssh -i /root/.ssh/id_rsa.cloud 169.254.2.4 -p 3922") || !strings.Contains(cmd, "root@") {
			t.Errorf("KVM command %q is not the host jump to the link-local IP", cmd)
		}
		if steps, _ := r.JSON["steps"].([]any); len(steps) != 2 {
			t.Errorf("KVM access wants two steps (host, then VM): %v", r.JSON["steps"])
		}
		// VMware: straight from the management server to the private IP.
		r = e.want(e.do("GET", "/system-vms/"+f.ssvm2+"/access", op, nil), 200, "ssvm access")
		if r.JSON["path"] != "direct-private" || r.JSON["command"] != "ssh -i /var/lib/cloudstack/management/.ssh/id_rsa 10.2.0.50 -p 3922" {
			t.Errorf("VMware SSVM access = %v", r.JSON)
		}
		for k := range r.JSON {
			if strings.Contains(strings.ToLower(k), "key") && k != "keypath" {
				t.Errorf("access answer has a key field %q", k)
			}
		}
		e.wantErr(e.do("GET", "/system-vms/"+f.r4+"/access", op, nil), 404, CodeNotFound, "", "router under system-vms")
		e.wantErr(e.do("GET", "/routers/"+f.r7+"/access", op, nil), 409, CodeConflict, "", "destroyed router")
	})
}
