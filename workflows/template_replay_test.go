package workflows

import (
	"path/filepath"
	"testing"

	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// TestReplayTemplateRolloutHistories replays TemplateRollout histories recorded on a Temporal
// dev server (internal/e2e TestTemplateRolloutEveryHypervisor with SYSVM_RECORD_HISTORY=1): a
// change to the rollout's command sequence without workflow.GetVersion fails here.
func TestReplayTemplateRolloutHistories(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "template", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no recorded template rollout histories in testdata/template/")
	}
	r := worker.NewWorkflowReplayer()
	r.RegisterWorkflowWithOptions(TemplateRollout, workflow.RegisterOptions{Name: TemplateRolloutWorkflowName})
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if err := r.ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatalf("replay %s: %v", f, err)
			}
		})
	}
}
