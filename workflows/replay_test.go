package workflows_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	sysvmworker "github.com/sysvm/sysvm/worker"
)

// recordedType reads the workflow type of a recorded history (its first event).
func recordedType(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Events []struct {
			EventType string `json:"eventType"`
			Started   *struct {
				WorkflowType struct {
					Name string `json:"name"`
				} `json:"workflowType"`
			} `json:"workflowExecutionStartedEventAttributes"`
		} `json:"events"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(h.Events) == 0 || h.Events[0].Started == nil {
		t.Fatalf("%s: the first event is not WorkflowExecutionStarted", path)
	}
	return h.Events[0].Started.WorkflowType.Name
}

// TestReplayRecordedHistories replays every history in testdata/, recorded from real runs on a
// Temporal dev server (internal/e2e TestRecordHistories, SYSVM_RECORD_HISTORIES=1), with every
// workflow the worker registers, and fails when a registered workflow type has no recorded
// history. A change to workflow code that would make a running workflow take another path
// (one not behind workflow.GetVersion) fails here instead of in production; histories recorded
// before a GetVersion change (HealthSweep_basic_v0.json) keep the old branch replayed.
func TestReplayRecordedHistories(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no recorded histories in testdata/")
	}
	r := worker.NewWorkflowReplayer()
	registered := map[string]bool{}
	for _, w := range sysvmworker.Workflows() {
		r.RegisterWorkflowWithOptions(w.Fn, workflow.RegisterOptions{Name: w.Name})
		registered[w.Name] = false
	}
	for _, f := range files {
		ty := recordedType(t, f)
		if _, ok := registered[ty]; !ok {
			t.Errorf("%s: workflow type %q is not registered by the worker", f, ty)
			continue
		}
		registered[ty] = true
		if base := filepath.Base(f); base != "lifecycle_recreate.json" && !strings.HasPrefix(base, ty+"_") {
			t.Errorf("%s holds a %s history: name it %s_<case>.json", f, ty, ty)
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			if err := r.ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatalf("replay %s: %v", f, err)
			}
		})
	}
	var missing []string
	for name, seen := range registered {
		if !seen {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("no recorded history of %v in testdata/: record them with "+
			"SYSVM_RECORD_HISTORIES=1 go test -count=1 -timeout 15m ./internal/e2e -run TestRecordHistories", missing)
	}
}
