package models_test

import (
	"context"
	"testing"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// TestGuestRowsRoundTrip stores guest VMs, a port forwarding rule and an LB rule with its
// backends on both databases, reads them back by network, and checks that deleting an LB rule
// deletes its backends.
func TestGuestRowsRoundTrip(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, s *models.Store) {
		ctx := context.Background()
		db := s.DB.WithContext(ctx)
		netID, other := models.NewID(), models.NewID()
		for _, vm := range []models.GuestVM{
			{ZoneID: "z1", NetworkID: netID, AccountID: "a1", Name: "web-1", MAC: "02:00:0a:00:00:0b", IP: "10.1.1.11", State: models.StateRunning},
			{ZoneID: "z1", NetworkID: netID, AccountID: "a1", Name: "web-2", MAC: "02:00:0a:00:00:0c", IP: "10.1.1.12", State: models.StateStopped},
			{ZoneID: "z1", NetworkID: other, AccountID: "a1", Name: "db-1", MAC: "02:00:0a:00:01:0b", IP: "10.1.2.11", State: models.StateRunning},
		} {
			modelstest.Must(t, db.Create(&vm).Error, "create guest VM")
		}
		var vms []models.GuestVM
		modelstest.Must(t, db.Where("network_id = ?", netID).Order("name").Find(&vms).Error, "list guest VMs")
		if len(vms) != 2 || vms[0].ID == "" || vms[0].Name != "web-1" || vms[0].MAC != "02:00:0a:00:00:0b" ||
			vms[0].IP != "10.1.1.11" || vms[1].State != models.StateStopped || vms[1].AccountID != "a1" {
			t.Fatalf("guest VMs of the network = %+v", vms)
		}

		pf := models.PortForwardingRule{NetworkID: netID, PublicIP: "203.0.113.5", PublicPort: 2200, PublicEndPort: 2210,
			PrivateIP: "10.1.1.11", PrivatePort: 22, PrivateEndPort: 32, Protocol: "tcp"}
		modelstest.Must(t, db.Create(&pf).Error, "create PF rule")
		var gotPF models.PortForwardingRule
		modelstest.Must(t, s.Get(ctx, &gotPF, pf.ID), "get PF rule")
		gotPF.Base = pf.Base
		if gotPF != pf {
			t.Errorf("PF rule round trip: got %+v, want %+v", gotPF, pf)
		}

		lb := models.LoadBalancerRule{NetworkID: netID, PublicIP: "203.0.113.5", PublicPort: 80, Algorithm: "roundrobin",
			MaxConn: 1000, Backends: []models.LoadBalancerBackend{{IP: "10.1.1.11", Port: 8080}, {IP: "10.1.1.12", Port: 8080}}}
		modelstest.Must(t, db.Create(&lb).Error, "create LB rule with its backends")
		var rules []models.LoadBalancerRule
		modelstest.Must(t, db.Preload("Backends").Where("network_id = ?", netID).Find(&rules).Error, "list LB rules")
		if len(rules) != 1 || rules[0].PublicPort != 80 || rules[0].MaxConn != 1000 || rules[0].Algorithm != "roundrobin" ||
			len(rules[0].Backends) != 2 || rules[0].Backends[0].RuleID != lb.ID {
			t.Fatalf("LB rules of the network = %+v", rules)
		}
		modelstest.Must(t, db.Delete(&models.LoadBalancerRule{}, "id = ?", lb.ID).Error, "delete LB rule")
		var left int64
		modelstest.Must(t, db.Model(&models.LoadBalancerBackend{}).Where("rule_id = ?", lb.ID).Count(&left).Error, "count backends")
		if left != 0 {
			t.Errorf("%d backends left after their rule was deleted", left)
		}
	})
}
