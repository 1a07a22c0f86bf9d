package codec

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/common/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/proxy"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/proto"

	"github.com/sysvm/sysvm/internal/testenv"
)

const (
	secretInput  = "router-password-4f1d9c-CLEAR"
	secretFailed = "xapi session OpaqueRef:5e3b-CLEAR"
	taskQueue    = "codec-test"
)

func echoActivity(_ context.Context, in string) (string, error) { return "echo " + in, nil }

func failActivity(_ context.Context, in string) (string, error) {
	return "", temporal.NewNonRetryableApplicationError("upload failed: "+secretFailed, "Upload", nil)
}

func secretWorkflow(ctx workflow.Context, in string) (string, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 10 * time.Second})
	var out string
	if err := workflow.ExecuteActivity(ctx, echoActivity, in).Get(ctx, &out); err != nil {
		return "", err
	}
	return out, workflow.ExecuteActivity(ctx, failActivity, in).Get(ctx, nil)
}

// rawHistory reads a run's history through the gRPC service, bypassing every converter: what
// the Temporal server stores and shows to anyone with access to it.
func rawHistory(t *testing.T, tc client.Client, id, runID string) *historypb.History {
	t.Helper()
	h := &historypb.History{}
	var token []byte
	for range 100 {
		resp, err := tc.WorkflowService().GetWorkflowExecutionHistory(context.Background(), &workflowservice.GetWorkflowExecutionHistoryRequest{
			Namespace: "default", Execution: &common.WorkflowExecution{WorkflowId: id, RunId: runID}, NextPageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		h.Events = append(h.Events, resp.History.Events...)
		if token = resp.NextPageToken; len(token) == 0 {
			return h
		}
	}
	t.Fatal("history longer than 100 pages")
	return nil
}

// TestHistoryOnADevServerHoldsNoClearText runs a workflow whose input, activity results and
// failure message carry known clear text through a real Temporal dev server with the codec on
// worker and client, then reads the stored history raw: every payload is encrypted under the
// codec's key and the clear text appears nowhere. The codec endpoint decodes the stored
// payloads back; a codec of another key refuses them.
func TestHistoryOnADevServerHoldsNoClearText(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Temporal dev server")
	}
	srv := testenv.TemporalT(t, false)
	c := mustNew(t, key(7))
	tc, err := srv.Client(c.Apply)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	w := worker.New(tc, taskQueue, worker.Options{})
	w.RegisterWorkflow(secretWorkflow)
	w.RegisterActivity(echoActivity)
	w.RegisterActivity(failActivity)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "codec-" + time.Now().Format("150405.000000"),
		TaskQueue: taskQueue, Memo: map[string]any{"note": secretInput}}, secretWorkflow, secretInput)
	if err != nil {
		t.Fatal(err)
	}
	err = run.Get(ctx, nil)
	// The client decodes the failure: the operator's error text is intact.
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || !strings.Contains(appErr.Error(), secretFailed) {
		t.Fatalf("run ended with %v, want the activity's failure decoded", err)
	}

	h := rawHistory(t, tc, run.GetID(), run.GetRunID())
	raw, err := proto.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	for _, clear := range []string{secretInput, "CLEAR", "json/plain"} {
		if bytes.Contains(raw, []byte(clear)) {
			t.Errorf("stored history holds %q in clear", clear)
		}
	}
	var payloads []*common.Payload
	err = proxy.VisitPayloads(ctx, h, proxy.VisitPayloadsOptions{SkipSearchAttributes: true,
		Visitor: func(_ *proxy.VisitPayloadsContext, p []*common.Payload) ([]*common.Payload, error) {
			payloads = append(payloads, p...)
			return p, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	// Workflow input, memo, activity input x2, activity result, activity failure, workflow failure.
	if len(payloads) < 6 {
		t.Fatalf("found %d payloads in the history, want at least 6", len(payloads))
	}
	for _, p := range payloads {
		if string(p.Metadata[converter.MetadataEncoding]) != EncodingEncrypted || string(p.Metadata[MetadataKeyID]) != c.KeyID() {
			t.Errorf("payload not encrypted under %s: metadata %q", c.KeyID(), p.Metadata)
		}
	}
	var failed *historypb.WorkflowExecutionFailedEventAttributes
	for _, ev := range h.Events {
		if a := ev.GetWorkflowExecutionFailedEventAttributes(); a != nil {
			failed = a
		}
	}
	if failed == nil || strings.Contains(failed.Failure.GetMessage(), "upload") || failed.Failure.GetEncodedAttributes() == nil {
		t.Errorf("failure message stored in clear: %v", failed)
	}

	// The codec endpoint decodes what the server stored, as the Web UI would ask it to.
	ep := httptest.NewServer(c.Handler(HandlerOptions{}))
	defer ep.Close()
	resp, b := post(t, ep.URL+"/decode", payloads, http.Header{})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("decode: %d %s", resp.StatusCode, b)
	}
	decoded := decodeAnswer(t, b)
	var all []byte
	for _, p := range decoded {
		all = append(all, p.Data...)
	}
	for _, want := range []string{secretInput, "echo " + secretInput, secretFailed} {
		if !bytes.Contains(all, []byte(want)) {
			t.Errorf("decoded payloads lack %q", want)
		}
	}
	// DecodeMessage turns the whole stored history back into clear (for recording histories).
	clearH := proto.Clone(h).(*historypb.History)
	if err := c.DecodeMessage(ctx, clearH); err != nil {
		t.Fatal(err)
	}
	if b, _ := proto.Marshal(clearH); !bytes.Contains(b, []byte(secretInput)) {
		t.Error("DecodeMessage left the input encrypted")
	}

	// Another key: the endpoint and a client refuse cleanly, naming the key.
	wrong := httptest.NewServer(mustNew(t, key(8)).Handler(HandlerOptions{}))
	defer wrong.Close()
	resp, b = post(t, wrong.URL+"/decode", payloads, http.Header{})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), c.KeyID()) {
		t.Errorf("wrong-key endpoint: %d %s", resp.StatusCode, b)
	}
	var in string
	var started *historypb.WorkflowExecutionStartedEventAttributes
	for _, ev := range h.Events {
		if a := ev.GetWorkflowExecutionStartedEventAttributes(); a != nil {
			started = a
		}
	}
	err = mustNew(t, key(8)).DataConverter().FromPayloads(started.GetInput(), &in)
	if !errors.Is(err, ErrUnknownKey) {
		t.Errorf("a client of another key decoded the input: %q %v", in, err)
	}
}
