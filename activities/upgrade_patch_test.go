package activities

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// TestPatchRouter live-patches a simulated router over real SSH: the bundle's files and
// signature land in its sandbox, its services restart, the row records the scripts and
// software versions (its template version stays) and an event; the journal answers a retry
// of the same operation, another operation's patch of the same bundle is a no-op in the VM,
// and the fresh checks then verify the recorded scripts version.
func TestPatchRouter(t *testing.T) {
	ctx := context.Background()
	e := newHCEnv(t, modelstest.SQLite(t))
	n := e.network("Dhcp,Dns")
	vm := e.router(routerOpts{net: &n, vms: 1})
	b, err := agent.DefaultBundle()
	require.NoError(t, err)

	res, err := e.h.PatchRouter(ctx, PatchRouterInput{OperationID: "op-patch-1", RouterID: vm.ID})
	require.NoError(t, err)
	assert.True(t, res.Changed)
	assert.Equal(t, b.Version, res.SoftwareVersion)
	assert.Equal(t, b.Checksum, res.ScriptsVersion)
	assert.Equal(t, agent.PatchServices(), res.Restarted)

	row := e.reload(vm)
	assert.Equal(t, b.Checksum, row.ScriptsVersion)
	assert.Equal(t, b.Version, row.SoftwareVersion)
	assert.Equal(t, "4.15.0", row.Version, "the template version stays")
	root, err := e.fleet.Root(vm.ID)
	require.NoError(t, err)
	for _, f := range b.Files {
		data, err := os.ReadFile(filepath.Join(root, f.Path))
		require.NoError(t, err, f.Path)
		assert.Equal(t, string(f.Content), string(data), f.Path)
	}
	sig, err := os.ReadFile(filepath.Join(root, agent.ScriptsSignatureFile))
	require.NoError(t, err)
	assert.Equal(t, b.Checksum, strings.TrimSpace(string(sig)))
	sys, err := e.fleet.System(vm.ID)
	require.NoError(t, err)
	assert.Equal(t, 1, sys.ServiceRestarts(agent.ServiceDnsmasq))
	assert.Len(t, e.events(EventLivePatch, vm.ID), 1)

	// The same operation again (a retried activity): answered from the journal, nothing sent.
	_, err = e.h.PatchRouter(ctx, PatchRouterInput{OperationID: "op-patch-1", RouterID: vm.ID, Force: true})
	require.NoError(t, err)
	assert.Equal(t, 1, sys.ServiceRestarts(agent.ServiceDnsmasq))
	assert.Len(t, e.events(EventLivePatch, vm.ID), 1)
	// Another operation, same bundle: the agent finds it installed.
	res, err = e.h.PatchRouter(ctx, PatchRouterInput{OperationID: "op-patch-2", RouterID: vm.ID})
	require.NoError(t, err)
	assert.False(t, res.Changed)
	assert.Equal(t, 1, sys.ServiceRestarts(agent.ServiceDnsmasq))
	// Forced: installed again and restarted.
	res, err = e.h.PatchRouter(ctx, PatchRouterInput{OperationID: "op-patch-3", RouterID: vm.ID, Force: true})
	require.NoError(t, err)
	assert.True(t, res.Changed)
	assert.Equal(t, 2, sys.ServiceRestarts(agent.ServiceDnsmasq))

	// The fresh checks compare the signature with the recorded scripts version.
	fresh, err := e.h.HealthCheckNow(ctx, vm.ID)
	require.NoError(t, err)
	var version *models.HealthCheckResult
	for i := range fresh.Results {
		if fresh.Results[i].CheckName == agent.CheckRouterVersion {
			version = &fresh.Results[i]
		}
	}
	require.NotNil(t, version)
	assert.True(t, version.Success, version.Details)
	assert.Contains(t, version.Details, b.Checksum)
	// A signature changed behind the platform's back fails that check.
	require.NoError(t, os.WriteFile(filepath.Join(root, agent.ScriptsSignatureFile), []byte("other\n"), 0o644))
	fresh, err = e.h.HealthCheckNow(ctx, vm.ID)
	require.NoError(t, err)
	for _, r := range fresh.Results {
		if r.CheckName == agent.CheckRouterVersion {
			assert.False(t, r.Success)
			assert.Contains(t, r.Details, "scripts version mismatch")
		}
	}
}

// TestPatchRouterRefusals: a router not Running, one another operation holds, and a bundle
// whose files do not match its checksum are refused (non-retryable) with the row unchanged.
func TestPatchRouterRefusals(t *testing.T) {
	ctx := context.Background()
	e := newHCEnv(t, modelstest.SQLite(t))
	n := e.network("Dhcp,Dns")
	appType := func(err error) string {
		var ae *temporal.ApplicationError
		if errors.As(err, &ae) {
			return ae.Type()
		}
		return ""
	}

	stopped := e.router(routerOpts{net: &n, state: models.StateStopped})
	_, err := e.h.PatchRouter(ctx, PatchRouterInput{OperationID: "op-a", RouterID: stopped.ID})
	require.Error(t, err)
	assert.Equal(t, ErrTypeNotRunning, appType(err))
	assert.Contains(t, err.Error(), "recreate it instead")

	busy := e.router(routerOpts{net: &n})
	e.create(&models.Operation{Kind: "systemvm.reboot", TargetType: "router", TargetID: busy.ID, WorkflowID: "systemvm:" + busy.ID,
		Status: models.OpRunning})
	_, err = e.h.PatchRouter(ctx, PatchRouterInput{OperationID: "op-b", RouterID: busy.ID})
	require.Error(t, err)
	assert.Equal(t, ErrTypePatchFailed, appType(err))
	assert.Contains(t, err.Error(), "systemvm.reboot")
	assert.Empty(t, e.reload(busy).ScriptsVersion)

	vm := e.router(routerOpts{net: &n})
	e.h.PatchBundle = func(context.Context) (agent.Bundle, error) {
		b, err := agent.DefaultBundle()
		b.Files[0].Content = append([]byte("# altered on the way\n"), b.Files[0].Content...)
		return b, err
	}
	_, err = e.h.PatchRouter(ctx, PatchRouterInput{OperationID: "op-c", RouterID: vm.ID})
	require.Error(t, err)
	assert.Equal(t, ErrTypePatchFailed, appType(err))
	assert.Contains(t, err.Error(), "checksum mismatch")
	row := e.reload(vm)
	assert.Empty(t, row.ScriptsVersion)
	assert.Empty(t, row.SoftwareVersion)
	sys, err := e.fleet.System(vm.ID)
	require.NoError(t, err)
	assert.Zero(t, sys.ServiceRestarts(agent.ServiceDnsmasq), "nothing restarted")
}
