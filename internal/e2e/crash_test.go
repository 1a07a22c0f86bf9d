package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/codec"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/worker"
	"github.com/sysvm/sysvm/workflows"
)

// helperWorkerEnv makes the test binary run as a worker process (TestMain), so a test can
// kill -9 a worker. Its value is the worker's wiring (helperPlatform, helperSSH).
const helperWorkerEnv = "SYSVM_E2E_HELPER_WORKER"

// The wirings of a helper worker process.
const (
	// helperPlatform runs the whole platform wiring of `sysvm dev`: the drivers observed by
	// the simulated system VMs and the SSH executor into them (their SSH servers live in the
	// worker process and die with it, as a worker host's view of the network would not: a new
	// worker builds them again from the inventory and the hypervisor).
	helperPlatform = "platform"
	// helperSSH runs the activities with an SSH executor dialling for real: the simulated
	// system VMs (and their hosts' TCP listeners) live on in the test process while the
	// worker is killed (certificate rotations).
	helperSSH = "ssh"
)

// TestMain runs the helper worker process when asked to, the tests otherwise.
func TestMain(m *testing.M) {
	if mode := os.Getenv(helperWorkerEnv); mode != "" {
		os.Exit(runHelperWorker(mode))
	}
	os.Exit(m.Run())
}

// runHelperWorker is a worker process over SYSVM_DB_DSN and SYSVM_TEMPORAL_ADDRESS, with the
// codec, and the activities of the wiring mode.
func runHelperWorker(mode string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := logger()
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "helper worker (%s): %s: %v\n", mode, what, err)
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
	var cfg worker.Config
	switch mode {
	case helperPlatform:
		pub, err := kp.PublicKey()
		if err != nil {
			return fail("public key", err)
		}
		routers, err := devcloud.StartRouters(ctx, store, pub, (&activities.Health{Store: store}).RouterConfig, log, fleet.Options{})
		if err != nil {
			return fail("simulated system VMs", err)
		}
		defer routers.Close()
		built, err := worker.BuildPlatform(ctx, store, log, routers.Observe(worker.Drivers()), routers.Fleet.DialContext)
		if err != nil {
			return fail("platform", err)
		}
		defer built.Close()
		// A replacement the killed worker built runs on: simulate it again in this process.
		if err := routers.AdoptInstances(ctx, built.Activities.Drivers); err != nil {
			return fail("simulated system VMs", err)
		}
		cfg = worker.Config{Activities: built.Activities, Health: built.Health}
	case helperSSH:
		ex, err := sshexec.New(sshexec.Config{Key: kp, HostKeys: &sshexec.MemoryHostKeyStore{}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return fail("executor", err)
		}
		defer ex.Close()
		cfg = worker.Config{Activities: &activities.Activities{Store: store, Exec: ex, Logger: log}}
	default:
		return fail("mode", fmt.Errorf("unknown wiring %q", mode))
	}
	cdc, err := codec.New(modelstest.TestKey)
	if err != nil {
		return fail("codec", err)
	}
	opts := client.Options{HostPort: os.Getenv("SYSVM_TEMPORAL_ADDRESS"), Namespace: "default"}
	cdc.Apply(&opts) // the test's client reads and writes through the same codec
	c, err := client.Dial(opts)
	if err != nil {
		return fail("temporal", err)
	}
	defer c.Close()
	cfg.Client, cfg.Logger = c, log
	w := worker.New(cfg)
	if err := w.Start(); err != nil {
		return fail("start worker", err)
	}
	defer w.Stop()
	<-ctx.Done()
	return 0
}

// startWorkerProcess runs this test binary as a worker process with the platform wiring
// (runHelperWorker) against the test's Temporal and database.
func startWorkerProcess(t *testing.T, dsn, temporal string) *exec.Cmd {
	t.Helper()
	return startHelperProcess(t, helperPlatform, dsn, temporal)
}

// startHelperProcess runs this test binary as a worker process of a wiring mode; the process
// is killed at the end of the test.
func startHelperProcess(t *testing.T, mode, dsn, temporal string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperWorkerEnv+"="+mode, "SYSVM_DB_DSN="+dsn, "SYSVM_TEMPORAL_ADDRESS="+temporal)
	if os.Getenv("SYSVM_TEST_VERBOSE") != "" {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	return cmd
}

// startedActivity reports whether the described run has an activity of activityType pending
// in state STARTED, its attempt started after since.
func startedActivity(desc *workflowservice.DescribeWorkflowExecutionResponse, activityType string, since time.Time) bool {
	for _, pa := range desc.PendingActivities {
		if pa.ActivityType.GetName() == activityType && pa.State == enumspb.PENDING_ACTIVITY_STATE_STARTED &&
			pa.LastStartedTime.AsTime().After(since) {
			return true
		}
	}
	return false
}

// waitForRunningStep waits until Temporal reports the recreate step started on a worker: its
// ActivityTaskScheduled event is in the run's history and the activity is pending in state
// STARTED (Temporal writes the started event itself only when the attempt ends).
func waitForRunningStep(t *testing.T, s *stack, op operation, step activities.Step, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		var scheduled int64
		hist := s.client.GetWorkflowHistory(ctx, op.WorkflowID, op.RunID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for hist.HasNext() {
			ev, err := hist.Next()
			if err == nil {
				err = s.codec.DecodeMessage(ctx, ev) // payloads are encrypted in history
			}
			if err != nil {
				t.Fatal(err)
			}
			if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil && a.ActivityType.GetName() == "RecreateStep" {
				var in activities.RecreateInput
				if err := json.Unmarshal(a.Input.Payloads[0].Data, &in); err == nil && in.Step == step {
					scheduled = ev.EventId
				}
			}
		}
		if scheduled != 0 {
			desc, err := s.client.DescribeWorkflowExecution(ctx, op.WorkflowID, op.RunID)
			if err != nil {
				t.Fatal(err)
			}
			if startedActivity(desc, "RecreateStep", time.Time{}) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("step %s never started on a worker", step)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitForCloneTask waits until vcsim runs a clone task (the replacement's create, a driver
// call observed on the hypervisor).
func waitForCloneTask(t *testing.T, s *stack, timeout time.Duration) {
	t.Helper()
	waitForVcsimTask(t, s, "clone", timeout)
}

// waitForVcsimTask waits until vcsim runs a task whose description names kind ("clone",
// "destroy").
func waitForVcsimTask(t *testing.T, s *stack, kind string, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	conn := s.sims[0].Conn
	u, err := url.Parse(conn.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(conn.Username, conn.Password)
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		t.Fatalf("connect to vcsim: %v", err)
	}
	defer func() { _ = c.Logout(ctx) }()
	pc := property.DefaultCollector(c.Client)
	deadline := time.Now().Add(timeout)
	for {
		var tm mo.TaskManager
		if err := pc.RetrieveOne(ctx, *c.ServiceContent.TaskManager, []string{"recentTask"}, &tm); err != nil {
			t.Fatal(err)
		}
		if len(tm.RecentTask) > 0 {
			var tasks []mo.Task
			if err := pc.Retrieve(ctx, tm.RecentTask, []string{"info"}, &tasks); err != nil {
				t.Fatal(err)
			}
			for _, task := range tasks {
				if strings.Contains(strings.ToLower(task.Info.DescriptionId), kind) && task.Info.State == types.TaskInfoStateRunning {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("vcsim never ran a %s task", kind)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startSlowRecreate starts the stack on MySQL, a worker process and a recreate of a VMware
// router through the API, with vcsim's method (its task name without the _Task suffix)
// taking 4 s from now on.
func startSlowRecreate(t *testing.T, method string) (*stack, *models.Store, string, *exec.Cmd, models.SystemVM, operation) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts Temporal, vcsim and worker processes")
	}
	dsn := modelstest.MySQLDSN(t)
	store, err := models.OpenAndMigrate(context.Background(), dsn, modelstest.TestKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	s := newStack(t, store, false)
	simulator.TaskDelay.MethodDelay = map[string]int{method: 4000}
	t.Cleanup(func() { simulator.TaskDelay.MethodDelay = nil })
	worker := startWorkerProcess(t, dsn, s.temporal.Address)
	r := s.pickRouter("is_redundant = ? AND hypervisor_type = ?", false, "VMware")
	return s, store, dsn, worker, r, s.start("/api/v1/routers/" + r.ID + "/recreate")
}

// assertOnlyTheReplacement checks the hypervisor side after router r's recreate: one VM for
// it, the replacement, running (the old one gone), and the database agrees.
func assertOnlyTheReplacement(t *testing.T, s *stack, r models.SystemVM, res workflows.LifecycleResult) {
	t.Helper()
	after := s.vm(r.ID)
	got := s.instancesOf(after)
	if len(got) != 1 || got[0].Name != res.InstanceName || got[0].State != hypervisors.PowerRunning {
		t.Errorf("vcsim VMs of %s: %+v, want exactly the replacement %s running", r.Name, got, res.InstanceName)
	}
	if after.State != models.StateRunning || after.InstanceName != res.InstanceName || after.PrivateIP != res.ControlIP {
		t.Errorf("row after recreate: %s %q %s, want Running %q %s", after.State, after.InstanceName, after.PrivateIP, res.InstanceName, res.ControlIP)
	}
}

// TestWorkerKilledMidRecreate kills -9 the worker process once Temporal reports the
// replacement's create running on it (vcsim is cloning: each clone takes 4 s), starts another
// worker, and checks the effects on the hypervisor: the retried create finds the clone made
// by the dead worker's attempt instead of making a second, and vcsim ends with exactly one VM
// for the router, the replacement, running, with the database naming it.
func TestWorkerKilledMidRecreate(t *testing.T) {
	// Each clone takes 4 s, long enough to kill the worker in the middle.
	s, store, dsn, first, r, op := startSlowRecreate(t, "CloneVm")

	waitForRunningStep(t, s, op, activities.StepCreateReplacement, 90*time.Second)
	// ... and the driver call it makes is under way on the hypervisor: vcsim is cloning.
	waitForCloneTask(t, s, 30*time.Second)
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = first.Process.Wait()
	killedAt := time.Now()
	ctx := context.Background()
	if steps, _ := activities.OperationSteps(ctx, store, op.ID); len(steps) != 2 {
		t.Fatalf("at the kill, journal has %d steps, want prepare and seed only: %+v", len(steps), steps)
	}

	startWorkerProcess(t, dsn, s.temporal.Address)
	done := s.wait(op, 3*time.Minute)
	t.Logf("a second worker finished the recreate %s after the first was killed", time.Since(killedAt).Round(time.Millisecond))
	if done.Status != models.OpCompleted {
		t.Fatalf("recreate after worker crash ended %s: %s", done.Status, done.Error)
	}
	var res workflows.LifecycleResult
	if err := json.Unmarshal(done.Result, &res); err != nil {
		t.Fatal(err)
	}
	steps, _ := activities.OperationSteps(ctx, store, op.ID)
	var names []string
	for _, st := range steps {
		names = append(names, st.Step+"("+st.Detail+")")
	}
	if joined := strings.Join(names, ","); !strings.Contains(joined, "recreate.create-replacement(already created)") {
		t.Errorf("retried create should find the clone the killed worker's attempt made; journal: %s", joined)
	}
	assertOnlyTheReplacement(t, s, r, res)
}

// TestWorkerKilledDuringALocalRecreateStep kills -9 the worker while the recreate's destroy-old
// runs (a local activity since recreate-local-steps: vcsim is destroying the old VM, each
// destroy takes 4 s), after verify, stop-old and take-over ran as local activities in the same
// workflow task, which the kill leaves uncompleted. Another worker runs that workflow task
// again: the steps the journal holds are not done twice (their journaled results come back:
// the switch times of the result are those journaled before the kill), and vcsim ends with
// exactly one VM for the router, the replacement, running, with the database naming it.
func TestWorkerKilledDuringALocalRecreateStep(t *testing.T) {
	s, store, dsn, first, r, op := startSlowRecreate(t, "Destroy")

	waitForVcsimTask(t, s, "destroy", 2*time.Minute)
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = first.Process.Wait()
	ctx := context.Background()
	before, err := activities.OperationSteps(ctx, store, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	journaled := map[string]models.OperationStep{}
	for _, st := range before {
		journaled[st.Step] = st
	}
	for _, step := range []activities.Step{activities.StepVerifyReplacement, activities.StepStopOld, activities.StepTakeOver} {
		if _, ok := journaled[step.JournalKey()]; !ok {
			t.Fatalf("at the kill the journal lacks %s: %+v", step, before)
		}
	}
	if _, ok := journaled[activities.StepDestroyOld.JournalKey()]; ok {
		t.Fatalf("destroy-old journaled before the kill: the kill came too late")
	}

	startWorkerProcess(t, dsn, s.temporal.Address)
	done := s.wait(op, 3*time.Minute)
	if done.Status != models.OpCompleted {
		t.Fatalf("recreate after worker crash ended %s: %s", done.Status, done.Error)
	}
	var res workflows.LifecycleResult
	if err := json.Unmarshal(done.Result, &res); err != nil {
		t.Fatal(err)
	}
	var stopOld, takeOver activities.RecreateResult
	if err := json.Unmarshal([]byte(journaled[activities.StepStopOld.JournalKey()].Detail), &stopOld); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(journaled[activities.StepTakeOver.JournalKey()].Detail), &takeOver); err != nil {
		t.Fatal(err)
	}
	if res.OldStoppedAt == nil || !res.OldStoppedAt.Equal(stopOld.OldStoppedAt) || res.ServingAt == nil || !res.ServingAt.Equal(takeOver.ServingAt) {
		t.Errorf("switch times %v / %v, want the journaled %v / %v: a step ran twice", res.OldStoppedAt, res.ServingAt,
			stopOld.OldStoppedAt, takeOver.ServingAt)
	}
	assertOnlyTheReplacement(t, s, r, res)
}
