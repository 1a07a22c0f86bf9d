package models

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// pemBlock is one PEM block of an uploaded field, with the lines it spans (from 1) so an
// error can point at it.
type pemBlock struct {
	Type      string
	Index     int // 1-based position among the field's blocks
	StartLine int
	EndLine   int
	Headers   map[string]string
	Bytes     []byte
}

func (b pemBlock) where() string {
	return fmt.Sprintf("block %d (%s, lines %d-%d)", b.Index, b.Type, b.StartLine, b.EndLine)
}

const (
	pemBegin = "-----BEGIN "
	pemEnd   = "-----END "
	pemTail  = "-----"
)

// scanPEM splits a field's text into PEM blocks, checking the syntax line by line so that
// what is wrong is named by block and line. Unlike encoding/pem it does not silently drop
// spaces inside the base64: a space there is the classic corruption of a PEM sent through URL
// decoding, which turns every '+' into a space, and is reported as such.
func scanPEM(field, text string) ([]pemBlock, error) {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	lines := strings.Split(text, "\n")
	var blocks []pemBlock
	var cur *pemBlock
	var body strings.Builder
	inHeaders := false
	for i, raw := range lines {
		n := i + 1
		line := strings.TrimRight(raw, " \t\r")
		trimmed := strings.TrimSpace(line)
		if cur == nil {
			if strings.HasPrefix(trimmed, pemBegin) {
				if !strings.HasSuffix(trimmed, pemTail) || len(trimmed) <= len(pemBegin)+len(pemTail) {
					return nil, certErr(field, "line %d: malformed PEM begin line %q (want -----BEGIN <TYPE>-----)", n, clip(trimmed))
				}
				typ := strings.TrimSuffix(strings.TrimPrefix(trimmed, pemBegin), pemTail)
				cur = &pemBlock{Type: typ, Index: len(blocks) + 1, StartLine: n, Headers: map[string]string{}}
				body.Reset()
				inHeaders = true
				continue
			}
			if strings.HasPrefix(trimmed, pemEnd) {
				return nil, certErr(field, "line %d: %q without a -----BEGIN line before it", n, clip(trimmed))
			}
			// Text outside blocks (openssl's "Bag Attributes", comments) is ignored, as openssl does.
			continue
		}
		if strings.HasPrefix(trimmed, pemEnd) {
			typ := strings.TrimSuffix(strings.TrimPrefix(trimmed, pemEnd), pemTail)
			if !strings.HasSuffix(trimmed, pemTail) || typ != cur.Type {
				return nil, certErr(field, "line %d: block %d began as -----BEGIN %s----- at line %d but ends with %q",
					n, cur.Index, cur.Type, cur.StartLine, clip(trimmed))
			}
			cur.EndLine = n
			der, err := base64.StdEncoding.DecodeString(body.String())
			if err != nil {
				return nil, certErr(field, "%s: the base64 does not decode (%v): the block is damaged or truncated", cur.where(), err)
			}
			if len(der) == 0 {
				return nil, certErr(field, "%s: the block is empty", cur.where())
			}
			cur.Bytes = der
			blocks = append(blocks, *cur)
			cur = nil
			continue
		}
		if strings.HasPrefix(trimmed, pemBegin) {
			return nil, certErr(field, "line %d: a new -----BEGIN line inside block %d (%s, begun at line %d), which has no -----END %s----- line: truncated?",
				n, cur.Index, cur.Type, cur.StartLine, cur.Type)
		}
		if inHeaders {
			if k, v, ok := strings.Cut(trimmed, ":"); ok && !strings.ContainsAny(k, " \t") && body.Len() == 0 {
				cur.Headers[k] = strings.TrimSpace(v)
				continue
			}
			if trimmed == "" {
				continue
			}
			inHeaders = false
		}
		if trimmed == "" {
			continue
		}
		// Leading indentation is tolerated; a space inside the base64 is not.
		core := strings.TrimLeft(line, " \t")
		if col := strings.IndexByte(core, ' '); col >= 0 {
			return nil, certErr(field, "line %d, column %d: a space inside the base64 of %s block %d: the text was URL-decoded, which turns every '+' into a space; "+
				"send the PEM as it is (JSON needs no URL encoding), or encode '+' as %%2B when URL-encoding it",
				n, len(line)-len(core)+col+1, cur.Type, cur.Index)
		}
		for j, r := range core {
			if !isBase64Char(r) {
				return nil, certErr(field, "line %d, column %d: character %q is not base64 (block %d, %s)", n, len(line)-len(core)+j+1, r, cur.Index, cur.Type)
			}
		}
		body.WriteString(core)
	}
	if cur != nil {
		return nil, certErr(field, "block %d (%s, begun at line %d) has no -----END %s----- line: the text is truncated",
			cur.Index, cur.Type, cur.StartLine, cur.Type)
	}
	if len(blocks) == 0 {
		return nil, certErr(field, "no PEM block found: want text from -----BEGIN ...----- to -----END ...-----")
	}
	return blocks, nil
}

func isBase64Char(r rune) bool {
	return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '+' || r == '/' || r == '='
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}
