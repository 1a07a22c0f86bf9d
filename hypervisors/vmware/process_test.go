package vmware

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/url"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sysvm/sysvm/hypervisors"
)

// vcsimProcess builds ./internal/vcsim (a thin command around govmomi's simulator) into a
// temporary directory, runs it on a loopback port with the given arguments and returns the
// connection it printed. The process is stopped when the test ends.
func vcsimProcess(t *testing.T, args ...string) (hypervisors.Connection, func()) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go toolchain not in PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "vcsim")
	build := exec.Command(goBin, "build", "-o", bin, "github.com/sysvm/sysvm/hypervisors/vmware/internal/vcsim")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build vcsim: %v\n%s", err, out)
	}
	args = append([]string{"-l", "127.0.0.1:0", "-username", simUser, "-password", simPass, "-stdinexit"}, args...)
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe() // closing it (or our death) stops the simulator
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start vcsim: %v", err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		for sc.Scan() {
		}
		exited <- cmd.Wait()
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = stdin.Close()
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
	}
	t.Cleanup(stop)

	var line string
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("vcsim exited before printing its URL: %s", stderr.String())
		}
		line = l
	case <-time.After(60 * time.Second):
		t.Fatalf("vcsim printed nothing in 60s: %s", stderr.String())
	}
	// export GOVC_URL=https://user:pass@127.0.0.1:PORT/sdk GOVC_SIM_PID=PID
	var raw string
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "GOVC_URL="); ok {
			raw = v
		}
	}
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		t.Fatalf("cannot parse vcsim's line %q: %v", line, err)
	}
	if ip := u.Hostname(); ip != "127.0.0.1" {
		t.Fatalf("vcsim listens on %s, want loopback", ip)
	}
	u.User = nil
	return hypervisors.Connection{Type: hypervisors.VMware, Endpoint: u.String(),
		Username: simUser, Password: simPass, Insecure: true}, stop
}

func hostNamesOf(hs []hypervisors.HostInfo) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Name)
	}
	return out
}

// TestVcsimProcessAcrossDatacenters runs the driver against vcsim as a separate process with
// two datacenters of two clusters of two hosts each, over HTTPS on loopback.
func TestVcsimProcessAcrossDatacenters(t *testing.T) {
	conn, stop := vcsimProcess(t, "-dc", "2", "-cluster", "2", "-host", "2", "-standalone-host", "0", "-ds", "1", "-vm", "0", "-pg", "1")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	wrong := conn
	wrong.Password = "nope"
	if _, err := Connect(ctx, wrong); !errors.Is(err, hypervisors.ErrAuth) {
		t.Fatalf("wrong password against the vcsim process = %v, want ErrAuth", err)
	}

	all, err := Connect(ctx, conn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer all.Close()

	hosts, err := all.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantHosts := []string{"DC0_C0_H0", "DC0_C0_H1", "DC0_C1_H0", "DC0_C1_H1", "DC1_C0_H0", "DC1_C0_H1", "DC1_C1_H0", "DC1_C1_H1"}
	if got := hostNamesOf(hosts); !reflect.DeepEqual(got, wantHosts) {
		t.Fatalf("hosts across datacenters = %v, want %v", got, wantHosts)
	}
	pools, err := all.StoragePools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) != 2 || pools[0].Name != "DC0/LocalDS_0" || pools[1].Name != "DC1/LocalDS_0" || pools[0].UUID == pools[1].UUID {
		t.Fatalf("pools = %+v, want the two LocalDS_0 qualified by datacenter", pools)
	}
	if _, err := all.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl", Pool: "LocalDS_0", SizeBytes: 1 << 30}, nil); !errors.Is(err, hypervisors.ErrInvalid) {
		t.Errorf("seeding into an ambiguous pool name = %v, want ErrInvalid", err)
	}
	tpl1, err := all.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl", Pool: "DC1/LocalDS_0", SizeBytes: 1 << 30}, nil)
	if err != nil {
		t.Fatalf("seed into DC1: %v", err)
	}
	tpl0, err := all.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl", Pool: "DC0/LocalDS_0", SizeBytes: 1 << 30}, nil)
	if err != nil {
		t.Fatalf("seed into DC0: %v", err)
	}
	if tpl1.Ref != "/DC1/vm/sysvm-templates/LocalDS_0/tpl" || tpl0.Ref != "/DC0/vm/sysvm-templates/LocalDS_0/tpl" {
		t.Errorf("template refs %q, %q", tpl1.Ref, tpl0.Ref)
	}

	// A VM in the second cluster of the second datacenter, on that datacenter's port group.
	spec := hypervisors.VMSpec{Name: "r-dc1-VM", Host: "DC1_C1_H0", Pool: "LocalDS_0", Template: "tpl", CPUs: 1, MemoryMB: 256,
		NICs:     []hypervisors.NIC{{Kind: hypervisors.NICGuest, Network: "DC1_DVPG0", MAC: "02:00:00:00:d1:01", IP: "10.9.0.1"}},
		BootArgs: map[string]string{"type": "domainrouter"}}
	vi, err := all.CreateVM(ctx, spec)
	if err != nil {
		t.Fatalf("CreateVM in DC1/C1: %v", err)
	}
	if vi.Host != "DC1_C1_H0" || vi.Pool != "LocalDS_0" || vi.Template != "tpl" || len(vi.NICs) != 1 ||
		vi.NICs[0].Network != "DC1_DVPG0" || vi.NICs[0].MAC != "02:00:00:00:d1:01" || vi.NICs[0].IP != "10.9.0.1" {
		t.Errorf("created VM %+v", vi)
	}
	dup := spec
	dup.Host = "DC0_C0_H0"
	if _, err := all.CreateVM(ctx, dup); !errors.Is(err, hypervisors.ErrAlreadyExists) {
		t.Errorf("same name in the other datacenter = %v, want ErrAlreadyExists", err)
	}
	if _, err := all.CreateVM(ctx, hypervisors.VMSpec{Name: "r-dc0-VM", Host: "DC0_C1_H1", Pool: "LocalDS_0", Template: "tpl", CPUs: 1, MemoryMB: 128}); err != nil {
		t.Fatalf("CreateVM in DC0/C1: %v", err)
	}

	if err := all.StartVM(ctx, "r-dc1-VM"); err != nil {
		t.Fatal(err)
	}
	if err := all.MigrateVM(ctx, "r-dc1-VM", "DC1_C1_H1"); err != nil {
		t.Fatalf("live migrate within DC1/C1: %v", err)
	}
	if vi, err := all.GetVM(ctx, "r-dc1-VM"); err != nil || vi.Host != "DC1_C1_H1" || vi.State != hypervisors.PowerRunning {
		t.Errorf("after migrate: %+v, %v", vi, err)
	}
	for _, h := range []string{"DC1_C0_H0", "DC0_C1_H0"} {
		if err := all.MigrateVM(ctx, "r-dc1-VM", h); !errors.Is(err, hypervisors.ErrInvalid) {
			t.Errorf("migrate to %s (another cluster) = %v, want ErrInvalid", h, err)
		}
	}

	// Narrowed to DC0: DC1 is invisible.
	dc0conn := conn
	dc0conn.Datacenter = "DC0"
	dc0, err := Connect(ctx, dc0conn)
	if err != nil {
		t.Fatalf("connect narrowed to DC0: %v", err)
	}
	defer dc0.Close()
	hosts, err = dc0.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := hostNamesOf(hosts); !reflect.DeepEqual(got, wantHosts[:4]) {
		t.Errorf("hosts narrowed to DC0 = %v", got)
	}
	pools, err = dc0.StoragePools(ctx)
	if err != nil || len(pools) != 1 || pools[0].Name != "LocalDS_0" {
		t.Errorf("pools narrowed to DC0 = %+v, %v", pools, err)
	}
	if _, err := dc0.GetVM(ctx, "r-dc1-VM"); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("DC1's VM seen from DC0 = %v, want ErrNotFound", err)
	}
	vms, err := dc0.ListVMs(ctx)
	if err != nil || len(vms) != 1 || vms[0].Name != "r-dc0-VM" || vms[0].Host != "DC0_C1_H1" {
		t.Errorf("ListVMs narrowed to DC0 = %+v, %v", vms, err)
	}
	if _, err := dc0.CreateVM(ctx, hypervisors.VMSpec{Name: "r-x-VM", Host: "DC1_C0_H0", Pool: "LocalDS_0", Template: "tpl", CPUs: 1, MemoryMB: 128}); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("CreateVM on a DC1 host through DC0 = %v, want ErrNotFound", err)
	}
	vms, err = all.ListVMs(ctx)
	if err != nil || len(vms) != 2 {
		t.Errorf("ListVMs across datacenters = %+v, %v", vms, err)
	}

	if err := all.DestroyVM(ctx, "r-dc1-VM"); err != nil {
		t.Fatalf("destroy: %v", err)
	}

	// The simulator goes away: calls fail as retryable ErrUnreachable.
	stop()
	if _, err := all.Hosts(ctx); !errors.Is(err, hypervisors.ErrUnreachable) || !hypervisors.Retryable(err) {
		t.Errorf("Hosts with vcsim stopped = %v, want retryable ErrUnreachable", err)
	}
}
