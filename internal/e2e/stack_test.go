// Package e2e runs sysvm end to end on real parts: a Temporal dev server, MariaDB or SQLite,
// vcsim, the real worker and the real API over HTTP.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"

	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/api"
	"github.com/sysvm/sysvm/codec"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/vmware"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/worker"
)

// stack is one running platform.
type stack struct {
	t        *testing.T
	store    *models.Store
	temporal *testenv.Temporal
	client   client.Client
	acts     *activities.Activities
	api      *httptest.Server
	key      string
	sims     []devcloud.SimCluster
	// codec is the payload codec of every client and worker, keyed by the test master key as
	// `sysvm worker` processes started with SYSVM_SECRET_KEY are: histories hold no clear text.
	codec *codec.Codec
}

// testCodec is the payload codec `sysvm` derives from modelstest.TestKey.
func testCodec(t *testing.T) *codec.Codec {
	t.Helper()
	c, err := codec.New(modelstest.TestKey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func logger() *slog.Logger {
	if os.Getenv("SYSVM_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newStack seeds a one-zone demo cloud on vcsim into store and starts Temporal and the API;
// withWorker also starts an in-process worker.
func newStack(t *testing.T, store *models.Store, withWorker bool) *stack {
	t.Helper()
	return newStackOn(t, store, withWorker, nil)
}

// newStackOn is newStack on a given Temporal server (e.g. testenv.PersistentTemporalT, for a
// test that restarts it); nil starts an in-memory one.
func newStackOn(t *testing.T, store *models.Store, withWorker bool, temporal *testenv.Temporal) *stack {
	t.Helper()
	ctx := context.Background()
	s := &stack{t: t, store: store, codec: testCodec(t)}
	sims, stop, err := devcloud.StartVMware(ctx, 1)
	if err != nil {
		t.Fatalf("start vcsim: %v", err)
	}
	t.Cleanup(stop)
	s.sims = sims
	if _, err := devcloud.Seed(ctx, store, devcloud.Clusters{VMware: sims}, devcloud.SeedOptions{Zones: 1}); err != nil {
		t.Fatalf("seed: %v", err)
	}
	reg := hypervisors.NewRegistry().Register(hypervisors.VMware, vmware.Connect)
	s.acts = &activities.Activities{Store: store, Drivers: activities.NewDriverPool(store, reg), Logger: logger()}
	t.Cleanup(s.acts.Drivers.Close)
	if err := devcloud.Materialize(ctx, store, s.acts.Drivers, logger()); err != nil {
		t.Fatalf("materialize: %v", err)
	}
	s.temporal = temporal
	if s.temporal == nil {
		s.temporal = testenv.TemporalT(t, false)
	}
	if s.client, err = s.temporal.Client(s.codec.Apply); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.client.Close)
	if withWorker {
		w := worker.New(worker.Config{Client: s.client, Activities: s.acts, Logger: logger()})
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
	}
	srv, err := api.New(api.Config{Store: store, Temporal: s.client, Namespace: "default",
		TemporalUI: "http://localhost:8233", Logger: logger()})
	if err != nil {
		t.Fatal(err)
	}
	s.api = httptest.NewServer(srv.Handler())
	t.Cleanup(s.api.Close)
	_, s.key, err = store.CreateAPIKey(ctx, "e2e-admin", models.RoleAdmin, "")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// do calls the API and decodes the JSON answer into out (when not nil); it returns the status.
func (s *stack) do(method, path string, body any, out any) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.api.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+s.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode
}

// operation is the API's view of an operation.
type operation struct {
	ID         string          `json:"id"`
	Kind       string          `json:"kind"`
	Status     string          `json:"status"`
	Error      string          `json:"error"`
	Result     json.RawMessage `json:"result"`
	WorkflowID string          `json:"workflowId"`
	RunID      string          `json:"runId"`
	Links      struct {
		TemporalUI string `json:"temporalUi"`
	} `json:"links"`
}

// start posts an action and returns the operation it started.
func (s *stack) start(path string) operation {
	s.t.Helper()
	var out struct {
		Operation operation `json:"operation"`
		Error     any       `json:"error"`
	}
	if code := s.do(http.MethodPost, path, nil, &out); code != http.StatusAccepted {
		s.t.Fatalf("POST %s = %d (%v), want 202", path, code, out.Error)
	}
	return out.Operation
}

// wait polls an operation until it is no longer running.
func (s *stack) wait(op operation, timeout time.Duration) operation {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var env struct {
			Operation operation `json:"operation"`
		}
		if code := s.do(http.MethodGet, "/api/v1/operations/"+op.ID, nil, &env); code != http.StatusOK {
			s.t.Fatalf("GET operation %s = %d", op.ID, code)
		}
		got := env.Operation
		if got.Status != models.OpRunning {
			return got
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("operation %s (%s) still running after %s", op.ID, op.Kind, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// vm reads a system VM row.
func (s *stack) vm(id string) models.SystemVM {
	s.t.Helper()
	var vm models.SystemVM
	if err := s.store.Get(context.Background(), &vm, id); err != nil {
		s.t.Fatalf("load vm %s: %v", id, err)
	}
	return vm
}

// hv inspects a VM on its hypervisor.
func (s *stack) hv(vm models.SystemVM) (hypervisors.VMInfo, error) {
	d, err := s.acts.Drivers.For(context.Background(), vm.ClusterID)
	if err != nil {
		s.t.Fatal(err)
	}
	return d.GetVM(context.Background(), vm.HypervisorName())
}

// pickRouter returns a router matching a filter.
func (s *stack) pickRouter(where string, args ...any) models.SystemVM {
	s.t.Helper()
	var vm models.SystemVM
	if err := s.store.DB.Where("type = ?", models.TypeRouter).Where(where, args...).Order("name").First(&vm).Error; err != nil {
		s.t.Fatalf("no router where %s %v: %v", where, args, err)
	}
	return vm
}
