package hypervisors

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestProgressReader(t *testing.T) {
	src := strings.Repeat("x", 10000)
	var got [][2]int64
	r := NewProgressReader(context.Background(), strings.NewReader(src), 500, 20500, func(done, total int64) {
		got = append(got, [2]int64{done, total})
	})
	var out bytes.Buffer
	if _, err := io.CopyBuffer(struct{ io.Writer }{&out}, r, make([]byte, 4096)); err != nil || out.String() != src {
		t.Fatalf("copied %d bytes, %v", out.Len(), err)
	}
	want := [][2]int64{{4596, 20500}, {8692, 20500}, {10500, 20500}}
	if len(got) != len(want) {
		t.Fatalf("reports %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("report %d = %v, want %v (offset by base)", i, got[i], want[i])
		}
	}
	if r.N() != int64(len(src)) || r.err != nil {
		t.Errorf("N = %d, err %v; want %d, nil (EOF is no error)", r.N(), r.err, len(src))
	}

	// Once ctx ends, reads fail with its error; a nil ProgressFunc is allowed.
	ctx, cancel := context.WithCancel(context.Background())
	r = NewProgressReader(ctx, strings.NewReader(src), 0, 0, nil)
	if n, err := r.Read(make([]byte, 10)); n != 10 || err != nil {
		t.Fatalf("read before cancel = %d, %v", n, err)
	}
	cancel()
	if n, err := r.Read(make([]byte, 10)); n != 0 || !errors.Is(err, context.Canceled) || !errors.Is(r.err, context.Canceled) {
		t.Errorf("read after cancel = %d, %v (recorded %v); want 0, context.Canceled", n, err, r.err)
	}
}
