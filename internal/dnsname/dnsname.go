// Package dnsname checks DNS names and resolver domains. A gateway's pushed search domains end up in
// resolver configuration (resolv.conf lines, resolvectl arguments), where a space, a newline or a leading
// "-" would inject directives or options; the wire validator, the configuration loader and the resolver
// setup all use this one check so that what one accepts the others do too.
package dnsname

import (
	"errors"
	"fmt"
	"strings"
)

// MaxLen is the longest name: 253 characters, without a trailing dot (RFC 1035's 255 octets on the wire).
const MaxLen = 253

// RouteAll is systemd-resolved's routing domain that matches every name: a link with it receives all
// queries no other link claims more specifically.
const RouteAll = "~."

// CheckName checks a host name: labels of 1..63 letters, digits, '-' and '_' (underscore is common in
// service names), not starting or ending with '-', separated by dots, at most MaxLen in all, with no
// trailing dot.
func CheckName(name string) error {
	if name == "" || len(name) > MaxLen {
		return fmt.Errorf("%q is not a valid DNS name (1..%d characters)", name, MaxLen)
	}
	for label := range strings.SplitSeq(name, ".") {
		if err := checkLabel(label); err != nil {
			return fmt.Errorf("%q is not a valid DNS name: %w", name, err)
		}
	}
	return nil
}

// CheckDomain checks a resolver domain: a name as CheckName accepts it (a search domain), the same with a
// leading '~' (a routing-only domain: queries under it go to the tunnel's servers, but it is not searched),
// or RouteAll.
func CheckDomain(d string) error {
	if d == RouteAll {
		return nil
	}
	if err := CheckName(strings.TrimPrefix(d, "~")); err != nil {
		return fmt.Errorf("domain %w", err)
	}
	return nil
}

var (
	errEmptyLabel = errors.New("labels must be 1..63 characters")
	errHyphen     = errors.New("a label starts or ends with '-'")
)

func checkLabel(l string) error {
	if l == "" || len(l) > 63 {
		return errEmptyLabel
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return errHyphen
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%q is not allowed", l[i:i+1])
		}
	}
	return nil
}
