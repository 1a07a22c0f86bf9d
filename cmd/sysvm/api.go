package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/sysvm/sysvm/api"
)

// runAPI serves the REST API, and the payload codec endpoint under /codec/, on one port.
func runAPI(ctx context.Context, logger *slog.Logger, args []string) error {
	var tcfg telemetryConfig
	a, err := setup(logger, "api", args, false, func(fs *flag.FlagSet) { tcfg.flags(fs, "") })
	if err != nil {
		return err
	}
	defer a.close()
	tel, err := tcfg.start(ctx, logger, "sysvm-api", a.cfg)
	if err != nil {
		return err
	}
	defer stopTelemetry(logger, tel)
	if _, err := a.openStore(ctx); err != nil {
		return err
	}
	if _, err := a.ensureAdminKey(ctx); err != nil {
		return err
	}
	if _, err := a.dialTemporal(ctx); err != nil {
		return err
	}
	srv, err := api.New(api.Config{Store: a.store, Temporal: a.tc, Namespace: a.cfg.Temporal.Namespace,
		TemporalUI: a.cfg.TemporalUI, Logger: logger, DataConverter: a.codec.DataConverter(), OnSettingChanged: resyncSchedules(a.tc, a.store, logger),
		ConsoleTokenKey: consoleTokenKey(a.master)})
	if err != nil {
		return err
	}
	if _, err := instrumentAPI(ctx, logger, tel, tcfg, srv, a.store, a.tc); err != nil {
		return err
	}
	return serveHTTP(ctx, logger, a.cfg.APIAddr, a.withCodec(srv.Handler()))
}

// serveHTTP serves h until ctx ends, then shuts down gracefully.
func serveHTTP(ctx context.Context, logger *slog.Logger, addr string, h http.Handler) error {
	hs := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.ListenAndServe() }()
	logger.Info("API listening", "addr", addr)
	select {
	case err := <-errc:
		return fmt.Errorf("API server on %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
