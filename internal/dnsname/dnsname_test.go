package dnsname

import (
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, n := range []string{"a", "vpn.example.com", "_sip._udp.example", "x-1.y_2", long, strings.Repeat(long+".", 3) + strings.Repeat("b", 61)} {
		if err := CheckName(n); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range []string{"", ".", "a..b", "a.", ".a", "-a", "a-", "a b", "a\nb", "a;b", "~a", long + "a",
		strings.Repeat(long+".", 3) + strings.Repeat("b", 62), "é.example"} {
		if err := CheckName(n); err == nil {
			t.Errorf("CheckName(%q) = nil, want an error", n)
		}
	}
}

func TestCheckDomain(t *testing.T) {
	for _, d := range []string{"corp.example", "~corp.example", "~.", "lan"} {
		if err := CheckDomain(d); err != nil {
			t.Errorf("CheckDomain(%q) = %v, want nil", d, err)
		}
	}
	for _, d := range []string{"", "~", "~~a", ".", "~..", "~a.", "-option", "~-x", "a\nnameserver 1.1.1.1", "a b"} {
		if err := CheckDomain(d); err == nil {
			t.Errorf("CheckDomain(%q) = nil, want an error", d)
		}
	}
}
