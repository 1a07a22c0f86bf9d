package bench

import (
	"context"
	"database/sql"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/workflows"
)

func TestSeedZone(t *testing.T) {
	ctx := context.Background()
	s := modelstest.SQLite(t)
	inv, err := SeedZone(ctx, s, 250, 100)
	require.NoError(t, err)
	assert.Equal(t, 3, inv.Hosts)
	assert.Equal(t, 250, inv.Routers)

	var vms []models.SystemVM
	require.NoError(t, s.DB.Where("zone_id = ? AND type = ? AND state = ?", inv.ZoneID, models.TypeRouter, models.StateRunning).Find(&vms).Error)
	require.Len(t, vms, 250)
	perHost := map[string]int{}
	linkLocal := map[string]bool{}
	nets := map[string]bool{}
	for _, vm := range vms {
		perHost[vm.HostID]++
		assert.False(t, linkLocal[vm.LinkLocalIP], "link-local %s used twice", vm.LinkLocalIP)
		linkLocal[vm.LinkLocalIP] = true
		assert.True(t, strings.HasPrefix(vm.LinkLocalIP, "169.254."), vm.LinkLocalIP)
		assert.NotEmpty(t, vm.NetworkID)
		assert.False(t, nets[vm.NetworkID], "network %s served by two routers", vm.NetworkID)
		nets[vm.NetworkID] = true
		assert.Equal(t, TemplateVersion, vm.Version)
	}
	counts := make([]int, 0, len(perHost))
	for _, c := range perHost {
		counts = append(counts, c)
	}
	slices.Sort(counts)
	assert.Equal(t, []int{50, 100, 100}, counts)

	// Each router's configuration has its network's gateway and services.
	cfg, err := (&activities.Health{Store: s}).RouterConfig(ctx, vms[0])
	require.NoError(t, err)
	assert.Len(t, cfg.Gateways, 1)
	assert.True(t, cfg.Services.DHCP && cfg.Services.DNS && cfg.Services.LB)

	_, err = SeedZone(ctx, s, 0, 0)
	assert.Error(t, err)
	_, err = SeedZone(ctx, s, MaxRouters+1, 0)
	assert.Error(t, err)
}

func TestPauseHealthSchedules(t *testing.T) {
	ctx := context.Background()
	s := modelstest.SQLite(t)
	_, err := SeedZone(ctx, s, 1, 0)
	require.NoError(t, err)
	require.NoError(t, PauseHealthSchedules(ctx, s))
	want, err := workflows.DesiredHealthSchedules(ctx, s)
	require.NoError(t, err)
	require.Len(t, want, 4)
	for _, sc := range want {
		assert.True(t, sc.Paused, sc.ID)
	}
}

// TestVerify: a sweep that checked nothing, or only some routers, or left stale or failing
// results, never passes.
func TestVerify(t *testing.T) {
	ctx := context.Background()
	s := modelstest.SQLite(t)
	inv, err := SeedZone(ctx, s, 3, 0)
	require.NoError(t, err)
	var ids []string
	require.NoError(t, s.DB.Model(&models.SystemVM{}).Where("zone_id = ?", inv.ZoneID).Order("id").Pluck("id", &ids).Error)
	since := time.Now().UTC().Truncate(time.Millisecond)
	good := workflows.SweepResult{Summary: activities.BatchSummary{Routers: 3, Reachable: 3}, Batches: 1, Runs: 1}

	// Nothing stored: the summary alone is not believed.
	n, err := Verify(ctx, s, inv.ZoneID, 3, since, good)
	assert.Equal(t, 0, n)
	assert.ErrorContains(t, err, "0 of 3 routers")

	// A summary that visited nothing fails even with results in the database.
	at := since.Add(time.Second)
	for _, id := range ids {
		require.NoError(t, s.DB.Create(&[]models.HealthCheckResult{
			{RouterID: id, CheckName: activities.CheckConnectivity, CheckType: "basic", Success: true, LastUpdated: at},
			{RouterID: id, CheckName: "disk_space_check.py", CheckType: "basic", Success: true, LastUpdated: at},
		}).Error)
	}
	_, err = Verify(ctx, s, inv.ZoneID, 3, since, workflows.SweepResult{})
	assert.ErrorContains(t, err, "visited 0 routers")

	n, err = Verify(ctx, s, inv.ZoneID, 3, since, good)
	require.NoError(t, err)
	assert.Equal(t, 3, n)

	// Results older than the sweep do not count.
	_, err = Verify(ctx, s, inv.ZoneID, 3, at.Add(time.Millisecond), good)
	assert.ErrorContains(t, err, "0 of 3 routers")

	// Connectivity alone (the agent did not run) does not count.
	require.NoError(t, s.DB.Where("router_id = ? AND check_name <> ?", ids[1], activities.CheckConnectivity).
		Delete(&models.HealthCheckResult{}).Error)
	n, err = Verify(ctx, s, inv.ZoneID, 3, since, good)
	assert.Equal(t, 2, n)
	assert.ErrorContains(t, err, "2 of 3 routers")
	require.NoError(t, s.DB.Create(&models.HealthCheckResult{RouterID: ids[1], CheckName: "disk_space_check.py",
		CheckType: "basic", Success: true, LastUpdated: at}).Error)

	// A failing result or a flagged router fails the run.
	require.NoError(t, s.DB.Create(&models.HealthCheckResult{RouterID: ids[2], CheckName: "memory_usage_check.py",
		CheckType: "basic", Success: false, LastUpdated: at}).Error)
	_, err = Verify(ctx, s, inv.ZoneID, 3, since, good)
	assert.ErrorContains(t, err, "1 stored results fail")
	require.NoError(t, s.DB.Where("router_id = ? AND check_name = ?", ids[2], "memory_usage_check.py").
		Delete(&models.HealthCheckResult{}).Error)
	require.NoError(t, s.DB.Model(&models.SystemVM{}).Where("id = ?", ids[0]).Update("health_checks_failed", true).Error)
	_, err = Verify(ctx, s, inv.ZoneID, 3, since, good)
	assert.ErrorContains(t, err, "1 routers have healthchecksfailed set")

	// Errors in the summary fail it too.
	require.NoError(t, s.DB.Model(&models.SystemVM{}).Where("id = ?", ids[0]).Update("health_checks_failed", false).Error)
	bad := good
	bad.Summary.Errors, bad.Summary.ErrorSamples = 1, []string{"no access path"}
	_, err = Verify(ctx, s, inv.ZoneID, 3, since, bad)
	assert.ErrorContains(t, err, "no access path")
}

func TestStoreKey(t *testing.T) {
	ctx := context.Background()
	for typ, prefix := range map[string]string{KeyECDSA: "ecdsa-sha2-nistp256 ", KeyEd25519: "ssh-ed25519 "} {
		s := modelstest.SQLite(t)
		require.NoError(t, storeKey(ctx, s, typ))
		kp, err := activities.SystemVMKeyPair(ctx, s.Secrets)
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(kp.AuthorizedKey, prefix), kp.AuthorizedKey)
		_, err = kp.Signer()
		assert.NoError(t, err)
	}
	s := modelstest.SQLite(t)
	require.NoError(t, storeKey(ctx, s, KeyRSA)) // the platform generates its own
	_, err := s.Secrets.GetSecret(ctx, activities.SystemVMKeyName)
	assert.ErrorIs(t, err, models.ErrSecretNotFound)
	assert.Error(t, storeKey(ctx, s, "dsa"))
}

func TestProcessAccounting(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pids, err := ChildPIDs(os.Getpid(), "sleep")
	require.NoError(t, err)
	assert.Contains(t, pids, cmd.Process.Pid)
	c, err := ProcessCPU(cmd.Process.Pid)
	require.NoError(t, err)
	assert.Less(t, c, time.Second, "a sleeping process uses almost no CPU")

	self0, err := ProcessCPU(os.Getpid())
	require.NoError(t, err)
	ru0, err := SelfCPU()
	require.NoError(t, err)
	m0, err := MachineCPU()
	require.NoError(t, err)
	// Spin until getrusage says this process used 300 ms of CPU (a busy machine gives a
	// wall-clock loop less), then check /proc and the machine's counters saw at least that much.
	reached := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		busy(20 * time.Millisecond)
		ru, err := SelfCPU()
		require.NoError(t, err)
		if ru-ru0 >= 300*time.Millisecond {
			reached = true
			break
		}
	}
	require.True(t, reached, "did not get 300 ms of CPU in 30 s")
	self1, err := ProcessCPU(os.Getpid())
	require.NoError(t, err)
	ru1, err := SelfCPU()
	require.NoError(t, err)
	m1, err := MachineCPU()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, self1-self0, 200*time.Millisecond)
	assert.GreaterOrEqual(t, ru1-ru0, 200*time.Millisecond)
	assert.GreaterOrEqual(t, m1-m0, 200*time.Millisecond, "the machine was busy at least as long as this process")
	_, err = ProcessCPU(1 << 30)
	assert.Error(t, err)
	l, err := LoadAverage()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, l, 0.0)
}

// busy spins on one core for d of wall time.
func busy(d time.Duration) {
	x := 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i := range 10000 {
			x ^= i
		}
	}
	_ = x
}

func TestScratchMySQL(t *testing.T) {
	ctx := context.Background()
	base := "mysql://" + modelstest.MySQLBase()
	admin, err := sql.Open("mysql", modelstest.MySQLBase())
	require.NoError(t, err)
	defer admin.Close()
	if err := admin.PingContext(ctx); err != nil {
		if os.Getenv("SYSVM_TEST_SKIP_MYSQL") != "" {
			testenv.Require(t, "MySQL at "+base, err) // skips, but fails under CI=true
		}
		t.Fatalf("MySQL not reachable at %s (start MariaDB or set SYSVM_TEST_SKIP_MYSQL=1): %v", base, err)
	}
	dsn, drop, err := ScratchMySQL(ctx, base+"ignored?parseTime=true")
	require.NoError(t, err)
	name := dsn[strings.LastIndexByte(dsn, '/')+1 : strings.IndexByte(dsn, '?')]
	assert.True(t, strings.HasPrefix(name, "sysvm_bench_"), dsn)
	assert.True(t, strings.HasSuffix(dsn, "?parseTime=true"), dsn)
	s, err := models.OpenAndMigrate(ctx, dsn, modelstest.TestKey)
	require.NoError(t, err)
	_, err = SeedZone(ctx, s, 10, 0)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	drop()
	var found string
	err = admin.QueryRowContext(ctx, "SELECT schema_name FROM information_schema.schemata WHERE schema_name = ?", name).Scan(&found)
	assert.ErrorIs(t, err, sql.ErrNoRows, "the scratch database is dropped")

	_, _, err = ScratchMySQL(ctx, "sqlite://x")
	assert.Error(t, err)
	assert.Equal(t, "mysql://root:***@tcp(h:1)/", redact("mysql://root:secret@tcp(h:1)/"))
}
