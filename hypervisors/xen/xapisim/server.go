// Package xapisim is a XenServer / XCP-ng API (XAPI) simulator, in the spirit of govmomi's
// vcsim: an in-memory pool speaking XAPI's real wire protocols on loopback, so that the xen
// driver can be tested end to end where no XAPI server runs.
//
// It answers JSON-RPC (v1 and v2) at /jsonrpc, XML-RPC at / and the raw VDI import handler
// at PUT /import_raw_vdi (authenticated as XAPI's HTTP handlers are: httpauth.go). Objects carry opaque refs ("OpaqueRef:<uuid>") and uuids; every
// class has XAPI's generated messages (get_all, get_all_records, get_record, get_by_uuid,
// get_by_name_label, field getters and setters), plus the hand-written ones a control plane
// uses (VM.clone / copy / provision / start / start_on / clean_shutdown / hard_shutdown /
// clean_reboot / hard_reboot / pool_migrate / destroy, VIF / VBD / VDI create and destroy,
// ...), each enforcing XAPI's preconditions and failing with XAPI's error codes and
// parameters. Async.<method> returns a task, as XAPI does. Faults can be injected per method.
//
// One file per XAPI class: session.go, pool.go, host.go, sr.go, vdi.go, vbd.go, vif.go,
// network.go, vm.go, task.go; import.go is the HTTP import handler. Every method declares its
// parameters by kind and args.go decodes them all (decodeArgs), so handlers read typed values.
package xapisim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"
)

// Options configure a simulated pool. Zero values take the defaults noted on each field.
type Options struct {
	// Username and Password are the only credentials accepted (default "root" / "xapisim").
	Username string
	Password string `json:"-"`
	// PoolName is the pool's name_label (default "xapisim-pool").
	PoolName string
	// Hosts of the pool; the first is the master (default: two hosts, xenhost-1 and xenhost-2).
	Hosts []HostSpec
	// SRs of the pool (default: one shared NFS SR "Shared NFS SR" of 2 TiB, the pool default).
	SRs []SRSpec
	// Networks of the pool (default: "Pool-wide network associated with eth0" on xenbr0 and
	// CloudStack's "cloud_link_local_network" on xapi0).
	Networks []NetworkSpec
	// ProductBrand and ProductVersion fill host.software_version (default "XCP-ng", "8.2.1").
	ProductBrand   string
	ProductVersion string
	// OpDelay is how long each long-running operation (start, shutdown, reboot, migrate,
	// clone, copy, VDI import) holds its objects busy. Calls touching a busy object fail with
	// OTHER_OPERATION_IN_PROGRESS, as on a real pool. Default 0.
	OpDelay time.Duration
	// TLS serves HTTPS with a self-signed certificate, as XAPI does on port 443.
	TLS bool
	// Logger receives debug lines (method names only, never parameters). Default: discard.
	Logger *slog.Logger
}

// HostSpec describes one simulated host.
type HostSpec struct {
	Name     string
	CPUs     int   // default 8
	CPUMHz   int   // default 2400
	MemoryMB int64 // default 65536
}

// SRSpec describes one simulated storage repository.
type SRSpec struct {
	Name      string
	Type      string // default "nfs"
	SizeBytes int64  // default 2 TiB
	// Shared SRs are reachable from every host (default true for the default SR).
	Shared bool
}

// NetworkSpec describes one pool-wide network.
type NetworkSpec struct {
	Name   string
	Bridge string
	MTU    int64 // default 1500
}

// Defaults used when Options leave them out.
const (
	DefaultUsername       = "root"
	DefaultPoolName       = "xapisim-pool"
	DefaultSRName         = "Shared NFS SR"
	DefaultNetworkName    = "Pool-wide network associated with eth0"
	LinkLocalNetworkName  = "cloud_link_local_network"
	OtherInstallMediaName = "Other install media"
)

// Server is one simulated XAPI pool.
type Server struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	db      *db
	methods map[string]*method
	faults  faultSet
	calls   map[string]int
	// httpAuths counts how HTTP handler requests authenticated (AuthCookie, ...).
	httpAuths map[string]int
	// content holds the sha256 and length of what was imported into each VDI (by uuid).
	content map[string]vdiContent
	domid   int64

	stopCtx context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
	httpSrv *http.Server
	url     string
}

// New builds a pool from opts. It does not listen until Start.
func New(opts Options) *Server {
	if opts.Username == "" {
		opts.Username = DefaultUsername
	}
	if opts.Password == "" {
		opts.Password = "xapisim"
	}
	if opts.PoolName == "" {
		opts.PoolName = DefaultPoolName
	}
	if len(opts.Hosts) == 0 {
		opts.Hosts = []HostSpec{{Name: "xenhost-1"}, {Name: "xenhost-2"}}
	}
	if len(opts.SRs) == 0 {
		opts.SRs = []SRSpec{{Name: DefaultSRName, Shared: true}}
	}
	if len(opts.Networks) == 0 {
		opts.Networks = []NetworkSpec{
			{Name: DefaultNetworkName, Bridge: "xenbr0"},
			{Name: LinkLocalNetworkName, Bridge: "xapi0"},
		}
	}
	if opts.ProductBrand == "" {
		opts.ProductBrand = "XCP-ng"
	}
	if opts.ProductVersion == "" {
		opts.ProductVersion = "8.2.1"
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts: opts, log: log.With("component", "xapisim"),
		methods: map[string]*method{}, calls: map[string]int{}, httpAuths: map[string]int{}, content: map[string]vdiContent{},
		stopCtx: ctx, stop: cancel,
	}
	s.db = &db{classes: map[string]*class{}}
	for _, c := range []*class{
		newSessionClass(), newPoolClass(), newHostClass(), newHostMetricsClass(), newSRClass(),
		newVDIClass(), newVBDClass(), newVIFClass(), newNetworkClass(), newVMClass(),
		newVMMetricsClass(), newTaskClass(),
	} {
		s.db.classes[c.name] = c
	}
	s.registerSession()
	s.registerPool()
	s.registerHost()
	s.registerSR()
	s.registerVDI()
	s.registerVBD()
	s.registerVIF()
	s.registerNetwork()
	s.registerVM()
	s.registerTask()
	s.registerGenerated()
	s.populate()
	return s
}

// populate creates the pool, hosts with their control domains, SRs, networks and the
// default templates, as a freshly installed pool has them.
func (s *Server) populate() {
	poolRef := s.db.add(classPool, &poolRec{})
	var master string
	for i, h := range s.opts.Hosts {
		ref := s.addHost(h)
		if i == 0 {
			master = ref
		}
	}
	var defaultSR string
	for i, sr := range s.opts.SRs {
		ref := s.addSR(sr)
		if i == 0 {
			defaultSR = ref
		}
	}
	for _, n := range s.opts.Networks {
		s.addNetwork(n)
	}
	p, _ := lookup[poolRec](s.db, classPool, poolRef)
	*p = poolRec{
		UUID: newUUID(), NameLabel: s.opts.PoolName, Master: master, DefaultSR: defaultSR,
		SuspendImageSR: defaultSR, CrashDumpSR: defaultSR, OtherConfig: map[string]string{},
	}
	s.addDefaultTemplate(OtherInstallMediaName)
}

// Start listens on addr, which must be a loopback address ("127.0.0.1:0" picks a free
// port), and returns the pool master's URL.
func (s *Server) Start(addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("xapisim listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", fmt.Errorf("xapisim listens on loopback only, not %q", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("xapisim listen %s: %w", addr, err)
	}
	scheme := "http"
	if s.opts.TLS {
		cert, err := selfSigned()
		if err != nil {
			ln.Close()
			return "", fmt.Errorf("xapisim certificate: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /jsonrpc", s.serveJSONRPC)
	mux.HandleFunc("POST /{$}", s.serveXMLRPC)
	mux.HandleFunc("PUT /import_raw_vdi", s.serveImportRawVDI)
	s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.url = scheme + "://" + ln.Addr().String()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("xapisim serve", "err", err)
		}
	}()
	return s.url, nil
}

// URL is the pool master's URL once started.
func (s *Server) URL() string { return s.url }

// Close stops listening, ends pending operations and waits for them.
func (s *Server) Close() {
	s.stop()
	if s.httpSrv != nil {
		s.httpSrv.Close()
	}
	s.wg.Wait()
}

// InvalidateSessions logs every session out, as a xapi restart or a pool master change does:
// the next call of any client fails with SESSION_INVALID.
func (s *Server) InvalidateSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.db.classes[classSession]
	for _, ref := range c.refs() {
		c.remove(ref)
	}
}

// SessionCount is the number of live sessions.
func (s *Server) SessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.db.classes[classSession].objs)
}

// SessionRefs are the refs of the live sessions (session IDs, secrets of their holders), for
// tests that check a client never leaks them.
func (s *Server) SessionRefs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.classes[classSession].refs()
}

// HostNames are the pool's hosts, master first.
func (s *Server) HostNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, hosts := all[hostRec](s.db, classHost)
	out := make([]string, len(hosts))
	for i, h := range hosts {
		out[i] = h.NameLabel
	}
	return out
}

// SRNames are the pool's storage repositories.
func (s *Server) SRNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, srs := all[srRec](s.db, classSR)
	out := make([]string, len(srs))
	for i, sr := range srs {
		out[i] = sr.NameLabel
	}
	return out
}

// Credentials returns the username and password the pool accepts.
func (s *Server) Credentials() (username, password string) {
	return s.opts.Username, s.opts.Password
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "xapisim"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
