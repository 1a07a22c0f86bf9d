package sshexec

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysvm/sysvm/hypervisors/sshexec/sshtest"
)

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":            "''",
		"plain":       "plain",
		"/usr/bin/x":  "/usr/bin/x",
		"a=b,c:d@e%f": "a=b,c:d@e%f",
		"a b":         "'a b'",
		"it's":        `'it'\''s'`,
		"'":           `''\'''`,
		"$(x)":        "'$(x)'",
		"~":           "'~'",
		"#":           "'#'",
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}

// randomArgs makes arguments from every byte but NUL, biased towards shell metacharacters.
func randomArgs(r *rand.Rand, n int) []string {
	const meta = " \t\n'\"\\$`;&|<>()*?[]~#!{}=%"
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		for range r.IntN(12) {
			if r.IntN(2) == 0 {
				b.WriteByte(meta[r.IntN(len(meta))])
			} else {
				b.WriteByte(byte(1 + r.IntN(255)))
			}
		}
		out[i] = b.String()
	}
	return out
}

// TestCommandThroughRealShell runs quoted command lines through /bin/sh (and bash, which is the
// system VM's login shell) and checks each argument comes out byte for byte, and that nothing
// in them was executed.
func TestCommandThroughRealShell(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "pwned")
	args := append([]string{}, hostileArgs...)
	args = append(args,
		"$(touch "+marker+")", "`touch "+marker+"`", "; touch "+marker, "&& touch "+marker,
		"| touch "+marker, "\ntouch "+marker, "'; touch "+marker+"; '")
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		args = append(args, randomArgs(r, 5)...)
	}
	for _, shell := range []string{"/bin/sh", "/bin/bash"} {
		if _, err := os.Stat(shell); err != nil {
			t.Logf("%s not present: %v", shell, err)
			continue
		}
		line, err := Command(append([]string{"printf", `%s\0`}, args...))
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(shell, "-c", line).Output()
		if err != nil {
			t.Fatalf("%s: %v", shell, err)
		}
		got := strings.Split(string(bytes.TrimSuffix(out, []byte{0})), "\x00")
		if len(got) != len(args) {
			t.Fatalf("%s: %d args came out, want %d", shell, len(got), len(args))
		}
		for i := range args {
			if got[i] != args[i] {
				t.Errorf("%s: arg %d came out %q, want %q", shell, i, got[i], args[i])
			}
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("%s executed part of an argument", shell)
		}
	}
}

// TestCommandSplitsBackOnTheTestServer cross-checks the quoting with the test server's parser.
func TestCommandSplitsBackOnTheTestServer(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		argv := append([]string{"argv"}, randomArgs(r, 1+r.IntN(6))...)
		line, err := Command(argv)
		if err != nil {
			t.Fatal(err)
		}
		got, err := sshtest.SplitCommand(line)
		if err != nil {
			t.Fatalf("split %q: %v", line, err)
		}
		if strings.Join(got, "\x00") != strings.Join(argv, "\x00") {
			t.Fatalf("round trip of %q gave %q", argv, got)
		}
	}
}
