package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMainIPAssoc brings service addresses up and releases them with `sysvm-agent ip-assoc`:
// the network (the System's hook) sees each set, the set is recorded in the sandbox and
// printed, a refusal changes nothing, bad entries are refused naming the field, and a System
// that cannot bring addresses up refuses instead of pretending.
func TestMainIPAssoc(t *testing.T) {
	s := newSandbox(t)
	var seen [][]string
	refuse := ""
	s.sys.SetAddressHook(func(_ context.Context, up []string) error {
		for _, ip := range up {
			if ip == refuse {
				return errors.New("address " + ip + " is held by another VM")
			}
		}
		seen = append(seen, up)
		return nil
	})
	code, out, errOut := runMain(t, s, `[{"ip":"203.0.113.5","kind":"public","add":true},{"ip":"10.1.1.1","kind":"guest-gateway","add":true}]`, "ip-assoc")
	require.Equal(t, ExitOK, code, errOut)
	assert.JSONEq(t, `{"addresses":["10.1.1.1","203.0.113.5"]}`, out)
	assert.Equal(t, []string{"10.1.1.1", "203.0.113.5"}, s.sys.Addresses())
	raw, err := os.ReadFile(filepath.Join(s.root, IPAssociationsFile))
	require.NoError(t, err)
	assert.JSONEq(t, `{"addresses":["10.1.1.1","203.0.113.5"]}`, string(raw))

	// Again: idempotent.
	code, out, _ = runMain(t, s, `[{"ip":"203.0.113.5","kind":"public","add":true}]`, "ip-assoc")
	require.Equal(t, ExitOK, code)
	assert.JSONEq(t, `{"addresses":["10.1.1.1","203.0.113.5"]}`, out)

	// A refused address changes nothing.
	refuse = "10.1.2.1"
	code, _, errOut = runMain(t, s, `[{"ip":"10.1.2.1","kind":"guest-gateway","add":true}]`, "ip-assoc")
	assert.Equal(t, ExitError, code)
	assert.Contains(t, errOut, "held by another VM")
	assert.Equal(t, []string{"10.1.1.1", "203.0.113.5"}, s.sys.Addresses())

	// Release.
	code, out, errOut = runMain(t, s, `[{"ip":"203.0.113.5","kind":"public","add":false},{"ip":"10.1.1.1","kind":"guest-gateway"}]`, "ip-assoc")
	require.Equal(t, ExitOK, code, errOut)
	assert.JSONEq(t, `{"addresses":[]}`, out)
	assert.Empty(t, s.sys.Addresses())
	assert.Equal(t, []string{}, seen[len(seen)-1])

	// Bad input names the field.
	code, _, errOut = runMain(t, s, `[{"ip":"10.1.1","kind":"public","add":true},{"ip":"10.1.1.1","kind":"vip","add":true}]`, "ip-assoc")
	assert.Equal(t, ExitError, code)
	assert.Contains(t, errOut, "[0].ip")
	assert.Contains(t, errOut, `[1].kind "vip"`)
	code, _, _ = runMain(t, s, `[]`, "ip-assoc", "extra")
	assert.Equal(t, ExitUsage, code)

	// A System that cannot bring addresses up refuses.
	a := New(t.TempDir(), plainSystem{s.sys}, nil)
	_, err = a.AssociateIPs(context.Background(), []IPAssociation{{IP: "203.0.113.5", Kind: AddressPublic, Add: true}})
	assert.ErrorContains(t, err, "cannot bring service addresses up")
}

// plainSystem hides the SandboxSystem's AddressSystem methods.
type plainSystem struct{ System }
