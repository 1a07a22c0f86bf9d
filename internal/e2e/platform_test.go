package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"golang.org/x/crypto/ssh"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/api"
	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/devcloud"
	"github.com/sysvm/sysvm/devcloud/fleet"
	"github.com/sysvm/sysvm/hypervisors/xen/xapisim"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
	"github.com/sysvm/sysvm/worker"
	"github.com/sysvm/sysvm/workflows"
)

// platformOptions choose the simulators a platform runs on and whether it runs the simulated
// router fleet (real SSH into every router, the health check activities, the dev endpoints).
type platformOptions struct {
	kvm, vmware, xen bool
	fleet            bool
	// commands are the fleet's programs other than sysvm-agent (fleet.Options.Commands);
	// files, when set, is attached to the fleet once it runs.
	commands map[string]fleet.CommandFunc
	files    *devcloud.SandboxFiles
	// consoles runs the simulated console endpoints (TLS, sessions) of the fleet's CPVMs and
	// SSVMs, following their VMs, and gives the API the console token key.
	consoles bool
}

// platform is the whole of sysvm wired the way `sysvm dev` wires it (cmd/sysvm/dev.go and
// wiring.go), on a one-zone demo cloud: the three hypervisor drivers (observed by the fleet
// when it runs), the system VM key pair, the SSH executor, the health activities, the worker
// and the API. It embeds a stack, so the stack's helpers (do, start, wait, vm, hv, pickRouter)
// work on it.
type platform struct {
	*stack
	zoneID string
	// kvmReason is why KVM is unavailable ("" when libvirtd runs); KVM hosts are then
	// Disconnected and their system VMs are not materialized.
	kvmReason string
	health    *activities.Health
	routers   *devcloud.Routers // nil without the fleet
	// consoles are the simulated console endpoints (platformOptions.consoles).
	consoles *fleet.Consoles
	// xen are the simulated XenServer pools, for XAPI fault injection.
	xen []*xapisim.Server
}

// newPlatform starts the chosen simulators (one cluster each), seeds a one-zone demo cloud on
// them into store, and runs the platform over it. Everything stops when the test ends.
func newPlatform(t *testing.T, store *models.Store, o platformOptions) *platform {
	t.Helper()
	ctx := context.Background()
	begin := time.Now()
	var cl devcloud.Clusters
	var xenServers []*xapisim.Server
	if o.kvm {
		sims, reason, stop, err := devcloud.StartKVM(ctx, 1)
		if err != nil {
			t.Fatalf("start simulated KVM hosts: %v", err)
		}
		t.Cleanup(stop)
		cl.KVM, cl.KVMReason = sims, reason
	}
	if o.vmware {
		sims, stop, err := devcloud.StartVMware(ctx, 1)
		if err != nil {
			t.Fatalf("start vcsim: %v", err)
		}
		t.Cleanup(stop)
		cl.VMware = sims
	}
	if o.xen {
		sims, servers, stop, err := devcloud.StartXenServers(ctx, 1)
		if err != nil {
			t.Fatalf("start XAPI simulator: %v", err)
		}
		t.Cleanup(stop)
		cl.Xen, xenServers = sims, servers
	}
	if _, err := devcloud.Seed(ctx, store, cl, devcloud.SeedOptions{Zones: 1}); err != nil {
		t.Fatalf("seed: %v", err)
	}
	var zone models.Zone
	if err := store.DB.First(&zone).Error; err != nil {
		t.Fatalf("seeded zone: %v", err)
	}
	p := &platform{stack: &stack{t: t, store: store, sims: cl.VMware, codec: testCodec(t)}, zoneID: zone.ID, kvmReason: cl.KVMReason, xen: xenServers}

	kp, err := activities.SystemVMKeyPair(ctx, store.Secrets)
	if err != nil {
		t.Fatalf("system VM key pair: %v", err)
	}
	reg := worker.Drivers()
	// Without the fleet the seeded system VMs' addresses (10.x) belong to no one here: tests
	// send traffic to loopback only, so any other dial is refused before it leaves.
	dial := loopbackOnly
	if o.fleet {
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatalf("system VM public key: %v", err)
		}
		configs := &activities.Health{Store: store}
		commands := o.commands
		if o.consoles {
			if p.consoles, err = devcloud.StartConsoles(ctx, store, modelstest.TestKey, logger()); err != nil {
				t.Fatalf("start simulated console endpoints: %v", err)
			}
			t.Cleanup(p.consoles.Close)
			commands = map[string]fleet.CommandFunc{fleet.ConsoleCommand: p.consoles.Command()}
			for k, v := range o.commands {
				commands[k] = v
			}
		}
		p.routers, err = devcloud.StartRouters(ctx, store, pub, configs.RouterConfig, logger(), fleet.Options{Commands: commands})
		if err != nil {
			t.Fatalf("start simulated routers: %v", err)
		}
		t.Cleanup(func() { _ = p.routers.Close() })
		if o.files != nil {
			o.files.Attach(p.routers.Fleet)
		}
		if p.consoles != nil {
			p.routers.FollowConsoles(p.consoles)
		}
		reg = p.routers.Observe(reg)
		dial = p.routers.Fleet.DialContext
	}
	// The same wiring as sysvm worker and dev.
	built, err := worker.BuildPlatform(ctx, store, logger(), reg, dial)
	if err != nil {
		t.Fatalf("build platform: %v", err)
	}
	t.Cleanup(built.Close)
	p.acts, p.health = built.Activities, built.Health
	if err := devcloud.Materialize(ctx, store, p.acts.Drivers, logger()); err != nil {
		t.Fatalf("materialize: %v", err)
	}

	p.temporal = testenv.TemporalT(t, false)
	if p.client, err = p.temporal.Client(p.codec.Apply); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.client.Close)
	w := worker.New(worker.Config{Client: p.client, Activities: p.acts, Health: p.health, Logger: logger()})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	cfg := api.Config{Store: store, Temporal: p.client, Namespace: "default", TemporalUI: "http://localhost:8233", Logger: logger()}
	if o.fleet {
		cfg.DevMode, cfg.Dev = true, p.routers
	}
	if p.consoles != nil {
		if cfg.ConsoleTokenKey, err = consoles.TokenKey(modelstest.TestKey); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.api = httptest.NewServer(srv.Handler())
	t.Cleanup(p.api.Close)
	if _, p.key, err = store.CreateAPIKey(ctx, "e2e-admin", models.RoleAdmin, ""); err != nil {
		t.Fatal(err)
	}
	t.Logf("platform up in %s (KVM %v, VMware %v, Xen %v, fleet %v)", time.Since(begin).Round(time.Millisecond),
		o.kvm && cl.KVMReason == "", o.vmware, o.xen, o.fleet)
	return p
}

// setting sets a global setting through the API.
func (p *platform) setting(name, value string) {
	p.t.Helper()
	var out struct{ Error any }
	if code := p.do(http.MethodPut, "/api/v1/settings/"+name, map[string]string{"value": value}, &out); code != http.StatusOK {
		p.t.Fatalf("PUT setting %s=%q = %d (%v)", name, value, code, out.Error)
	}
}

// fault injects a dev fault into a router through the API.
func (p *platform) fault(routerID, fault, service string) {
	p.t.Helper()
	body := map[string]string{"routerId": routerID, "fault": fault}
	if service != "" {
		body["service"] = service
	}
	var out struct{ Error any }
	if code := p.do(http.MethodPost, "/api/v1/dev/faults", body, &out); code != http.StatusOK {
		p.t.Fatalf("inject %s into %s = %d (%v)", fault, routerID, code, out.Error)
	}
}

// clearFaults clears a router's dev faults through the API.
func (p *platform) clearFaults(routerID string) {
	p.t.Helper()
	var out struct{ Error any }
	if code := p.do(http.MethodDelete, "/api/v1/dev/faults?routerId="+url.QueryEscape(routerID), nil, &out); code != http.StatusNoContent {
		p.t.Fatalf("clear faults of %s = %d (%v)", routerID, code, out.Error)
	}
}

// sweep runs one health sweep of the zone with the Temporal client, as its schedule would,
// and waits for it to end.
func (p *platform) sweep(kind activities.HealthKind) workflows.SweepResult {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	begin := time.Now()
	run, err := p.client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.HealthScheduleID(kind, p.zoneID) + "-e2e-" + begin.UTC().Format("150405.000000000"), TaskQueue: workflows.TaskQueue},
		workflows.HealthSweepWorkflowName, workflows.SweepInput{ZoneID: p.zoneID, Kind: kind})
	if err != nil {
		p.t.Fatalf("start %s sweep: %v", kind, err)
	}
	var res workflows.SweepResult
	if err := run.Get(ctx, &res); err != nil {
		p.t.Fatalf("%s sweep %s: %v", kind, run.GetID(), err)
	}
	p.t.Logf("%s sweep: %d routers, %d failing, %d errors %v, %d recreations, in %s", kind, res.Summary.Routers,
		res.Summary.Failing, res.Summary.Errors, res.Summary.ErrorSamples, len(res.Recreations), time.Since(begin).Round(time.Millisecond))
	return res
}

// loopbackOnly dials loopback addresses and refuses every other one.
func loopbackOnly(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		if host != "localhost" {
			return nil, fmt.Errorf("e2e: refusing to dial %s: tests reach loopback only (start the platform with the fleet)", addr)
		}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// platformPublicKey is the public half of the platform's system VM key pair (created once in
// the store), which simulated system VMs accept.
func platformPublicKey(t *testing.T, store *models.Store) ssh.PublicKey {
	t.Helper()
	kp, err := activities.SystemVMKeyPair(context.Background(), store.Secrets)
	if err != nil {
		t.Fatalf("system VM key pair: %v", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatalf("system VM public key: %v", err)
	}
	return pub
}
