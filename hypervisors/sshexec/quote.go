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

// Split is the inverse of Command: it splits a command line into argv as a POSIX shell
// splits one simple command of literal words (sh -c "<line>"), so an SSH server can run the
// line a client built with Command without a shell. Blanks separate words; single quotes keep
// everything literally; double quotes keep everything but a backslash before $ ` " \ or
// newline; a backslash outside quotes takes the next character literally (and joins lines
// before a newline). Anything that would make a shell do more than run one simple command
// with literal words — unquoted ; & | < > ( ) $ ` newline, globs * ? [, a leading ~ or #,
// and $ or ` inside double quotes — is an error, so a command that was not quoted safely
// fails here rather than being taken word for word. An empty line is an error too.
func Split(line string) ([]string, error) {
	var (
		words  []string
		cur    strings.Builder
		inWord bool
	)
	flush := func() {
		if inWord {
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			flush()
		case c == '\'':
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated single quote at offset %d", i)
			}
			cur.WriteString(line[i+1 : i+1+end])
			inWord = true
			i += end + 1
		case c == '"':
			inWord = true
			j := i + 1
			for ; j < len(line) && line[j] != '"'; j++ {
				switch d := line[j]; {
				case d == '\\' && j+1 < len(line) && strings.IndexByte("$`\"\\\n", line[j+1]) >= 0:
					if line[j+1] != '\n' { // backslash-newline joins lines
						cur.WriteByte(line[j+1])
					}
					j++
				case d == '$' || d == '`':
					return nil, fmt.Errorf("unsupported expansion %q inside double quotes at offset %d", d, j)
				default:
					cur.WriteByte(d)
				}
			}
			if j >= len(line) {
				return nil, fmt.Errorf("unterminated double quote at offset %d", i)
			}
			i = j
		case c == '\\':
			if i+1 >= len(line) {
				return nil, errors.New("trailing backslash")
			}
			i++
			if line[i] != '\n' { // backslash-newline joins lines
				cur.WriteByte(line[i])
				inWord = true
			}
		case strings.IndexByte(";&|<>()$`\n*?[", c) >= 0:
			return nil, fmt.Errorf("unsupported shell syntax %q at offset %d (only simple commands with literal words)", c, i)
		case (c == '~' || c == '#') && !inWord:
			return nil, fmt.Errorf("unsupported shell syntax %q at start of word at offset %d", c, i)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	flush()
	if len(words) == 0 {
		return nil, errors.New("empty command")
	}
	return words, nil
}
