package activities

// A CPVM or SSVM built outside a rotation (a deploy by the capacity scan, an upgrade or a
// make-before-break rotation, the replacement of a recreate) serves the certificate the zone's
// console URLs expect from its first verify, not the dev default: the verify of the new VM
// installs it (the same `sysvm-console install` + `restart` the rotation runs, the key read from
// Secrets inside the activity and sent on SSH stdin) and checks it with the rotation's TLS
// handshake. Only certificate IDs are passed; nothing of a key reaches a workflow history.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
)

// followedCertificate is the certificate a new or rebuilt VM must serve: what the VM is
// recorded serving (a recreate keeps what its VM served; only a rotation changes it), else the
// current uploaded server certificate. nil when there is none (the dev default stays).
func (a *Activities) followedCertificate(ctx context.Context, vm *models.SystemVM) (*models.Certificate, error) {
	if vm.Type != models.TypeCPVM && vm.Type != models.TypeSSVM {
		return nil, nil
	}
	served, err := a.Store.ServedCertificates(ctx)
	if err != nil {
		return nil, err
	}
	if sc, ok := served[vm.ID]; ok && sc.CertificateID != "" {
		var cert models.Certificate
		if err := a.Store.Get(ctx, &cert, sc.CertificateID); err == nil {
			return &cert, nil
		} else if !errors.Is(err, models.ErrNotFound) {
			return nil, fmt.Errorf("certificate %s served by %s: %w", sc.CertificateID, vm.Name, err)
		}
	}
	cert, err := a.Store.CurrentServerCertificate(ctx)
	if errors.Is(err, models.ErrNotFound) {
		return nil, nil
	}
	return cert, err
}

// followCertificate makes the VM reached at t (row names it for messages and its public IP)
// serve cert: it installs and restarts only when the endpoint does not already serve it (a
// retried verify re-installs nothing), then verifies with a real TLS handshake trusting only
// the uploaded root, for a name under the suffix. It returns the verified console address.
// Failures are NotServing errors: retryable while the endpoint restarts, then the verify of
// the deploy or recreate fails and its compensation discards the new VM.
func (a *Activities) followCertificate(ctx context.Context, row models.SystemVM, t sshexec.Target, cert *models.Certificate) (string, error) {
	st, err := a.consoleStatusAt(ctx, row, t)
	if err != nil {
		return "", temporal.NewApplicationError(fmt.Sprintf("console endpoint of %s: %v", row.Name, err), ErrTypeNotServing)
	}
	if st.Fingerprint != cert.Fingerprint {
		certPEM, keyPEM, _, err := a.Store.CertificateBundle(ctx, cert.ID)
		if err != nil {
			return "", temporal.NewNonRetryableApplicationError(fmt.Sprintf("certificate %s v%d for %s: %v", cert.Name, cert.Version, row.Name, err), ErrTypeNotServing, err)
		}
		payload, _ := json.Marshal(map[string]string{"certificate": string(certPEM), "key": string(keyPEM)})
		if err := a.consoleRunAt(ctx, row, t, payload, "install"); err != nil {
			return "", temporal.NewApplicationError(fmt.Sprintf("install %s v%d on %s: %v", cert.Name, cert.Version, row.Name, err), ErrTypeNotServing)
		}
		if err := a.consoleRunAt(ctx, row, t, nil, "restart"); err != nil {
			return "", temporal.NewApplicationError(fmt.Sprintf("restart the console endpoint of %s: %v", row.Name, err), ErrTypeNotServing)
		}
		if st, err = a.consoleStatusAt(ctx, row, t); err != nil {
			return "", temporal.NewApplicationError(fmt.Sprintf("console endpoint of %s: %v", row.Name, err), ErrTypeNotServing)
		}
	}
	addr := consoleAddr(row, st)
	fp, err := a.handshake(ctx, cert, addr)
	if err != nil {
		return addr, temporal.NewApplicationError(fmt.Sprintf("%s (%s) does not serve %s v%d on %s: %v",
			row.Name, row.Type, cert.Name, cert.Version, addr, err), ErrTypeCertificateNotServed)
	}
	if fp != cert.Fingerprint {
		return addr, temporal.NewApplicationError(fmt.Sprintf("%s serves %s, not %s v%d (%s)", row.Name, fp, cert.Name,
			cert.Version, cert.Fingerprint), ErrTypeCertificateNotServed)
	}
	return addr, nil
}

// handshake dials addr with TLS trusting only cert's uploaded root, for a console host under
// its suffix, and returns the served leaf's fingerprint.
func (a *Activities) handshake(ctx context.Context, cert *models.Certificate, addr string) (string, error) {
	roots, err := a.rootPool(ctx, cert)
	if err != nil {
		return "", err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	dialer := &tls.Dialer{NetDialer: &net.Dialer{}, Config: &tls.Config{RootCAs: roots,
		ServerName: models.SampleConsoleHost(cert.DomainSuffix), MinVersion: tls.VersionTLS12}}
	conn, err := dialer.DialContext(dctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	peers := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(peers) == 0 {
		return "", errors.New("no certificate presented")
	}
	return models.Fingerprint(peers[0].Raw), nil
}
