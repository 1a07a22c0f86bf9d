package vmware

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sysvm/sysvm/hypervisors"
)

// TestMapErrKinds checks the fault/transport → kind table on the error shapes govmomi
// produces: SOAP faults, task faults with nested causes, and transport errors.
func TestMapErrKinds(t *testing.T) {
	taskErr := func(f types.BaseMethodFault) error {
		return task.Error{LocalizedMethodFault: &types.LocalizedMethodFault{Fault: f, LocalizedMessage: "boom"}}
	}
	soapErr := func(f types.BaseMethodFault) error {
		return soap.WrapSoapFault(&soap.Fault{Code: "ServerFaultCode", String: "boom", Detail: struct {
			Fault types.AnyType `xml:",any,typeattr"`
		}{Fault: f}})
	}
	nested := &types.SystemError{RuntimeFault: types.RuntimeFault{MethodFault: types.MethodFault{
		FaultCause: &types.LocalizedMethodFault{Fault: &types.InvalidPowerState{ExistingState: types.VirtualMachinePowerStatePoweredOn}},
	}}}
	for _, tc := range []struct {
		name string
		err  error
		want error // nil: no kind (retryable)
	}{
		{"InvalidLogin", soapErr(&types.InvalidLogin{}), hypervisors.ErrAuth},
		{"NoPermission", soapErr(&types.NoPermission{}), hypervisors.ErrAuth},
		{"ManagedObjectNotFound", soapErr(&types.ManagedObjectNotFound{}), hypervisors.ErrNotFound},
		{"NotFound task", taskErr(&types.NotFound{}), hypervisors.ErrNotFound},
		{"FileNotFound", taskErr(&types.FileNotFound{}), hypervisors.ErrNotFound},
		{"InvalidPowerState task", taskErr(&types.InvalidPowerState{}), hypervisors.ErrBadState},
		{"InvalidState", soapErr(&types.InvalidState{}), hypervisors.ErrBadState},
		{"ToolsUnavailable", soapErr(&types.ToolsUnavailable{}), hypervisors.ErrBadState},
		{"nested cause", taskErr(nested), hypervisors.ErrBadState},
		{"DuplicateName", taskErr(&types.DuplicateName{Name: "r-1-VM"}), hypervisors.ErrAlreadyExists},
		{"FileAlreadyExists", taskErr(&types.FileAlreadyExists{}), hypervisors.ErrAlreadyExists},
		{"HostCommunication", taskErr(&types.HostCommunication{}), hypervisors.ErrUnreachable},
		{"HostNotConnected", soapErr(&types.HostNotConnected{}), hypervisors.ErrUnreachable},
		{"NotSupported", soapErr(&types.NotSupported{}), hypervisors.ErrUnsupported},
		{"InvalidArgument", soapErr(&types.InvalidArgument{InvalidProperty: "x"}), hypervisors.ErrInvalid},
		{"TaskInProgress", soapErr(&types.TaskInProgress{}), nil},
		{"SystemError", taskErr(&types.SystemError{Reason: "transient"}), nil},
		{"wrapped", fmt.Errorf("clone: %w", taskErr(&types.DuplicateName{})), hypervisors.ErrAlreadyExists},
		{"deadline", fmt.Errorf("post: %w", context.DeadlineExceeded), hypervisors.ErrUnreachable},
		{"dial", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, hypervisors.ErrUnreachable},
		{"untrusted cert", x509.UnknownAuthorityError{}, hypervisors.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mapErr("op", "obj", tc.err)
			var he *hypervisors.Error
			if tc.want == nil {
				if errors.As(got, &he) || !hypervisors.Retryable(got) {
					t.Fatalf("mapErr(%v) = %v (kind %q), want no kind and retryable", tc.err, got, hypervisors.KindName(got))
				}
				return
			}
			if !errors.As(got, &he) || !errors.Is(got, tc.want) {
				t.Fatalf("mapErr(%v) = %#v, want *hypervisors.Error of kind %v", tc.err, got, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("the cause is not kept: %v", got)
			}
			if hypervisors.Retryable(got) != (tc.want == hypervisors.ErrUnreachable) {
				t.Errorf("Retryable(%v) = %v", got, hypervisors.Retryable(got))
			}
		})
	}
}

// TestConnectFaults checks connection-level failures against real sockets.
func TestConnectFaults(t *testing.T) {
	s := startSim(t, 1, 1, 2)
	ctx := testCtx(t)

	wrong := s.conn
	wrong.Password = "wrong-password"
	if _, err := Connect(ctx, wrong); !errors.Is(err, hypervisors.ErrAuth) || hypervisors.Retryable(err) {
		t.Errorf("wrong password = %v, want final ErrAuth", err)
	} else if strings.Contains(err.Error(), "wrong-password") {
		t.Errorf("the password leaked into the error: %v", err)
	}

	strict := s.conn
	strict.Insecure = false
	if _, err := Connect(ctx, strict); !errors.Is(err, hypervisors.ErrInvalid) {
		t.Errorf("self-signed certificate without Insecure = %v, want ErrInvalid", err)
	}

	nodc := s.conn
	nodc.Datacenter = "no-such-dc"
	if _, err := Connect(ctx, nodc); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("unknown datacenter = %v, want ErrNotFound", err)
	}

	// A port nobody listens on: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	_ = l.Close()
	refused := s.conn
	refused.Endpoint = "https://" + closed + "/sdk"
	if _, err := Connect(ctx, refused); !errors.Is(err, hypervisors.ErrUnreachable) || !hypervisors.Retryable(err) {
		t.Errorf("connection refused = %v, want retryable ErrUnreachable", err)
	}

	// A peer that accepts and never answers: the caller's deadline makes it ErrUnreachable.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	hung := s.conn
	hung.Endpoint = "https://" + silent.Addr().String() + "/sdk"
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Connect(sctx, hung); !errors.Is(err, hypervisors.ErrUnreachable) {
		t.Errorf("silent peer = %v, want ErrUnreachable", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("silent peer took %v; the deadline was not honoured", el)
	}
}

// TestInjectedFaults drives vCenter faults through vcsim's fault injector (the SOAP fault
// travels the wire) and checks the kinds, including a retryable path that succeeds on retry.
func TestInjectedFaults(t *testing.T) {
	s := startSim(t, 1, 1, 2)
	d := s.open(t)
	ctx := testCtx(t)
	svc := s.model.Service
	if _, err := d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl", Pool: "LocalDS_0", SizeBytes: 1 << 30}, nil); err != nil {
		t.Fatal(err)
	}
	spec := hypervisors.VMSpec{Name: "v-1-VM", Host: "DC0_C0_H0", Pool: "LocalDS_0", Template: "tpl", CPUs: 1, MemoryMB: 256}
	if _, err := d.CreateVM(ctx, spec); err != nil {
		t.Fatal(err)
	}

	inject := func(method string, f types.BaseMethodFault, delayMs int) {
		svc.ClearFaultRules()
		svc.AddFaultRule(&simulator.FaultInjectionRule{
			MethodName: method, ObjectType: "*", ObjectName: "*", Probability: 1, MaxCount: 1,
			FaultType: simulator.FaultTypeCustom, Fault: f, Delay: delayMs, Enabled: true,
		})
	}
	defer svc.ClearFaultRules()

	// The ESXi host stops answering vCenter once: retryable, and the retry works.
	inject("PowerOnVM_Task", &types.HostCommunication{}, 0)
	err := d.StartVM(ctx, "v-1-VM")
	if !errors.Is(err, hypervisors.ErrUnreachable) || !hypervisors.Retryable(err) {
		t.Fatalf("StartVM with HostCommunication = %v, want retryable ErrUnreachable", err)
	}
	if vi, _ := d.GetVM(ctx, "v-1-VM"); vi.State != hypervisors.PowerStopped {
		t.Fatalf("VM is %s after a failed start", vi.State)
	}
	if err := d.StartVM(ctx, "v-1-VM"); err != nil {
		t.Fatalf("StartVM retry: %v", err)
	}

	// vCenter too slow: the caller's deadline turns into a retryable ErrUnreachable.
	inject("PowerOffVM_Task", &types.SystemError{Reason: "slow"}, 1500)
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = d.StopVM(sctx, "v-1-VM", true)
	cancel()
	if !errors.Is(err, hypervisors.ErrUnreachable) || !hypervisors.Retryable(err) {
		t.Fatalf("StopVM past its deadline = %v, want retryable ErrUnreachable", err)
	}
	time.Sleep(1600 * time.Millisecond) // let the delayed fault finish on the server
	if err := d.StopVM(ctx, "v-1-VM", true); err != nil {
		t.Fatalf("StopVM retry: %v", err)
	}

	inject("CloneVM_Task", &types.DuplicateName{Name: "v-2-VM"}, 0)
	dup := spec
	dup.Name = "v-2-VM"
	if _, err := d.CreateVM(ctx, dup); !errors.Is(err, hypervisors.ErrAlreadyExists) {
		t.Errorf("CreateVM with DuplicateName = %v, want ErrAlreadyExists", err)
	}

	inject("ReconfigVM_Task", &types.ManagedObjectNotFound{}, 0)
	if err := d.ScaleVM(ctx, "v-1-VM", 2, 512); !errors.Is(err, hypervisors.ErrNotFound) {
		t.Errorf("ScaleVM with ManagedObjectNotFound = %v, want ErrNotFound", err)
	}

	inject("ResetVM_Task", &types.InvalidPowerState{ExistingState: types.VirtualMachinePowerStatePoweredOff}, 0)
	if err := d.StartVM(ctx, "v-1-VM"); err != nil {
		t.Fatal(err)
	}
	if err := d.RebootVM(ctx, "v-1-VM"); !errors.Is(err, hypervisors.ErrBadState) {
		t.Errorf("RebootVM with InvalidPowerState = %v, want ErrBadState", err)
	}

	// A NotAuthenticated answer while the session is in fact valid (e.g. renewed by a
	// concurrent call): retryable, and the retry works without a new login.
	inject("PowerOffVM_Task", &types.NotAuthenticated{}, 0)
	if err := d.StopVM(ctx, "v-1-VM", true); !errors.Is(err, hypervisors.ErrUnreachable) {
		t.Errorf("StopVM with NotAuthenticated = %v, want retryable ErrUnreachable", err)
	}
	if err := d.StopVM(ctx, "v-1-VM", true); err != nil {
		t.Errorf("StopVM retry after NotAuthenticated: %v", err)
	}

	inject("RetrievePropertiesEx", &types.NoPermission{PrivilegeId: "System.Read"}, 0)
	if _, err := d.Hosts(ctx); !errors.Is(err, hypervisors.ErrAuth) {
		t.Errorf("Hosts with NoPermission = %v, want ErrAuth", err)
	}
}

// TestLostSession: an administrator terminates the driver's session; the next call fails
// retryably after the driver has logged in again, and the retry succeeds.
func TestLostSession(t *testing.T) {
	s := startSim(t, 1, 1, 2)
	d := s.open(t)
	ctx := testCtx(t)
	mine, err := d.sm.UserSession(ctx)
	if err != nil || mine == nil {
		t.Fatalf("driver session: %v", err)
	}
	admin := s.open(t)
	if err := session.NewManager(admin.c).TerminateSession(ctx, []string{mine.Key}); err != nil {
		t.Fatalf("terminate session: %v", err)
	}
	_, err = d.Hosts(ctx)
	if !errors.Is(err, hypervisors.ErrUnreachable) || !hypervisors.Retryable(err) {
		t.Fatalf("Hosts with a terminated session = %v, want retryable ErrUnreachable", err)
	}
	hosts, err := d.Hosts(ctx)
	if err != nil || len(hosts) != 2 {
		t.Fatalf("Hosts after re-login = %v, %v", hosts, err)
	}
	again, err := d.sm.UserSession(ctx)
	if err != nil || again == nil || again.Key == mine.Key {
		t.Errorf("no new session after re-login: %+v, %v", again, err)
	}
}

// TestExternalDestroy: a VM deleted behind the driver's back (the name cache is stale) is
// ErrNotFound, not an error of another kind.
func TestExternalDestroy(t *testing.T) {
	s := startSim(t, 1, 1, 2)
	d := s.open(t)
	ctx := testCtx(t)
	if _, err := d.SeedTemplate(ctx, hypervisors.TemplateSpec{Name: "tpl", Pool: "LocalDS_0", SizeBytes: 1 << 30}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateVM(ctx, hypervisors.VMSpec{Name: "x-1-VM", Host: "DC0_C0_H0", Pool: "LocalDS_0", Template: "tpl", CPUs: 1, MemoryMB: 128}); err != nil {
		t.Fatal(err)
	}
	other := s.open(t)
	if err := other.DestroyVM(ctx, "x-1-VM"); err != nil {
		t.Fatal(err)
	}
	for op, err := range map[string]error{
		"GetVM":     second(d.GetVM(ctx, "x-1-VM")),
		"StartVM":   d.StartVM(ctx, "x-1-VM"),
		"DestroyVM": d.DestroyVM(ctx, "x-1-VM"),
	} {
		if !errors.Is(err, hypervisors.ErrNotFound) {
			t.Errorf("%s after external destroy = %v, want ErrNotFound", op, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }
