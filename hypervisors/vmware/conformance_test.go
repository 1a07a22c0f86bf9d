package vmware

import (
	"testing"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/conformance"
)

// TestConformance runs the shared driver scenarios against an in-process vcsim (VPX model:
// one datacenter, one cluster of two ESXi hosts sharing datastore LocalDS_0), seeding the
// template from a real OVA file through an NFC lease, its sha256 verified.
func TestConformance(t *testing.T) {
	s := startSim(t, 1, 1, 2)
	d := s.open(t)
	ova, sum := writeOVA(t, t.TempDir(), 256<<10)
	conformance.Run(t, conformance.Fixture{
		Name:   "vmware",
		Driver: d,
		Hosts:  []string{"DC0_C0_H0", "DC0_C0_H1"},
		Pool:   "LocalDS_0",
		Template: hypervisors.TemplateSpec{
			Name: "systemvm-vmware-4.20", URL: "file://" + ova, Format: "OVA",
			Checksum: "sha256:" + sum, Pool: "LocalDS_0",
		},
	})
}
