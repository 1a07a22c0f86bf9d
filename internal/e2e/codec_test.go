package e2e

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.temporal.io/api/common/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/proxy"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/proto"

	"github.com/sysvm/sysvm/codec"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// TestLifecycleHistoryIsEncrypted reboots a router through the API on the real stack and reads
// the run's history as the Temporal server stores it: every payload is sealed by the codec,
// the router's name and ID appear in no payload, and the API still reports the decoded result.
func TestLifecycleHistoryIsEncrypted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Temporal and vcsim")
	}
	s := newStack(t, modelstest.SQLite(t), true)
	r := s.pickRouter("is_redundant = ?", false)
	op := s.start("/api/v1/routers/" + r.ID + "/reboot")
	done := s.wait(op, time.Minute)
	if done.Status != models.OpCompleted || !bytes.Contains(done.Result, []byte(r.Name)) {
		t.Fatalf("reboot ended %s (%s), result %s: want completed with the router's name", done.Status, done.Error, done.Result)
	}

	ctx := context.Background()
	h := &historypb.History{}
	var token []byte
	for range 100 {
		resp, err := s.client.WorkflowService().GetWorkflowExecutionHistory(ctx, &workflowservice.GetWorkflowExecutionHistoryRequest{
			Namespace: "default", Execution: &common.WorkflowExecution{WorkflowId: op.WorkflowID, RunId: op.RunID}, NextPageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		h.Events = append(h.Events, resp.History.Events...)
		if token = resp.NextPageToken; len(token) == 0 {
			break
		}
	}
	n := 0
	err := proxy.VisitPayloads(ctx, h, proxy.VisitPayloadsOptions{SkipSearchAttributes: true,
		Visitor: func(_ *proxy.VisitPayloadsContext, ps []*common.Payload) ([]*common.Payload, error) {
			for _, p := range ps {
				n++
				if string(p.Metadata[converter.MetadataEncoding]) != codec.EncodingEncrypted ||
					string(p.Metadata[codec.MetadataKeyID]) != s.codec.KeyID() {
					t.Errorf("payload in clear in the stored history: metadata %q", p.Metadata)
				}
				b, _ := proto.Marshal(p)
				if bytes.Contains(b, []byte(r.Name)) || bytes.Contains(b, []byte(r.ID)) {
					t.Errorf("a stored payload holds the router's name or ID in clear")
				}
			}
			return ps, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Fatalf("%d payloads in the reboot's history, want its input, activity inputs and results", n)
	}
	t.Logf("%d events, %d payloads checked against key %s", len(h.Events), n, s.codec.KeyID())
}
