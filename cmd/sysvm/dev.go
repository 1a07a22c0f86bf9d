package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/api"
	"github.com/sysvm/sysvm/codec"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/devcloud/temporaldev"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/worker"
	"github.com/sysvm/sysvm/workflows"
)

// runDev runs the whole platform on embedded defaults: a Temporal dev server with its Web UI
// (decoding payloads through a codec endpoint on loopback), SQLite, simulated hypervisors
// seeded with a demo cloud, the worker and the API.
func runDev(ctx context.Context, logger *slog.Logger, args []string) error {
	var temporalPort, uiPort, codecPort int
	var temporalBin string
	var tcfg telemetryConfig
	a, err := setup(logger, "dev", args, true, func(fs *flag.FlagSet) {
		fs.IntVar(&temporalPort, "temporal-port", 7233, "port of the Temporal dev server's frontend")
		fs.IntVar(&uiPort, "ui-port", 8233, "port of the Temporal Web UI")
		fs.IntVar(&codecPort, "codec-port", 8234, "port on 127.0.0.1 of the codec endpoint the dev Web UI decodes payloads with (no API key: loopback and the UI's origin only)")
		fs.StringVar(&temporalBin, "temporal-bin", env("SYSVM_TEMPORAL_BIN", filepath.Join("bin", "temporal")), "temporal CLI (SYSVM_TEMPORAL_BIN)")
		tcfg.flags(fs, defaultWorkerMetricsAddr)
	})
	if err != nil {
		return err
	}
	defer a.close()
	c := a.cfg
	tel, err := tcfg.start(ctx, logger, "sysvm-dev", c)
	if err != nil {
		return err
	}
	defer stopTelemetry(logger, tel)

	uiCodec := ""
	if c.Temporal.Address == "" {
		// The dev UI cannot send an API key, so it gets its own codec listener on loopback,
		// answering only the UI's origin (the API port's /codec/ wants a key).
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", codecPort))
		if err != nil {
			return fmt.Errorf("codec endpoint for the dev UI: %w", err)
		}
		uiCodec = "http://" + l.Addr().String()
		logger.Info("starting Temporal dev server", "port", temporalPort, "ui", uiPort, "codec", uiCodec)
		srv, err := temporaldev.Start(ctx, temporaldev.Options{Binary: temporalBin, Port: temporalPort, UIPort: uiPort,
			DBFile: filepath.Join(c.DataDir, "temporal.db"), SearchAttributes: workflows.SearchAttributeNames(),
			UICodecEndpoint: uiCodec})
		if err != nil {
			_ = l.Close()
			return err
		}
		a.onClose(srv.Stop)
		c.Temporal.Address = srv.Address
		c.TemporalUI = srv.UIURL()
		origins := []string{srv.UIURL(), fmt.Sprintf("http://127.0.0.1:%d", srv.UIPort)}
		hs := &http.Server{Handler: a.codec.Handler(codec.HandlerOptions{AllowOrigins: origins, Logger: logger}),
			ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(l) }()
		a.onClose(func() { _ = hs.Close() })
	}

	store, err := a.openStore(ctx)
	if err != nil {
		return err
	}

	sims, stopSims, err := startSimulators(ctx, logger)
	if err != nil {
		return err
	}
	defer stopSims()
	created, err := devcloud.Seed(ctx, store, sims, devcloud.SeedOptions{})
	if err != nil {
		return err
	}
	if created {
		// A capacity pool a person sees move: 2 console sessions per CPVM, a standby of 1, a
		// scan every 15 s and a shrink after 2 scans of surplus (docs/capacity.md).
		for _, kv := range [][2]string{{"consoleproxy.session.max", "2"}, {"consoleproxy.capacity.standby", "1"},
			{"consoleproxy.launch.max", "4"}, {"consoleproxy.capacityscan.interval", "15"}, {"systemvm.capacity.shrink.scans", "2"}} {
			if _, err := store.Settings.Set(ctx, kv[0], models.ScopeGlobal, "", kv[1]); err != nil {
				return fmt.Errorf("dev capacity setting %s: %w", kv[0], err)
			}
		}
	}
	// The simulated routers are rendered from the configuration the platform pushes, and
	// answer real SSH with the platform's system VM key.
	kp, err := activities.SystemVMKeyPair(ctx, store.Secrets)
	if err != nil {
		return err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return err
	}
	configs := &activities.Health{Store: store}
	cons, err := devcloud.StartConsoles(ctx, store, a.master, logger)
	if err != nil {
		return err
	}
	defer cons.Close()
	// The simulated system VMs run this machine's real ping, traceroute and arping, give their
	// sandbox files to getDiagnosticsData (diagnostics), and serve console TLS (certificates).
	files := &devcloud.SandboxFiles{}
	commands := devcloud.DiagnosticsCommands("", files)
	commands[fleet.ConsoleCommand] = cons.Command()
	routers, err := devcloud.StartRouters(ctx, store, pub, configs.RouterConfig, logger,
		fleet.Options{Commands: commands})
	if err != nil {
		return fmt.Errorf("start simulated routers: %w", err)
	}
	files.Attach(routers.Fleet)
	routers.FollowConsoles(cons)
	defer routers.Close()
	p, err := worker.BuildPlatform(ctx, store, logger, routers.Observe(worker.Drivers()), routers.Fleet.DialContext)
	if err != nil {
		return err
	}
	defer p.Close()
	if err := devcloud.Materialize(ctx, store, p.Activities.Drivers, logger); err != nil {
		return fmt.Errorf("materialize demo cloud: %w", err)
	}
	// A recreate's replacement an earlier dev process built before it stopped still runs.
	if err := routers.AdoptInstances(ctx, p.Activities.Drivers); err != nil {
		return fmt.Errorf("start simulated routers: %w", err)
	}

	// A local template server for the template rollout (issue 9): its images and how to
	// register one are printed below.
	tplInfo := "(unavailable: %v)"
	if tsrv, imgs, err := devcloud.DevTemplates(ctx, store, c.DataDir); err != nil {
		tplInfo = fmt.Sprintf(tplInfo, err)
	} else {
		defer tsrv.Close()
		tplInfo = tsrv.URL + "/"
		for _, im := range imgs {
			tplInfo += fmt.Sprintf("\n                 %s  (%s %s, sha256 %s)", im.File, im.Hypervisor, im.Format, im.SHA256)
		}
	}

	tc, err := a.dialTemporal(ctx)
	if err != nil {
		return err
	}
	stop, err := startWorker(ctx, tc, c.Temporal.Namespace, store, p, logger)
	if err != nil {
		return err
	}
	defer stop()

	key, err := a.ensureAdminKey(ctx)
	if err != nil {
		return err
	}
	srv, err := api.New(api.Config{Store: store, Temporal: tc, Namespace: c.Temporal.Namespace, TemporalUI: c.TemporalUI,
		DevMode: true, Dev: routers, Logger: logger, DataConverter: a.codec.DataConverter(), OnSettingChanged: resyncSchedules(tc, store, logger),
		ConsoleTokenKey: consoleTokenKey(a.master)})
	if err != nil {
		return err
	}
	// One process: the API port and the worker's metrics port serve the same registry.
	if err := instrumentDev(ctx, logger, tel, tcfg, srv, store, p, tc); err != nil {
		return err
	}
	seeded := "kept from the last run"
	if created {
		seeded = "seeded"
	}
	apiURL := "http://localhost" + c.APIAddr
	if c.APIAddr != "" && c.APIAddr[0] != ':' {
		apiURL = "http://" + c.APIAddr
	}
	if uiCodec == "" {
		uiCodec = "(none: -temporal given; point your UI at " + apiURL + codecPath + ")"
	}
	fmt.Printf(`
sysvm dev is running (demo cloud %s; data in %s)

  API            %s/api/v1        (OpenAPI: %s/api/v1/openapi.json)
  Temporal UI    %s  (decodes payloads through %s)
  Temporal       %s  (temporal workflow show --address %s --codec-endpoint %s%s --codec-auth "Bearer <key>" -w <id>)
  Admin API key  %s
  Metrics        %s/metrics   (worker port: %s)
  Templates      %s

  Try: curl -H "Authorization: Bearer %s" %s/api/v1/routers
  A template:  README "Template rollout" registers one of the images above
  Capacity:    %s/api/v1/zones/<id>/capacity  (open consoles: docs/capacity.md "In dev")

Ctrl-C stops everything; running it again keeps the data.
`, seeded, c.DataDir, apiURL, apiURL, c.TemporalUI, uiCodec, c.Temporal.Address, c.Temporal.Address, apiURL, codecPath,
		key, apiURL, workerMetricsURL(tcfg), tplInfo, key, apiURL, apiURL)
	return serveHTTP(ctx, logger, c.APIAddr, a.withCodec(srv.Handler()))
}

// startSimulators starts the in-process vcsim and XAPI simulator and connects libvirtd's test
// driver (or reports why KVM is unavailable).
func startSimulators(ctx context.Context, logger *slog.Logger) (devcloud.Clusters, func(), error) {
	var stops []func()
	stopAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	var cl devcloud.Clusters
	var err error
	var stop func()
	if cl.VMware, stop, err = devcloud.StartVMware(ctx, 2); err != nil {
		return cl, stopAll, fmt.Errorf("start vcsim: %w", err)
	}
	stops = append(stops, stop)
	if cl.Xen, stop, err = devcloud.StartXen(ctx, 2); err != nil {
		stopAll()
		return cl, func() {}, fmt.Errorf("start XAPI simulator: %w", err)
	}
	stops = append(stops, stop)
	if cl.KVM, cl.KVMReason, stop, err = devcloud.StartKVM(ctx, 2); err != nil {
		stopAll()
		return cl, func() {}, fmt.Errorf("connect libvirtd: %w", err)
	}
	stops = append(stops, stop)
	if cl.KVMReason != "" {
		logger.Warn("KVM hosts are Disconnected", "reason", cl.KVMReason)
	}
	return cl, stopAll, nil
}
