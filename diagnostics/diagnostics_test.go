package diagnostics

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateParamsNamesTheCharacterAndItsPosition(t *testing.T) {
	for _, ok := range []string{"", "-c 4", "-c 10 -i 0.2 -W 1", "-I eth0", "-n -q -m 5"} {
		if err := ValidateParams(ok); err != nil {
			t.Errorf("ValidateParams(%q) = %v", ok, err)
		}
	}
	for params, want := range map[string]string{
		"-c 4; reboot":  `character ';' at position 5`,
		"-c 4 && id":    `character '&' at position 6`,
		"$(id)":         `character '$' at position 1`,
		"-c 4\nreboot":  `character '\n' at position 5`,
		"-c\t4":         `character '\t' at position 3`,
		"-c 4 `id`":     "character '`' at position 6",
		"-c 4 > /tmp/x": `character '>' at position 6`,
		"é -c 1":        `character 'é' at position 1`,
		"-c 1 é":        `character 'é' at position 6`,
	} {
		err := ValidateParams(params)
		var de *Error
		if !errors.As(err, &de) || de.Field != "params" || !strings.Contains(de.Message, want) {
			t.Errorf("ValidateParams(%q) = %v, want params error with %q", params, err, want)
		}
	}
	if err := ValidateParams(strings.Repeat("a", MaxParamsLength+1)); err == nil {
		t.Error("overlong params accepted")
	}
}

func TestParseAddressAcceptsOnlyIPAddresses(t *testing.T) {
	for _, ok := range []string{"127.0.0.1", "::1", "10.1.1.1", "fd00::9", "::ffff:10.0.0.1"} {
		if _, err := ParseAddress(ok); err != nil {
			t.Errorf("ParseAddress(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "localhost", "10.1.1.1 -f", "-f", "10.1.1", "fe80::1%eth0", "1.2.3.4;id", " 10.0.0.1"} {
		_, err := ParseAddress(bad)
		var de *Error
		if !errors.As(err, &de) || de.Field != "ipaddress" {
			t.Errorf("ParseAddress(%q) = %v, want an ipaddress error", bad, err)
		}
	}
	if a, _ := ParseAddress("::ffff:10.0.0.1"); a.String() != "10.0.0.1" {
		t.Errorf("IPv4-mapped address kept as %s", a)
	}
}

func TestArgvDefaultsAsAVirtualRouter(t *testing.T) {
	for _, c := range []struct {
		typ, ip, params string
		timeout         int
		iface           string
		want            string
	}{
		{"ping", "10.1.1.1", "", 0, "", "timeout 30 ping -c 4 10.1.1.1"},
		{"ping", "fd00::1", "", 0, "", "timeout 30 ping -6 -c 4 fd00::1"},
		{"ping", "10.1.1.1", "-c 1 -W 2", 5, "", "timeout 5 ping -c 1 -W 2 10.1.1.1"},
		{"traceroute", "10.1.1.1", "", 0, "", "timeout 30 traceroute -m 20 10.1.1.1"},
		{"traceroute", "fd00::1", "-n", 0, "", "timeout 30 traceroute -6 -n fd00::1"},
		{"arping", "10.1.1.1", "", 0, "eth2", "timeout 30 arping -c 4 -I eth2 10.1.1.1"},
		{"arping", "10.1.1.1", "-c 2 -I eth0", 0, "eth2", "timeout 30 arping -c 2 -I eth0 10.1.1.1"},
		{"PING", "10.1.1.1", "", 0, "", "timeout 30 ping -c 4 10.1.1.1"},
	} {
		r, err := NewRequest(c.typ, c.ip, c.params, c.timeout)
		if err != nil {
			t.Fatalf("NewRequest(%q, %q, %q): %v", c.typ, c.ip, c.params, err)
		}
		if got := strings.Join(r.Argv(c.iface), " "); got != c.want {
			t.Errorf("%s %s %q: argv %q, want %q", c.typ, c.ip, c.params, got, c.want)
		}
	}
	r, _ := NewRequest("arping", "fd00::1", "", 0)
	if got := strings.Join(r.RouteArgv(), " "); got != "ip -6 -o route get fd00::1" {
		t.Errorf("route argv %q", got)
	}
	for _, bad := range []struct {
		typ     string
		timeout int
		field   string
	}{{"dig", 0, "type"}, {"", 0, "type"}, {"ping", -1, "timeout"}, {"ping", 51, "timeout"}} {
		_, err := NewRequest(bad.typ, "10.0.0.1", "", bad.timeout)
		var de *Error
		if !errors.As(err, &de) || de.Field != bad.field {
			t.Errorf("NewRequest(%q, timeout %d) = %v, want a %s error", bad.typ, bad.timeout, err, bad.field)
		}
	}
}

func TestInterfaceFromRoute(t *testing.T) {
	got, err := InterfaceFromRoute("10.254.77.2 dev eth2 src 10.254.77.1 uid 0 \\    cache ")
	if err != nil || got != "eth2" {
		t.Errorf("InterfaceFromRoute = %q, %v", got, err)
	}
	if _, err := InterfaceFromRoute("unreachable"); err == nil {
		t.Error("no dev accepted")
	}
}

func TestValidateFiles(t *testing.T) {
	if err := ValidateFiles([]string{"/var/log/cloud.log", "/etc/haproxy/haproxy.cfg", "/root/a_b-c.json"}); err != nil {
		t.Errorf("good files refused: %v", err)
	}
	for _, bad := range []string{"etc/passwd", "/etc/../shadow", "/etc//hosts", "/etc/", "/etc/x;id", "/etc/x y", "/.."} {
		var de *Error
		if err := ValidateFiles([]string{bad}); !errors.As(err, &de) || de.Field != "files" {
			t.Errorf("ValidateFiles(%q) = %v, want a files error", bad, err)
		}
	}
	many := make([]string, MaxExtraFiles+1)
	for i := range many {
		many[i] = "/etc/hosts"
	}
	if ValidateFiles(many) == nil {
		t.Error("too many files accepted")
	}
	names := map[string]bool{}
	for _, e := range DefaultEntries("domainrouter", true) {
		names[e.Name] = true
	}
	for _, want := range []string{"iptables-save.txt", "ip-addr.txt", "ip-rule.txt", "ip-route.txt", "files/etc/dnsmasq.conf",
		"files/etc/haproxy/haproxy.cfg", "files/var/log/cloud.log"} {
		if !names[want] {
			t.Errorf("default router entries lack %s", want)
		}
	}
	for _, e := range DefaultEntries("consoleproxy", false) {
		if strings.Contains(e.Name, "haproxy") {
			t.Errorf("a CPVM's defaults hold %s", e.Name)
		}
	}
}
