package activities

// Console proxy certificate rotation steps. The workflow carries only certificate IDs (a
// reference); the private key is read from the Secrets store inside InstallCertificate and
// sent to the VM over SSH on stdin, so it is never in a workflow history, an argument list or
// a log.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
)

// ConsoleAgentCommand is the program on SSVMs and CPVMs that installs a certificate on their
// console (or upload) endpoint, restarts it and reports its status (the simulated fleet
// implements it as devcloud/fleet.ConsoleCommand).
const ConsoleAgentCommand = "sysvm-console"

// ErrTypeCertificateNotServed marks a VM that, after its restart, does not serve the
// certificate it was given.
const ErrTypeCertificateNotServed = "CertificateNotServed"

// consoleStatus is `sysvm-console status` output.
type consoleStatus struct {
	Addr        string `json:"addr"`
	Fingerprint string `json:"fingerprint"`
	Sessions    int    `json:"activeviewersessions"`
	Restarts    int    `json:"restarts"`
}

// CertRotationInput is what the rotation plans and steps need: the operation and the server
// certificate to roll out (by ID).
type CertRotationInput struct {
	OperationID   string `json:"operationId"`
	CertificateID string `json:"certificateId"`
}

// CertRotationVM is one VM of a rotation plan.
type CertRotationVM struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Type   string `json:"type"`
	ZoneID string `json:"zoneId"`
	// PreviousCertificateID is what the VM served before ("" for the dev default): the
	// rollback target.
	PreviousCertificateID string `json:"previousCertificateId,omitempty"`
}

// CertRotationZone is one zone of a rotation plan: its CPVMs, then its SSVMs.
type CertRotationZone struct {
	ID   string           `json:"id"`
	Name string           `json:"name"`
	VMs  []CertRotationVM `json:"vms"`
	// CPVMs is the number of running CPVMs: with one, restarting it would leave the zone
	// without a serving console proxy.
	CPVMs int `json:"cpvms"`
}

// CertRotationPlan is the zones to roll, by name.
type CertRotationPlan struct {
	Certificate string             `json:"certificate"`
	Version     int                `json:"version"`
	Suffix      string             `json:"suffix"`
	Zones       []CertRotationZone `json:"zones"`
}

// PlanCertificateRotation lists, zone by zone (by name), the running CPVMs and then SSVMs
// (by name) with what each serves now.
func (a *Activities) PlanCertificateRotation(ctx context.Context, in CertRotationInput) (CertRotationPlan, error) {
	var cert models.Certificate
	if err := a.Store.Get(ctx, &cert, in.CertificateID); err != nil {
		return CertRotationPlan{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("certificate %s: %v", in.CertificateID, err), "NotFound", err)
	}
	if cert.Kind != models.CertServer {
		return CertRotationPlan{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("certificate %s is a %s certificate; rotate a server certificate", cert.Name, cert.Kind), "BadRequest", nil)
	}
	var vms []models.SystemVM
	if err := a.Store.DB.WithContext(ctx).Where("type IN ? AND state = ?", []string{models.TypeCPVM, models.TypeSSVM}, models.StateRunning).
		Find(&vms).Error; err != nil {
		return CertRotationPlan{}, fmt.Errorf("list system VMs: %w", err)
	}
	served, err := a.Store.ServedCertificates(ctx)
	if err != nil {
		return CertRotationPlan{}, err
	}
	var zones []models.Zone
	if err := a.Store.DB.WithContext(ctx).Find(&zones).Error; err != nil {
		return CertRotationPlan{}, fmt.Errorf("list zones: %w", err)
	}
	byZone := map[string]*CertRotationZone{}
	for _, z := range zones {
		byZone[z.ID] = &CertRotationZone{ID: z.ID, Name: z.Name}
	}
	for _, vm := range vms {
		z := byZone[vm.ZoneID]
		if z == nil {
			continue
		}
		z.VMs = append(z.VMs, CertRotationVM{ID: vm.ID, Name: vm.Name, Type: vm.Type, ZoneID: vm.ZoneID,
			PreviousCertificateID: served[vm.ID].CertificateID})
		if vm.Type == models.TypeCPVM {
			z.CPVMs++
		}
	}
	plan := CertRotationPlan{Certificate: cert.Name, Version: cert.Version, Suffix: cert.DomainSuffix}
	for _, z := range byZone {
		if len(z.VMs) == 0 {
			continue
		}
		// CPVMs first (the console), then SSVMs; by name within each.
		sort.Slice(z.VMs, func(i, j int) bool {
			if z.VMs[i].Type != z.VMs[j].Type {
				return z.VMs[i].Type == models.TypeCPVM
			}
			return z.VMs[i].Name < z.VMs[j].Name
		})
		plan.Zones = append(plan.Zones, *z)
	}
	sort.Slice(plan.Zones, func(i, j int) bool { return plan.Zones[i].Name < plan.Zones[j].Name })
	return plan, nil
}

// CertInstallInput installs a certificate on one VM and restarts its endpoint.
type CertInstallInput struct {
	OperationID string `json:"operationId"`
	VMID        string `json:"vmId"`
	// CertificateID is what to serve; "" restores the dev default (the rollback of a VM that
	// served no uploaded certificate).
	CertificateID string `json:"certificateId"`
}

// CertInstallResult says what InstallCertificate did.
type CertInstallResult struct {
	// Restarted is false when the VM already served the certificate (a retry after a crash).
	Restarted   bool   `json:"restarted"`
	Fingerprint string `json:"fingerprint"`
}

// InstallCertificate sends the certificate chain and key to the VM (key on stdin, read from
// Secrets here) and restarts its endpoint, unless the VM already serves that certificate: a
// retried or resumed step never restarts a VM twice.
func (a *Activities) InstallCertificate(ctx context.Context, in CertInstallInput) (CertInstallResult, error) {
	vm, err := a.certVM(ctx, in.VMID)
	if err != nil {
		return CertInstallResult{}, err
	}
	var payload []byte
	var want string
	if in.CertificateID != "" {
		certPEM, keyPEM, cert, err := a.Store.CertificateBundle(ctx, in.CertificateID)
		if err != nil {
			return CertInstallResult{}, temporal.NewNonRetryableApplicationError(err.Error(), "NotFound", err)
		}
		want = cert.Fingerprint
		payload, _ = json.Marshal(map[string]string{"certificate": string(certPEM), "key": string(keyPEM)})
	}
	st, err := a.consoleStatus(ctx, vm)
	if err != nil {
		return CertInstallResult{}, err
	}
	if want != "" && st.Fingerprint == want {
		return CertInstallResult{Fingerprint: want}, nil
	}
	if payload != nil {
		if err := a.consoleRun(ctx, vm, payload, "install"); err != nil {
			return CertInstallResult{}, err
		}
		if err := a.consoleRun(ctx, vm, nil, "restart"); err != nil {
			return CertInstallResult{}, err
		}
	} else if err := a.consoleRun(ctx, vm, nil, "reset"); err != nil {
		return CertInstallResult{}, err
	}
	return CertInstallResult{Restarted: true, Fingerprint: want}, nil
}

// CertVerifyInput verifies what one VM serves.
type CertVerifyInput struct {
	VMID          string `json:"vmId"`
	CertificateID string `json:"certificateId"`
}

// CertVerifyResult is what a VM was seen serving.
type CertVerifyResult struct {
	Addr        string `json:"addr"`
	Fingerprint string `json:"fingerprint"`
	Name        string `json:"name"`
	Sessions    int    `json:"sessions"`
}

// VerifyConsoleCertificate makes a real TLS handshake with the VM's console endpoint,
// trusting only the uploaded root, for a name under the certificate's suffix, and checks the
// served leaf is the certificate. It also writes the VM's active sessions back to its row.
func (a *Activities) VerifyConsoleCertificate(ctx context.Context, in CertVerifyInput) (CertVerifyResult, error) {
	vm, err := a.certVM(ctx, in.VMID)
	if err != nil {
		return CertVerifyResult{}, err
	}
	var cert models.Certificate
	if err := a.Store.Get(ctx, &cert, in.CertificateID); err != nil {
		return CertVerifyResult{}, temporal.NewNonRetryableApplicationError(err.Error(), "NotFound", err)
	}
	st, err := a.consoleStatus(ctx, vm)
	if err != nil {
		return CertVerifyResult{}, err
	}
	_ = a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vm.ID).Update("active_viewers", st.Sessions).Error
	addr := consoleAddr(vm, st)
	name := models.SampleConsoleHost(cert.DomainSuffix)
	res := CertVerifyResult{Addr: addr, Name: name, Sessions: st.Sessions}
	roots, err := a.rootPool(ctx, &cert)
	if err != nil {
		return res, err
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12})
	if err != nil {
		return res, temporal.NewApplicationError(fmt.Sprintf("%s (%s) does not serve %s v%d on %s for %s: %v",
			vm.Name, vm.Type, cert.Name, cert.Version, addr, name, err), ErrTypeCertificateNotServed)
	}
	defer conn.Close()
	peers := conn.ConnectionState().PeerCertificates
	res.Fingerprint = models.Fingerprint(peers[0].Raw)
	if res.Fingerprint != cert.Fingerprint {
		return res, temporal.NewApplicationError(fmt.Sprintf("%s serves %s, not %s v%d (%s)", vm.Name, res.Fingerprint, cert.Name,
			cert.Version, cert.Fingerprint), ErrTypeCertificateNotServed)
	}
	return res, nil
}

// consoleAddr is where a VM's console endpoint is dialled: the address its agent reports
// (the simulated fleet's loopback listener), else its public IP on 8443.
func consoleAddr(vm models.SystemVM, st consoleStatus) string {
	if st.Addr != "" {
		return st.Addr
	}
	return net.JoinHostPort(vm.PublicIP, strconv.Itoa(8443))
}

// rootPool is the uploaded root of a certificate's chain (the certificate itself when it is
// self-signed).
func (a *Activities) rootPool(ctx context.Context, cert *models.Certificate) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	fps := models.SplitList(cert.ChainFingerprints)
	if len(fps) == 0 {
		pc, err := cert.Parsed()
		if err != nil {
			return nil, err
		}
		pool.AddCert(pc)
		return pool, nil
	}
	var root models.Certificate
	if err := a.Store.DB.WithContext(ctx).Where("fingerprint = ?", fps[len(fps)-1]).First(&root).Error; err != nil {
		return nil, fmt.Errorf("root of %s: %w", cert.Name, err)
	}
	pc, err := root.Parsed()
	if err != nil {
		return nil, err
	}
	pool.AddCert(pc)
	return pool, nil
}

// CertServedInput records what a VM serves.
type CertServedInput struct {
	OperationID   string `json:"operationId"`
	VMID          string `json:"vmId"`
	CertificateID string `json:"certificateId"`
}

// RecordServedCertificate records that a VM serves a certificate (the rollback target of the
// next rotation is what it served before).
func (a *Activities) RecordServedCertificate(ctx context.Context, in CertServedInput) error {
	return a.Store.SetServedCertificate(ctx, in.VMID, in.CertificateID, in.OperationID)
}

// CertAlertInput is an alert of the certificate feature.
type CertAlertInput struct {
	OperationID string `json:"operationId"`
	Type        string `json:"type"`
	Severity    string `json:"severity"`
	Subject     string `json:"subject"`
	Description string `json:"description"`
	ZoneID      string `json:"zoneId,omitempty"`
	VMID        string `json:"vmId,omitempty"`
}

// RaiseCertificateAlert records an alert once per operation and subject.
func (a *Activities) RaiseCertificateAlert(ctx context.Context, in CertAlertInput) error {
	step := "alert." + in.Type + "." + in.VMID
	if done, err := a.stepDone(ctx, in.OperationID, step); err != nil || done {
		return err
	}
	if err := a.Store.AddAlert(ctx, models.Alert{Type: in.Type, Severity: in.Severity, Subject: in.Subject, Description: in.Description,
		ResourceType: "SystemVm", ResourceID: in.VMID, ZoneID: in.ZoneID}); err != nil {
		return err
	}
	return a.markStep(ctx, in.OperationID, step, "")
}

func (a *Activities) certVM(ctx context.Context, id string) (models.SystemVM, error) {
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, id); err != nil {
		return vm, temporal.NewNonRetryableApplicationError(fmt.Sprintf("system VM %s: %v", id, err), "NotFound", err)
	}
	if a.Exec == nil {
		return vm, temporal.NewNonRetryableApplicationError("no SSH executor configured: certificates cannot reach system VMs", "Unavailable", nil)
	}
	return vm, nil
}

func (a *Activities) consoleRun(ctx context.Context, vm models.SystemVM, stdin []byte, sub string) error {
	t, err := StoreTargets{Store: a.Store}.TargetFor(ctx, vm)
	if err != nil {
		return temporal.NewNonRetryableApplicationError(err.Error(), "BadRequest", err)
	}
	return a.consoleRunAt(ctx, vm, t, stdin, sub)
}

// consoleRunAt runs `sysvm-console <sub>` on the VM at t (a recreate's replacement is not yet
// the VM its row names).
func (a *Activities) consoleRunAt(ctx context.Context, vm models.SystemVM, t sshexec.Target, stdin []byte, sub string) error {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := a.Exec.Run(rctx, t, []string{ConsoleAgentCommand, sub}, stdin)
	if err != nil {
		return fmt.Errorf("%s %s on %s: %w", ConsoleAgentCommand, sub, vm.Name, err)
	}
	if out.ExitCode != 0 {
		return fmt.Errorf("%s %s on %s exited %d: %s", ConsoleAgentCommand, sub, vm.Name, out.ExitCode, strings.TrimSpace(string(out.Stderr)))
	}
	return nil
}

func (a *Activities) consoleStatus(ctx context.Context, vm models.SystemVM) (consoleStatus, error) {
	t, err := StoreTargets{Store: a.Store}.TargetFor(ctx, vm)
	if err != nil {
		return consoleStatus{}, temporal.NewNonRetryableApplicationError(err.Error(), "BadRequest", err)
	}
	return a.consoleStatusAt(ctx, vm, t)
}

// consoleStatusAt is `sysvm-console status` of the VM at t.
func (a *Activities) consoleStatusAt(ctx context.Context, vm models.SystemVM, t sshexec.Target) (consoleStatus, error) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := a.Exec.Run(rctx, t, []string{ConsoleAgentCommand, "status"}, nil)
	if err != nil {
		return consoleStatus{}, fmt.Errorf("%s status on %s: %w", ConsoleAgentCommand, vm.Name, err)
	}
	if out.ExitCode != 0 {
		return consoleStatus{}, fmt.Errorf("%s status on %s exited %d: %s", ConsoleAgentCommand, vm.Name, out.ExitCode, strings.TrimSpace(string(out.Stderr)))
	}
	var st consoleStatus
	if err := json.Unmarshal(out.Stdout, &st); err != nil {
		return st, errors.New("unreadable console status of " + vm.Name + ": " + err.Error())
	}
	return st, nil
}

// AlertCertificateExpiry is the alert type of a certificate expiring within the buffer or
// expired.
const AlertCertificateExpiry = "CERTIFICATE.EXPIRY"

// CertExpiryFinding is one certificate the expiry watch warns about.
type CertExpiryFinding struct {
	Name     string    `json:"name"`
	Version  int       `json:"version"`
	NotAfter time.Time `json:"notAfter"`
	Days     float64   `json:"days"`
	Expired  bool      `json:"expired"`
	// ServedBy are the system VMs serving it (for a version no longer current).
	ServedBy []string `json:"servedBy,omitempty"`
	Alerted  bool     `json:"alerted"`
}

// CheckCertificateExpiry checks every current certificate of the keystore and every version a
// system VM serves against consoleproxy.certificate.expiry.buffer, and raises an alert for
// each one expiring within it or expired, unless an alert for it is still open.
func (a *Activities) CheckCertificateExpiry(ctx context.Context) ([]CertExpiryFinding, error) {
	days, err := a.Store.Settings.Int(ctx, "consoleproxy.certificate.expiry.buffer", models.Scope{})
	if err != nil {
		return nil, err
	}
	buffer := time.Duration(days) * 24 * time.Hour
	now := time.Now()
	current, err := a.Store.ListCertificates(ctx, false)
	if err != nil {
		return nil, err
	}
	served, err := a.Store.ServedCertificates(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[string]models.Certificate{}
	for _, c := range current {
		byID[c.ID] = c
	}
	servedBy := map[string][]string{}
	ids := make([]string, 0, len(served))
	for vmID, s := range served {
		servedBy[s.CertificateID] = append(servedBy[s.CertificateID], vmID)
		ids = append(ids, s.CertificateID)
	}
	if len(ids) > 0 {
		var old []models.Certificate
		if err := a.Store.DB.WithContext(ctx).Where("id IN ?", ids).Find(&old).Error; err != nil {
			return nil, err
		}
		for _, c := range old {
			byID[c.ID] = c
		}
	}
	keys := make([]string, 0, len(byID))
	for id := range byID {
		keys = append(keys, id)
	}
	sort.Strings(keys)
	var out []CertExpiryFinding
	for _, id := range keys {
		c := byID[id]
		left := c.NotAfter.Sub(now)
		if left >= buffer {
			continue
		}
		f := CertExpiryFinding{Name: c.Name, Version: c.Version, NotAfter: c.NotAfter, Days: left.Hours() / 24, Expired: left <= 0}
		f.ServedBy = servedBy[c.ID]
		sort.Strings(f.ServedBy)
		subject := fmt.Sprintf("console proxy certificate %s v%d expires on %s", c.Name, c.Version, c.NotAfter.UTC().Format(time.RFC3339))
		if f.Expired {
			subject = fmt.Sprintf("console proxy certificate %s v%d expired on %s", c.Name, c.Version, c.NotAfter.UTC().Format(time.RFC3339))
		}
		var open int64
		if err := a.Store.DB.WithContext(ctx).Model(&models.Alert{}).Where("type = ? AND subject = ? AND cleared_at IS NULL", AlertCertificateExpiry, subject).
			Count(&open).Error; err != nil {
			return nil, err
		}
		if open == 0 {
			sev := "WARN"
			if f.Expired {
				sev = "CRITICAL"
			}
			desc := fmt.Sprintf("%s (%s, fingerprint %s) has %.1f days left, within the buffer of %d days; upload a renewed one under the name %s and rotate",
				c.Name, c.Subject, c.Fingerprint, f.Days, days, c.Name)
			if len(f.ServedBy) > 0 {
				desc += fmt.Sprintf("; served by %d system VM(s)", len(f.ServedBy))
			}
			if err := a.Store.AddAlert(ctx, models.Alert{Type: AlertCertificateExpiry, Severity: sev, Subject: subject, Description: desc,
				ResourceType: "certificate", ResourceID: c.ID}); err != nil {
				return nil, err
			}
			f.Alerted = true
		}
		out = append(out, f)
	}
	return out, nil
}
