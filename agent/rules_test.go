package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestApplyRulesServesNewEntries: a configuration with a new guest VM, port forwarding rule
// and LB rule is applied through the command line; the router's files carry them, the
// advanced checks pass against that configuration, and dnsmasq and haproxy were reloaded.
func TestApplyRulesServesNewEntries(t *testing.T) {
	sb := newSandbox(t)
	ctx := context.Background()
	cfg := sb.cfg
	cfg.ExpectedVMs = append(cfg.ExpectedVMs, ExpectedVM{MAC: "02:00:0a:00:00:99", IP: "10.1.1.99", Name: "vm-new"})
	cfg.PortForwardingRules = append(cfg.PortForwardingRules, PortForwarding{PublicIP: "203.0.113.10", PublicPort: 8022,
		PrivateIP: "10.1.1.99", PrivatePort: 22, Protocol: "tcp"})
	cfg.LBRules = append(cfg.LBRules, LBRule{PublicIP: "203.0.113.10", PublicPort: 8443,
		Backends: []LBBackend{{IP: "10.1.1.99", Port: 443}}})
	// Before: the new entries are missing, so the checks fail.
	if err := sb.a.SaveConfig(cfg); err != nil {
		t.Fatal(err)
	}
	run, _, err := sb.a.RunAndRecord(ctx, Advanced)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{CheckDNS, CheckDHCP, CheckHaproxy, CheckIptables} {
		if mustResult(t, run, name).Success {
			t.Errorf("%s passes before the new entries are applied", name)
		}
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := Main(ctx, []string{"--root", sb.root, "apply-rules"}, bytes.NewReader(data), &stdout, &stderr, sb.sys, sb.root); code != ExitOK {
		t.Fatalf("apply-rules exit %d: %s", code, stderr.String())
	}
	hosts, _ := os.ReadFile(sb.a.Path(HostsFile))
	if !strings.Contains(string(hosts), "10.1.1.99 vm-new") || !strings.Contains(string(hosts), "localhost") {
		t.Errorf("/etc/hosts:\n%s", hosts)
	}
	dhcp, _ := os.ReadFile(sb.a.Path(DHCPHostsFile))
	if !strings.Contains(string(dhcp), "02:00:0a:00:00:99,10.1.1.99,vm-new") {
		t.Errorf("dhcphosts:\n%s", dhcp)
	}
	run, _, err = sb.a.RunAndRecord(ctx, Advanced)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{CheckDNS, CheckDHCP, CheckHaproxy, CheckIptables} {
		if r := mustResult(t, run, name); !r.Success {
			t.Errorf("%s fails after apply-rules: %s", name, r.Details)
		}
	}
	for _, svc := range []string{ServiceDnsmasq, ServiceHaproxy} {
		if sb.sys.ServiceRestarts(svc) != 1 {
			t.Errorf("%s reloaded %d times, want 1", svc, sb.sys.ServiceRestarts(svc))
		}
	}
	if !strings.Contains(stdout.String(), `"vms": 4`) {
		t.Errorf("apply-rules printed %s", stdout.String())
	}
}
