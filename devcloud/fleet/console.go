package fleet

// Simulated console proxy endpoints. Each simulated CPVM (and SSVM, whose HTTPS upload
// endpoint takes the same certificate) serves real TLS on a loopback port with the certificate
// it was given, or the dev default until it is given one. Over SSH the platform drives it
// with the ConsoleCommand program (install a certificate, restart the endpoint with it,
// report status), as it would drive the console proxy agent of a real CPVM. A console session
// (GET /console?token=...) is accepted only with a valid token (package consoles): signed
// with the token key, not expired, issued for this proxy and not used before; it stays open
// until the client leaves, and is counted in the active sessions (activeviewersessions).

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/models"
)

// ConsoleCommand is the program on simulated SSVMs and CPVMs that manages their console
// (or upload) endpoint: `sysvm-console install` (stdin: ConsoleInstall JSON),
// `sysvm-console restart`, `sysvm-console reset` (back to the dev default), `sysvm-console status` (stdout: ConsoleStatus JSON).
const ConsoleCommand = "sysvm-console"

// ConsoleInstall is what `sysvm-console install` reads: the certificate chain and key to
// serve after the next restart.
type ConsoleInstall struct {
	CertificatePEM string `json:"certificate"`
	KeyPEM         string `json:"key"`
}

// ConsoleStatus is what `sysvm-console status` prints.
type ConsoleStatus struct {
	// Addr is where the endpoint serves TLS ("127.0.0.1:port"); empty while restarting.
	Addr string `json:"addr"`
	// Fingerprint is the SHA-256 fingerprint of the served leaf certificate.
	Fingerprint string `json:"fingerprint"`
	// Installed is the fingerprint of the certificate installed for the next restart.
	Installed string `json:"installed,omitempty"`
	// Sessions is the number of active console sessions.
	Sessions int `json:"activeviewersessions"`
	// Restarts counts restarts of the endpoint.
	Restarts int `json:"restarts"`
}

// ConsoleOptions configure Consoles.
type ConsoleOptions struct {
	// TokenKey verifies console tokens (consoles.TokenKey of the master key). Required.
	TokenKey []byte
	// Default is the certificate served until one is installed (the dev default). Required.
	Default tls.Certificate
	// RestartDelay is how long an endpoint does not serve while restarting (default 50 ms).
	RestartDelay time.Duration
	// Logger receives the endpoints' logs (default: discarded).
	Logger *slog.Logger
}

// Consoles are the simulated console endpoints of a fleet's SSVMs and CPVMs, by fleet ID.
type Consoles struct {
	opts ConsoleOptions
	log  *slog.Logger

	mu     sync.Mutex
	closed bool
	vms    map[string]*consoleVM
}

type consoleVM struct {
	id string

	mu        sync.Mutex
	ln        net.Listener
	srv       *http.Server
	addr      string
	serving   tls.Certificate
	installed *tls.Certificate
	broken    bool
	restarts  int
	sessions  int
	replay    consoles.Replay
}

// NewConsoles builds an empty set of console endpoints.
func NewConsoles(o ConsoleOptions) (*Consoles, error) {
	if len(o.TokenKey) == 0 {
		return nil, errors.New("consoles: ConsoleOptions.TokenKey is required")
	}
	if len(o.Default.Certificate) == 0 {
		return nil, errors.New("consoles: ConsoleOptions.Default (the dev certificate) is required")
	}
	if o.RestartDelay == 0 {
		o.RestartDelay = 50 * time.Millisecond
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Consoles{opts: o, log: log.With("component", "fleet-console"), vms: map[string]*consoleVM{}}, nil
}

// Start starts a VM's endpoint (serving the dev default) unless it runs, and returns its address.
func (c *Consoles) Start(id string) (string, error) {
	vm, err := c.endpoint(id)
	if err != nil {
		return "", err
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.addr, nil
}

// endpoint is a VM's endpoint, made (serving the dev default) and listening unless it was:
// every command on a VM first makes sure its endpoint exists.
func (c *Consoles) endpoint(id string) (*consoleVM, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("consoles are closed")
	}
	vm, ok := c.vms[id]
	if !ok {
		vm = &consoleVM{id: id, serving: c.opts.Default}
		c.vms[id] = vm
	}
	c.mu.Unlock()
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.ln == nil {
		if err := c.listenLocked(vm, "127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	return vm, nil
}

func (c *Consoles) vm(id string) (*consoleVM, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	vm, ok := c.vms[id]
	if !ok {
		return nil, fmt.Errorf("no console endpoint for %s", id)
	}
	return vm, nil
}

// listenLocked serves vm.serving on addr (the same port across restarts where it is free).
func (c *Consoles) listenLocked(vm *consoleVM, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil && addr != "127.0.0.1:0" {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return fmt.Errorf("console endpoint of %s: %w", vm.id, err)
	}
	cert := vm.serving
	tl := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	mux := http.NewServeMux()
	mux.HandleFunc("/console", func(w http.ResponseWriter, r *http.Request) { c.session(vm, w, r) })
	mux.HandleFunc("/resource/noVNC/vnc.html", func(w http.ResponseWriter, r *http.Request) { c.session(vm, w, r) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: nil}
	vm.ln, vm.srv, vm.addr = ln, srv, ln.Addr().String()
	go func() { _ = srv.Serve(tl) }()
	return nil
}

// session serves one console session: 200 and an open stream while the client stays, once
// the token is valid for this proxy; 403 naming why otherwise.
func (c *Consoles) session(vm *consoleVM, w http.ResponseWriter, r *http.Request) {
	cl, err := consoles.Verify(c.opts.TokenKey, r.URL.Query().Get("token"), time.Now())
	if err == nil && cl.ProxyID != vm.id {
		err = consoles.ErrWrongVM
	}
	if err == nil {
		err = vm.replay.Use(cl, time.Now())
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	vm.mu.Lock()
	vm.sessions++
	vm.mu.Unlock()
	defer func() {
		vm.mu.Lock()
		vm.sessions--
		vm.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprintf(w, "console of %s\n", cl.VMID)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	<-r.Context().Done()
}

// Install sets the certificate a VM serves after its next restart.
func (c *Consoles) Install(id string, in ConsoleInstall) error {
	cert, err := tls.X509KeyPair([]byte(in.CertificatePEM), []byte(in.KeyPEM))
	if err != nil {
		return fmt.Errorf("install certificate on %s: %w", id, err)
	}
	vm, err := c.endpoint(id)
	if err != nil {
		return err
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.installed = &cert
	return nil
}

// Restart restarts a VM's endpoint: it stops serving (its sessions end), and serves the
// installed certificate after RestartDelay. A VM broken with BreakNextRestart serves the dev
// default instead, once.
func (c *Consoles) Restart(id string) error {
	vm, err := c.endpoint(id)
	if err != nil {
		return err
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	addr := vm.addr
	c.stopLocked(vm)
	time.Sleep(c.opts.RestartDelay)
	if vm.broken || vm.installed == nil {
		vm.serving = c.opts.Default
		vm.broken = false
	} else {
		vm.serving = *vm.installed
	}
	vm.restarts++
	c.log.Info("console endpoint restarted", "vm", id, "fingerprint", fingerprintOf(vm.serving))
	return c.listenLocked(vm, addr)
}

func (c *Consoles) stopLocked(vm *consoleVM) {
	if vm.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 0)
		_ = vm.srv.Shutdown(ctx)
		cancel()
		_ = vm.srv.Close()
	}
	vm.ln, vm.srv, vm.addr = nil, nil, ""
}

// Reset drops the installed certificate and restarts the endpoint with the dev default (the
// rollback of a VM that served no uploaded certificate).
func (c *Consoles) Reset(id string) error {
	vm, err := c.endpoint(id)
	if err != nil {
		return err
	}
	vm.mu.Lock()
	vm.installed = nil
	vm.mu.Unlock()
	return c.Restart(id)
}

// Stop stops a VM's endpoint (the VM stopped or was destroyed).
func (c *Consoles) Stop(id string) {
	c.mu.Lock()
	vm, ok := c.vms[id]
	delete(c.vms, id)
	c.mu.Unlock()
	if ok {
		vm.mu.Lock()
		c.stopLocked(vm)
		vm.mu.Unlock()
	}
}

// Down stops a VM's endpoint but keeps what was installed on it (the VM powered off; its
// disk keeps the certificate): its sessions end, and it serves again on Start.
func (c *Consoles) Down(id string) {
	c.mu.Lock()
	vm, ok := c.vms[id]
	c.mu.Unlock()
	if ok {
		vm.mu.Lock()
		c.stopLocked(vm)
		vm.mu.Unlock()
	}
}

// BreakNextRestart makes a VM's next restart serve the dev default instead of the installed
// certificate, as a CPVM whose agent failed to load the new keystore would (true), or
// cancels that (false). The restart after it is healthy again.
func (c *Consoles) BreakNextRestart(id string, broken bool) error {
	vm, err := c.endpoint(id)
	if err != nil {
		return err
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.broken = broken
	return nil
}

// Status reports a VM's endpoint.
func (c *Consoles) Status(id string) (ConsoleStatus, error) {
	vm, err := c.vm(id)
	if err != nil {
		return ConsoleStatus{}, err
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	st := ConsoleStatus{Addr: vm.addr, Fingerprint: fingerprintOf(vm.serving), Sessions: vm.sessions, Restarts: vm.restarts}
	if vm.installed != nil {
		st.Installed = fingerprintOf(*vm.installed)
	}
	return st, nil
}

// IDs lists the VMs with an endpoint.
func (c *Consoles) IDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.vms))
	for id := range c.vms {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Close stops every endpoint.
func (c *Consoles) Close() {
	c.mu.Lock()
	c.closed = true
	vms := c.vms
	c.vms = map[string]*consoleVM{}
	c.mu.Unlock()
	for _, vm := range vms {
		vm.mu.Lock()
		c.stopLocked(vm)
		vm.mu.Unlock()
	}
}

// Command is the ConsoleCommand program for Options.Commands.
func (c *Consoles) Command() CommandFunc {
	return func(_ context.Context, id string, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
		if len(argv) < 2 {
			_, _ = fmt.Fprintf(stderr, "usage: %s install|restart|status\n", ConsoleCommand)
			return 2
		}
		var err error
		switch argv[1] {
		case "install":
			var in ConsoleInstall
			if err = json.NewDecoder(io.LimitReader(stdin, 1<<20)).Decode(&in); err == nil {
				err = c.Install(id, in)
			}
		case "restart":
			err = c.Restart(id)
		case "reset":
			err = c.Reset(id)
		case "status":
			if _, err = c.Start(id); err == nil {
				var st ConsoleStatus
				if st, err = c.Status(id); err == nil {
					err = json.NewEncoder(stdout).Encode(st)
				}
			}
		default:
			_, _ = fmt.Fprintf(stderr, "%s: unknown subcommand %q\n", ConsoleCommand, argv[1])
			return 2
		}
		if err != nil {
			_, _ = fmt.Fprintf(stderr, "%s %s: %v\n", ConsoleCommand, argv[1], err)
			return 1
		}
		return 0
	}
}

func fingerprintOf(c tls.Certificate) string {
	if len(c.Certificate) == 0 {
		return ""
	}
	return models.Fingerprint(c.Certificate[0])
}

// ParseConsoleStatus decodes `sysvm-console status` output.
func ParseConsoleStatus(b []byte) (ConsoleStatus, error) {
	var st ConsoleStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("console status: %w", err)
	}
	return st, nil
}
