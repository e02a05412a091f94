package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestSplitPrivate proves what allow_lan may open: prefixes inside RFC 1918, IPv4 link-local, RFC 4193
// and IPv6 link-local; never public space, nor a private-looking prefix wider than its range (10.0.0.0/7
// reaches 11.0.0.0/8).
func TestSplitPrivate(t *testing.T) {
	in := []netip.Prefix{
		netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.20.0.0/16"),
		netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fd12:3456::/64"), netip.MustParsePrefix("fe80::/64"),
		netip.MustParsePrefix("198.51.0.0/16"), netip.MustParsePrefix("10.0.0.0/7"), netip.MustParsePrefix("172.32.0.0/16"),
		netip.MustParsePrefix("2001:db8::/64"), netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("::/1"),
	}
	private, public := splitPrivate(in)
	if !slices.Equal(private, in[:6]) || !slices.Equal(public, in[6:]) {
		t.Fatalf("private %v, public %v", private, public)
	}
}

// TestSystemNameServers proves where the client sends its look-ups of the gateway's name: resolv.conf's
// servers, or, behind systemd-resolved's stub, resolved's upstream servers (the stub would route the query
// into the tunnel).
func TestSystemNameServers(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	defer func(a, b string) { resolvConfPath, resolvedUpstreamConfig = a, b }(resolvConfPath, resolvedUpstreamConfig)

	resolvConfPath = write("plain", "# comment\nsearch lan\nnameserver 192.168.1.1\nnameserver fd00::53\nnameserver bogus\noptions edns0\n")
	resolvedUpstreamConfig = filepath.Join(dir, "missing")
	if got, want := systemNameServers(), []string{"192.168.1.1:53", "[fd00::53]:53"}; !slices.Equal(got, want) {
		t.Errorf("plain resolv.conf: %v, want %v", got, want)
	}

	resolvConfPath = write("stub", "nameserver 127.0.0.53\noptions edns0 trust-ad\n")
	if got, want := systemNameServers(), []string{"127.0.0.53:53"}; !slices.Equal(got, want) {
		t.Errorf("stub without upstream file: %v, want %v", got, want)
	}
	resolvedUpstreamConfig = write("upstream", "nameserver 10.1.1.1\n")
	if got, want := systemNameServers(), []string{"10.1.1.1:53"}; !slices.Equal(got, want) {
		t.Errorf("stub with upstream file: %v, want %v", got, want)
	}

	resolvConfPath = filepath.Join(dir, "none")
	if got := systemNameServers(); got != nil {
		t.Errorf("no resolv.conf: %v, want nil", got)
	}
}
