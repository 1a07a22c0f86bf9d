// Command vcsim runs govmomi's vCenter simulator (github.com/vmware/govmomi/simulator) as a
// separate process, for tests that need a vCenter on the other end of a real socket.
//
// govmomi v0.56.0 ships its own vcsim command as a separate, unpublished Go module, so it
// cannot be built from the module cache; this command is a thin stand-in that accepts the
// same flags the tests use (-l, -dc, -cluster, -host, -standalone-host, -ds, -vm, -pg,
// -username, -password, -tls, -stdinexit) and prints the same first line:
//
//	export GOVC_URL=https://user:pass@127.0.0.1:PORT/sdk GOVC_SIM_PID=PID
//
// It listens on loopback only (-l must name a loopback address) and exits on SIGINT,
// SIGTERM or, with -stdinexit, when its standard input closes.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	model := simulator.VPX()
	model.Autostart = false
	flag.IntVar(&model.Datacenter, "dc", model.Datacenter, "number of datacenters")
	flag.IntVar(&model.Cluster, "cluster", model.Cluster, "number of clusters per datacenter")
	flag.IntVar(&model.ClusterHost, "host", model.ClusterHost, "number of hosts per cluster")
	flag.IntVar(&model.Host, "standalone-host", model.Host, "number of standalone hosts per datacenter")
	flag.IntVar(&model.Datastore, "ds", model.Datastore, "number of datastores per datacenter (mounted on all its hosts)")
	flag.IntVar(&model.Machine, "vm", model.Machine, "number of VMs per resource pool")
	flag.IntVar(&model.Portgroup, "pg", model.Portgroup, "number of distributed port groups per datacenter")
	listen := flag.String("l", "127.0.0.1:8989", "listen address (loopback only)")
	user := flag.String("username", "", "login user (any non-empty user when unset)")
	pass := flag.String("password", "", "login password")
	useTLS := flag.Bool("tls", true, "serve HTTPS with a self-signed certificate")
	stdinExit := flag.Bool("stdinexit", false, "exit when standard input closes")
	flag.Parse()

	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		log.Fatalf("vcsim: -l %q: %v", *listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		log.Fatalf("vcsim: -l %q: only loopback addresses are allowed", *listen)
	}

	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: create model: %v", err)
	}
	defer model.Remove()
	u := &url.URL{Host: *listen}
	if *user != "" {
		u.User = url.UserPassword(*user, *pass)
	}
	model.Service.Listen = u
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	srv := model.Service.NewServer()
	defer srv.Close()

	fmt.Printf("export GOVC_URL=%s GOVC_SIM_PID=%d\n", srv.URL, os.Getpid())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	if *stdinExit {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- syscall.SIGTERM
		}()
	}
	<-stop
}
