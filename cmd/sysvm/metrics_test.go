package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sysvm/sysvm/api"
	"github.com/sysvm/sysvm/metrics"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestTelemetryFlags(t *testing.T) {
	parse := func(def string, args ...string) telemetryConfig {
		var tc telemetryConfig
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		tc.flags(fs, def)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return tc
	}
	if tc := parse(defaultWorkerMetricsAddr); tc.MetricsAddr != ":9464" || tc.OTLPEndpoint != "" {
		t.Errorf("worker defaults = %+v, want :9464 and tracing off", tc)
	}
	if tc := parse(""); tc.MetricsAddr != "" {
		t.Errorf("api default = %q, want empty (the API port)", tc.MetricsAddr)
	}
	t.Setenv("SYSVM_METRICS_ADDR", "127.0.0.1:9999")
	t.Setenv("SYSVM_OTLP_ENDPOINT", "http://collector:4318")
	if tc := parse(defaultWorkerMetricsAddr); tc.MetricsAddr != "127.0.0.1:9999" || tc.OTLPEndpoint != "http://collector:4318" {
		t.Errorf("from the environment = %+v", tc)
	}
	if tc := parse(defaultWorkerMetricsAddr, "--metrics-listen", "off"); tc.MetricsAddr != "off" {
		t.Errorf("flag = %+v", tc)
	}
}

// The API serves /metrics on its port by default, and only on the metrics listener when one
// is given.
func TestAPIMetricsOnItsPortOrItsOwnListener(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := modelstest.SQLite(t)
	modelstest.Must(t, store.DB.Create(&models.Zone{Name: "zone-m"}).Error, "zone")
	for _, tc := range []telemetryConfig{{}, {MetricsAddr: "127.0.0.1:0"}} {
		tel, err := metrics.New(ctx, metrics.Options{Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := api.New(api.Config{Store: store, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		addr, err := instrumentAPI(ctx, logger, tel, tc, srv, store, nil)
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		code, body := get(t, hs.URL+"/metrics")
		if tc.MetricsAddr == "" {
			if code != http.StatusOK || !strings.Contains(body, `sysvm_zone_info{zone="zone-m"`) {
				t.Errorf("API port /metrics = %d, lacks the fleet metrics:\n%.300s", code, body)
			}
			if addr != "" {
				t.Errorf("a metrics listener was started at %s", addr)
			}
		} else {
			if code != http.StatusNotFound {
				t.Errorf("API port /metrics = %d with a metrics listener, want 404", code)
			}
			code, body = get(t, "http://"+addr+"/metrics")
			if code != http.StatusOK || !strings.Contains(body, `sysvm_zone_info{zone="zone-m"`) {
				t.Errorf("metrics listener /metrics = %d:\n%.300s", code, body)
			}
		}
		hs.Close()
	}
}
