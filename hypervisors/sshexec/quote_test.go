package sshexec_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysvm/sysvm/hypervisors/sshexec"
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
		if got := sshexec.Quote(in); got != want {
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
		line, err := sshexec.Command(append([]string{"printf", `%s\0`}, args...))
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

// TestSplitInvertsCommand checks Split(Command(argv)) == argv byte for byte for hostile and
// random arguments (every byte but NUL, biased towards shell metacharacters).
func TestSplitInvertsCommand(t *testing.T) {
	argvs := [][]string{append([]string{"argv"}, hostileArgs...), {"a", "", "''", `\`, "\\\n", "x\ny"}}
	r := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		argvs = append(argvs, append([]string{"argv"}, randomArgs(r, 1+r.IntN(6))...))
	}
	for _, argv := range argvs {
		line, err := sshexec.Command(argv)
		if err != nil {
			t.Fatal(err)
		}
		got, err := sshexec.Split(line)
		if err != nil {
			t.Fatalf("split %q: %v", line, err)
		}
		if strings.Join(got, "\x00") != strings.Join(argv, "\x00") || len(got) != len(argv) {
			t.Fatalf("round trip of %q gave %q", argv, got)
		}
	}
}

func TestSplit(t *testing.T) {
	ok := map[string][]string{
		"echo a b":                        {"echo", "a", "b"},
		"  echo\t a  ":                    {"echo", "a"},
		"echo 'a b' c":                    {"echo", "a b", "c"},
		`echo 'it'\''s'`:                  {"echo", "it's"},
		`echo "a \"b\" \\ \$ c"`:          {"echo", `a "b" \ $ c`},
		`echo "a\nb"`:                     {"echo", `a\nb`},
		"echo \"a\\\nb\"":                 {"echo", "ab"},
		"echo ''":                         {"echo", ""},
		"echo a''b":                       {"echo", "ab"},
		`echo a\ b`:                       {"echo", "a b"},
		"echo 'line1\nline2'":             {"echo", "line1\nline2"},
		"echo a\\\nb":                     {"echo", "ab"},
		"echo a=b x~y x#y":                {"echo", "a=b", "x~y", "x#y"},
		"echo '; rm -rf /' '$(x)'":        {"echo", "; rm -rf /", "$(x)"},
		`'sysvm-agent' 'run' 'basic'`:     {"sysvm-agent", "run", "basic"},
		`'it'\''s' "a \"b\" \$c" d\ e ''`: {"it's", `a "b" $c`, "d e", ""},
		`'$(reboot); ` + "`x`" + `'`:      {"$(reboot); `x`"},
	}
	_, shErr := os.Stat("/bin/sh")
	for in, want := range ok {
		got, err := sshexec.Split(in)
		if err != nil || strings.Join(got, "\x00") != strings.Join(want, "\x00") || len(got) != len(want) {
			t.Errorf("Split(%q) = %q, %v; want %q", in, got, err, want)
		}
		if shErr != nil {
			continue
		}
		// The expectation is what a real shell makes of the line.
		out, err := exec.Command("/bin/sh", "-c", `printf '%s\0' `+in).Output()
		if err != nil {
			t.Fatalf("sh -c %q: %v", in, err)
		}
		if sh := strings.Split(string(bytes.TrimSuffix(out, []byte{0})), "\x00"); strings.Join(sh, "\x00") != strings.Join(want, "\x00") {
			t.Errorf("/bin/sh splits %q into %q, the test wants %q", in, sh, want)
		}
	}
	if shErr != nil {
		t.Logf("/bin/sh not present (%v): expectations not cross-checked with a shell", shErr)
	}
	for _, bad := range []string{
		"", "   ", "echo a; rm -rf /", "echo $(id)", "echo `id`", "echo a && b", "echo a | b",
		"echo > f", "echo *", "echo ?", "echo [a]", "echo ~", "echo #c", "echo a\nrm x", `echo "$HOME"`,
		"echo \"`id`\"", "echo 'open", `echo "open`, `echo \`, "echo (a)", "echo $HOME", "a & b",
	} {
		if got, err := sshexec.Split(bad); err == nil {
			t.Errorf("Split(%q) accepted: %q", bad, got)
		}
	}
}
