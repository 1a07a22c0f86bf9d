package sshexec

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sysvm/sysvm/hypervisors"
)

// Quote quotes one argument for a POSIX shell: it is returned as is when it holds only
// characters no shell treats specially, otherwise wrapped in single quotes, each single quote
// inside written as close-quote, backslash-quote, reopen-quote:
//
//	it's  ->  'it'\''s'
//
// Inside single quotes a POSIX shell takes every byte literally, newlines, $, backquotes and
// backslashes included.
func Quote(arg string) string {
	if arg == "" {
		return "''"
	}
	if isShellSafe(arg) {
		return arg
	}
	return "'" + strings.ReplaceAll(arg, "'", `'\''`) + "'"
}

func isShellSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("_-+=.,/:@%", c) >= 0:
		default:
			return false
		}
	}
	// A leading '=' or '%' is harmless in sh, but '~' and '#' are not; neither is in the set.
	return true
}

// Command joins argv into one command line for the remote shell, each argument quoted by
// Quote. It refuses an empty argv and arguments holding a NUL byte (which no shell argument
// can carry).
func Command(argv []string) (string, error) {
	line, err := commandLine(argv)
	if err != nil {
		return "", hypervisors.Wrap(hypervisors.ErrInvalid, "ssh command", "", err)
	}
	return line, nil
}

func commandLine(argv []string) (string, error) {
	if len(argv) == 0 {
		return "", errors.New("empty argv")
	}
	if argv[0] == "" {
		return "", errors.New("empty program name")
	}
	parts := make([]string, len(argv))
	for i, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return "", fmt.Errorf("argument %d holds a NUL byte", i)
		}
		parts[i] = Quote(a)
	}
	return strings.Join(parts, " "), nil
}

// describeArgv names a command for logs without its arguments, which may hold secrets.
func describeArgv(argv []string) string {
	if len(argv) == 0 {
		return ""
	}
	return fmt.Sprintf("%s (+%d args)", argv[0], len(argv)-1)
}
