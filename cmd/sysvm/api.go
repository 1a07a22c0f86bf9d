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

func runAPI(ctx context.Context, logger *slog.Logger, args []string) error {
	var tcfg telemetryConfig
	c, err := parseConfig("api", args, func(fs *flag.FlagSet) { tcfg.flags(fs, "") })
	if err != nil {
		return err
	}
	tel, err := tcfg.start(ctx, logger, "sysvm-api", c)
	if err != nil {
		return err
	}
	defer stopTelemetry(logger, tel)
	store, err := c.openStore(ctx, false)
	if err != nil {
		return err
	}
	defer store.Close()
	if _, err := c.ensureAdminKey(ctx, store, false); err != nil {
		return err
	}
	tc, err := c.dialTemporal(ctx, logger)
	if err != nil {
		return err
	}
	defer tc.Close()
	srv, err := api.New(api.Config{Store: store, Temporal: tc, Namespace: c.TemporalNamespace,
		TemporalUI: c.TemporalUI, Logger: logger, OnSettingChanged: resyncSchedules(tc, store, logger)})
	if err != nil {
		return err
	}
	if _, err := instrumentAPI(ctx, logger, tel, tcfg, srv, store); err != nil {
		return err
	}
	return serveHTTP(ctx, logger, c.APIAddr, srv.Handler())
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
