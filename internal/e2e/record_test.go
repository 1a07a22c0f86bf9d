package e2e

import (
	"context"
	"os"
	"path/filepath"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sysvm/sysvm/internal/testenv"
)

// recordHistory writes a run's history as `temporal workflow show --output json` does, into
// workflows/testdata, when SYSVM_RECORD_HISTORY is set; the replay test there replays it so a
// change that breaks determinism fails.
func (s *stack) recordHistory(name string, op operation) {
	s.t.Helper()
	if os.Getenv("SYSVM_RECORD_HISTORY") == "" {
		return
	}
	it := s.client.GetWorkflowHistory(context.Background(), op.WorkflowID, op.RunID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var h historypb.History
	for it.HasNext() {
		ev, err := it.Next()
		if err == nil {
			err = s.codec.DecodeMessage(context.Background(), ev) // record in clear: replay needs no key
		}
		if err != nil {
			s.t.Fatal(err)
		}
		h.Events = append(h.Events, ev)
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(&h)
	if err != nil {
		s.t.Fatal(err)
	}
	path := filepath.Join(testenv.RepoRoot(), "workflows", "testdata", name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		s.t.Fatal(err)
	}
	s.t.Logf("recorded %d events to %s", len(h.Events), path)
}
