package devcloud

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/xen/xapisim"
)

// xenHostsPerCluster is how many hosts each simulated XenServer pool has (migration needs two).
const xenHostsPerCluster = 2

// StartXen starts one simulated XAPI pool per cluster (xapisim, on 127.0.0.1 over HTTPS
// with a self-signed certificate, so Conn.Insecure is set), each with two hosts and one
// shared NFS SR "<cluster>-primary", the stock "Other install media" template and the
// networks system VMs use (cloud_link_local_network and the eth0 pool-wide network). Every
// pool gets its own random root password for this run. stop closes the pools; the
// simulators keep everything in memory, so nothing is left behind.
func StartXen(ctx context.Context, clusters int) ([]SimCluster, func(), error) {
	sims, _, stop, err := StartXenServers(ctx, clusters)
	return sims, stop, err
}

// StartXenServers is StartXen that also returns the simulated pools, so tests can inject
// XAPI faults (xapisim.Server.InjectFault) into the cloud they run on.
func StartXenServers(ctx context.Context, clusters int) ([]SimCluster, []*xapisim.Server, func(), error) {
	if clusters <= 0 {
		clusters = 1
	}
	log := slog.Default().With("sim", "xen")
	var servers []*xapisim.Server
	stop := func() {
		for _, s := range servers {
			s.Close()
		}
	}
	sims := make([]SimCluster, 0, clusters)
	for c := range clusters {
		if err := ctx.Err(); err != nil {
			stop()
			return nil, nil, func() {}, fmt.Errorf("start simulated XenServer pools: %w", err)
		}
		name := fmt.Sprintf("xen-cluster-%d", c+1)
		pass, err := xenPassword()
		if err != nil {
			stop()
			return nil, nil, func() {}, fmt.Errorf("password for %s: %w", name, err)
		}
		hosts := make([]xapisim.HostSpec, xenHostsPerCluster)
		for h := range hosts {
			hosts[h] = xapisim.HostSpec{Name: fmt.Sprintf("xen-c%d-host-%d", c+1, h+1), CPUs: 16, CPUMHz: 2400, MemoryMB: 65536}
		}
		srv := xapisim.New(xapisim.Options{
			Username: xapisim.DefaultUsername, Password: pass, PoolName: name, Hosts: hosts,
			SRs:    []xapisim.SRSpec{{Name: name + "-primary", Type: "nfs", Shared: true}},
			TLS:    true,
			Logger: log.With("pool", name),
		})
		url, err := srv.Start("127.0.0.1:0")
		if err != nil {
			stop()
			return nil, nil, func() {}, fmt.Errorf("start simulated XenServer pool %s: %w", name, err)
		}
		servers = append(servers, srv)
		sims = append(sims, SimCluster{
			Name: name,
			Conn: hypervisors.Connection{Type: hypervisors.XenServer, Endpoint: url,
				Username: xapisim.DefaultUsername, Password: pass, Insecure: true},
			Hosts: srv.HostNames(),
			Pools: srv.SRNames(),
		})
		log.Info("simulated XenServer pool up", "pool", name, "endpoint", url, "hosts", srv.HostNames())
	}
	return sims, servers, stop, nil
}

func xenPassword() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
