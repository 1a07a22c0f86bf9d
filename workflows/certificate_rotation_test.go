package workflows

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
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
// new chain (checked by a TLS client trusting only the uploaded root), the zone always had a
// CPVM answering (sampled throughout), and a zone with a single CPVM keeps it serving on its
// certificate with an alert, while its SSVM is rotated.
func TestCertificateRotationRollsZonesKeepingAConsole(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) {
		fx := rotationfx.New(t, store, rotationfx.Layout{"zone-a": {"cpvm", "cpvm", "ssvm"}, "zone-b": {"cpvm", "ssvm"}})
		cert := fx.UploadServer()
		for _, vms := range fx.Zones {
			for _, vm := range vms {
				require.Equal(t, models.Fingerprint(fx.Dev.Cert.Raw), fx.Served(vm), "%s serves the dev default first", vm.Name)
			}
		}
		env := newRotationEnv(fx)
		smp := fx.Sample()
		env.ExecuteWorkflow(CertificateRotationWorkflowName, activities.CertRotationInput{CertificateID: cert.ID})
		samples, gaps := smp.Finish()
		require.True(t, env.IsWorkflowCompleted())
		require.NoError(t, env.GetWorkflowError())
		var res CertificateRotationResult
		require.NoError(t, env.GetWorkflowResult(&res))
		assert.Greater(t, samples, int64(10), "the sampler ran throughout")
		assert.Empty(t, gaps, "a zone had no CPVM answering TLS")

		status := map[string]string{}
		for _, v := range res.VMs {
			status[v.Name] = v.Status
		}
		for _, vm := range fx.Zones["zone-a"] {
			assert.NoError(t, fx.Verifies(vm, cert), "%s", vm.Name)
			assert.Equal(t, CertVMRotated, status[vm.Name])
			st, _ := fx.Cons.Status(vm.ID)
			assert.Equal(t, 1, st.Restarts, "%s restarted once", vm.Name)
		}
		for _, vm := range fx.Zones["zone-b"] {
			st, _ := fx.Cons.Status(vm.ID)
			if vm.Type == models.TypeCPVM {
				assert.Equal(t, CertVMSkipped, status[vm.Name])
				assert.Equal(t, 0, st.Restarts, "the single CPVM of zone-b was restarted")
				assert.Equal(t, models.Fingerprint(fx.Dev.Cert.Raw), fx.Served(vm))
			} else {
				assert.Equal(t, CertVMRotated, status[vm.Name], "SSVMs are rotated too")
				assert.NoError(t, fx.Verifies(vm, cert))
			}
		}
		served, err := store.ServedCertificates(context.Background())
		require.NoError(t, err)
		assert.Len(t, served, 4, "rotated VMs are recorded as serving the certificate")
		var alerts []models.Alert
		require.NoError(t, store.DB.Where("type = ?", AlertCertificateRotation).Find(&alerts).Error)
		require.Len(t, alerts, 1)
		assert.Contains(t, alerts[0].Description, "zone zone-b")
		assert.Equal(t, fx.Zone["zone-b"].ID, alerts[0].ZoneID)
	})
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
