package kvm

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/sysvm/sysvm/hypervisors"
)

// DefaultSocket is the system libvirtd's read-write unix socket.
const DefaultSocket = "/run/libvirt/libvirt-sock"

// DefaultURI is the libvirt URI opened when an endpoint names none.
const DefaultURI = "qemu:///system"

// defaultTCPPort is libvirtd's listen_tcp port.
const defaultTCPPort = "16509"

// dialTimeout bounds one dial and the connect handshake when ctx has no earlier deadline.
const dialTimeout = 15 * time.Second

// Endpoint is a parsed libvirtd endpoint (see the package documentation for the forms).
type Endpoint struct {
	// Network is "unix" or "tcp".
	Network string
	// Address is the socket path (unix) or host:port (tcp).
	Address string
	// URI is the libvirt URI the daemon opens, e.g. "qemu:///system" or "test:///default".
	URI string
}

// String renders the endpoint in this package's canonical form.
func (e Endpoint) String() string {
	// Escape what would end or split the query, keep a URI's ':' and '/' readable.
	q := "uri=" + strings.NewReplacer("%3A", ":", "%2F", "/").Replace(url.QueryEscape(e.URI))
	return e.Network + "://" + e.Address + "?" + q
}

// UnixEndpoint renders the endpoint of a libvirtd unix socket opening the given libvirt URI,
// e.g. UnixEndpoint("/run/libvirt/libvirt-sock", "test:///default").
func UnixEndpoint(socket, uri string) string {
	return Endpoint{Network: "unix", Address: socket, URI: uri}.String()
}

// ParseEndpoint parses an endpoint string; a malformed one is an ErrInvalid error.
func ParseEndpoint(s string) (Endpoint, error) {
	bad := func(format string, args ...any) (Endpoint, error) {
		return Endpoint{}, hypervisors.Errorf(hypervisors.ErrInvalid, "parse endpoint", s, format, args...)
	}
	if strings.TrimSpace(s) == "" {
		return bad("empty endpoint")
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad("%v", err)
	}
	q := u.Query()
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme == "unix":
		ep := Endpoint{Network: "unix", Address: u.Path, URI: q.Get("uri")}
		if u.Host != "" {
			return bad("a unix endpoint has no host (want unix:///path/to/socket)")
		}
		if ep.Address == "" {
			ep.Address = DefaultSocket
		}
		if ep.URI == "" {
			ep.URI = DefaultURI
		}
		return ep, nil
	case scheme == "tcp":
		if u.Hostname() == "" {
			return bad("a tcp endpoint needs a host")
		}
		port := u.Port()
		if port == "" {
			port = defaultTCPPort
		}
		ep := Endpoint{Network: "tcp", Address: net.JoinHostPort(u.Hostname(), port), URI: q.Get("uri")}
		if ep.URI == "" {
			ep.URI = DefaultURI
		}
		return ep, nil
	case strings.Contains(scheme, "+"):
		// libvirt's client form: driver+transport://[host]/path?socket=...
		parts := strings.SplitN(scheme, "+", 2)
		path := u.Path
		if path == "" {
			path = "/system"
		}
		remote := parts[0] + "://" + path
		switch parts[1] {
		case "unix":
			sock := q.Get("socket")
			if sock == "" {
				sock = DefaultSocket
			}
			return Endpoint{Network: "unix", Address: sock, URI: remote}, nil
		case "tcp":
			if u.Hostname() == "" {
				return bad("a tcp endpoint needs a host")
			}
			port := u.Port()
			if port == "" {
				port = defaultTCPPort
			}
			return Endpoint{Network: "tcp", Address: net.JoinHostPort(u.Hostname(), port), URI: remote}, nil
		}
		return bad("transport %q is not supported (use unix or tcp)", parts[1])
	}
	return bad("scheme %q is not supported (use unix:// or tcp://)", u.Scheme)
}

// dial opens a libvirt connection to ep, bounded by ctx and dialTimeout. A refused or timed-out
// dial is ErrUnreachable; a refusal by libvirtd is classified like any libvirt error.
func dial(ctx context.Context, ep Endpoint) (*libvirt.Libvirt, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, ep.Network, ep.Address)
	if err != nil {
		return nil, hypervisors.Wrap(hypervisors.ErrUnreachable, "connect", ep.String(), err)
	}
	l := libvirt.NewWithDialer(dialers.NewAlreadyConnected(conn))
	done := make(chan error, 1)
	go func() { done <- l.ConnectToURI(libvirt.ConnectURI(ep.URI)) }()
	select {
	case err := <-done:
		if err != nil {
			_ = conn.Close()
			return nil, classify("connect", ep.String(), fmt.Errorf("open %s: %w", ep.URI, err))
		}
		return l, nil
	case <-ctx.Done():
		// Closing the socket makes the handshake fail; wait for it so no goroutine leaks.
		_ = conn.Close()
		<-done
		return nil, hypervisors.Wrap(hypervisors.ErrUnreachable, "connect", ep.String(), ctx.Err())
	}
}
