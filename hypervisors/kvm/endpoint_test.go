package kvm

import (
	"errors"
	"testing"

	"github.com/sysvm/sysvm/hypervisors"
)

func TestParseEndpoint(t *testing.T) {
	for in, want := range map[string]Endpoint{
		"unix:///run/libvirt/libvirt-sock?uri=test:///default":     {"unix", "/run/libvirt/libvirt-sock", "test:///default"},
		"unix://?uri=qemu:///system":                               {"unix", DefaultSocket, "qemu:///system"},
		"unix:///tmp/h1/libvirt-sock":                              {"unix", "/tmp/h1/libvirt-sock", DefaultURI},
		"tcp://10.0.0.5:16509?uri=qemu:///system":                  {"tcp", "10.0.0.5:16509", "qemu:///system"},
		"tcp://kvm1.example.com":                                   {"tcp", "kvm1.example.com:16509", DefaultURI},
		"tcp://[fd00::5]?uri=qemu:///system":                       {"tcp", "[fd00::5]:16509", "qemu:///system"},
		"qemu+unix:///system?socket=/var/run/libvirt/libvirt-sock": {"unix", "/var/run/libvirt/libvirt-sock", "qemu:///system"},
		"test+unix:///default":                                     {"unix", DefaultSocket, "test:///default"},
		"qemu+tcp://kvm2:16600/system":                             {"tcp", "kvm2:16600", "qemu:///system"},
		"unix:///s?uri=test:///tmp/a%26b/host.xml":                 {"unix", "/s", "test:///tmp/a&b/host.xml"},
	} {
		got, err := ParseEndpoint(in)
		if err != nil {
			t.Errorf("ParseEndpoint(%q): %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("ParseEndpoint(%q) = %+v, want %+v", in, got, want)
		}
		// The canonical form parses back to the same endpoint.
		if again, err := ParseEndpoint(got.String()); err != nil || again != got {
			t.Errorf("round trip of %q via %q = %+v, %v", in, got.String(), again, err)
		}
	}
	for _, bad := range []string{"", "  ", "ftp://x/y", "unix://host/sock", "tcp://?uri=qemu:///system", "qemu+ssh://h/system", "::"} {
		if _, err := ParseEndpoint(bad); !errors.Is(err, hypervisors.ErrInvalid) {
			t.Errorf("ParseEndpoint(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if s := UnixEndpoint("/run/x.sock", "test:///default"); s != "unix:///run/x.sock?uri=test:///default" {
		t.Errorf("UnixEndpoint = %q", s)
	}
}

func TestCapabilities(t *testing.T) {
	c := (&Driver{}).Capabilities()
	if c.LiveMigration || c.HotScale || !c.LinkLocalControl || len(c.TemplateFormats) != 2 ||
		c.TemplateFormats[0] != "QCOW2" || c.TemplateFormats[1] != "RAW" {
		t.Errorf("capabilities %+v", c)
	}
}
