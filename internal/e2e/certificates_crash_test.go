package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/codec"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/internal/certtest/rotationfx"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/worker"
	"github.com/sysvm/sysvm/workflows"
)

// certWorkerEnv makes the test binary run as a worker process reaching the simulated SSVMs and
// CPVMs of the test process over real SSH (through their simulated hosts' TCP listeners), so a
// test can kill -9 it mid-rotation while the VMs live on.
const certWorkerEnv = "SYSVM_E2E_CERT_WORKER"

// runCertWorker is that worker: the store of SYSVM_DB_DSN, the system VM key from its Secrets,
// an SSH executor dialling for real, Temporal at SYSVM_TEMPORAL_ADDRESS with the codec.
func runCertWorker() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "cert worker: %s: %v\n", what, err)
		return 1
	}
	store, err := models.Open(ctx, os.Getenv("SYSVM_DB_DSN"), modelstest.TestKey)
	if err != nil {
		return fail("open store", err)
	}
	defer store.Close()
	kp, err := activities.SystemVMKeyPair(ctx, store.Secrets)
	if err != nil {
		return fail("key pair", err)
	}
	ex, err := sshexec.New(sshexec.Config{Key: kp, HostKeys: &sshexec.MemoryHostKeyStore{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fail("executor", err)
	}
	defer ex.Close()
	cdc, err := codec.New(modelstest.TestKey)
	if err != nil {
		return fail("codec", err)
	}
	opts := client.Options{HostPort: os.Getenv("SYSVM_TEMPORAL_ADDRESS"), Namespace: "default"}
	cdc.Apply(&opts)
	c, err := client.Dial(opts)
	if err != nil {
		return fail("temporal", err)
	}
	defer c.Close()
	w := worker.New(worker.Config{Client: c, Activities: &activities.Activities{Store: store, Exec: ex, Logger: logger()}, Logger: logger()})
	if err := w.Start(); err != nil {
		return fail("start worker", err)
	}
	defer w.Stop()
	<-ctx.Done()
	return 0
}

func startCertWorker(t *testing.T, dsn, temporal string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), certWorkerEnv+"=1", "SYSVM_DB_DSN="+dsn, "SYSVM_TEMPORAL_ADDRESS="+temporal)
	if os.Getenv("SYSVM_TEST_VERBOSE") != "" {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	return cmd
}

// kill -9 of the worker process as soon as the first VM is recorded serving the new
// certificate; a second worker process resumes the rotation and no VM restarts twice; zone-a
// always keeps a CPVM answering TLS.
func TestCertificateRotationSurvivesWorkerKill(t *testing.T) {
	modelstest.ForEachDSN(t, func(t *testing.T, dsn string) { rotationSurvivesWorkerKill(t, dsn) })
}

func rotationSurvivesWorkerKill(t *testing.T, dsn string) {
	store, err := models.OpenAndMigrate(context.Background(), dsn, modelstest.TestKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	ctx := context.Background()
	kp, err := activities.SystemVMKeyPair(ctx, store.Secrets)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	fx := rotationfx.New(t, store, rotationfx.Layout{"zone-a": {"cpvm", "cpvm", "ssvm"}, "zone-b": {"cpvm", "cpvm"}}, pub)
	s := &stack{t: t, store: store, codec: testCodec(t)}
	s.temporal = testenv.TemporalT(t, false)
	if s.client, err = s.temporal.Client(s.codec.Apply); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.client.Close)
	cert := fx.UploadServer()
	first := startCertWorker(t, dsn, s.temporal.Address)
	smp := fx.Sample()
	run, err := s.client.ExecuteWorkflow(ctx, workflows.ZoneTarget(workflows.CertificateRotationWorkflowID, "", workflows.CertificateRotationKind).
		StartOptions(nil), workflows.CertificateRotationWorkflowName, activities.CertRotationInput{CertificateID: cert.ID})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		served, err := store.ServedCertificates(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(served) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no VM recorded serving the certificate within a minute")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := first.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_, _ = first.Process.Wait()
	killedAt := time.Now()
	startCertWorker(t, dsn, s.temporal.Address)
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := run.Get(wctx, nil); err != nil {
		t.Fatalf("rotation after the kill: %v", err)
	}
	samples, gaps := smp.Finish()
	t.Logf("resumed %s after the kill; %d samples", time.Since(killedAt).Round(time.Millisecond), samples)
	if len(gaps) > 0 {
		t.Errorf("zones without a CPVM answering TLS: %v", gaps)
	}
	for _, vms := range fx.Zones {
		for _, vm := range vms {
			if err := fx.Verifies(vm, cert); err != nil {
				t.Errorf("%s: %v", vm.Name, err)
			}
			if n := fx.Restarts(vm); n != 1 {
				t.Errorf("%s restarted %d times, want once", vm.Name, n)
			}
		}
	}
}
