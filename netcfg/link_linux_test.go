package netcfg

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/salvovpn/salvo/internal/netns"
)

// TestConfigureLink proves ConfigureLink sets MTU, IPv4 and IPv6 addresses
// (IPv6 not tentative thanks to NODAD) and link up, on a persistent TUN
// without carrier (ip tuntap) and on an open TUN, that repeating it is harmless, and that an MTU too small for
// IPv6 is refused with the device named.
func TestConfigureLink(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix)
	run(t, ns, "ip", "tuntap", "add", "dev", "stun1", "mode", "tun")
	openTun(t, ns, "sdum1")
	want := []netip.Prefix{netip.MustParsePrefix("10.8.0.2/24"), netip.MustParsePrefix("fd08::2/64")}
	for _, dev := range []string{"stun1", "sdum1"} {
		var got Link
		must(t, ns.Do(func() error {
			if err := ConfigureLink(dev, 1380, want); err != nil {
				return err
			}
			if err := ConfigureLink(dev, 1380, want); err != nil { // idempotent
				return err
			}
			var err error
			got, err = LinkInfo(dev)
			return err
		}))
		if got.MTU != 1380 || !got.Up {
			t.Errorf("%s: MTU %d up %v, want 1380 true", dev, got.MTU, got.Up)
		}
		for _, p := range want {
			if !slices.Contains(got.Addrs, p) {
				t.Errorf("%s: addresses %v lack %v", dev, got.Addrs, p)
			}
		}
		out := run(t, ns, "ip", "-6", "addr", "show", "dev", dev)
		if !strings.Contains(out, "fd08::2/64") || strings.Contains(out, "tentative") {
			t.Errorf("%s: IPv6 address missing or tentative: %s", dev, out)
		}
	}
	err := ns.Do(func() error { return ConfigureLink("sdum1", 1200, want) })
	if err == nil || !strings.Contains(err.Error(), "sdum1") {
		t.Errorf("MTU 1200 with IPv6: err = %v, want an error naming sdum1", err)
	}
	err = ns.Do(func() error { return ConfigureLink("nosuch0", 1400, nil) })
	if err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("missing link: err = %v, want an error naming nosuch0", err)
	}
}

// TestConfigureLinkReplacesAddresses proves ConfigureLink leaves exactly the
// given addresses: after a reconnect with new ones (here also the same
// addresses with new prefix lengths) the old ones are gone, while an IPv6
// link-local address stays.
func TestConfigureLinkReplacesAddresses(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix)
	openTun(t, ns, "stun2")
	for _, set := range [][]string{
		{"10.8.0.2/24", "fd08::2/64"},
		{"10.9.0.2/24", "fd09::2/64"},
		{"10.9.0.2/16", "fd09::2/48"},
	} {
		var want []netip.Prefix
		for _, s := range set {
			want = append(want, netip.MustParsePrefix(s))
		}
		var got Link
		must(t, ns.Do(func() error {
			if err := ConfigureLink("stun2", 1400, want); err != nil {
				return err
			}
			var err error
			got, err = LinkInfo("stun2")
			return err
		}))
		slices.SortFunc(got.Addrs, netip.Prefix.Compare)
		slices.SortFunc(want, netip.Prefix.Compare)
		if !slices.Equal(got.Addrs, want) {
			t.Errorf("after ConfigureLink(%v): addresses %v", set, got.Addrs)
		}
		if len(got.Addrs) == 2 && set[0] == "10.8.0.2/24" {
			run(t, ns, "ip", "addr", "add", "fe80::1/64", "dev", "stun2", "nodad")
		}
	}
	if out := run(t, ns, "ip", "-6", "addr", "show", "dev", "stun2"); !strings.Contains(out, "fe80::1/64") {
		t.Errorf("link-local address removed:\n%s", out)
	}
}
