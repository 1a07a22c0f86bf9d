package sshtest

import (
	"fmt"
	"strings"
)

// SplitCommand splits a command line into words as a POSIX shell does for one simple command
// (sh -c "<line>"): blanks separate words; single quotes keep everything literally; double
// quotes keep everything but \ before $ ` " \ and newline; a backslash outside quotes takes the
// next character literally (and joins lines before a newline). Anything that would make the
// shell do more than run one simple command with literal words — unquoted ; & | < > ( ) $ `
// newline, globs * ? [, a leading ~ or #, and $ or ` inside double quotes — is an error,
// so a command that was not quoted safely fails here rather than being taken word for word.
func SplitCommand(line string) ([]string, error) {
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
				switch line[j] {
				case '\\':
					if j+1 < len(line) && strings.IndexByte("$`\"\\\n", line[j+1]) >= 0 {
						if line[j+1] != '\n' {
							cur.WriteByte(line[j+1])
						}
						j++
						continue
					}
					cur.WriteByte('\\')
				case '$', '`':
					return nil, fmt.Errorf("unsupported expansion %q inside double quotes at offset %d", line[j], j)
				default:
					cur.WriteByte(line[j])
				}
			}
			if j >= len(line) {
				return nil, fmt.Errorf("unterminated double quote at offset %d", i)
			}
			i = j
		case c == '\\':
			if i+1 >= len(line) {
				return nil, fmt.Errorf("trailing backslash")
			}
			i++
			if line[i] == '\n' {
				continue // line continuation
			}
			cur.WriteByte(line[i])
			inWord = true
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
		return nil, fmt.Errorf("empty command")
	}
	return words, nil
}
