package activities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/diagnostics"
	"github.com/sysvm/sysvm/models"
)

// ErrTypeDiagnostics types a diagnostics command that could not be run in the VM (no SSH
// executor, the VM not running, no route to the address for arping).
const ErrTypeDiagnostics = "DiagnosticsFailed"

// DiagnosticsInput asks RunDiagnostics to run one command in a system VM. The fields are as
// the API validated them; the activity validates them again (a workflow may be started by
// hand).
type DiagnosticsInput struct {
	OperationID string `json:"operationId"`
	VMID        string `json:"vmId"`
	Type        string `json:"type"`
	IPAddress   string `json:"ipAddress"`
	Params      string `json:"params,omitempty"`
	// TimeoutSeconds is the time limit inside the VM (0: diagnostics.DefaultTimeout).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// RunDiagnostics runs ping, traceroute or arping inside a running system VM over SSH on 3922,
// as an argument vector (never through a shell), within the request's time limit, and stores
// the output and exit code as a DiagnosticsResult of the VM. arping without an interface of
// its own is given the VM's interface towards the address (`ip route get`). A non-zero exit
// code is a result, not an error. A retry of the same operation returns the stored result
// instead of running the command again.
func (a *Activities) RunDiagnostics(ctx context.Context, in DiagnosticsInput) (diagnostics.Result, error) {
	req, err := diagnostics.NewRequest(in.Type, in.IPAddress, in.Params, in.TimeoutSeconds)
	if err != nil {
		return diagnostics.Result{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeNotAllowed, err)
	}
	if in.OperationID != "" {
		var done models.DiagnosticsResult
		err := a.Store.DB.WithContext(ctx).Where("operation_id = ?", in.OperationID).Take(&done).Error
		if err == nil {
			return diagnosticsResultOf(done, ""), nil
		}
		if !errors.Is(err, gorm.ErrRecordNotFound) {
			return diagnostics.Result{}, fmt.Errorf("read diagnostics result of operation %s: %w", in.OperationID, err)
		}
	}
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, in.VMID); err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return diagnostics.Result{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("system VM %s not found", in.VMID), ErrTypeNotFound, err)
		}
		return diagnostics.Result{}, fmt.Errorf("load system VM %s: %w", in.VMID, err)
	}
	if vm.State != models.StateRunning {
		return diagnostics.Result{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s %s is %s: diagnostics run only in a Running system VM", vm.Type, vm.Name, vm.State), ErrTypeNotAllowed, nil)
	}
	if a.Exec == nil {
		return diagnostics.Result{}, temporal.NewNonRetryableApplicationError(
			"no SSH executor is configured: diagnostics cannot reach system VMs", ErrTypeDiagnostics, nil)
	}
	t, err := StoreTargets{Store: a.Store}.TargetFor(ctx, vm)
	if err != nil {
		return diagnostics.Result{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeDiagnostics, err)
	}
	iface := ""
	if req.NeedsInterface() {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		out, err := a.Exec.Run(rctx, t, req.RouteArgv(), nil)
		cancel()
		if err != nil {
			return diagnostics.Result{}, fmt.Errorf("find the interface of %s towards %s: %w", vm.Name, req.Address, err)
		}
		if out.ExitCode != 0 {
			return diagnostics.Result{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("%s has no route to %s for arping: %s exited %d: %s", vm.Name, req.Address,
					strings.Join(req.RouteArgv(), " "), out.ExitCode, strings.TrimSpace(string(out.Stderr))), ErrTypeDiagnostics, nil)
		}
		if iface, err = diagnostics.InterfaceFromRoute(string(out.Stdout)); err != nil {
			return diagnostics.Result{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("%s: interface towards %s: %v", vm.Name, req.Address, err), ErrTypeDiagnostics, err)
		}
	}
	argv := req.Argv(iface)
	// The VM's timeout ends the command at the limit; the SSH call gets a little more.
	rctx, cancel := context.WithTimeout(ctx, req.TimeLimit()+10*time.Second)
	defer cancel()
	var out struct {
		stdout, stderr []byte
		code           int
		truncated      bool
		took           time.Duration
	}
	err = heartbeatWhile(ctx, "diagnostics "+string(req.Type), func() error {
		res, err := a.Exec.Run(rctx, t, argv, nil)
		out.stdout, out.stderr, out.code, out.truncated, out.took = res.Stdout, res.Stderr, res.ExitCode, res.Truncated, res.Duration
		return err
	})
	if err != nil {
		return diagnostics.Result{}, fmt.Errorf("run %s in %s: %w", req.Type, vm.Name, err)
	}
	row := models.DiagnosticsResult{Base: models.Base{ID: models.NewID()}, SystemVMID: vm.ID, OperationID: in.OperationID,
		Type: string(req.Type), IPAddress: req.Address.String(), Params: in.Params, Command: strings.Join(argv, " "),
		Stdout: string(out.stdout), Stderr: string(out.stderr), ExitCode: out.code,
		TimedOut: out.code == diagnostics.TimedOutExitCode, DurationMs: out.took.Milliseconds(), RanAt: time.Now().UTC()}
	if err := a.Store.DB.WithContext(ctx).Create(&row).Error; err != nil {
		return diagnostics.Result{}, fmt.Errorf("store diagnostics result of %s: %w", vm.Name, err)
	}
	log := a.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Info("diagnostics ran", "vm", vm.Name, "type", req.Type, "address", req.Address.String(), "exit_code", out.code,
		"operation", in.OperationID)
	res := diagnosticsResultOf(row, vm.Name)
	res.Truncated = out.truncated
	return res, nil
}

func diagnosticsResultOf(r models.DiagnosticsResult, name string) diagnostics.Result {
	return diagnostics.Result{ID: r.ID, VMID: r.SystemVMID, Name: name, Type: diagnostics.Type(r.Type), IPAddress: r.IPAddress,
		Command: r.Command, Stdout: r.Stdout, Stderr: r.Stderr, ExitCode: r.ExitCode, TimedOut: r.TimedOut, DurationMs: r.DurationMs}
}
