package activities

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/models"
)

// NetworkRoutersResult is what NetworkRouters finds: the network's zone and the routers that
// serve it, in the order restartNetwork takes them.
type NetworkRoutersResult struct {
	NetworkID string   `json:"networkId"`
	ZoneID    string   `json:"zoneId"`
	RouterIDs []string `json:"routerIds"`
}

// RoutersOfNetwork lists the routers (not destroyed) serving a network: its own, or for a VPC
// tier the VPC's. BACKUP routers come first, then the others, each group by name, so a
// redundant pair restarted in this order always keeps one router up.
func RoutersOfNetwork(ctx context.Context, db *gorm.DB, n models.Network) ([]models.SystemVM, error) {
	q := db.WithContext(ctx).Where("type = ? AND state <> ?", models.TypeRouter, models.StateDestroyed)
	if n.VPCID != "" {
		q = q.Where("vpc_id = ?", n.VPCID)
	} else {
		q = q.Where("network_id = ?", n.ID)
	}
	var vms []models.SystemVM
	if err := q.Order("name, id").Find(&vms).Error; err != nil {
		return nil, fmt.Errorf("routers of network %s: %w", n.ID, err)
	}
	sort.SliceStable(vms, func(i, j int) bool {
		bi, bj := vms[i].RedundantState == models.RedundantBackup, vms[j].RedundantState == models.RedundantBackup
		return bi && !bj
	})
	return vms, nil
}

// NetworkRouters loads the routers serving a network, BACKUP first (see RoutersOfNetwork).
// An unknown network is a non-retryable NotFound error.
func (a *Activities) NetworkRouters(ctx context.Context, networkID string) (NetworkRoutersResult, error) {
	var n models.Network
	if err := a.Store.Get(ctx, &n, networkID); err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return NetworkRoutersResult{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("network %s not found", networkID), ErrTypeNotFound, err)
		}
		return NetworkRoutersResult{}, fmt.Errorf("load network %s: %w", networkID, err)
	}
	vms, err := RoutersOfNetwork(ctx, a.Store.DB, n)
	if err != nil {
		return NetworkRoutersResult{}, err
	}
	res := NetworkRoutersResult{NetworkID: n.ID, ZoneID: n.ZoneID, RouterIDs: make([]string, 0, len(vms))}
	for _, vm := range vms {
		res.RouterIDs = append(res.RouterIDs, vm.ID)
	}
	return res, nil
}
