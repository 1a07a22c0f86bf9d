package devcloud

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"

	"github.com/sysvm/sysvm/hypervisors"
)

// SimCluster describes one simulated cluster the demo cloud can use.
type SimCluster struct {
	// Name is the cluster's name in its simulator.
	Name string
	// Conn reaches the simulator that manages the cluster (password included).
	Conn hypervisors.Connection
	// Hosts are the cluster's host names, as the driver names them.
	Hosts []string
	// Pools are the primary storage pools every host of the cluster can use.
	Pools []string
}

// vmwareHostsPerCluster is how many ESXi hosts each simulated cluster has (migration needs two).
const vmwareHostsPerCluster = 2

// vmwareDatacenter is the one datacenter the simulated vCenter has.
const vmwareDatacenter = "DC0"

// StartVMware starts an in-process vCenter simulator (govmomi's vcsim, VPX model) on
// 127.0.0.1 over HTTPS with a self-signed certificate (so Conn.Insecure is set) and a random
// password for this run. Its one datacenter DC0 holds the given number of clusters
// (DC0_C0, DC0_C1, …), each with two ESXi hosts and its own datastore "<cluster>_DS0"
// mounted on both, plus the standard port group "VM Network" and the distributed port group
// "DC0_DVPG0". Nothing is seeded: no templates, no VMs. ctx bounds the start-up only; stop
// closes the server and removes the datastores' temporary directories.
func StartVMware(ctx context.Context, clusters int) ([]SimCluster, func(), error) {
	if clusters <= 0 {
		clusters = 1
	}
	log := slog.Default().With("sim", "vmware")
	m := simulator.VPX()
	m.Datacenter = 1
	m.Cluster = clusters
	m.ClusterHost = vmwareHostsPerCluster
	m.Host = 0
	m.Machine = 0
	m.Datastore = 0 // one datastore per cluster is added below
	m.Portgroup = 1
	m.Autostart = false
	if err := m.Create(); err != nil {
		return nil, func() {}, fmt.Errorf("create vcsim model: %w", err)
	}
	dsRoot, err := os.MkdirTemp("", "sysvm-vcsim-ds-")
	if err != nil {
		m.Remove()
		return nil, func() {}, fmt.Errorf("datastore directory: %w", err)
	}
	pass, err := vmwarePassword()
	if err != nil {
		m.Remove()
		_ = os.RemoveAll(dsRoot)
		return nil, func() {}, fmt.Errorf("vcsim password: %w", err)
	}
	const user = "administrator@vsphere.local"
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(user, pass)}
	m.Service.TLS = new(tls.Config)
	srv := m.Service.NewServer()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Close()
			m.Remove()
			_ = os.RemoveAll(dsRoot)
		})
	}
	endpoint := *srv.URL
	endpoint.User = nil
	conn := hypervisors.Connection{Type: hypervisors.VMware, Endpoint: endpoint.String(),
		Username: user, Password: pass, Insecure: true, Datacenter: vmwareDatacenter}

	sims, err := vmwareClusters(ctx, conn, dsRoot)
	if err != nil {
		stop()
		return nil, func() {}, err
	}
	log.Info("vcsim started", "endpoint", conn.Endpoint, "clusters", len(sims))
	return sims, stop, nil
}

// vmwareClusters adds one shared datastore per cluster, through the simulator's own SOAP
// API (HostDatastoreSystem.CreateLocalDatastore on each host of the cluster), and
// describes the clusters.
func vmwareClusters(ctx context.Context, conn hypervisors.Connection, dsRoot string) ([]SimCluster, error) {
	u, err := soap.ParseURL(conn.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("vcsim URL: %w", err)
	}
	sc := soap.NewClient(u, true)
	defer sc.CloseIdleConnections()
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("reach vcsim: %w", err)
	}
	sm := session.NewManager(c)
	if err := sm.Login(ctx, url.UserPassword(conn.Username, conn.Password)); err != nil {
		return nil, fmt.Errorf("log in to vcsim: %w", err)
	}
	defer func() { _ = sm.Logout(context.WithoutCancel(ctx)) }()

	finder := find.NewFinder(c)
	dc, err := finder.Datacenter(ctx, conn.Datacenter)
	if err != nil {
		return nil, fmt.Errorf("vcsim datacenter: %w", err)
	}
	finder.SetDatacenter(dc)
	ccrs, err := finder.ClusterComputeResourceList(ctx, "*")
	if err != nil {
		return nil, fmt.Errorf("vcsim clusters: %w", err)
	}
	sims := make([]SimCluster, 0, len(ccrs))
	for _, ccr := range ccrs {
		name := ccr.Name()
		hosts, err := ccr.Hosts(ctx)
		if err != nil {
			return nil, fmt.Errorf("hosts of %s: %w", name, err)
		}
		dir := filepath.Join(dsRoot, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, fmt.Errorf("datastore directory of %s: %w", name, err)
		}
		dsName := name + "_DS0"
		sim := SimCluster{Name: name, Conn: conn, Pools: []string{dsName}}
		for _, h := range hosts {
			var hs mo.HostSystem
			if err := h.Properties(ctx, h.Reference(), []string{"name"}, &hs); err != nil {
				return nil, fmt.Errorf("host of %s: %w", name, err)
			}
			dss, err := h.ConfigManager().DatastoreSystem(ctx)
			if err != nil {
				return nil, fmt.Errorf("datastore system of %s: %w", hs.Name, err)
			}
			if _, err := dss.CreateLocalDatastore(ctx, dsName, dir); err != nil {
				return nil, fmt.Errorf("mount %s on %s: %w", dsName, hs.Name, err)
			}
			sim.Hosts = append(sim.Hosts, hs.Name)
		}
		sort.Strings(sim.Hosts)
		sims = append(sims, sim)
	}
	sort.Slice(sims, func(i, j int) bool { return sims[i].Name < sims[j].Name })
	return sims, nil
}

// vmwarePassword is a random password for one run of the simulator.
func vmwarePassword() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
