package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	enumspb "go.temporal.io/api/enums/v1"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// buildSysvm builds the real sysvm binary once per test.
func buildSysvm(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sysvm")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/sysvm")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build sysvm: %v\n%s", err, out)
	}
	return bin
}

// startWorkerProcess runs `sysvm worker` as its own process against the test's Temporal and
// database.
func startWorkerProcess(t *testing.T, bin, dsn, temporal string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "worker")
	cmd.Env = append(os.Environ(), "SYSVM_DB_DSN="+dsn, "SYSVM_TEMPORAL_ADDRESS="+temporal,
		"SYSVM_SECRET_KEY="+b64(modelstest.TestKey))
	if os.Getenv("SYSVM_TEST_VERBOSE") != "" {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	return cmd
}

// TestWorkerKilledMidRecreate kills the worker process while vcsim is still cloning the new
// router, starts another worker, and shows the recreate finishing with every step done once:
// the steps before the crash are not redone, the interrupted create is retried and finds the
// clone already made, and vcsim ends with exactly one VM of that name.
func TestWorkerKilledMidRecreate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal, vcsim and worker processes")
	}
	begin := time.Now()
	bin := buildSysvm(t)
	t.Logf("built sysvm in %s", time.Since(begin).Round(time.Millisecond))
	dsn := modelstest.MySQLDSN(t)
	store, err := models.Open(context.Background(), dsn, modelstest.TestKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	s := newStack(t, store, false)
	// From now on a slow vCenter: each clone takes 4 s, long enough to kill the worker in the
	// middle (the simulator names tasks without the _Task suffix).
	simulator.TaskDelay.MethodDelay = map[string]int{"CloneVm": 4000}
	t.Cleanup(func() { simulator.TaskDelay.MethodDelay = nil })
	first := startWorkerProcess(t, bin, dsn, s.temporal.Address)
	r := s.pickRouter("is_redundant = ?", false)
	op := s.start("/api/v1/routers/" + r.ID + "/recreate")

	// Wait until destroy is journaled: the create (the slow clone) is under way next.
	ctx := context.Background()
	deadline := time.Now().Add(90 * time.Second)
	for {
		steps, err := activities.OperationSteps(ctx, store, op.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(steps) > 0 && steps[len(steps)-1].Step == "hypervisor.destroy" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("destroy step never journaled; steps so far %+v", steps)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // the clone task is now running on vcsim
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_, _ = first.Process.Wait()
	if steps, _ := activities.OperationSteps(ctx, store, op.ID); len(steps) != 2 {
		t.Fatalf("at the kill, journal has %d steps, want stop and destroy only: %+v", len(steps), steps)
	}

	killedAt := time.Now()
	startWorkerProcess(t, bin, dsn, s.temporal.Address)
	done := s.wait(op, 3*time.Minute)
	t.Logf("a second worker finished the recreate %s after the first was killed", time.Since(killedAt).Round(time.Millisecond))
	if done.Status != models.OpCompleted {
		t.Fatalf("recreate after worker crash ended %s: %s", done.Status, done.Error)
	}

	// Temporal's history: each step scheduled once; the create was retried (attempt 2).
	hist := s.client.GetWorkflowHistory(ctx, op.WorkflowID, op.RunID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	scheduled := map[string]int{}
	attemptsOfCreate := int32(0)
	schedStep := map[int64]string{}
	for hist.HasNext() {
		ev, err := hist.Next()
		if err != nil {
			t.Fatal(err)
		}
		if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil && a.ActivityType.GetName() == "HypervisorStep" {
			var in activities.HypervisorStepInput
			if err := json.Unmarshal(a.Input.Payloads[0].Data, &in); err != nil {
				t.Fatal(err)
			}
			scheduled[string(in.Step)]++
			schedStep[ev.EventId] = string(in.Step)
		}
		if a := ev.GetActivityTaskStartedEventAttributes(); a != nil && schedStep[a.ScheduledEventId] == "create" {
			attemptsOfCreate = a.Attempt
		}
	}
	for _, step := range []string{"stop", "destroy", "create", "start"} {
		if scheduled[step] != 1 {
			t.Errorf("step %s scheduled %d times, want 1 (%v)", step, scheduled[step], scheduled)
		}
	}
	if attemptsOfCreate < 2 {
		t.Errorf("create ran in attempt %d; the crash should have forced a retry", attemptsOfCreate)
	}
	steps, _ := activities.OperationSteps(ctx, store, op.ID)
	var names []string
	for _, st := range steps {
		names = append(names, st.Step+"("+st.Detail+")")
	}
	joined := strings.Join(names, ",")
	if !strings.Contains(joined, "hypervisor.create(already created)") {
		t.Errorf("retried create should find the clone already made; journal: %s", joined)
	}
	// vcsim holds exactly one VM of that name, running, and the database agrees.
	d, err := s.acts.Drivers.For(ctx, r.ClusterID)
	if err != nil {
		t.Fatal(err)
	}
	all, err := d.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, vm := range all {
		if vm.Name == r.Name {
			n++
		}
	}
	if n != 1 {
		t.Errorf("vcsim has %d VMs named %s, want 1", n, r.Name)
	}
	if st := s.vm(r.ID).State; st != models.StateRunning {
		t.Errorf("database state %s after recreate, want Running", st)
	}
}
