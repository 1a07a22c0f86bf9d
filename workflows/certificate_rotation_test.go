package workflows

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/internal/certtest/rotationfx"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

func newRotationEnv(fx *rotationfx.Fixture) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: CertificateRotationWorkflowID})
	env.RegisterWorkflowWithOptions(CertificateRotation, workflow.RegisterOptions{Name: CertificateRotationWorkflowName})
	env.RegisterActivity(fx.Acts)
	return env
}

// Zone by zone, one VM at a time: every CPVM and SSVM of a zone with two CPVMs ends serving the
// new chain (checked by a TLS client trusting only the uploaded root), every zone always had a
// CPVM answering (sampled throughout), and the only CPVM of zone-b is replaced
// make-before-break: a new CPVM is deployed, given the certificate and verified, and only then
// is the old one destroyed, so zone-b ends with one CPVM, serving the new certificate.
func TestCertificateRotationRollsZonesKeepingAConsole(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		fx := rotationfx.New(t, store, rotationfx.Layout{"zone-a": {"cpvm", "cpvm", "ssvm"}, "zone-b": {"cpvm", "ssvm"}})
		cert := fx.UploadServer()
		for _, vms := range fx.Zones {
			for _, vm := range vms {
				require.Equal(t, models.Fingerprint(fx.Dev.Cert.Raw), fx.Served(vm), "%s serves the dev default first", vm.Name)
			}
		}
		oldB := fx.Zones["zone-b"][0]
		env := newRotationEnv(fx)
		rig := fakeChildren(env, fx, "zone-b")
		// The destroy of the old CPVM takes an hour of the test clock; half way through it the
		// progress is read.
		rig.retireWait = true
		var mid CertificateRotationProgress
		env.RegisterDelayedCallback(func() {
			v, err := env.QueryWorkflow(QueryProgress)
			require.NoError(t, err)
			require.NoError(t, v.Get(&mid))
		}, 30*time.Minute)
		smp := fx.Sample()
		env.ExecuteWorkflow(CertificateRotationWorkflowName, activities.CertRotationInput{CertificateID: cert.ID})
		samples, gaps := smp.Finish()
		require.True(t, env.IsWorkflowCompleted())
		require.NoError(t, env.GetWorkflowError())
		var res CertificateRotationResult
		require.NoError(t, env.GetWorkflowResult(&res))
		assert.Greater(t, samples, int64(10), "the sampler ran throughout")
		assert.Empty(t, gaps, "a zone had no CPVM answering TLS")

		status := map[string]CertRotationVMResult{}
		for _, v := range res.VMs {
			status[v.Name] = v
		}
		for _, vm := range fx.Zones["zone-a"] {
			assert.NoError(t, fx.Verifies(vm, cert), "%s", vm.Name)
			assert.Equal(t, CertVMRotated, status[vm.Name].Status)
			st, _ := fx.Cons.Status(vm.ID)
			assert.Equal(t, 1, st.Restarts, "%s restarted once", vm.Name)
		}
		// zone-b: its CPVM replaced, its SSVM rotated.
		b := fx.ZoneVMs("zone-b")
		require.Len(t, b, 2, "zone-b ends with one CPVM and its SSVM: %+v", b)
		nb := b[1]
		require.Equal(t, models.TypeCPVM, nb.Type)
		assert.NotEqual(t, oldB.ID, nb.ID)
		assert.NoError(t, fx.Verifies(nb, cert), "the replacement serves the new chain")
		assert.NoError(t, fx.Verifies(b[0], cert), "the SSVM of zone-b is rotated")
		r := status[oldB.Name]
		assert.Equal(t, CertVMReplaced, r.Status, "%+v", r)
		require.NotNil(t, r.Replacement)
		assert.Equal(t, nb.ID, r.Replacement.VMID)
		assert.Equal(t, nb.Name, r.Replacement.Name)
		assert.Equal(t, CertReplacementDone, r.Replacement.Status)
		var row models.SystemVM
		require.NoError(t, store.DB.First(&row, "id = ?", oldB.ID).Error)
		assert.Equal(t, models.StateDestroyed, row.State, "the old CPVM of zone-b is destroyed")
		_, err := fx.Cons.Status(oldB.ID)
		assert.Error(t, err, "the old CPVM's endpoint is gone")

		// deploy -> install -> verify -> record -> retire, then the SSVM.
		assert.Equal(t, []string{"deploy " + nb.Name, "InstallCertificate " + nb.Name, "VerifyConsoleCertificate " + nb.Name,
			"RecordServedCertificate " + nb.Name, "destroy " + oldB.Name, "InstallCertificate " + b[0].Name}, rig.zoneLog(), "zone-b's steps")
		// The progress while the old CPVM was being retired names the replacement.
		assert.Contains(t, mid.Step, "retire "+oldB.Name)
		assert.Contains(t, mid.Step, nb.Name)
		for _, v := range mid.VMs {
			if v.VMID == oldB.ID {
				require.NotNil(t, v.Replacement, "progress shows the replacement")
				assert.Equal(t, CertReplacementRetiring, v.Replacement.Status)
				assert.Equal(t, nb.Name, v.Replacement.Name)
			}
		}

		served, err := store.ServedCertificates(context.Background())
		require.NoError(t, err)
		assert.Len(t, served, 5, "rotated VMs and the replacement are recorded as serving the certificate (the destroyed CPVM is not)")
		assert.Equal(t, cert.ID, served[nb.ID].CertificateID)
		var alerts []models.Alert
		require.NoError(t, store.DB.Where("type = ?", AlertCertificateRotation).Find(&alerts).Error)
		assert.Empty(t, alerts, "a clean rotation raises no alert")
	})
}

// childRig fakes the children a rotation starts in a zone with a single CPVM, with the
// fixture's effects: SystemVMDeploy adds a running CPVM (serving the dev default), the
// lifecycle destroy removes one. It logs them and the certificate activities in order.
type childRig struct {
	fx   *rotationfx.Fixture
	zone string

	deployErr   error // the deploy fails (having discarded what it built)
	deployWait  bool  // the deploy takes an hour (a cancel comes in the middle)
	breakNew    bool  // the new CPVM serves the dev default after its restart
	retireErr   error // the destroy of the old CPVM fails
	retireWait  bool  // the destroy of the old CPVM takes an hour
	retiring    string
	mu          sync.Mutex
	log         []string
	deployCalls int
}

func fakeChildren(env *testsuite.TestWorkflowEnvironment, fx *rotationfx.Fixture, zone string) *childRig {
	r := &childRig{fx: fx, zone: zone}
	env.RegisterWorkflowWithOptions(func(ctx workflow.Context, in DeployInput) (DeployResult, error) {
		r.mu.Lock()
		r.deployCalls++
		r.mu.Unlock()
		if r.deployWait {
			if err := workflow.Sleep(ctx, time.Hour); err != nil {
				return DeployResult{VMID: in.VMID, State: models.StateDestroyed, Compensations: []string{"deploy-discard"}}, err
			}
		}
		if r.deployErr != nil {
			return DeployResult{VMID: in.VMID, State: models.StateDestroyed, Compensations: []string{"deploy-discard"}}, r.deployErr
		}
		vm := fx.AddCPVM(zone, in.VMID)
		if r.breakNew {
			if err := fx.Cons.BreakNextRestart(vm.ID, true); err != nil {
				return DeployResult{}, err
			}
		}
		r.add("deploy " + vm.Name)
		return DeployResult{VMID: vm.ID, Name: vm.Name, Type: vm.Type, ZoneID: vm.ZoneID, State: models.StateRunning, PublicIP: vm.PublicIP}, nil
	}, workflow.RegisterOptions{Name: SystemVMDeployWorkflowName})
	env.RegisterWorkflowWithOptions(func(ctx workflow.Context, in LifecycleInput) (LifecycleResult, error) {
		name := r.name(in.VMID)
		r.add("destroy " + name)
		if in.Action != ActionDestroy {
			return LifecycleResult{}, fmt.Errorf("unexpected %s", in.Action)
		}
		if r.retireWait {
			_ = workflow.Sleep(ctx, time.Hour)
		}
		if r.retireErr != nil && r.retiring == "" {
			r.retiring = in.VMID
			return LifecycleResult{VMID: in.VMID, Name: name, State: models.StateRunning}, r.retireErr
		}
		if err := fx.RemoveVM(in.VMID); err != nil {
			return LifecycleResult{}, err
		}
		return LifecycleResult{VMID: in.VMID, Name: name, Action: string(in.Action), State: models.StateDestroyed}, nil
	}, workflow.RegisterOptions{Name: LifecycleWorkflowName})
	env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, args converter.EncodedValues) {
		var in struct {
			VMID string `json:"vmId"`
		}
		switch info.ActivityType.Name {
		case "InstallCertificate", "VerifyConsoleCertificate", "RecordServedCertificate":
			if args.Get(&in) == nil {
				r.add(info.ActivityType.Name + " " + r.name(in.VMID))
			}
		}
	})
	return r
}

func (r *childRig) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, s)
}

func (r *childRig) name(id string) string {
	var vm models.SystemVM
	if err := r.fx.Store.DB.First(&vm, "id = ?", id).Error; err != nil {
		return id
	}
	return vm.Name
}

// zoneLog is the log from the deploy on, without the steps of the rig's zone's SSVMs
// beyond their first install.
func (r *childRig) zoneLog() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	started := false
	for _, s := range r.log {
		if strings.HasPrefix(s, "deploy ") {
			started = true
		}
		if !started {
			continue
		}
		out = append(out, s)
		if strings.HasPrefix(s, "InstallCertificate s-") {
			break
		}
	}
	return out
}

// A CPVM that does not serve the new certificate after its restart is put back on the one it
// served before, the rotation stops there (the VMs after it are not touched) and a CRITICAL
// alert names the zone, the VM and the reason.
func TestCertificateRotationRollsBackAFailingCPVM(t *testing.T) {
	store := modelstest.SQLite(t)
	fx := rotationfx.New(t, store, rotationfx.Layout{"zone-a": {"cpvm", "cpvm", "ssvm"}, "zone-b": {"cpvm", "cpvm"}})
	v1 := fx.UploadServer()
	env := newRotationEnv(fx)
	env.ExecuteWorkflow(CertificateRotationWorkflowName, activities.CertRotationInput{CertificateID: v1.ID})
	require.NoError(t, env.GetWorkflowError())

	v2 := fx.UploadServer()
	bad := fx.Zones["zone-a"][1]
	require.Equal(t, models.TypeCPVM, bad.Type)
	require.NoError(t, fx.Cons.BreakNextRestart(bad.ID, true))
	env = newRotationEnv(fx)
	env.ExecuteWorkflow(CertificateRotationWorkflowName, activities.CertRotationInput{CertificateID: v2.ID})
	require.True(t, env.IsWorkflowCompleted())
	err := env.GetWorkflowError()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "zone zone-a, CPVM "+bad.Name)

	first := fx.Zones["zone-a"][0]
	assert.NoError(t, fx.Verifies(first, v2), "the CPVM before the failing one is rotated")
	assert.NoError(t, fx.Verifies(bad, v1), "the failing CPVM was rolled back to v1 (verified with TLS)")
	st, _ := fx.Cons.Status(bad.ID)
	assert.Equal(t, 3, st.Restarts, "v1, the failed v2, the rollback to v1")
	ssvm := fx.Zones["zone-a"][2]
	assert.NoError(t, fx.Verifies(ssvm, v1), "the SSVM after the failure is not touched")
	for _, vm := range fx.Zones["zone-b"] {
		assert.NoError(t, fx.Verifies(vm, v1), "zone-b after the failure is not touched")
	}
	var alerts []models.Alert
	require.NoError(t, store.DB.Where("type = ? AND severity = ?", AlertCertificateRotation, "CRITICAL").Find(&alerts).Error)
	require.Len(t, alerts, 1)
	assert.Contains(t, alerts[0].Description, "zone zone-a")
	assert.Contains(t, alerts[0].Description, bad.Name)
	assert.Contains(t, alerts[0].Description, "does not serve CPVMCertificate v2")
	assert.Contains(t, alerts[0].Description, "; rolled back to certificate "+v1.ID)
	assert.Equal(t, bad.ID, alerts[0].ResourceID)
	served, err2 := store.ServedCertificates(context.Background())
	require.NoError(t, err2)
	assert.Equal(t, v1.ID, served[bad.ID].CertificateID, "the failing CPVM is still recorded on v1")
	assert.Equal(t, v2.ID, served[first.ID].CertificateID)
	assert.True(t, strings.Contains(alerts[0].Subject, bad.Name))
}

// singleCPVMFixture is zone-a with its only CPVM and an SSVM, zone-b with two CPVMs, every VM
// serving v1 (installed and recorded directly), and v2 uploaded.
func singleCPVMFixture(t *testing.T, store *models.Store) (fx *rotationfx.Fixture, v1, v2 models.Certificate) {
	fx = rotationfx.New(t, store, rotationfx.Layout{"zone-a": {"cpvm", "ssvm"}, "zone-b": {"cpvm", "cpvm"}})
	v1 = fx.UploadServer()
	ctx := context.Background()
	for _, vms := range fx.Zones {
		for _, vm := range vms {
			_, err := fx.Acts.InstallCertificate(ctx, activities.CertInstallInput{VMID: vm.ID, CertificateID: v1.ID})
			require.NoError(t, err)
			require.NoError(t, fx.Acts.RecordServedCertificate(ctx, activities.CertServedInput{VMID: vm.ID, CertificateID: v1.ID}))
			require.NoError(t, fx.Verifies(vm, v1))
		}
	}
	return fx, v1, fx.UploadServer()
}

// The only CPVM of a zone keeps serving its certificate when its replacement fails at any
// step: the replacement is destroyed, the rotation stops there (the zone's SSVM and the zones
// after it are not touched) and a CRITICAL alert names the zone, the VM and the reason. When
// the old CPVM cannot be destroyed after its replacement serves, both run and the alert says so.
func TestCertificateRotationReplacementFailures(t *testing.T) {
	for _, tc := range []struct {
		step   string
		setup  func(env *testsuite.TestWorkflowEnvironment, fx *rotationfx.Fixture, r *childRig)
		reason string
	}{
		{"deploy", func(_ *testsuite.TestWorkflowEnvironment, _ *rotationfx.Fixture, r *childRig) {
			r.deployErr = temporal.NewNonRetryableApplicationError("create v-5-VM on zone-a-kvm-1: no capacity", "Test", nil)
		}, "deploy of a replacement CPVM failed: create v-5-VM on zone-a-kvm-1: no capacity"},
		{"install", func(env *testsuite.TestWorkflowEnvironment, fx *rotationfx.Fixture, _ *childRig) {
			known := map[string]bool{}
			for _, vms := range fx.Zones {
				for _, vm := range vms {
					known[vm.ID] = true
				}
			}
			env.OnActivity(fx.Acts.InstallCertificate, mock.Anything, mock.MatchedBy(func(in activities.CertInstallInput) bool { return !known[in.VMID] })).
				Return(activities.CertInstallResult{}, temporal.NewNonRetryableApplicationError("sysvm-console install exited 1: keystore locked", "Test", nil))
			env.OnActivity(fx.Acts.InstallCertificate, mock.Anything, mock.Anything).Return(fx.Acts.InstallCertificate)
		}, "keystore locked"},
		{"verify", func(_ *testsuite.TestWorkflowEnvironment, _ *rotationfx.Fixture, r *childRig) { r.breakNew = true },
			"does not serve CPVMCertificate v2"},
		{"retire", func(_ *testsuite.TestWorkflowEnvironment, _ *rotationfx.Fixture, r *childRig) {
			r.retireErr = temporal.NewNonRetryableApplicationError("destroy on the hypervisor: host unreachable", "Test", nil)
		}, "host unreachable"},
	} {
		t.Run(tc.step, func(t *testing.T) {
			store := modelstest.SQLite(t)
			fx, v1, v2 := singleCPVMFixture(t, store)
			old, ssvm := fx.Zones["zone-a"][0], fx.Zones["zone-a"][1]
			require.Equal(t, models.TypeCPVM, old.Type)
			restarts := fx.Restarts(old)
			env := newRotationEnv(fx)
			rig := fakeChildren(env, fx, "zone-a")
			tc.setup(env, fx, rig)
			smp := fx.Sample()
			env.ExecuteWorkflow(CertificateRotationWorkflowName, activities.CertRotationInput{CertificateID: v2.ID})
			_, gaps := smp.Finish()
			assert.Empty(t, gaps, "zone-a had no CPVM answering TLS")
			require.True(t, env.IsWorkflowCompleted())
			err := env.GetWorkflowError()
			require.Error(t, err)
			assert.Contains(t, err.Error(), "zone zone-a, CPVM "+old.Name)
			assert.Contains(t, err.Error(), tc.reason)
			assert.Equal(t, 1, rig.deployCalls, "one replacement deployed")

			vms := fx.ZoneVMs("zone-a")
			if tc.step == "retire" {
				require.Len(t, vms, 3, "the old CPVM could not be destroyed: both run")
				assert.NoError(t, fx.Verifies(vms[2], v2), "the replacement serves v2")
				assert.NoError(t, fx.Verifies(old, v1), "the old CPVM still serves v1")
			} else {
				require.Len(t, vms, 2, "the failed replacement is destroyed: %+v", vms)
				assert.Equal(t, old.ID, vms[0].ID)
				assert.NoError(t, fx.Verifies(old, v1), "the old CPVM keeps serving v1")
				var n int64
				require.NoError(t, store.DB.Model(&models.SystemVM{}).Where("zone_id = ? AND type = ? AND state <> ?",
					fx.Zone["zone-a"].ID, models.TypeCPVM, models.StateDestroyed).Count(&n).Error)
				assert.EqualValues(t, 1, n, "the DB has one live CPVM in zone-a")
			}
			assert.Equal(t, restarts, fx.Restarts(old), "the old CPVM was never restarted")
			assert.NoError(t, fx.Verifies(ssvm, v1), "the SSVM after the failure is not touched")
			for _, vm := range fx.Zones["zone-b"] {
				assert.NoError(t, fx.Verifies(vm, v1), "zone-b after the failure is not touched")
			}
			var alerts []models.Alert
			require.NoError(t, store.DB.Where("type = ? AND severity = ?", AlertCertificateRotation, "CRITICAL").Find(&alerts).Error)
			require.Len(t, alerts, 1)
			assert.Contains(t, alerts[0].Description, "zone zone-a")
			assert.Contains(t, alerts[0].Description, old.Name)
			assert.Contains(t, alerts[0].Description, tc.reason)
			assert.Equal(t, fx.Zone["zone-a"].ID, alerts[0].ZoneID)
			served, err := store.ServedCertificates(context.Background())
			require.NoError(t, err)
			assert.Equal(t, v1.ID, served[old.ID].CertificateID, "the old CPVM is still recorded on v1")
		})
	}
}

// A cancel while the replacement is being deployed leaves the zone as it was (the deploy
// discards what it built, the old CPVM serves v1, no alert); a cancel while the old CPVM is
// being destroyed lets that destroy finish (the zone ends on its replacement, serving v2) and
// stops the rotation there.
func TestCertificateRotationReplacementCanceled(t *testing.T) {
	for _, during := range []string{"deploy", "retire"} {
		t.Run(during, func(t *testing.T) {
			store := modelstest.SQLite(t)
			fx, v1, v2 := singleCPVMFixture(t, store)
			old, ssvm := fx.Zones["zone-a"][0], fx.Zones["zone-a"][1]
			env := newRotationEnv(fx)
			rig := fakeChildren(env, fx, "zone-a")
			rig.deployWait, rig.retireWait = during == "deploy", during == "retire"
			env.RegisterDelayedCallback(env.CancelWorkflow, 30*time.Minute)
			env.ExecuteWorkflow(CertificateRotationWorkflowName, activities.CertRotationInput{CertificateID: v2.ID})
			require.True(t, env.IsWorkflowCompleted())
			err := env.GetWorkflowError()
			var canceled *temporal.CanceledError
			require.True(t, errors.As(err, &canceled), "want a cancel, got %v", err)
			vms := fx.ZoneVMs("zone-a")
			require.Len(t, vms, 2, "%+v", vms)
			if during == "deploy" {
				assert.Equal(t, old.ID, vms[0].ID)
				assert.NoError(t, fx.Verifies(old, v1), "the old CPVM keeps serving v1")
			} else {
				assert.NotEqual(t, old.ID, vms[1].ID)
				assert.Equal(t, models.TypeCPVM, vms[1].Type)
				assert.NoError(t, fx.Verifies(vms[1], v2), "the replacement serves v2")
				var row models.SystemVM
				require.NoError(t, store.DB.First(&row, "id = ?", old.ID).Error)
				assert.Equal(t, models.StateDestroyed, row.State, "the destroy once started finished")
			}
			assert.NoError(t, fx.Verifies(ssvm, v1), "the rotation stopped before the SSVM")
			var n int64
			require.NoError(t, store.DB.Model(&models.Alert{}).Where("type = ? AND severity = ?", AlertCertificateRotation, "CRITICAL").Count(&n).Error)
			assert.Zero(t, n, "a cancel is not an alert")
		})
	}
}
