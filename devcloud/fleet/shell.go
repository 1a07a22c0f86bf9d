package fleet

import (
	"fmt"
	"strings"
)

// splitCommand splits an SSH exec command line into argv the way a POSIX shell splits one
// simple command of literal words: blanks separate words, single quotes keep everything
// literally (the platform's client quotes each argument that way), double quotes keep
// everything but a backslash before $ ` " \ or newline, and an unquoted backslash takes the
// next character literally. Anything that would make a shell do more than run one command
// with literal words (unquoted ; & | < > ( ) $ ` newline, globs, $ or ` in double quotes, a
// leading ~ or #) is refused, so an unsafely quoted command fails instead of being misread.
func splitCommand(line string) ([]string, error) {
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
					if line[j+1] != '\n' {
						cur.WriteByte(line[j+1])
					}
					j++
				case d == '$' || d == '`':
					return nil, fmt.Errorf("expansion %q inside double quotes at offset %d is not supported", d, j)
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
				return nil, fmt.Errorf("trailing backslash")
			}
			i++
			if line[i] != '\n' {
				cur.WriteByte(line[i])
				inWord = true
			}
		case strings.IndexByte(";&|<>()$`\n*?[", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q at offset %d is not supported (one command of literal words only)", c, i)
		case (c == '~' || c == '#') && !inWord:
			return nil, fmt.Errorf("shell syntax %q at the start of a word at offset %d is not supported", c, i)
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
