package daemon

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"

	"github.com/salvovpn/salvo/netcfg"
)

// Resolver configuration files: the system's, and systemd-resolved's list of the upstream servers behind
// its stub (127.0.0.53). Variables so tests can point them elsewhere.
var (
	resolvConfPath         = "/etc/resolv.conf"
	resolvedUpstreamConfig = "/run/systemd/resolve/resolv.conf"
)

// gatewayResolver finds the gateway's address from its name, outside the tunnel. A client resolves the
// name before the tunnel is up, and again before each reconnect, when the tunnel is down but its routes
// (and the leak guard, and the tunnel's DNS configuration) are still in place: queries through the system
// resolver would then go into the dead tunnel, or be blocked. So the queries go over sockets carrying the
// client's fwmark, which bypass the tunnel's routes and pass the guard like the tunnel's own UDP, to the
// name servers the system used when the client started, before it pointed DNS at the tunnel.
//
// What this reveals: the query for the gateway's name goes to the LAN's name servers in the clear, as the
// first look-up of any client must. It gives away nothing the tunnel's own UDP does not. /etc/hosts is
// consulted first, as usual.
type gatewayResolver struct {
	host    string
	port    uint16
	network string // "ip4" or "ip6": the client's socket has one family
	servers []string
	next    atomic.Uint32
	r       *net.Resolver
}

// newGatewayResolver reads the system's name servers now and resolves host:port with them from then on.
// A literal address needs no resolver.
func newGatewayResolver(hostport string, mark uint32) (*gatewayResolver, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", hostport, err)
	}
	pn, err := net.LookupPort("udp", port)
	if err != nil {
		return nil, fmt.Errorf("server %q: bad port: %w", hostport, err)
	}
	g := &gatewayResolver{host: host, port: uint16(pn), network: "ip"}
	if _, err := netip.ParseAddr(host); err == nil {
		return g, nil
	}
	g.servers = systemNameServers()
	dialer := net.Dialer{Control: netcfg.MarkControl(mark)}
	g.r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		if len(g.servers) > 0 {
			// The Go resolver picks from resolv.conf as it is now (perhaps the tunnel's servers); the
			// servers of before the tunnel are the ones reachable outside it.
			address = g.servers[int(g.next.Add(1))%len(g.servers)]
		}
		return dialer.DialContext(ctx, network, address)
	}}
	return g, nil
}

// Resolve returns the gateway's address. After the first success it only returns addresses of the same
// family, which the client's socket can reach.
func (g *gatewayResolver) Resolve(ctx context.Context) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(g.host); err == nil {
		if a = a.Unmap(); g.network == "ip4" && !a.Is4() || g.network == "ip6" && a.Is4() {
			return netip.AddrPort{}, fmt.Errorf("server %s: the client's socket is %s only (the family of its first gateway)", net.JoinHostPort(g.host, fmt.Sprint(g.port)), g.network)
		}
		return netip.AddrPortFrom(a, g.port), nil
	}
	addrs, err := g.r.LookupNetIP(ctx, g.network, g.host)
	if err == nil && len(addrs) == 0 {
		err = fmt.Errorf("no %s address", g.network)
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("server %s: cannot resolve %s: %w", net.JoinHostPort(g.host, fmt.Sprint(g.port)), g.host, err)
	}
	a := addrs[0].Unmap()
	if g.network == "ip" {
		g.network = "ip6"
		if a.Is4() {
			g.network = "ip4"
		}
	}
	return netip.AddrPortFrom(a, g.port), nil
}

// sameFamilyAs restricts the resolver to the family of addr: the one the client's socket reaches.
func (g *gatewayResolver) sameFamilyAs(addr netip.AddrPort) {
	g.network = "ip6"
	if addr.Addr().Is4() {
		g.network = "ip4"
	}
}

// systemNameServers are the name servers of resolv.conf as host:53, or, when that only names
// systemd-resolved's stub, the upstream servers resolved uses. Nil if none are found: the Go resolver's
// own choice is used then.
func systemNameServers() []string {
	servers := readNameServers(resolvConfPath)
	if len(servers) == 1 && strings.HasPrefix(servers[0], "127.0.0.53:") {
		if up := readNameServers(resolvedUpstreamConfig); len(up) > 0 {
			return up
		}
	}
	return servers
}

// readNameServers returns the "nameserver" lines of a resolv.conf file as host:53.
func readNameServers(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil {
			continue
		}
		out = append(out, netip.AddrPortFrom(a, 53).String())
	}
	return out
}
