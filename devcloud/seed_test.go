package devcloud

import (
	"context"
	"fmt"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// guestRows lists the guest VM and rule rows, one line each, sorted.
func guestRows(t *testing.T, s *models.Store) []string {
	t.Helper()
	var out []string
	var vms []models.GuestVM
	require.NoError(t, s.DB.Find(&vms).Error)
	for _, v := range vms {
		out = append(out, fmt.Sprintf("vm %s %s %s %s %s", v.NetworkID, v.Name, v.MAC, v.IP, v.State))
	}
	var pfs []models.PortForwardingRule
	require.NoError(t, s.DB.Find(&pfs).Error)
	for _, r := range pfs {
		out = append(out, fmt.Sprintf("pf %s %s:%d %s:%d %s", r.NetworkID, r.PublicIP, r.PublicPort, r.PrivateIP, r.PrivatePort, r.Protocol))
	}
	var lbs []models.LoadBalancerRule
	require.NoError(t, s.DB.Preload("Backends").Find(&lbs).Error)
	for _, r := range lbs {
		line := fmt.Sprintf("lb %s %s:%d", r.NetworkID, r.PublicIP, r.PublicPort)
		var bs []string
		for _, b := range r.Backends {
			bs = append(bs, fmt.Sprintf("%s:%d", b.IP, b.Port))
		}
		sort.Strings(bs)
		out = append(out, fmt.Sprint(line, bs))
	}
	sort.Strings(out)
	return out
}

// TestSeedGuestRows: the demo cloud gets guest VM, port forwarding and LB rows per network;
// a database from before those rows gets the same rows on the next start, and seeding again
// adds nothing. Every router's pushed configuration is built from them: two VMs per network, a
// PF rule per network from the router's (a redundant pair's PRIMARY's) public IP, an LB rule
// where the network has Lb.
func TestSeedGuestRows(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		// Seed writes the inventory and cluster endpoints only; nothing dials the simulator.
		cl := Clusters{VMware: []SimCluster{{Name: "vmware-1", Hosts: []string{"esx-1", "esx-2"}, Pools: []string{"ds-1"},
			Conn: hypervisors.Connection{Endpoint: "https://127.0.0.1:1/sdk", Username: "user", Password: "pass", Datacenter: "DC0"}}}}
		created, err := Seed(ctx, s, cl, SeedOptions{Zones: 1})
		require.NoError(t, err)
		require.True(t, created)
		rows := guestRows(t, s)

		var nets []models.Network
		require.NoError(t, s.DB.Find(&nets).Error)
		lbNets := 0
		for _, n := range nets {
			if activities.RouterServices(n.Services).LB {
				lbNets++
			}
		}
		assert.Len(t, rows, 2*len(nets)+len(nets)+lbNets, "2 VMs and a PF rule per network, an LB rule per Lb network")

		// A database from before the rows: the next start seeds them again, the same.
		for _, m := range []any{&models.LoadBalancerBackend{}, &models.LoadBalancerRule{}, &models.PortForwardingRule{}, &models.GuestVM{}} {
			require.NoError(t, s.DB.Where("1 = 1").Delete(m).Error)
		}
		require.Empty(t, guestRows(t, s))
		created, err = Seed(ctx, s, cl, SeedOptions{Zones: 1})
		require.NoError(t, err)
		assert.False(t, created)
		assert.Equal(t, rows, guestRows(t, s))
		_, err = Seed(ctx, s, cl, SeedOptions{Zones: 1})
		require.NoError(t, err)
		assert.Equal(t, rows, guestRows(t, s), "seeding again adds nothing")

		h := &activities.Health{Store: s}
		var routers []models.SystemVM
		require.NoError(t, s.DB.Where("type = ?", models.TypeRouter).Order("name").Find(&routers).Error)
		primaryIP := map[string]string{}
		for _, vm := range routers {
			if vm.RedundantState == models.RedundantPrimary {
				primaryIP[vm.NetworkID] = vm.PublicIP
			}
		}
		sawVPC, sawPair := false, false
		for _, vm := range routers {
			cfg, err := h.RouterConfig(ctx, vm)
			require.NoError(t, err, vm.Name)
			var mine []models.Network
			for _, n := range nets {
				if (vm.VPCID != "" && n.VPCID == vm.VPCID) || (vm.VPCID == "" && n.ID == vm.NetworkID) {
					mine = append(mine, n)
				}
			}
			require.NotEmpty(t, mine, vm.Name)
			assert.Len(t, cfg.ExpectedVMs, 2*len(mine), vm.Name)
			require.Len(t, cfg.PortForwardingRules, len(mine), vm.Name)
			wantIP := vm.PublicIP
			if vm.IsRedundant {
				wantIP, sawPair = primaryIP[vm.NetworkID], true
			}
			for i, pf := range cfg.PortForwardingRules {
				assert.Equal(t, wantIP, pf.PublicIP, vm.Name)
				assert.Equal(t, 2200+i, pf.PublicPort, "%s: public port 2200 + the tier's index", vm.Name)
				assert.Equal(t, 22, pf.PrivatePort)
			}
			if vm.VPCID != "" {
				sawVPC = true
				assert.Len(t, cfg.LBRules, 1, "%s: only the first tier has Lb", vm.Name)
			} else {
				require.Len(t, cfg.LBRules, 1, vm.Name)
				assert.Len(t, cfg.LBRules[0].Backends, 2)
				assert.Equal(t, 8000, cfg.LBRules[0].PublicPort)
			}
		}
		assert.True(t, sawVPC && sawPair, "the demo has VPC routers and redundant pairs")
	})
}
