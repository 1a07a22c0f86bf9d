package fleet

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors/sshexec/sshtest"
)

// TestServiceAddressTakeover runs a recreate's switch on the simulated network over real SSH:
// the old VM holds the public IP and the gateway from boot, the replacement boots with none;
// an ip-assoc while the old one runs is refused (and recorded), after the old one stops it is
// accepted and the replacement holds them; a release gives them up; starting the old VM again
// while the replacement still holds them is recorded as a conflict. A BACKUP holds nothing.
func TestServiceAddressTakeover(t *testing.T) {
	key := sshtest.NewSigner(t)
	f := testFleet(t, key, Options{NoSampleCheck: true})
	old := kvmSpec(1, "kvm-host-1")
	old.BootAddresses = []string{"203.0.113.10", "10.1.1.1"}
	require.NoError(t, f.Add(old))
	repl := kvmSpec(2, "kvm-host-1")
	repl.Name = old.Name
	require.NoError(t, f.Add(repl))
	assert.Equal(t, []string{old.ID}, f.Holders("203.0.113.10"))
	held, err := f.Held(repl.ID)
	require.NoError(t, err)
	assert.Empty(t, held, "the replacement boots without service addresses")
	assert.Empty(t, f.Conflicts())

	c := mustRouterClient(t, f, repl.ID, key)
	assoc := `[{"ip":"203.0.113.10","kind":"public","add":true},{"ip":"10.1.1.1","kind":"guest-gateway","add":true}]`
	code, _, stderr, err := remote(c, []byte(assoc), "sysvm-agent", "ip-assoc")
	require.NoError(t, err)
	assert.Equal(t, agent.ExitError, code, "ip-assoc of a held address is refused")
	assert.Contains(t, stderr, "duplicate address")
	conflicts := f.Conflicts()
	require.Len(t, conflicts, 1)
	assert.True(t, conflicts[0].Refused)
	assert.Equal(t, []string{old.ID}, f.Holders("10.1.1.1"), "a refusal changes nothing")

	require.NoError(t, f.SetRunning(old.ID, false))
	assert.Empty(t, f.Holders("203.0.113.10"), "a stopped VM holds nothing")
	code, out, stderr, err := remote(c, []byte(assoc), "sysvm-agent", "ip-assoc")
	require.NoError(t, err)
	require.Equal(t, agent.ExitOK, code, stderr)
	assert.JSONEq(t, `{"addresses":["10.1.1.1","203.0.113.10"]}`, out)
	assert.Equal(t, []string{repl.ID}, f.Holders("203.0.113.10"))
	assert.Equal(t, []string{repl.ID}, f.Holders("10.1.1.1"))

	// The replacement keeps its association across a restart.
	require.NoError(t, f.SetRunning(repl.ID, false))
	require.NoError(t, f.SetRunning(repl.ID, true))
	assert.Equal(t, []string{repl.ID}, f.Holders("203.0.113.10"))

	// Starting the old VM again while the replacement holds them: recorded.
	require.NoError(t, f.SetRunning(old.ID, true))
	conflicts = f.Conflicts()
	require.Len(t, conflicts, 3, "%v", conflicts)
	assert.False(t, conflicts[1].Refused)
	assert.ElementsMatch(t, []string{old.ID, repl.ID}, f.Holders("10.1.1.1"))
	require.NoError(t, f.SetRunning(old.ID, false))

	// Release: the replacement holds nothing; the old VM started again holds its own.
	code, out, stderr, err = remote(c, []byte(`[{"ip":"203.0.113.10","kind":"public"},{"ip":"10.1.1.1","kind":"guest-gateway"}]`), "sysvm-agent", "ip-assoc")
	require.NoError(t, err)
	require.Equal(t, agent.ExitOK, code, stderr)
	assert.JSONEq(t, `{"addresses":[]}`, out)
	require.NoError(t, f.SetRunning(old.ID, true))
	assert.Equal(t, []string{old.ID}, f.Holders("203.0.113.10"))
	assert.Len(t, f.Conflicts(), 3, "no new conflict")

	// A BACKUP holds none of its addresses; removing a VM releases what it held.
	backup := kvmSpec(3, "kvm-host-1")
	backup.RedundantState = agent.RedundantBackup
	backup.Gateways = nil
	backup.BootAddresses = []string{"10.1.1.1"}
	require.NoError(t, f.Add(backup))
	assert.Equal(t, []string{old.ID}, f.Holders("10.1.1.1"))
	require.NoError(t, f.Remove(old.ID))
	assert.Empty(t, f.Holders("10.1.1.1"))
	assert.Len(t, f.Conflicts(), 3)
}
