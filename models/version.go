package models

import (
	"strings"
)

// versionNumbers extracts the first dotted numeric version in s ("4.15.0.1" from
// "4.15.0.1-SNAPSHOT", "v4.15.0.1" or "Cloudstack Release 4.15.0.1 Mon Jan 1 ..."), as digit strings
// without leading zeros. It returns nil when s holds no digits: the version is unknown.
func versionNumbers(s string) []string {
	start := strings.IndexAny(s, "0123456789")
	if start < 0 {
		return nil
	}
	var parts []string
	rest := s[start:]
	for {
		n := 0
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if n == 0 {
			break // "4.15." or "4.15.x": the dot did not start another number
		}
		num := strings.TrimLeft(rest[:n], "0")
		if num == "" {
			num = "0"
		}
		parts = append(parts, num)
		rest = rest[n:]
		if len(rest) < 2 || rest[0] != '.' || rest[1] < '0' || rest[1] > '9' {
			break
		}
		rest = rest[1:]
	}
	// Trailing zero components do not count: 4.15 == 4.15.0 == 4.15.0.0.
	for len(parts) > 1 && parts[len(parts)-1] == "0" {
		parts = parts[:len(parts)-1]
	}
	return parts
}

// compareNumber compares two digit strings without leading zeros, of any length.
func compareNumber(a, b string) int {
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// CompareVersions compares two dotted numeric versions such as 4.15.0.1 and returns -1, 0 or 1.
// Missing components count as zero (4.15 equals 4.15.0), anything after the numbers is ignored
// ("4.15.0-SNAPSHOT" equals "4.15.0"; "v4.16" and "Cloudstack Release 4.16.0 ..." are read as
// 4.16), and components of any size compare numerically. A version with no number at all is
// unknown and sorts below every known one; two unknown versions are equal.
func CompareVersions(a, b string) int {
	pa, pb := versionNumbers(a), versionNumbers(b)
	switch {
	case pa == nil && pb == nil:
		return 0
	case pa == nil:
		return -1
	case pb == nil:
		return 1
	}
	for i := 0; i < len(pa) || i < len(pb); i++ {
		x, y := "0", "0"
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		if c := compareNumber(x, y); c != 0 {
			return c
		}
	}
	return 0
}

// RequiresUpgrade reports whether a system VM whose template version is version must be
// upgraded under minreq (the minreq.sysvmtemplate.version setting): when minreq is set, a VM
// requires upgrade if its version is below minreq or unknown. An empty minreq (or one with no
// version number in it) requires nothing.
func RequiresUpgrade(version, minreq string) bool {
	if versionNumbers(minreq) == nil {
		return false
	}
	if versionNumbers(version) == nil {
		return true
	}
	return CompareVersions(version, minreq) < 0
}
