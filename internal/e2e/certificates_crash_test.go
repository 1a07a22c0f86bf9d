package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/internal/certtest/rotationfx"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

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
	pub := platformPublicKey(t, store)
	fx := rotationfx.New(t, store, rotationfx.Layout{"zone-a": {"cpvm", "cpvm", "ssvm"}, "zone-b": {"cpvm", "cpvm"}}, pub)
	s := &stack{t: t, store: store, codec: testCodec(t)}
	s.temporal = testenv.TemporalT(t, false)
	if s.client, err = s.temporal.Client(s.codec.Apply); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.client.Close)
	cert := fx.UploadServer()
	first := startHelperProcess(t, helperSSH, dsn, s.temporal.Address)
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
	startHelperProcess(t, helperSSH, dsn, s.temporal.Address)
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
