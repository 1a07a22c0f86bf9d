package xen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/conformance"
	"github.com/sysvm/sysvm/hypervisors/xen/xapisim"
)

// sim is a running simulator and a driver connected to it.
type sim struct {
	srv  *xapisim.Server
	url  string
	conn hypervisors.Connection
	d    hypervisors.Driver
}

func startSim(t *testing.T, opts xapisim.Options) *sim {
	t.Helper()
	if opts.Password == "" {
		opts.Password = "s3cret-" + t.Name()
	}
	srv := xapisim.New(opts)
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("start simulator: %v", err)
	}
	t.Cleanup(srv.Close)
	user, pass := srv.Credentials()
	conn := hypervisors.Connection{Type: hypervisors.XenServer, Endpoint: url, Username: user, Password: pass, Insecure: opts.TLS}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := Connect(ctx, conn)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return &sim{srv: srv, url: url, conn: conn, d: d}
}

// writeVHD writes a small fixed VHD template image and returns its file:// URL and sha256.
func writeVHD(t *testing.T, kib int) (string, string, []byte) {
	t.Helper()
	data := bytes.Repeat([]byte("sysvm-systemvm-"), kib*1024/15+1)[:kib*1024]
	img := xapisim.FixedVHD(data)
	path := filepath.Join(t.TempDir(), "systemvm.vhd")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(img)
	return "file://" + path, hex.EncodeToString(sum[:]), img
}

func TestConformance(t *testing.T) {
	s := startSim(t, xapisim.Options{
		TLS:   true,
		Hosts: []xapisim.HostSpec{{Name: "xen-a", MemoryMB: 16384}, {Name: "xen-b", MemoryMB: 16384}},
	})
	url, sum, _ := writeVHD(t, 256)
	conformance.Run(t, conformance.Fixture{
		Name:   "xen",
		Driver: s.d,
		Hosts:  []string{"xen-a", "xen-b"},
		Pool:   xapisim.DefaultSRName,
		Template: hypervisors.TemplateSpec{
			Name: "systemvm-xenserver-4.20", URL: url, Format: "VHD", Checksum: "sha256:" + sum, Pool: xapisim.DefaultSRName,
		},
	})
}

// raw is an independent JSON-RPC caller, so tests check what the driver left in XAPI's
// records without going through the driver.
type raw struct {
	t    *testing.T
	url  string
	sess string
}

func newRaw(t *testing.T, s *sim) *raw {
	r := &raw{t: t, url: s.url}
	user, pass := s.srv.Credentials()
	r.sess = ""
	var sess string
	r.do(&sess, "session.login_with_password", user, pass)
	r.sess = sess
	return r
}

func (r *raw) do(out any, method string, params ...any) {
	r.t.Helper()
	if r.sess != "" {
		params = append([]any{r.sess}, params...)
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method, "params": params, "id": 1})
	resp, err := http.Post(r.url+"/jsonrpc", "application/json", bytes.NewReader(body))
	if err != nil {
		r.t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	var ans struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Message string   `json:"message"`
			Data    []string `json:"data"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		r.t.Fatalf("%s: %v", method, err)
	}
	if ans.Error != nil {
		r.t.Fatalf("%s: %s %v", method, ans.Error.Message, ans.Error.Data)
	}
	if out != nil {
		if err := json.Unmarshal(ans.Result, out); err != nil {
			r.t.Fatalf("%s: decode %s: %v", method, ans.Result, err)
		}
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func seed(t *testing.T, s *sim, name string) hypervisors.Template {
	t.Helper()
	url, sum, _ := writeVHD(t, 64)
	tpl, err := s.d.SeedTemplate(ctxT(t), hypervisors.TemplateSpec{Name: name, URL: url, Checksum: "sha256:" + sum, Pool: xapisim.DefaultSRName}, nil)
	if err != nil {
		t.Fatalf("SeedTemplate: %v", err)
	}
	return tpl
}

func routerSpec(name, tpl string) hypervisors.VMSpec {
	return hypervisors.VMSpec{
		Name: name, Host: "xenhost-2", Pool: xapisim.DefaultSRName, Template: tpl, CPUs: 2, CPUMHz: 1200, MemoryMB: 384,
		NICs: []hypervisors.NIC{
			{Kind: hypervisors.NICControl, MAC: "0E:00:A9:FE:03:04", IP: "169.254.3.4", Netmask: "255.255.0.0"},
			{Kind: hypervisors.NICPublic, Network: "xenbr0", MAC: "1e:00:0a:00:00:07", IP: "192.0.2.7", Netmask: "255.255.255.0", Gateway: "192.0.2.1"},
			{Kind: hypervisors.NICGuest, Network: xapisim.DefaultNetworkName, MAC: "02:00:10:01:00:01", IP: "10.1.0.1", Netmask: "255.255.255.0"},
		},
		BootArgs: map[string]string{"type": "domainrouter", "name": name, "eth0ip": "169.254.3.4", "authorized_key": "c3NoLXJzYSBBQUFB"},
	}
}

func TestCreateVMReadsBack(t *testing.T) {
	s := startSim(t, xapisim.Options{})
	ctx := ctxT(t)
	tpl := seed(t, s, "tpl-readback")
	spec := routerSpec("r-7-VM", tpl.Name)
	info, err := s.d.CreateVM(ctx, spec)
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	hostRecords := s.srv.CallCount("host.get_record")
	got, err := s.d.GetVM(ctx, spec.Name)
	if err != nil {
		t.Fatalf("GetVM: %v", err)
	}
	if n := s.srv.CallCount("host.get_record") - hostRecords; n != 0 {
		t.Errorf("GetVM read %d whole host records (they list every VM on the host), want only the name", n)
	}
	if !reflect.DeepEqual(info, got) {
		t.Errorf("CreateVM answer and GetVM differ:\n%+v\n%+v", info, got)
	}
	wantNICs := []hypervisors.NIC{
		{Kind: hypervisors.NICControl, Network: xapisim.LinkLocalNetworkName, MAC: "0e:00:a9:fe:03:04", IP: "169.254.3.4", Netmask: "255.255.0.0"},
		{Kind: hypervisors.NICPublic, Network: xapisim.DefaultNetworkName, MAC: "1e:00:0a:00:00:07", IP: "192.0.2.7", Netmask: "255.255.255.0", Gateway: "192.0.2.1"},
		{Kind: hypervisors.NICGuest, Network: xapisim.DefaultNetworkName, MAC: "02:00:10:01:00:01", IP: "10.1.0.1", Netmask: "255.255.255.0"},
	}
	if !reflect.DeepEqual(got.NICs, wantNICs) {
		t.Errorf("NICs\n got %+v\nwant %+v", got.NICs, wantNICs)
	}
	if got.Host != "xenhost-2" || got.Pool != xapisim.DefaultSRName || got.Template != tpl.Name ||
		got.CPUs != 2 || got.MemoryMB != 384 || got.State != hypervisors.PowerStopped {
		t.Errorf("VM %+v", got)
	}
	if !reflect.DeepEqual(got.BootArgs, spec.BootArgs) {
		t.Errorf("boot args %v, want %v", got.BootArgs, spec.BootArgs)
	}
	// Network and SR records list every VIF and VDI of the pool: a seed, create or GetVM that
	// read them whole would cost more the bigger the pool. Only their names and MTUs are read.
	for _, m := range []string{"network.get_record", "SR.get_record"} {
		if n := s.srv.CallCount(m); n != 0 {
			t.Errorf("%s called %d times by SeedTemplate, CreateVM and GetVM", m, n)
		}
	}

	// What XAPI holds, read independently of the driver.
	r := newRaw(t, s)
	var refs []string
	r.do(&refs, "VM.get_by_name_label", spec.Name)
	if len(refs) != 1 {
		t.Fatalf("VMs named %s: %v", spec.Name, refs)
	}
	var rec struct {
		PVArgs       string            `json:"PV_args"`
		XenstoreData map[string]string `json:"xenstore_data"`
		Affinity     string            `json:"affinity"`
		VCPUsParams  map[string]string `json:"VCPUs_params"`
		IsATemplate  bool              `json:"is_a_template"`
		VBDs         []string          `json:"VBDs"`
	}
	r.do(&rec, "VM.get_record", refs[0])
	line := hypervisors.BootArgsString(spec.BootArgs)
	if rec.PVArgs != strings.ReplaceAll(line, " ", "%") {
		t.Errorf("PV_args %q, want CloudStack's %%-separated %q", rec.PVArgs, line)
	}
	if rec.XenstoreData[XenstoreBootArgsKey] != line {
		t.Errorf("xenstore_data %v, want %s=%q", rec.XenstoreData, XenstoreBootArgsKey, line)
	}
	var affinity string
	r.do(&affinity, "host.get_name_label", rec.Affinity)
	// 1200 MHz of a 2400 MHz host: CloudStack's weight 0.99*1200/2400*256 = 126.
	if affinity != "xenhost-2" || rec.VCPUsParams["weight"] != "126" || rec.IsATemplate {
		t.Errorf("affinity %q VCPUs_params %v is_a_template %v", affinity, rec.VCPUsParams, rec.IsATemplate)
	}
	// The VM has its own copy of the template's disk.
	var vdi string
	r.do(&vdi, "VBD.get_VDI", rec.VBDs[0])
	var vdiUUID string
	r.do(&vdiUUID, "VDI.get_uuid", vdi)
	if vdiUUID == tpl.Ref {
		t.Error("the VM boots from the template's own VDI, not a clone")
	}

	// Destroying the VM leaves the template and its disk.
	if err := s.d.DestroyVM(ctx, spec.Name); err != nil {
		t.Fatalf("DestroyVM: %v", err)
	}
	if _, _, ok := s.srv.VDIContent(tpl.Ref); !ok {
		t.Error("destroying a VM destroyed its template's disk")
	}
	again, err := s.d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: tpl.Name, Pool: xapisim.DefaultSRName}, nil)
	if err != nil || again.Ref != tpl.Ref {
		t.Errorf("template after VM destroy: %+v, %v", again, err)
	}
	var vdis []string
	r.do(&vdis, "VDI.get_all")
	if len(vdis) != 1 {
		t.Errorf("%d VDIs left, want only the template's", len(vdis))
	}
}

func TestConnectErrors(t *testing.T) {
	s := startSim(t, xapisim.Options{})
	ctx := ctxT(t)
	bad := s.conn
	bad.Password = "wrong"
	if _, err := Connect(ctx, bad); !errors.Is(err, hypervisors.ErrAuth) {
		t.Errorf("Connect with a wrong password = %v, want ErrAuth", err)
	} else if strings.Contains(err.Error(), "wrong") {
		t.Errorf("error %q leaks the password", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	gone := s.conn
	gone.Endpoint = closed
	if _, err := Connect(ctx, gone); !errors.Is(err, hypervisors.ErrUnreachable) || !hypervisors.Retryable(err) {
		t.Errorf("Connect to a closed port = %v, want retryable ErrUnreachable", err)
	}
	nonsense := s.conn
	nonsense.Endpoint = "xen1.example.com"
	if _, err := Connect(ctx, nonsense); !errors.Is(err, hypervisors.ErrInvalid) {
		t.Errorf("Connect to %q = %v, want ErrInvalid", nonsense.Endpoint, err)
	}
	kvm := s.conn
	kvm.Type = hypervisors.KVM
	if _, err := Connect(ctx, kvm); !errors.Is(err, hypervisors.ErrInvalid) {
		t.Errorf("Connect with a KVM connection = %v, want ErrInvalid", err)
	}
}

func TestSessionInvalidRelogin(t *testing.T) {
	s := startSim(t, xapisim.Options{})
	ctx := ctxT(t)
	logins := s.srv.CallCount("session.login_with_password")

	// xapi restarted: every session is gone.
	s.srv.InvalidateSessions()
	hosts, err := s.d.Hosts(ctx)
	if err != nil || len(hosts) != 2 {
		t.Fatalf("Hosts after sessions were invalidated = %v, %v; want a re-login and 2 hosts", hosts, err)
	}
	if n := s.srv.CallCount("session.login_with_password"); n != logins+1 {
		t.Errorf("logins %d, want %d (one re-login)", n, logins+1)
	}
	if n := s.srv.SessionCount(); n != 1 {
		t.Errorf("%d live sessions, want 1", n)
	}

	// XAPI says SESSION_INVALID once more on one call: re-login and success.
	s.srv.InjectFault(xapisim.Fault{Method: "SR.get_all_records", Code: "SESSION_INVALID", Params: []string{"OpaqueRef:x"}, Times: 1})
	if _, err := s.d.StoragePools(ctx); err != nil {
		t.Fatalf("StoragePools after one SESSION_INVALID: %v", err)
	}
	if n := s.srv.CallCount("SR.get_all_records"); n != 2 {
		t.Errorf("SR.get_all_records called %d times, want 2 (failed, then retried)", n)
	}

	// A session XAPI keeps refusing is reported, not retried forever.
	s.srv.InjectFault(xapisim.Fault{Method: "host.get_all_records", Code: "SESSION_INVALID", Params: []string{"OpaqueRef:x"}})
	before := s.srv.CallCount("host.get_all_records")
	_, err = s.d.Hosts(ctx)
	var f *Failure
	if !errors.As(err, &f) || f.Code != "SESSION_INVALID" || !hypervisors.Retryable(err) {
		t.Errorf("Hosts with a session always refused = %v, want a retryable SESSION_INVALID", err)
	}
	if n := s.srv.CallCount("host.get_all_records") - before; n != 2 {
		t.Errorf("host.get_all_records tried %d times, want 2", n)
	}
	s.srv.ClearFaults()

	// Logging in again fails when the password changed meanwhile: ErrAuth.
	s.srv.InjectFault(xapisim.Fault{Method: "session.login_with_password", Code: "SESSION_AUTHENTICATION_FAILED", Params: []string{"root", "Authentication failure"}})
	s.srv.InvalidateSessions()
	if _, err := s.d.Hosts(ctx); !errors.Is(err, hypervisors.ErrAuth) {
		t.Errorf("Hosts when the re-login is refused = %v, want ErrAuth", err)
	}
}

func TestHostIsSlaveRedirect(t *testing.T) {
	s := startSim(t, xapisim.Options{})
	ctx := ctxT(t)
	// Log in through "localhost"; the member answers HOST_IS_SLAVE with the master's address.
	member := s.conn
	member.Endpoint = strings.Replace(s.url, "127.0.0.1", "localhost", 1)
	s.srv.InjectFault(xapisim.Fault{Method: "session.login_with_password", Code: "HOST_IS_SLAVE", Params: []string{"127.0.0.1"}, Times: 1})
	d, err := Connect(ctx, member)
	if err != nil {
		t.Fatalf("Connect via a pool member: %v", err)
	}
	defer d.Close()
	if _, err := d.Hosts(ctx); err != nil {
		t.Fatalf("Hosts via the master: %v", err)
	}
	if base, _ := d.(*driver).c.current(); base != s.url {
		t.Errorf("driver talks to %s, want the master %s", base, s.url)
	}
}

func TestErrorKinds(t *testing.T) {
	s := startSim(t, xapisim.Options{})
	ctx := ctxT(t)
	tpl := seed(t, s, "tpl-kinds")
	spec := routerSpec("r-8-VM", tpl.Name)
	if _, err := s.d.CreateVM(ctx, spec); err != nil {
		t.Fatalf("CreateVM: %v", err)
	}

	// The VM vanishes between lookup and start: HANDLE_INVALID is ErrNotFound.
	s.srv.InjectFault(xapisim.Fault{Method: "VM.start_on", Code: "HANDLE_INVALID", Params: []string{"VM", "OpaqueRef:gone"}, Times: 1})
	err := s.d.StartVM(ctx, spec.Name)
	if !errors.Is(err, hypervisors.ErrNotFound) || hypervisors.Retryable(err) {
		t.Errorf("StartVM with HANDLE_INVALID = %v, want final ErrNotFound", err)
	}

	// Transient: TOO_BUSY twice. Each attempt surfaces as retryable; a caller's bounded
	// retry loop gets through on the third.
	s.srv.InjectFault(xapisim.Fault{Method: "VM.start_on", Code: "TOO_BUSY", Times: 2})
	before := s.srv.CallCount("VM.start_on")
	var attempts int
	for attempts = 1; attempts <= 5; attempts++ {
		err = s.d.StartVM(ctx, spec.Name)
		if err == nil {
			break
		}
		var f *Failure
		if !hypervisors.Retryable(err) || !errors.As(err, &f) || f.Code != "TOO_BUSY" {
			t.Fatalf("attempt %d: %v, want a retryable TOO_BUSY", attempts, err)
		}
		if hypervisors.KindName(err) != "Unreachable" {
			t.Errorf("TOO_BUSY kind %q, want Unreachable", hypervisors.KindName(err))
		}
	}
	if err != nil || attempts != 3 || s.srv.CallCount("VM.start_on")-before != 3 {
		t.Errorf("retry loop: %d attempts, %d start_on calls, err %v; want success on the 3rd", attempts, s.srv.CallCount("VM.start_on")-before, err)
	}

	// Another operation in flight: retryable, no contract kind.
	s.srv.InjectFault(xapisim.Fault{Method: "VM.clean_reboot", Code: "OTHER_OPERATION_IN_PROGRESS", Params: []string{"VM", "OpaqueRef:x", "clean_shutdown"}, Times: 1})
	if err := s.d.RebootVM(ctx, spec.Name); !hypervisors.Retryable(err) || hypervisors.KindName(err) != "" {
		t.Errorf("RebootVM during another operation = %v (kind %q), want retryable with no kind", err, hypervisors.KindName(err))
	}

	// The connection drops mid-call: ErrUnreachable.
	s.srv.InjectFault(xapisim.Fault{Method: "VM.pool_migrate", Drop: true, Times: 1})
	if err := s.d.MigrateVM(ctx, spec.Name, "xenhost-1"); !errors.Is(err, hypervisors.ErrUnreachable) {
		t.Errorf("MigrateVM on a dropped connection = %v, want ErrUnreachable", err)
	}
	if err := s.d.MigrateVM(ctx, spec.Name, "xenhost-1"); err != nil {
		t.Fatalf("MigrateVM: %v", err)
	}

	// Scaling a running VM needs it halted on XenServer.
	if err := s.d.ScaleVM(ctx, spec.Name, 4, 512); !errors.Is(err, hypervisors.ErrBadState) {
		t.Errorf("ScaleVM(running) = %v, want ErrBadState", err)
	}
	st, err := s.d.VMStats(ctx, spec.Name)
	if err != nil || st.MemoryUsedMB != 384 {
		t.Errorf("VMStats = %+v, %v; want 384 MB used", st, err)
	}
	if err := s.d.StopVM(ctx, spec.Name, false); err != nil {
		t.Fatalf("StopVM: %v", err)
	}
	if _, err := s.d.VMStats(ctx, spec.Name); !errors.Is(err, hypervisors.ErrBadState) {
		t.Errorf("VMStats(stopped) = %v, want ErrBadState", err)
	}
	// After the migration the VM comes back on its new host.
	if err := s.d.StartVM(ctx, spec.Name); err != nil {
		t.Fatalf("StartVM: %v", err)
	}
	if vi, _ := s.d.GetVM(ctx, spec.Name); vi.Host != "xenhost-1" {
		t.Errorf("restarted on %q, want xenhost-1 (where it was migrated)", vi.Host)
	}

	// Not enough memory anywhere: XAPI's HOST_NOT_ENOUGH_FREE_MEMORY comes through.
	big := routerSpec("r-9-VM", tpl.Name)
	big.MemoryMB = 1 << 20
	if _, err := s.d.CreateVM(ctx, big); err != nil {
		t.Fatalf("CreateVM(big): %v", err)
	}
	var f *Failure
	if err := s.d.StartVM(ctx, big.Name); !errors.As(err, &f) || f.Code != "HOST_NOT_ENOUGH_FREE_MEMORY" {
		t.Errorf("StartVM(1 TiB) = %v, want HOST_NOT_ENOUGH_FREE_MEMORY", err)
	}

	// A spec XAPI would refuse is refused before anything is created.
	bad := routerSpec("r-10-VM", tpl.Name)
	bad.NICs[0].Netmask = "255.0.255.0"
	if _, err := s.d.CreateVM(ctx, bad); !errors.Is(err, hypervisors.ErrInvalid) {
		t.Errorf("CreateVM with a bad netmask = %v, want ErrInvalid", err)
	}
	if _, err := s.d.GetVM(ctx, bad.Name); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("GetVM of the refused VM = %v, want ErrNotFound", err)
	}
	unknownHost := routerSpec("r-11-VM", tpl.Name)
	unknownHost.Host = "no-such-host"
	if _, err := s.d.CreateVM(ctx, unknownHost); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("CreateVM on an unknown host = %v, want ErrNotFound", err)
	}
}

func TestCreateVMCleansUpAfterFailure(t *testing.T) {
	s := startSim(t, xapisim.Options{})
	ctx := ctxT(t)
	tpl := seed(t, s, "tpl-cleanup")
	r := newRaw(t, s)
	var vdisBefore []string
	r.do(&vdisBefore, "VDI.get_all")

	spec := routerSpec("r-12-VM", tpl.Name)
	s.srv.InjectFault(xapisim.Fault{Method: "VIF.create", Code: "INTERNAL_ERROR", Params: []string{"injected"}, Times: 1})
	if _, err := s.d.CreateVM(ctx, spec); err == nil || !hypervisors.Retryable(err) {
		t.Fatalf("CreateVM with a failing VIF.create = %v, want a retryable error", err)
	}
	var refs []string
	r.do(&refs, "VM.get_by_name_label", spec.Name)
	var vdis []string
	r.do(&vdis, "VDI.get_all")
	if len(refs) != 0 || len(vdis) != len(vdisBefore) {
		t.Errorf("after a failed CreateVM: VMs %v, %d VDIs (was %d); want nothing left", refs, len(vdis), len(vdisBefore))
	}
	if _, err := s.d.CreateVM(ctx, spec); err != nil {
		t.Fatalf("CreateVM retry: %v", err)
	}
}

func TestSeedTemplateSources(t *testing.T) {
	s := startSim(t, xapisim.Options{})
	ctx := ctxT(t)
	_, sum, img := writeVHD(t, 512)
	served := 0
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/systemvm.vhd" {
			http.NotFound(w, r)
			return
		}
		served++
		w.Write(img)
	}))
	defer web.Close()
	r := newRaw(t, s)
	countVDIs := func() int {
		var v []string
		r.do(&v, "VDI.get_all")
		return len(v)
	}

	var calls int
	var last, total int64
	monotonic := true
	tpl, err := s.d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl-http", URL: web.URL + "/systemvm.vhd", Checksum: "sha256:" + sum},
		func(done, tot int64) {
			if done < last {
				monotonic = false
			}
			calls++
			last, total = done, tot
		})
	if err != nil {
		t.Fatalf("SeedTemplate over http: %v", err)
	}
	if calls < 2 || !monotonic || last != int64(len(img)) || total != int64(len(img)) {
		t.Errorf("progress: %d calls, last %d/%d, monotonic %v; want several up to %d", calls, last, total, monotonic, len(img))
	}
	size, got, ok := s.srv.VDIContent(tpl.Ref)
	if !ok || size != int64(len(img)) || got != sum {
		t.Errorf("XAPI received %d bytes sha256 %s (ok %v), want %d bytes %s", size, got, ok, len(img), sum)
	}
	if tpl.SizeBytes != int64(len(img)-512) || tpl.Pool != xapisim.DefaultSRName {
		t.Errorf("template %+v: want the VHD's virtual size %d in the default SR", tpl, len(img)-512)
	}
	again, err := s.d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl-http", URL: web.URL + "/systemvm.vhd", Checksum: "sha256:" + sum}, nil)
	if err != nil || again.Ref != tpl.Ref || served != 1 {
		t.Errorf("second seed: %+v %v, served %d times; want the same template without a download", again, err, served)
	}

	n := countVDIs()
	for name, spec := range map[string]hypervisors.TemplateSpec{
		"md5 mismatch":  {Name: "tpl-bad1", URL: web.URL + "/systemvm.vhd", Checksum: strings.Repeat("0", 32)},
		"bad algorithm": {Name: "tpl-bad2", URL: web.URL + "/systemvm.vhd", Checksum: "crc32:00000000"},
		"not a VHD":     {Name: "tpl-bad3", URL: "file://" + writeFile(t, []byte("not a disk image at all")), Format: "VHD"},
		"QCOW2":         {Name: "tpl-bad4", URL: web.URL + "/systemvm.vhd", Format: "QCOW2"},
		"no size":       {Name: "tpl-bad5"},
	} {
		if _, err := s.d.SeedTemplate(ctx, spec, nil); !errors.Is(err, hypervisors.ErrInvalid) {
			t.Errorf("%s: SeedTemplate = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := s.d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl-404", URL: web.URL + "/missing.vhd"}, nil); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("SeedTemplate of a missing URL = %v, want ErrNotFound", err)
	}
	if _, err := s.d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl-nosr", Pool: "no-such-sr", SizeBytes: 1 << 20}, nil); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("SeedTemplate into an unknown SR = %v, want ErrNotFound", err)
	}
	if got := countVDIs(); got != n {
		t.Errorf("refused seeds left %d VDIs behind", got-n)
	}

	// XAPI refuses the image mid-import (VDI_IO_ERROR): ErrInvalid and no VDI left.
	s.srv.InjectFault(xapisim.Fault{Method: "VM.clone", Code: "SR_FULL", Params: []string{"1", "0"}, Times: 1})
	if _, err := s.d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl-full", SizeBytes: 1 << 20}, nil); err == nil {
		t.Error("SeedTemplate with a failing VM.clone succeeded")
	}
	if got := countVDIs(); got != n {
		t.Errorf("a failed seed left %d VDIs behind", got-n)
	}

	// Empty URL: an empty disk of SizeBytes, usable for VMs.
	empty, err := s.d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl-empty", SizeBytes: 2 << 30}, nil)
	if err != nil || empty.SizeBytes != 2<<30 {
		t.Fatalf("empty template: %+v, %v", empty, err)
	}
	if _, err := s.d.CreateVM(ctx, routerSpec("r-13-VM", "tpl-empty")); err != nil {
		t.Errorf("CreateVM from the empty template: %v", err)
	}
}

func writeFile(t *testing.T, b []byte) string {
	p := filepath.Join(t.TempDir(), fmt.Sprintf("f-%d", len(b)))
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestListVMsAndFacts(t *testing.T) {
	s := startSim(t, xapisim.Options{
		Hosts: []xapisim.HostSpec{{Name: "h1", CPUs: 12, CPUMHz: 2900, MemoryMB: 49152}, {Name: "h2"}},
		SRs:   []xapisim.SRSpec{{Name: "nfs-1", Shared: true}, {Name: "lvm-1", Type: "lvm", SizeBytes: 100 << 30}},
	})
	ctx := ctxT(t)
	hi, err := s.d.HostInfo(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if hi.CPUs != 12 || hi.CPUMHz != 2900 || hi.MemoryMB != 49152 || hi.Version != "8.2.1" || !hi.Connected || hi.UUID == "" {
		t.Errorf("HostInfo(h1) = %+v", hi)
	}
	if err := s.srv.SetHostLive("h2", false); err != nil {
		t.Fatal(err)
	}
	if hi, _ := s.d.HostInfo(ctx, "h2"); hi.Connected {
		t.Errorf("HostInfo(h2) of a dead host says connected")
	}
	pools, err := s.d.StoragePools(ctx)
	if err != nil || len(pools) != 2 || pools[0].Name != "lvm-1" || pools[0].Type != "lvm" || pools[0].CapacityBytes != 100<<30 {
		t.Fatalf("StoragePools = %+v, %v", pools, err)
	}
	url, sum, _ := writeVHD(t, 64)
	if _, err := s.d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl", URL: url, Checksum: "sha256:" + sum, Pool: "lvm-1"}, nil); err != nil {
		t.Fatal(err)
	}
	pools, _ = s.d.StoragePools(ctx)
	if pools[0].FreeBytes != pools[0].CapacityBytes-(64<<10) {
		t.Errorf("lvm-1 free %d after a 64 KiB thick VDI, want %d", pools[0].FreeBytes, pools[0].CapacityBytes-(64<<10))
	}
	// The same name in another SR is another template.
	if _, err := s.d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl", URL: url, Checksum: "sha256:" + sum, Pool: "nfs-1"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, vm := range []string{"s-1-VM", "v-2-VM"} {
		spec := routerSpec(vm, "tpl")
		spec.Host, spec.Pool = "h1", "nfs-1"
		if _, err := s.d.CreateVM(ctx, spec); err != nil {
			t.Fatalf("CreateVM %s: %v", vm, err)
		}
	}
	if err := s.d.StartVM(ctx, "v-2-VM"); err != nil {
		t.Fatal(err)
	}
	vms, err := s.d.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 2 || vms[0].Name != "s-1-VM" || vms[1].Name != "v-2-VM" {
		t.Fatalf("ListVMs = %+v; want exactly the two system VMs (no templates, no dom0)", vms)
	}
	for _, vm := range vms {
		one, _ := s.d.GetVM(ctx, vm.Name)
		if !reflect.DeepEqual(one, vm) {
			t.Errorf("ListVMs and GetVM differ for %s:\n%+v\n%+v", vm.Name, vm, one)
		}
		if vm.Pool != "nfs-1" {
			t.Errorf("%s on pool %q, want nfs-1", vm.Name, vm.Pool)
		}
	}
	if vms[1].State != hypervisors.PowerRunning || vms[1].Host != "h1" {
		t.Errorf("v-2-VM %+v", vms[1])
	}
}
