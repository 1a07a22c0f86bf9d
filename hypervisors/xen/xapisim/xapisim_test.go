package xapisim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// rpcClient speaks raw JSON-RPC to the simulator, so the tests see the wire answers.
type rpcClient struct {
	t   *testing.T
	url string
	id  int
}

// rawAnswer is a JSON-RPC answer as it came over the wire.
type rawAnswer struct {
	JSONRPC *string         `json:"jsonrpc"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
	ID      json.RawMessage `json:"id"`
}

type v2Error struct {
	Code    int      `json:"code"`
	Message string   `json:"message"`
	Data    []string `json:"data"`
}

func start(t *testing.T, opts Options) (*Server, *rpcClient) {
	t.Helper()
	s := New(opts)
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Close)
	return s, &rpcClient{t: t, url: url}
}

func (c *rpcClient) raw(body string) rawAnswer {
	c.t.Helper()
	resp, err := http.Post(c.url+"/jsonrpc", "application/json", strings.NewReader(body))
	if err != nil {
		c.t.Fatalf("POST /jsonrpc: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("POST /jsonrpc: HTTP %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		c.t.Errorf("Content-Type %q, want application/json", ct)
	}
	var a rawAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		c.t.Fatalf("decode answer: %v", err)
	}
	return a
}

// call makes a JSON-RPC v2 call; it returns the result or the error object.
func (c *rpcClient) call(method string, params ...any) (json.RawMessage, *v2Error) {
	c.t.Helper()
	c.id++
	if params == nil {
		params = []any{}
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method, "params": params, "id": c.id})
	a := c.raw(string(body))
	if a.JSONRPC == nil || *a.JSONRPC != "2.0" {
		c.t.Errorf("%s: answer lacks jsonrpc 2.0", method)
	}
	if string(a.ID) != fmt.Sprint(c.id) {
		c.t.Errorf("%s: answer id %s, want %d", method, a.ID, c.id)
	}
	if len(a.Error) > 0 && string(a.Error) != "null" {
		if len(a.Result) > 0 {
			c.t.Errorf("%s: answer has both result and error", method)
		}
		var e v2Error
		if err := json.Unmarshal(a.Error, &e); err != nil {
			c.t.Fatalf("%s: error object %s: %v", method, a.Error, err)
		}
		return nil, &e
	}
	return a.Result, nil
}

// must calls and decodes the result into out, failing the test on an error answer.
func (c *rpcClient) must(out any, method string, params ...any) {
	c.t.Helper()
	res, e := c.call(method, params...)
	if e != nil {
		c.t.Fatalf("%s: %s %v", method, e.Message, e.Data)
	}
	if out != nil {
		if err := json.Unmarshal(res, out); err != nil {
			c.t.Fatalf("%s: decode %s: %v", method, res, err)
		}
	}
}

// wantErr asserts an error answer with exactly this ErrorDescription.
func (c *rpcClient) wantErr(desc []string, method string, params ...any) {
	c.t.Helper()
	_, e := c.call(method, params...)
	if e == nil {
		c.t.Fatalf("%s succeeded, want %v", method, desc)
	}
	if e.Code != 1 {
		c.t.Errorf("%s: error code %d, want 1 (xapi's error_code_lit)", method, e.Code)
	}
	got := append([]string{e.Message}, e.Data...)
	if !reflect.DeepEqual(got, desc) {
		c.t.Errorf("%s: ErrorDescription %q, want %q", method, got, desc)
	}
}

func (c *rpcClient) login() string {
	c.t.Helper()
	var sess string
	c.must(&sess, "session.login_with_password", "root", "xapisim", "2.20", "xapisim-test")
	return sess
}

var opaqueRef = regexp.MustCompile(`^OpaqueRef:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestLoginAndErrors(t *testing.T) {
	s, c := start(t, Options{})
	c.wantErr([]string{CodeSessionAuthenticationFailed, "root", "Authentication failure"},
		"session.login_with_password", "root", "wrong", "2.20", "test")
	sess := c.login()
	if !opaqueRef.MatchString(sess) {
		t.Errorf("session ref %q is not an OpaqueRef", sess)
	}
	// Older SDKs send only uname and pwd.
	var sess2 string
	c.must(&sess2, "session.login_with_password", "root", "xapisim")
	if s.SessionCount() != 2 {
		t.Errorf("SessionCount = %d, want 2", s.SessionCount())
	}

	c.wantErr([]string{CodeMessageMethodUnknown, "VM.frobnicate"}, "VM.frobnicate", sess)
	c.wantErr([]string{CodeMessageParameterCountMismatch, "VM.start", "4", "2"}, "VM.start", sess, "OpaqueRef:x")
	c.wantErr([]string{CodeSessionInvalid, "OpaqueRef:bogus"}, "VM.get_all", "OpaqueRef:bogus")
	c.wantErr([]string{CodeHandleInvalid, "VM", "OpaqueRef:nope"}, "VM.get_record", sess, "OpaqueRef:nope")
	c.wantErr([]string{CodeUUIDInvalid, "VM", "0000"}, "VM.get_by_uuid", sess, "0000")
	// A ref of another class is not a VM.
	var hosts []string
	c.must(&hosts, "host.get_all", sess)
	c.wantErr([]string{CodeHandleInvalid, "VM", hosts[0]}, "VM.get_record", sess, hosts[0])
	// No setter for read-only fields.
	c.wantErr([]string{CodeMessageMethodUnknown, "VM.set_power_state"}, "VM.set_power_state", sess, "x", "Running")

	c.must(nil, "session.logout", sess)
	c.wantErr([]string{CodeSessionInvalid, sess}, "VM.get_all", sess)
	s.InvalidateSessions()
	c.wantErr([]string{CodeSessionInvalid, sess2}, "pool.get_all", sess2)
}

func TestJSONRPCv1Shape(t *testing.T) {
	_, c := start(t, Options{})
	a := c.raw(`{"method":"session.login_with_password","params":["root","bad"],"id":"x1"}`)
	if a.JSONRPC != nil {
		t.Errorf("v1 answer carries jsonrpc %q", *a.JSONRPC)
	}
	if string(a.ID) != `"x1"` || string(a.Result) != "null" {
		t.Errorf("v1 answer id=%s result=%s", a.ID, a.Result)
	}
	var desc []string
	if err := json.Unmarshal(a.Error, &desc); err != nil {
		t.Fatalf("v1 error %s is not an ErrorDescription list: %v", a.Error, err)
	}
	if want := []string{CodeSessionAuthenticationFailed, "root", "Authentication failure"}; !reflect.DeepEqual(desc, want) {
		t.Errorf("v1 error %q, want %q", desc, want)
	}
	a = c.raw(`{"method":"session.login_with_password","params":["root","xapisim"],"id":7}`)
	if string(a.Error) != "null" || !strings.HasPrefix(string(a.Result), `"OpaqueRef:`) {
		t.Errorf("v1 success: result=%s error=%s", a.Result, a.Error)
	}
	a = c.raw(`{"jsonrpc":"2.0","method":`)
	var e v2Error
	if err := json.Unmarshal(a.Error, &e); err != nil || e.Code != -32700 {
		t.Errorf("malformed request: error %s, want code -32700", a.Error)
	}
}

type hostRecord struct {
	UUID            string            `json:"uuid"`
	NameLabel       string            `json:"name_label"`
	CPUInfo         map[string]string `json:"cpu_info"`
	SoftwareVersion map[string]string `json:"software_version"`
	Metrics         string            `json:"metrics"`
	ResidentVMs     []string          `json:"resident_VMs"`
	Enabled         bool              `json:"enabled"`
}

type metricsRecord struct {
	MemoryTotal int64 `json:"memory_total"`
	MemoryFree  int64 `json:"memory_free"`
	Live        bool  `json:"live"`
}

type srRecord struct {
	NameLabel           string `json:"name_label"`
	Type                string `json:"type"`
	PhysicalSize        int64  `json:"physical_size"`
	PhysicalUtilisation int64  `json:"physical_utilisation"`
	Shared              bool   `json:"shared"`
}

func TestRecordsAndQueries(t *testing.T) {
	_, c := start(t, Options{
		Hosts: []HostSpec{{Name: "h1", CPUs: 16, CPUMHz: 3000, MemoryMB: 32768}, {Name: "h2"}},
		SRs:   []SRSpec{{Name: "sr-a", Type: "lvmoiscsi", SizeBytes: 1 << 40, Shared: true}},
	})
	sess := c.login()
	var hosts map[string]hostRecord
	c.must(&hosts, "host.get_all_records", sess)
	if len(hosts) != 2 {
		t.Fatalf("%d hosts, want 2", len(hosts))
	}
	var h1Ref string
	for ref, h := range hosts {
		if !opaqueRef.MatchString(ref) {
			t.Errorf("host ref %q", ref)
		}
		if h.NameLabel == "h1" {
			h1Ref = ref
		}
	}
	h1 := hosts[h1Ref]
	if h1.CPUInfo["cpu_count"] != "16" || h1.CPUInfo["speed"] != "3000.000" {
		t.Errorf("h1 cpu_info %v", h1.CPUInfo)
	}
	if h1.SoftwareVersion["product_brand"] != "XCP-ng" || h1.SoftwareVersion["product_version"] != "8.2.1" {
		t.Errorf("h1 software_version %v", h1.SoftwareVersion)
	}
	if len(h1.ResidentVMs) != 1 {
		t.Errorf("h1 resident_VMs %v, want its control domain", h1.ResidentVMs)
	}
	var m metricsRecord
	c.must(&m, "host_metrics.get_record", sess, h1.Metrics)
	if m.MemoryTotal != 32768*mib || !m.Live || m.MemoryFree >= m.MemoryTotal || m.MemoryFree <= 0 {
		t.Errorf("h1 metrics %+v: want 32 GiB total, dom0 taking some", m)
	}
	// Getters, get_by_name_label and get_by_uuid agree with the record.
	var label string
	c.must(&label, "host.get_name_label", sess, h1Ref)
	var byName []string
	c.must(&byName, "host.get_by_name_label", sess, "h1")
	var byUUID string
	c.must(&byUUID, "host.get_by_uuid", sess, h1.UUID)
	if label != "h1" || !reflect.DeepEqual(byName, []string{h1Ref}) || byUUID != h1Ref {
		t.Errorf("getters: label=%q byName=%v byUUID=%q, want h1 / %s", label, byName, byUUID, h1Ref)
	}
	var none []string
	c.must(&none, "VM.get_by_name_label", sess, "no-such-vm")
	if none == nil || len(none) != 0 {
		t.Errorf("get_by_name_label(unknown) = %v, want []", none)
	}
	var srs map[string]srRecord
	c.must(&srs, "SR.get_all_records", sess)
	if len(srs) != 1 {
		t.Fatalf("SRs %v", srs)
	}
	for _, sr := range srs {
		if sr.NameLabel != "sr-a" || sr.PhysicalSize != 1<<40 || sr.PhysicalUtilisation != 0 || !sr.Shared {
			t.Errorf("SR %+v", sr)
		}
	}
	// Setters and map operations.
	var vms []string
	c.must(&vms, "VM.get_by_name_label", sess, OtherInstallMediaName)
	if len(vms) != 1 {
		t.Fatalf("default template: %v", vms)
	}
	c.must(nil, "VM.add_to_other_config", sess, vms[0], "k", "v")
	c.wantErr([]string{CodeMapDuplicateKey, "VM", "other_config", vms[0], "k"}, "VM.add_to_other_config", sess, vms[0], "k", "w")
	var oc map[string]string
	c.must(&oc, "VM.get_other_config", sess, vms[0])
	if oc["k"] != "v" {
		t.Errorf("other_config %v", oc)
	}
	c.must(nil, "VM.remove_from_other_config", sess, vms[0], "k")
	var after map[string]string
	c.must(&after, "VM.get_other_config", sess, vms[0])
	if _, ok := after["k"]; ok || after["install-methods"] != "cdrom" {
		t.Errorf("after remove_from_other_config: %v", after)
	}
	c.wantErr([]string{CodeFieldTypeError, "value"}, "VM.set_name_label", sess, vms[0], 42)
}

type vmRecord struct {
	UUID             string            `json:"uuid"`
	NameLabel        string            `json:"name_label"`
	PowerState       string            `json:"power_state"`
	IsATemplate      bool              `json:"is_a_template"`
	ResidentOn       string            `json:"resident_on"`
	VCPUsMax         int64             `json:"VCPUs_max"`
	VCPUsAtStartup   int64             `json:"VCPUs_at_startup"`
	MemoryStaticMax  int64             `json:"memory_static_max"`
	MemoryDynamicMax int64             `json:"memory_dynamic_max"`
	VBDs             []string          `json:"VBDs"`
	VIFs             []string          `json:"VIFs"`
	Metrics          string            `json:"metrics"`
	Domid            int64             `json:"domid"`
	AllowedOps       []string          `json:"allowed_operations"`
	OtherConfig      map[string]string `json:"other_config"`
}

// newVM clones the default template into a plain VM and returns its ref.
func newVM(c *rpcClient, sess, name string) string {
	c.t.Helper()
	var tpl []string
	c.must(&tpl, "VM.get_by_name_label", sess, OtherInstallMediaName)
	var vm string
	c.must(&vm, "VM.clone", sess, tpl[0], name)
	c.must(nil, "VM.provision", sess, vm)
	c.must(nil, "VM.set_is_a_template", sess, vm, false)
	return vm
}

func TestVMLifecycleErrors(t *testing.T) {
	_, c := start(t, Options{Hosts: []HostSpec{{Name: "h1", MemoryMB: 8192}, {Name: "h2", MemoryMB: 8192}}})
	sess := c.login()
	var tpl []string
	c.must(&tpl, "VM.get_by_name_label", sess, OtherInstallMediaName)
	c.wantErr([]string{CodeVMIsTemplate, tpl[0]}, "VM.start", sess, tpl[0], false, false)
	var clone string
	c.must(&clone, "VM.clone", sess, tpl[0], "v1")
	var rec vmRecord
	c.must(&rec, "VM.get_record", sess, clone)
	if !rec.IsATemplate || rec.NameLabel != "v1" || rec.PowerState != "Halted" {
		t.Errorf("clone of a template: %+v, want a halted template named v1", rec)
	}
	c.wantErr([]string{CodeVMIsTemplate, clone}, "VM.start", sess, clone, false, false)
	c.must(nil, "VM.set_is_a_template", sess, clone, false)

	var hosts []string
	c.must(&hosts, "host.get_by_name_label", sess, "h2")
	h2 := hosts[0]
	var freeBefore int64
	c.must(&freeBefore, "host.compute_free_memory", sess, h2)
	c.must(nil, "VM.set_memory_limits", sess, clone, 512*mib, 1024*mib, 1024*mib, 1024*mib)
	c.wantErr([]string{CodeMemoryConstraintViolation, "Memory limits must satisfy: static_min <= dynamic_min <= dynamic_max <= static_max"},
		"VM.set_memory_limits", sess, clone, 512*mib, 256*mib, 1024*mib, 1024*mib)
	c.wantErr([]string{CodeValueNotSupported, "VCPUs_at_startup", "2", "VCPUs_at_startup must be greater than 0 and less than or equal to VCPUs_max"},
		"VM.set_VCPUs_at_startup", sess, clone, 2)
	c.must(nil, "VM.set_VCPUs_max", sess, clone, 2)
	c.must(nil, "VM.set_VCPUs_at_startup", sess, clone, 2)

	c.must(nil, "VM.start_on", sess, clone, h2, false, false)
	c.must(&rec, "VM.get_record", sess, clone)
	if rec.PowerState != "Running" || rec.ResidentOn != h2 || rec.Domid <= 0 {
		t.Errorf("after start_on: %+v", rec)
	}
	var freeAfter int64
	c.must(&freeAfter, "host.compute_free_memory", sess, h2)
	if freeBefore-freeAfter != 1024*mib {
		t.Errorf("h2 free memory fell by %d, want %d", freeBefore-freeAfter, 1024*mib)
	}
	var vmm struct {
		MemoryActual int64              `json:"memory_actual"`
		VCPUsNumber  int64              `json:"VCPUs_number"`
		VCPUsUtil    map[string]float64 `json:"VCPUs_utilisation"`
		StartTime    string             `json:"start_time"`
	}
	c.must(&vmm, "VM_metrics.get_record", sess, rec.Metrics)
	if vmm.MemoryActual != 1024*mib || vmm.VCPUsNumber != 2 || len(vmm.VCPUsUtil) != 2 {
		t.Errorf("VM_metrics %+v", vmm)
	}
	if _, err := time.Parse(xapiTimeLayout, vmm.StartTime); err != nil {
		t.Errorf("start_time %q is not XAPI's datetime: %v", vmm.StartTime, err)
	}

	c.wantErr([]string{CodeVMBadPowerState, clone, "halted", "running"}, "VM.start", sess, clone, false, false)
	c.wantErr([]string{CodeVMBadPowerState, clone, "halted", "running"}, "VM.destroy", sess, clone)
	c.wantErr([]string{CodeVMBadPowerState, clone, "halted", "running"}, "VM.set_VCPUs_max", sess, clone, 4)
	c.wantErr([]string{CodeVMBadPowerState, clone, "halted", "running"}, "VM.clone", sess, clone, "x")
	c.wantErr([]string{CodeHandleInvalid, "host", "OpaqueRef:nohost"}, "VM.pool_migrate", sess, clone, "OpaqueRef:nohost", map[string]string{"live": "true"})

	var h1s []string
	c.must(&h1s, "host.get_by_name_label", sess, "h1")
	c.must(nil, "VM.pool_migrate", sess, clone, h1s[0], map[string]string{"live": "true"})
	c.must(&rec, "VM.get_record", sess, clone)
	if rec.ResidentOn != h1s[0] {
		t.Errorf("after pool_migrate resident_on %s, want h1 %s", rec.ResidentOn, h1s[0])
	}
	c.must(&freeAfter, "host.compute_free_memory", sess, h2)
	if freeAfter != freeBefore {
		t.Errorf("h2 free memory after the VM left: %d, want %d", freeAfter, freeBefore)
	}
	c.must(nil, "VM.clean_reboot", sess, clone)
	c.must(nil, "VM.clean_shutdown", sess, clone)
	c.wantErr([]string{CodeVMBadPowerState, clone, "running", "halted"}, "VM.clean_shutdown", sess, clone)
	c.wantErr([]string{CodeVMBadPowerState, clone, "running", "halted"}, "VM.hard_reboot", sess, clone)
	c.wantErr([]string{CodeVMBadPowerState, clone, "running", "halted"}, "VM.pool_migrate", sess, clone, h2, map[string]string{})

	// Too big for any host.
	c.must(nil, "VM.set_memory_limits", sess, clone, 512*mib, 64<<30, 64<<30, 64<<30)
	_, e := c.call("VM.start", sess, clone, false, false)
	if e == nil || e.Message != CodeHostNotEnoughFreeMemory || len(e.Data) != 2 || e.Data[0] != fmt.Sprint(int64(64<<30)) {
		t.Errorf("start of a 64 GiB VM: %+v, want HOST_NOT_ENOUGH_FREE_MEMORY [needed, available]", e)
	}
	c.must(nil, "VM.destroy", sess, clone)
	c.wantErr([]string{CodeHandleInvalid, "VM", clone}, "VM.get_record", sess, clone)
}

func TestDisksAndNICs(t *testing.T) {
	s, c := start(t, Options{SRs: []SRSpec{{Name: "lvm", Type: "lvm", SizeBytes: 10 << 30}}})
	sess := c.login()
	vm := newVM(c, sess, "disky")
	var srs []string
	c.must(&srs, "SR.get_by_name_label", sess, "lvm")
	rec := map[string]any{"SR": srs[0], "virtual_size": 4 << 30, "type": "system", "sharable": false,
		"read_only": false, "other_config": map[string]string{}, "name_label": "root"}
	var vdi string
	c.must(&vdi, "VDI.create", sess, rec)
	var sr srRecord
	c.must(&sr, "SR.get_record", sess, srs[0])
	if sr.PhysicalUtilisation != 4<<30 {
		t.Errorf("thick SR utilisation %d after a 4 GiB VDI, want %d", sr.PhysicalUtilisation, 4<<30)
	}
	rec["virtual_size"] = 7 << 30
	c.wantErr([]string{CodeSRFull, fmt.Sprint(7 << 30), fmt.Sprint(6 << 30)}, "VDI.create", sess, rec)
	delete(rec, "SR")
	c.wantErr([]string{CodeFieldTypeError, "SR"}, "VDI.create", sess, rec)

	vbd := map[string]any{"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": true, "mode": "RW", "type": "Disk",
		"empty": false, "other_config": map[string]string{}, "qos_algorithm_type": "", "qos_algorithm_params": map[string]string{}}
	var vbdRef string
	c.must(&vbdRef, "VBD.create", sess, vbd)
	c.wantErr([]string{CodeDeviceAlreadyExists, "0"}, "VBD.create", sess, vbd)

	var nets []string
	c.must(&nets, "network.get_by_name_label", sess, LinkLocalNetworkName)
	vif := map[string]any{"device": "0", "network": nets[0], "VM": vm, "MAC": "0E:00:A9:FE:01:02", "MTU": 1500,
		"other_config": map[string]string{}, "qos_algorithm_type": "", "qos_algorithm_params": map[string]string{}}
	var vifRef string
	c.must(&vifRef, "VIF.create", sess, vif)
	c.wantErr([]string{CodeDeviceAlreadyExists, "0"}, "VIF.create", sess, vif)
	vif["device"], vif["MAC"] = "1", "zz:00"
	c.wantErr([]string{CodeMACInvalid, "zz:00"}, "VIF.create", sess, vif)
	c.must(nil, "VIF.configure_ipv4", sess, vifRef, "Static", "169.254.1.2/16", "")
	var vifRec struct {
		MAC       string   `json:"MAC"`
		Addresses []string `json:"ipv4_addresses"`
		Mode      string   `json:"ipv4_configuration_mode"`
		Attached  bool     `json:"currently_attached"`
	}
	c.must(&vifRec, "VIF.get_record", sess, vifRef)
	if vifRec.MAC != "0e:00:a9:fe:01:02" || vifRec.Mode != "Static" || !reflect.DeepEqual(vifRec.Addresses, []string{"169.254.1.2/16"}) {
		t.Errorf("VIF record %+v", vifRec)
	}

	c.must(nil, "VM.start", sess, vm, false, false)
	c.must(&vifRec, "VIF.get_record", sess, vifRef)
	if !vifRec.Attached {
		t.Errorf("VIF not attached on a running VM")
	}
	c.wantErr([]string{CodeVDIInUse, vdi, "destroy"}, "VDI.destroy", sess, vdi)
	c.wantErr([]string{CodeDeviceAlreadyAttached, vifRef}, "VIF.destroy", sess, vifRef)
	c.must(nil, "VM.hard_shutdown", sess, vm)

	// VM.copy copies the disk; VM.destroy leaves VDIs, as XAPI does.
	var cp string
	c.must(&cp, "VM.copy", sess, vm, "disky-copy", NullRef)
	var cpRec vmRecord
	c.must(&cpRec, "VM.get_record", sess, cp)
	if len(cpRec.VBDs) != 1 || len(cpRec.VIFs) != 1 {
		t.Fatalf("copy has VBDs %v VIFs %v", cpRec.VBDs, cpRec.VIFs)
	}
	var cpVDI string
	c.must(&cpVDI, "VBD.get_VDI", sess, cpRec.VBDs[0])
	if cpVDI == vdi {
		t.Errorf("VM.copy shares the VDI")
	}
	c.must(nil, "VM.destroy", sess, vm)
	c.must(nil, "VDI.get_record", sess, vdi)
	c.must(nil, "VDI.destroy", sess, vdi)
	c.must(nil, "VDI.destroy", sess, cpVDI)
	c.must(&sr, "SR.get_record", sess, srs[0])
	if sr.PhysicalUtilisation != 0 {
		t.Errorf("SR utilisation %d after destroying every VDI", sr.PhysicalUtilisation)
	}
	_ = s
}

func TestProvision(t *testing.T) {
	_, c := start(t, Options{})
	sess := c.login()
	var tpl []string
	c.must(&tpl, "VM.get_by_name_label", sess, OtherInstallMediaName)
	var vm string
	c.must(&vm, "VM.clone", sess, tpl[0], "prov")
	c.must(nil, "VM.add_to_other_config", sess, vm, "disks",
		`<provision><disk device="0" size="1073741824" sr="" bootable="true" type="system"/></provision>`)
	c.must(nil, "VM.provision", sess, vm)
	var rec vmRecord
	c.must(&rec, "VM.get_record", sess, vm)
	if len(rec.VBDs) != 1 {
		t.Fatalf("provision made VBDs %v, want 1", rec.VBDs)
	}
	if _, ok := rec.OtherConfig["disks"]; ok {
		t.Errorf("provision left other_config:disks")
	}
	var vdi string
	c.must(&vdi, "VBD.get_VDI", sess, rec.VBDs[0])
	var size int64
	c.must(&size, "VDI.get_virtual_size", sess, vdi)
	if size != 1<<30 {
		t.Errorf("provisioned VDI size %d", size)
	}
	c.must(nil, "VM.set_is_a_template", sess, vm, false)
	c.wantErr([]string{CodeProvisionOnlyAllowedOnTemplate}, "VM.provision", sess, vm)
}

func TestXMLRPC(t *testing.T) {
	_, c := start(t, Options{})
	post := func(body string) string {
		t.Helper()
		resp, err := http.Post(c.url+"/", "text/xml", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST /: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	call := func(method string, params ...string) string {
		var b strings.Builder
		b.WriteString("<?xml version='1.0'?><methodCall><methodName>" + method + "</methodName><params>")
		for _, p := range params {
			b.WriteString("<param>" + p + "</param>")
		}
		b.WriteString("</params></methodCall>")
		return post(b.String())
	}
	bad := call("session.login_with_password", "<value><string>root</string></value>", "<value>nope</value>")
	want := "<member><name>ErrorDescription</name><value><array><data><value>SESSION_AUTHENTICATION_FAILED</value><value>root</value><value>Authentication failure</value></data></array></value></member><member><name>Status</name><value>Failure</value></member>"
	if !strings.Contains(bad, want) {
		t.Errorf("XML-RPC failure answer:\n%s\nlacks\n%s", bad, want)
	}
	ok := call("session.login_with_password", "<value><string>root</string></value>", "<value>xapisim</value>",
		"<value>1.0</value>", "<value>test</value>")
	m := regexp.MustCompile(`<name>Value</name><value>(OpaqueRef:[^<]+)</value>`).FindStringSubmatch(ok)
	if m == nil || !strings.Contains(ok, "<name>Status</name><value>Success</value>") {
		t.Fatalf("XML-RPC login answer: %s", ok)
	}
	sess := "<value>" + m[1] + "</value>"
	hosts := call("host.get_all_records", sess)
	// XAPI sends ints as strings on XML-RPC: API_version_major is <value>2</value>.
	if !strings.Contains(hosts, "<name>API_version_major</name><value>2</value>") ||
		!strings.Contains(hosts, "<name>enabled</name><value><boolean>1</boolean></value>") {
		t.Errorf("host records over XML-RPC: %.600s", hosts)
	}
	// Struct and int parameters decode: set memory limits on a fresh VM.
	var tpl []string
	jsess := m[1]
	c.must(&tpl, "VM.get_by_name_label", jsess, OtherInstallMediaName)
	var vm string
	c.must(&vm, "VM.clone", jsess, tpl[0], "xml")
	ans := call("VM.set_memory_limits", sess, "<value>"+vm+"</value>", "<value><i8>268435456</i8></value>",
		"<value>536870912</value>", "<value>536870912</value>", "<value><int>536870912</int></value>")
	if !strings.Contains(ans, "<value>Success</value>") {
		t.Errorf("set_memory_limits over XML-RPC: %s", ans)
	}
	var smax int64
	c.must(&smax, "VM.get_memory_static_max", jsess, vm)
	if smax != 512*mib {
		t.Errorf("static_max %d after XML-RPC set_memory_limits", smax)
	}
	ans = call("VM.add_to_xenstore_data", sess, "<value>"+vm+"</value>", "<value>vm-data/x</value>", "<value>a &amp; b</value>")
	var xsd map[string]string
	c.must(&xsd, "VM.get_xenstore_data", jsess, vm)
	if xsd["vm-data/x"] != "a & b" {
		t.Errorf("xenstore_data %v (answer %s)", xsd, ans)
	}
}

func TestAsyncTask(t *testing.T) {
	_, c := start(t, Options{OpDelay: 50 * time.Millisecond})
	sess := c.login()
	vm := newVM(c, sess, "async")
	var task string
	c.must(&task, "Async.VM.clone", sess, vm, "async-clone")
	var rec struct {
		Status    string   `json:"status"`
		Result    string   `json:"result"`
		ErrorInfo []string `json:"error_info"`
		Progress  float64  `json:"progress"`
	}
	c.must(&rec, "task.get_record", sess, task)
	if rec.Status != "pending" {
		t.Errorf("task status right after Async call: %q, want pending", rec.Status)
	}
	deadline := time.Now().Add(5 * time.Second)
	for rec.Status == "pending" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		c.must(&rec, "task.get_record", sess, task)
	}
	m := regexp.MustCompile(`^<value>(OpaqueRef:[^<]+)</value>$`).FindStringSubmatch(rec.Result)
	if rec.Status != "success" || m == nil || rec.Progress != 1 {
		t.Fatalf("task %+v, want success with an XML <value>OpaqueRef</value> result", rec)
	}
	var name string
	c.must(&name, "VM.get_name_label", sess, m[1])
	if name != "async-clone" {
		t.Errorf("cloned VM name %q", name)
	}
	c.must(&task, "Async.VM.clean_shutdown", sess, vm)
	for i := 0; i < 500; i++ {
		c.must(&rec, "task.get_record", sess, task)
		if rec.Status != "pending" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rec.Status != "failure" || !reflect.DeepEqual(rec.ErrorInfo, []string{CodeVMBadPowerState, vm, "running", "halted"}) {
		t.Errorf("failed async task %+v", rec)
	}
	c.wantErr([]string{CodeMessageMethodUnknown, "Async.VM.get_record"}, "Async.VM.get_record", sess, vm)
}

func TestOtherOperationInProgress(t *testing.T) {
	_, c := start(t, Options{OpDelay: 300 * time.Millisecond})
	sess := c.login()
	vm := newVM(c, sess, "busy")
	var wg sync.WaitGroup
	wg.Add(1)
	var first *v2Error
	go func() {
		defer wg.Done()
		c2 := &rpcClient{t: t, url: c.url}
		_, first = c2.call("VM.start", sess, vm, false, false)
	}()
	// Wait until the start is in flight, then try another operation on the same VM.
	deadline := time.Now().Add(5 * time.Second)
	var ops map[string]string
	for time.Now().Before(deadline) {
		c.must(&ops, "VM.get_current_operations", sess, vm)
		if len(ops) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(ops) != 1 {
		t.Fatalf("current_operations %v while starting", ops)
	}
	_, e := c.call("VM.destroy", sess, vm)
	if e == nil || e.Message != CodeOtherOperationInProgress || len(e.Data) != 3 || e.Data[0] != "VM" || e.Data[2] != "start" {
		t.Errorf("destroy during start: %+v, want OTHER_OPERATION_IN_PROGRESS [VM, ref, start]", e)
	}
	wg.Wait()
	if first != nil {
		t.Errorf("start: %+v", first)
	}
	var state string
	c.must(&state, "VM.get_power_state", sess, vm)
	if state != "Running" {
		t.Errorf("power_state %q after start", state)
	}
}

func TestFaults(t *testing.T) {
	s, c := start(t, Options{})
	sess := c.login()
	s.InjectFault(Fault{Method: "VM.get_all", Code: CodeTooBusy, Times: 2})
	c.wantErr([]string{CodeTooBusy}, "VM.get_all", sess)
	c.wantErr([]string{CodeTooBusy}, "VM.get_all", sess)
	c.must(nil, "VM.get_all", sess)
	if n := s.CallCount("VM.get_all"); n != 3 {
		t.Errorf("CallCount = %d, want 3", n)
	}
	s.InjectFault(Fault{Method: "host.get_all", Drop: true, Times: 1})
	body := `{"jsonrpc":"2.0","method":"host.get_all","params":["` + sess + `"],"id":1}`
	if resp, err := http.Post(c.url+"/jsonrpc", "application/json", strings.NewReader(body)); err == nil {
		resp.Body.Close()
		t.Errorf("dropped call answered HTTP %d", resp.StatusCode)
	}
	c.must(nil, "host.get_all", sess)
	s.InjectFault(Fault{Method: "*", Code: CodeSessionInvalid, Params: []string{sess}})
	c.wantErr([]string{CodeSessionInvalid, sess}, "pool.get_all", sess)
	s.ClearFaults()
	c.must(nil, "pool.get_all", sess)
}

func TestImportRawVDI(t *testing.T) {
	s, c := start(t, Options{})
	sess := c.login()
	var srs []string
	c.must(&srs, "SR.get_by_name_label", sess, DefaultSRName)
	data := bytes.Repeat([]byte("sysvm-template-"), 1<<14)
	img := FixedVHD(data)
	virt := int64(len(img) - 512)
	var vdi string
	c.must(&vdi, "VDI.create", sess, map[string]any{"SR": srs[0], "virtual_size": virt, "type": "user",
		"sharable": false, "read_only": false, "other_config": map[string]string{}})
	put := func(query string, body []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, c.url+"/import_raw_vdi?"+query, bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("PUT: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := put("session_id=OpaqueRef:bad&vdi="+vdi+"&format=vhd", img); code != http.StatusUnauthorized {
		t.Errorf("import with a bad session: HTTP %d, want 401", code)
	}
	if code, _ := put("session_id="+sess+"&vdi=OpaqueRef:none&format=vhd", img); code != http.StatusNotFound {
		t.Errorf("import into an unknown VDI: HTTP %d, want 404", code)
	}
	corrupt := append([]byte{}, img...)
	corrupt[len(corrupt)-1] ^= 0xff
	if code, body := put("session_id="+sess+"&vdi="+vdi+"&format=vhd", corrupt); code != http.StatusBadRequest || !strings.Contains(body, CodeVDIIOError) {
		t.Errorf("corrupt VHD: HTTP %d %q, want 400 VDI_IO_ERROR", code, body)
	}
	if code, body := put("session_id="+sess+"&vdi="+vdi+"&format=raw", append(img, 0)); code != http.StatusBadRequest || !strings.Contains(body, CodeVDITooSmall) {
		t.Errorf("oversized raw import: HTTP %d %q, want 400 VDI_TOO_SMALL", code, body)
	}
	var task string
	c.must(&task, "task.create", sess, "import", "test import")
	var uuid string
	c.must(&uuid, "VDI.get_uuid", sess, vdi)
	// The vdi parameter may be a uuid too.
	if code, body := put("session_id="+sess+"&vdi="+uuid+"&format=vhd&task_id="+task, img); code != http.StatusOK {
		t.Fatalf("import: HTTP %d %q", code, body)
	}
	size, sum, ok := s.VDIContent(uuid)
	want := sha256.Sum256(img)
	if !ok || size != int64(len(img)) || sum != hex.EncodeToString(want[:]) {
		t.Errorf("VDI content size=%d sha=%s ok=%v, want %d %x", size, sum, ok, len(img), want)
	}
	var st string
	c.must(&st, "task.get_status", sess, task)
	if st != "success" {
		t.Errorf("import task status %q", st)
	}
	var phys int64
	c.must(&phys, "VDI.get_physical_utilisation", sess, vdi)
	if phys != int64(len(img)) {
		t.Errorf("thin VDI physical_utilisation %d, want %d", phys, len(img))
	}
}

// TestImportAuthentication: the import handler takes credentials as XAPI's HTTP handlers do
// (Xapi_http.assert_credentials_ok): a session_id cookie first, then a session_id query
// parameter, then HTTP basic auth; an unknown Authorization scheme is an error, nothing 401.
func TestImportAuthentication(t *testing.T) {
	s, c := start(t, Options{})
	sess := c.login()
	user, pass := s.Credentials()
	var srs []string
	c.must(&srs, "SR.get_by_name_label", sess, DefaultSRName)
	img := FixedVHD(bytes.Repeat([]byte("x"), 4096))
	var vdi string
	c.must(&vdi, "VDI.create", sess, map[string]any{"SR": srs[0], "virtual_size": int64(len(img) - 512), "type": "user",
		"sharable": false, "read_only": false, "other_config": map[string]string{}})
	put := func(query string, auth func(*http.Request)) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, c.url+"/import_raw_vdi?vdi="+vdi+"&format=vhd"+query, bytes.NewReader(img))
		auth(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("PUT: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cookie := func(v string) func(*http.Request) {
		return func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "session_id", Value: v}) }
	}
	basic := func(u, p string) func(*http.Request) { return func(r *http.Request) { r.SetBasicAuth(u, p) } }
	none := func(*http.Request) {}
	for _, tc := range []struct {
		name  string
		query string
		auth  func(*http.Request)
		want  int
	}{
		{"cookie", "", cookie(sess), http.StatusOK},
		{"query", "&session_id=" + sess, none, http.StatusOK},
		{"basic", "", basic(user, pass), http.StatusOK},
		{"cookie wins over a bad query", "&session_id=OpaqueRef:bad", cookie(sess), http.StatusOK},
		{"bad cookie wins over a good query", "&session_id=" + sess, cookie("OpaqueRef:bad"), http.StatusUnauthorized},
		{"bad cookie is not rescued by basic auth", "", func(r *http.Request) { cookie("OpaqueRef:bad")(r); basic(user, pass)(r) }, http.StatusUnauthorized},
		{"wrong password", "", basic(user, "wrong"), http.StatusUnauthorized},
		{"unknown scheme", "", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+sess) }, http.StatusInternalServerError},
		{"nothing", "", none, http.StatusUnauthorized},
	} {
		if got := put(tc.query, tc.auth); got != tc.want {
			t.Errorf("%s: HTTP %d, want %d", tc.name, got, tc.want)
		}
	}
	for how, want := range map[string]int{AuthCookie: 2, AuthQuery: 1, AuthBasic: 1} {
		if got := s.HTTPAuthCount(how); got != want {
			t.Errorf("HTTPAuthCount(%s) = %d, want %d", how, got, want)
		}
	}
	// A fault on the handler applies after authentication.
	s.InjectFault(Fault{Method: ImportRawVDIMethod, Code: CodeVDIIOError, Times: 1})
	if got := put("", cookie(sess)); got != http.StatusInternalServerError {
		t.Errorf("injected fault: HTTP %d, want 500", got)
	}
	if got := put("", cookie(sess)); got != http.StatusOK {
		t.Errorf("after the fault: HTTP %d, want 200", got)
	}
	if got := s.CallCount(ImportRawVDIMethod); got != 6 {
		t.Errorf("CallCount(%s) = %d, want 6 authenticated calls", ImportRawVDIMethod, got)
	}
}

func TestStartRefusesNonLoopback(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	if _, err := s.Start("0.0.0.0:0"); err == nil {
		t.Fatal("Start on 0.0.0.0 succeeded; the simulator must stay on loopback")
	}
}

func TestVHDFooter(t *testing.T) {
	img := FixedVHD(make([]byte, 1000))
	if len(img) != 1024+512 {
		t.Fatalf("FixedVHD of 1000 bytes is %d bytes, want 1536 (padded to 1024 + footer)", len(img))
	}
	f, err := parseVHDFooter(img[len(img)-512:])
	if err != nil || f.CurrentSize != 1024 || f.DiskType != vhdTypeFixed {
		t.Errorf("footer %+v err %v", f, err)
	}
	img[len(img)-400] ^= 1
	if _, err := parseVHDFooter(img[len(img)-512:]); err == nil {
		t.Error("a corrupted footer passed its checksum")
	}
}

// TestArgumentDecoding: every method's parameters decode in one place (decodeArgs) by their
// declared kinds, in order, with XAPI's errors, on JSON-RPC and XML-RPC alike, and inside the
// task for Async calls.
func TestArgumentDecoding(t *testing.T) {
	s, c := start(t, Options{})
	for name, m := range s.methods {
		for _, p := range m.params {
			if p.name == "" {
				t.Errorf("%s: a parameter without a name", name)
			}
			if (p.kind == argRef || p.kind == argRefOrNull) && s.db.classes[p.class] == nil {
				t.Errorf("%s: parameter %s refers to unknown class %q", name, p.name, p.class)
			}
		}
	}
	sess := c.login()
	vm := newVM(c, sess, "decode")
	c.wantErr([]string{CodeFieldTypeError, "start_paused"}, "VM.start", sess, vm, "maybe", false)
	c.wantErr([]string{CodeFieldTypeError, "force"}, "VM.start", sess, vm, false, 7)
	// The first bad parameter is the one reported.
	c.wantErr([]string{CodeHandleInvalid, classVM, "OpaqueRef:none"}, "VM.start", sess, "OpaqueRef:none", "maybe", false)
	c.wantErr([]string{CodeFieldTypeError, "vm"}, "VM.start", sess, 12, false, false)
	c.wantErr([]string{CodeFieldTypeError, "static_max"}, "VM.set_memory_limits", sess, vm, 1, "lots", 1, 1)
	c.wantErr([]string{CodeHandleInvalid, classHost, "OpaqueRef:nohost"}, "VM.set_affinity", sess, vm, "OpaqueRef:nohost")
	c.must(nil, "VM.set_affinity", sess, vm, NullRef)
	c.wantErr([]string{CodeFieldTypeError, "options"}, "VM.pool_migrate", sess, vm, s.db.classes[classHost].refs()[0], "fast")
	c.wantErr([]string{CodeFieldTypeError, "args"}, "VIF.create", sess, "not a record")
	// Record fields decode in their declared order: a missing or mistyped field is named.
	var nets []string
	c.must(&nets, "network.get_all", sess)
	vif := map[string]any{"device": "0", "network": nets[0], "VM": vm, "MAC": "", "MTU": 1500, "other_config": map[string]any{}}
	delete(vif, "device")
	c.wantErr([]string{CodeFieldTypeError, "device"}, "VIF.create", sess, vif)
	vif["device"], vif["MTU"] = "0", "jumbo"
	c.wantErr([]string{CodeFieldTypeError, "MTU"}, "VIF.create", sess, vif)
	vif["MTU"] = 1500
	var vifRef string
	c.must(&vifRef, "VIF.create", sess, vif)
	var locking string
	c.must(&locking, "VIF.get_locking_mode", sess, vifRef)
	if locking != "network_default" {
		t.Errorf("VIF.create without locking_mode: %q, want the default network_default", locking)
	}

	// XML-RPC carries ints as strings; a string that is no int is a FIELD_TYPE_ERROR there too.
	body := "<?xml version='1.0'?><methodCall><methodName>VM.set_VCPUs_max</methodName><params>" +
		"<param><value>" + sess + "</value></param><param><value>" + vm + "</value></param>" +
		"<param><value>many</value></param></params></methodCall>"
	resp, err := http.Post(c.url+"/", "text/xml", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	ans, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(ans), "<value>"+CodeFieldTypeError+"</value><value>value</value>") {
		t.Errorf("XML-RPC set_VCPUs_max with a non-int: %s", ans)
	}

	// Async: the call answers a task, and the task fails with the decoding error.
	var task string
	c.must(&task, "Async.VM.start", sess, "OpaqueRef:gone", false, false)
	var st string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c.must(&st, "task.get_status", sess, task); st != "pending" {
			break
		}
	}
	if st != "failure" {
		t.Fatalf("Async.VM.start of an unknown VM: task %s, want failure", st)
	}
	var info []string
	c.must(&info, "task.get_error_info", sess, task)
	if len(info) != 3 || info[0] != CodeHandleInvalid || info[2] != "OpaqueRef:gone" {
		t.Errorf("Async.VM.start of an unknown VM: task error_info %v, want HANDLE_INVALID", info)
	}
}

// TestLatency: a latency rule delays matching calls by its Delay (Times of them, then none),
// with the server lock released meanwhile, so other calls answer at once; ClearLatencies
// removes the rules.
func TestLatency(t *testing.T) {
	s, c := start(t, Options{})
	sess := c.login()
	const delay = 300 * time.Millisecond
	s.InjectLatency(Latency{Method: "VM.get_all", Delay: delay, Times: 1})
	done := make(chan time.Duration, 1)
	begin := time.Now()
	slowClient := &rpcClient{t: t, url: c.url} // its own id counter
	go func() {
		_, e := slowClient.call("VM.get_all", sess)
		if e != nil {
			t.Errorf("delayed VM.get_all: %+v", e)
		}
		done <- time.Since(begin)
	}()
	time.Sleep(50 * time.Millisecond)
	other := time.Now()
	c.must(nil, "pool.get_all", sess) // not held up by the slow call
	if d := time.Since(other); d >= delay/2 {
		t.Errorf("pool.get_all took %s while VM.get_all waited: the lock is held", d)
	}
	if d := <-done; d < delay {
		t.Errorf("delayed VM.get_all took %s, want at least %s", d, delay)
	}
	quick := time.Now()
	c.must(nil, "VM.get_all", sess) // Times: 1 was used up
	if d := time.Since(quick); d >= delay/2 {
		t.Errorf("second VM.get_all took %s after its one delay was used", d)
	}
	s.InjectLatency(Latency{Method: "*", Delay: delay})
	slow := time.Now()
	c.must(nil, "host.get_all", sess)
	if d := time.Since(slow); d < delay {
		t.Errorf(`host.get_all under a "*" rule took %s, want at least %s`, d, delay)
	}
	s.ClearLatencies()
	quick = time.Now()
	c.must(nil, "host.get_all", sess)
	if d := time.Since(quick); d >= delay/2 {
		t.Errorf("host.get_all took %s after ClearLatencies", d)
	}
	if n := s.CallCount("VM.get_all"); n != 2 {
		t.Errorf("CallCount(VM.get_all) = %d, want 2", n)
	}
}
