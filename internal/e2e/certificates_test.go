package e2e

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/api"
	"github.com/sysvm/sysvm/internal/certtest"
	"github.com/sysvm/sysvm/internal/certtest/rotationfx"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/worker"
	"github.com/sysvm/sysvm/workflows"
)

// A rotation started through the API on the real stack (Temporal dev server with the payload
// codec, MariaDB and SQLite, the simulated fleet over SSH with real TLS endpoints): its worker
// is stopped as soon as the first VM is recorded serving the new certificate (an observed
// event), a second worker resumes the run, and at the end every rotated VM restarted exactly
// once, serves the new chain to a TLS client trusting only the uploaded root, and zone-a
// always had a CPVM answering TLS (sampled throughout). With SYSVM_RECORD_HISTORIES=1 a clean
// rotation's history is recorded for the replay test.
//
// The worker here is in-process (worker.Stop); TestCertificateRotationSurvivesWorkerKill kills a
// worker process with SIGKILL.
func TestCertificateRotationResumesAfterWorkerStop(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		ctx := context.Background()
		fx := rotationfx.New(t, store, rotationfx.Layout{"zone-a": {"cpvm", "cpvm", "ssvm"}, "zone-b": {"cpvm", "cpvm", "ssvm"}})
		s := &stack{t: t, store: store, codec: testCodec(t)}
		s.temporal = testenv.TemporalT(t, false)
		var err error
		if s.client, err = s.temporal.Client(s.codec.Apply); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.client.Close)
		srv, err := api.New(api.Config{Store: store, Temporal: s.client, Namespace: "default", Logger: logger()})
		if err != nil {
			t.Fatal(err)
		}
		s.api = httptest.NewServer(srv.Handler())
		t.Cleanup(s.api.Close)
		if _, s.key, err = store.CreateAPIKey(ctx, "e2e-admin", models.RoleAdmin, ""); err != nil {
			t.Fatal(err)
		}

		// A clean rotation first (recorded for replay when asked).
		v1 := fx.UploadServer()
		w := worker.New(worker.Config{Client: s.client, Activities: fx.Acts, Logger: logger()})
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		op := s.wait(s.start("/api/v1/certificates/rotate"), 2*time.Minute)
		if op.Status != models.OpCompleted {
			t.Fatalf("rotation ended %s: %s", op.Status, op.Error)
		}
		if recording() && store.Dialect() == "sqlite" {
			s.record(workflows.CertificateRotationWorkflowName+"_rotate.json", op.WorkflowID, op.RunID)
		}
		for _, vms := range fx.Zones {
			for _, vm := range vms {
				if err := fx.Verifies(vm, v1); err != nil {
					t.Errorf("%s after the first rotation: %v", vm.Name, err)
				}
			}
		}

		// Now a second certificate, and the worker stops mid-rotation.
		v2 := fx.UploadServer()
		before := map[string]int{}
		for _, vms := range fx.Zones {
			for _, vm := range vms {
				before[vm.ID] = fx.Restarts(vm)
			}
		}
		smp := fx.Sample()
		op = s.start("/api/v1/certificates/rotate")
		deadline := time.Now().Add(time.Minute)
		for {
			served, err := store.ServedCertificates(ctx)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, r := range served {
				if r.CertificateID == v2.ID {
					n++
				}
			}
			if n >= 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no VM was recorded serving the second certificate within a minute")
			}
			time.Sleep(5 * time.Millisecond)
		}
		w.Stop()
		stoppedAt := time.Now()
		// The operation is still running while no worker runs it, with progress per VM.
		var mid struct {
			Operation struct {
				Status   string          `json:"status"`
				Progress json.RawMessage `json:"progress"`
			} `json:"operation"`
		}
		s.do("GET", "/api/v1/operations/"+op.ID, nil, &mid)
		if mid.Operation.Status != models.OpRunning {
			t.Fatalf("after the worker stopped, the rotation is %s", mid.Operation.Status)
		}
		w2 := worker.New(worker.Config{Client: s.client, Activities: fx.Acts, Logger: logger()})
		if err := w2.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w2.Stop)
		done := s.wait(op, 2*time.Minute)
		samples, gaps := smp.Finish()
		if done.Status != models.OpCompleted {
			t.Fatalf("resumed rotation ended %s: %s", done.Status, done.Error)
		}
		t.Logf("the second worker finished the rotation %s after the first stopped; %d samples", time.Since(stoppedAt).Round(time.Millisecond), samples)
		if len(gaps) > 0 {
			t.Errorf("zones without a CPVM answering TLS during the rotation: %v", gaps)
		}
		var res workflows.CertificateRotationResult
		if err := json.Unmarshal(done.Result, &res); err != nil {
			t.Fatalf("result: %v: %s", err, done.Result)
		}
		for _, vms := range fx.Zones {
			for _, vm := range vms {
				if err := fx.Verifies(vm, v2); err != nil {
					t.Errorf("%s after the resumed rotation: %v", vm.Name, err)
				}
				if got := fx.Restarts(vm) - before[vm.ID]; got != 1 {
					t.Errorf("%s restarted %d times in the resumed rotation, want once", vm.Name, got)
				}
			}
		}
		if len(res.VMs) != 6 {
			t.Errorf("result lists %d VMs, want 6: %+v", len(res.VMs), res.VMs)
		}
	})
}

// The expiry watch on the real stack: its schedule follows consoleproxy.certificate.check.
// interval (hourly by default, paused at 0); a run alerts once for a certificate expiring
// within the buffer and not for one that does not. With SYSVM_RECORD_HISTORIES=1 its history
// is recorded for the replay test.
func TestCertificateExpiryWatch(t *testing.T) {
	store := modelstest.SQLite(t)
	ctx := context.Background()
	s := &stack{t: t, store: store, codec: testCodec(t)}
	s.temporal = testenv.TemporalT(t, false)
	var err error
	if s.client, err = s.temporal.Client(s.codec.Apply); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.client.Close)
	fx := rotationfx.New(t, store, rotationfx.Layout{})
	long := fx.UploadServer()
	short := fx.PKI.ServerFor(certtest.Options{NotAfter: time.Now().Add(3 * 24 * time.Hour)})
	up, err := store.UploadCertificate(ctx, models.CertificateUpload{Certificate: short.CertPEM(), PrivateKey: short.KeyPEM(),
		DomainSuffix: rotationfx.Suffix, Name: "shortlived"}, "test", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}

	every, paused, err := workflows.SyncCertificateExpirySchedule(ctx, s.client, store)
	if err != nil || every != time.Hour || paused {
		t.Fatalf("schedule = %s paused=%v err=%v, want hourly", every, paused, err)
	}
	desc, err := s.client.ScheduleClient().GetHandle(ctx, workflows.CertificateExpiryScheduleID).Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := desc.Schedule.Spec.Intervals[0].Every; got != time.Hour {
		t.Errorf("schedule interval %s, want 1h", got)
	}
	if _, err := store.Settings.Set(ctx, "consoleproxy.certificate.check.interval", models.ScopeGlobal, "", "0"); err != nil {
		t.Fatal(err)
	}
	if _, paused, err = workflows.SyncCertificateExpirySchedule(ctx, s.client, store); err != nil || !paused {
		t.Fatalf("interval 0: paused=%v err=%v", paused, err)
	}
	desc, err = s.client.ScheduleClient().GetHandle(ctx, workflows.CertificateExpiryScheduleID).Describe(ctx)
	if err != nil || !desc.Schedule.State.Paused {
		t.Fatalf("schedule not paused at interval 0: %v", err)
	}

	w := worker.New(worker.Config{Client: s.client, Activities: fx.Acts, Logger: logger()})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	for i := range 2 {
		run, err := s.client.ExecuteWorkflow(ctx, workflows.ZoneTarget(workflows.CertificateExpiryScheduleID, "", workflows.CertificateExpiryKind).
			StartOptions(nil), workflows.CertificateExpiryWorkflowName)
		if err != nil {
			t.Fatal(err)
		}
		var found []activities.CertExpiryFinding
		if err := run.Get(ctx, &found); err != nil {
			t.Fatal(err)
		}
		if len(found) != 1 || found[0].Name != "shortlived" || found[0].Alerted != (i == 0) {
			t.Errorf("run %d findings = %+v, want shortlived alerted on the first run only", i, found)
		}
		if i == 0 && recording() {
			s.record(workflows.CertificateExpiryWorkflowName+"_alert.json", run.GetID(), run.GetRunID())
		}
	}
	var alerts []models.Alert
	if err := store.DB.Where("type = ?", activities.AlertCertificateExpiry).Find(&alerts).Error; err != nil {
		t.Fatal(err)
	}
	if len(alerts) != 1 || alerts[0].ResourceID != up.Certificate.ID || !strings.Contains(alerts[0].Subject, "shortlived") {
		t.Errorf("alerts = %+v, want one for shortlived", alerts)
	}
	if strings.Contains(alerts[0].Subject, long.Name+" v") && !strings.Contains(alerts[0].Subject, "shortlived") {
		t.Errorf("the long-lived certificate was alerted: %+v", alerts[0])
	}
}
