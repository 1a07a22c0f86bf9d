package agent

import (
	"bufio"
	"bytes"
	"net/netip"
	"strconv"
	"strings"
)

// dhcpHost is one line of dnsmasq's /etc/dhcphosts.txt ("02:00:0e:8d:00:05,10.1.1.147,vm1,infinite").
type dhcpHost struct {
	mac, ip, name string
}

// parseDHCPHosts reads dnsmasq dhcp-hostsfile lines. Fields are comma-separated in any order
// dnsmasq allows: the MAC, the address, the host name, the lease time, and tags (set:, tag:,
// id:) which are ignored.
func parseDHCPHosts(data []byte) []dhcpHost {
	var out []dhcpHost
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var h dhcpHost
		for _, f := range strings.Split(line, ",") {
			f = strings.TrimSpace(f)
			switch {
			case f == "":
			case strings.HasPrefix(f, "set:") || strings.HasPrefix(f, "tag:") || strings.HasPrefix(f, "id:"):
			case h.mac == "" && normalizeMAC(f) != "":
				h.mac = normalizeMAC(f)
			case h.ip == "" && isIP(strings.Trim(f, "[]")):
				h.ip = canonicalIP(strings.Trim(f, "[]"))
			case h.name == "" && !isLeaseTime(f):
				h.name = f
			}
		}
		if h.mac != "" || h.ip != "" {
			out = append(out, h)
		}
	}
	return out
}

func isLeaseTime(s string) bool {
	if s == "infinite" {
		return true
	}
	s = strings.TrimRight(s, "smhdw")
	_, err := strconv.Atoi(s)
	return err == nil
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// canonicalIP prints an address the way netip does (so "::0001" and "::1" compare equal), or
// returns s unchanged when it is not an address.
func canonicalIP(s string) string {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return s
	}
	return a.Unmap().String()
}

// parseEtcHosts maps each address of an /etc/hosts file to the names given for it.
func parseEtcHosts(data []byte) map[string][]string {
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 || !isIP(fields[0]) {
			continue
		}
		ip := canonicalIP(fields[0])
		out[ip] = append(out[ip], fields[1:]...)
	}
	return out
}

// haproxySection is one section of haproxy.cfg: its keyword (global, defaults, listen,
// frontend, backend), the words after the keyword, and its directives.
type haproxySection struct {
	kind       string
	args       []string
	directives [][]string
}

var haproxySectionKinds = map[string]bool{
	"global": true, "defaults": true, "listen": true, "frontend": true, "backend": true,
	"peers": true, "resolvers": true, "userlist": true, "mailers": true, "program": true,
	"http-errors": true, "ring": true, "cache": true,
}

// parseHaproxy splits haproxy.cfg into sections.
func parseHaproxy(data []byte) []haproxySection {
	var out []haproxySection
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if haproxySectionKinds[fields[0]] {
			out = append(out, haproxySection{kind: fields[0], args: fields[1:]})
			continue
		}
		if len(out) == 0 {
			continue
		}
		s := &out[len(out)-1]
		s.directives = append(s.directives, fields)
	}
	return out
}

// directive returns the arguments of the first directive named name.
func (s haproxySection) directive(name string) ([]string, bool) {
	for _, d := range s.directives {
		if d[0] == name {
			return d[1:], true
		}
	}
	return nil, false
}

// binds returns the "ip:port" addresses the section listens on: a listen section's address
// after its name, and every bind directive.
func (s haproxySection) binds() []string {
	var out []string
	add := func(spec string) {
		for _, a := range strings.Split(spec, ",") {
			if hp, ok := normalizeHostPort(a); ok {
				out = append(out, hp)
			}
		}
	}
	if s.kind == "listen" && len(s.args) > 1 {
		add(s.args[1])
	}
	for _, d := range s.directives {
		if d[0] == "bind" && len(d) > 1 {
			add(d[1])
		}
	}
	return out
}

// servers returns the "ip:port" of every server directive.
func (s haproxySection) servers() []string {
	var out []string
	for _, d := range s.directives {
		if d[0] == "server" && len(d) > 2 {
			if hp, ok := normalizeHostPort(d[2]); ok {
				out = append(out, hp)
			}
		}
	}
	return out
}

// normalizeHostPort turns "ip:port" or "[ipv6]:port" into a canonical "ip:port" ("[ipv6]:port").
func normalizeHostPort(s string) (string, bool) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return "", false
	}
	host, port := strings.Trim(s[:i], "[]"), s[i+1:]
	if _, err := strconv.Atoi(port); err != nil {
		return "", false
	}
	if host == "" || host == "*" {
		host = "0.0.0.0"
	}
	return hostPort(host, port), true
}

func hostPort(host, port string) string {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host + ":" + port
	}
	a = a.Unmap()
	if a.Is6() {
		return "[" + a.String() + "]:" + port
	}
	return a.String() + ":" + port
}

// iptablesRule is the part of an iptables-save "-A" line the port forwarding check reads.
type iptablesRule struct {
	table, chain              string
	dst, proto, dport, target string
	toDestination             string
	negated                   bool
}

// parseIptablesSave reads iptables-save output into its rules.
func parseIptablesSave(data string) []iptablesRule {
	var out []iptablesRule
	table := ""
	sc := bufio.NewScanner(strings.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
			continue
		case !strings.HasPrefix(line, "-A "):
			continue
		}
		f := strings.Fields(line)
		r := iptablesRule{table: table, chain: f[1]}
		for i := 2; i < len(f); i++ {
			next := func() string {
				if i+1 < len(f) {
					i++
					return f[i]
				}
				return ""
			}
			switch f[i] {
			case "!":
				r.negated = true
			case "-d", "--destination":
				r.dst = next()
			case "-p", "--protocol":
				r.proto = strings.ToLower(next())
			case "--dport", "--destination-port":
				r.dport = next()
			case "-j", "--jump":
				r.target = next()
			case "--to-destination":
				r.toDestination = next()
			}
		}
		out = append(out, r)
	}
	return out
}

// matchesPortForwarding says whether r is the DNAT rule of pf.
func (r iptablesRule) matchesPortForwarding(pf PortForwarding) bool {
	if r.table != "nat" || r.target != "DNAT" || r.negated {
		return false
	}
	dst, _, _ := strings.Cut(r.dst, "/")
	if canonicalIP(dst) != canonicalIP(pf.PublicIP) || r.proto != strings.ToLower(pf.Protocol) {
		return false
	}
	if r.dport != portRange(pf.PublicPort, pf.PublicEndPort, ":") {
		return false
	}
	host, ports, ok := splitToDestination(r.toDestination)
	return ok && canonicalIP(host) == canonicalIP(pf.PrivateIP) &&
		ports == portRange(pf.PrivatePort, pf.PrivateEndPort, "-")
}

// splitToDestination splits a DNAT --to-destination "ip:port[-port]" or "[ipv6]:port".
func splitToDestination(s string) (host, ports string, ok bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 || len(s) < end+2 || s[end+1] != ':' {
			return "", "", false
		}
		return s[1:end], s[end+2:], true
	}
	host, ports, ok = strings.Cut(s, ":")
	return host, ports, ok
}

// portRange prints a port or a range with the separator iptables uses in that place
// (":" for --dport, "-" for --to-destination).
func portRange(start, end int, sep string) string {
	if end == 0 || end == start {
		return strconv.Itoa(start)
	}
	return strconv.Itoa(start) + sep + strconv.Itoa(end)
}
