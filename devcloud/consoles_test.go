package devcloud

import (
	"bytes"
	"context"
	"testing"

	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// The dev default console certificate is generated once, kept sealed, and the same afterwards.
func TestDevConsoleCertificateKeptEncrypted(t *testing.T) {
	s := modelstest.SQLite(t)
	ctx := context.Background()
	a, err := DevConsoleCertificate(ctx, s)
	modelstest.Must(t, err, "first")
	b, err := DevConsoleCertificate(ctx, s)
	modelstest.Must(t, err, "second")
	if !bytes.Equal(a.Certificate[0], b.Certificate[0]) {
		t.Error("a second call generated another certificate")
	}
	var row models.Secret
	modelstest.Must(t, s.DB.First(&row, "name = ?", devConsoleSecret).Error, "secret row")
	if bytes.Contains(row.Ciphertext, []byte("PRIVATE KEY")) {
		t.Error("the dev key is stored in clear")
	}
	cons, err := StartConsoles(ctx, s, modelstest.TestKey, nil)
	modelstest.Must(t, err, "consoles")
	defer cons.Close()
	if _, err := cons.Start("v-1-VM"); err != nil {
		t.Fatal(err)
	}
	st, err := cons.Status("v-1-VM")
	modelstest.Must(t, err, "status")
	if st.Fingerprint != models.Fingerprint(a.Certificate[0]) {
		t.Errorf("serves %s, want the dev default", st.Fingerprint)
	}
}
