package netcfg

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/salvovpn/salvo/internal/dnsname"
)

// resolvedSocket exists while systemd-resolved runs (its varlink socket).
// A variable so tests can point it elsewhere.
var resolvedSocket = "/run/systemd/resolve/io.systemd.Resolve"

// DNSOptions are the optional settings of ApplyDNS.
type DNSOptions struct {
	// DefaultRoute makes dev the default route for DNS (full-tunnel mode).
	// With systemd-resolved, dev gets "default-route yes" and the routing
	// domain "~.", which matches every name, so that queries go to dev's
	// servers rather than those of other links (the LAN's). A name under a
	// domain another link claims (the LAN's DHCP may push "lan", or "com")
	// still matches that link more specifically and goes there: resolved
	// routes by the longest matching domain, and only a leak guard stops
	// those queries. resolvconf has no routing domains, so there this
	// changes nothing: which servers come first in resolv.conf is
	// resolvconf's interface order. Needs servers.
	DefaultRoute bool
}

// ApplyDNS points the system resolver at servers for dev, with domains as
// search domains or, with a leading "~", routing-only domains
// (systemd-resolved's "~corp.example": queries under corp.example go to dev,
// which does not make it a search domain; "~." routes all queries to dev).
// It uses systemd-resolved (resolvectl) when it is running, else a
// resolvconf program; otherwise it changes nothing and reports method
// DNSNone with a nil error, for the caller to log. /etc/resolv.conf is never
// edited directly: a crash would leave the host without working DNS.
// resolved gets domains as given; resolvconf gets only the search domains
// (routing-only domains have no meaning in resolv.conf). At most one
// DNSOptions may be given.
//
// Servers and domains usually come from the gateway, so they are validated
// strictly: a domain with a newline would otherwise inject lines into
// resolv.conf, one starting with "-" would be taken for an option.
//
// Undo runs "resolvectl revert <dev>" (which also drops default-route) or
// "resolvconf -d <dev> -f".
func ApplyDNS(dev string, servers []netip.Addr, domains []string, opts ...DNSOptions) (undo func() error, method string, err error) {
	o, err := checkDNS(dev, servers, domains, opts)
	if err != nil {
		return nil, "", err
	}
	if len(servers) == 0 && len(domains) == 0 {
		return func() error { return nil }, DNSNone, nil
	}
	if path, err := exec.LookPath("resolvectl"); err == nil && fileExists(resolvedSocket) {
		undo, err := applyResolved(path, dev, servers, domains, o)
		return undo, DNSResolved, err
	}
	if path, err := exec.LookPath("resolvconf"); err == nil {
		undo, err := applyResolvconf(path, dev, servers, domains)
		return undo, DNSResolvconf, err
	}
	return func() error { return nil }, DNSNone, nil
}

// checkDNS validates ApplyDNS's arguments and returns its options.
func checkDNS(dev string, servers []netip.Addr, domains []string, opts []DNSOptions) (DNSOptions, error) {
	if dev == "" || strings.HasPrefix(dev, "-") || strings.ContainsAny(dev, " /\n\t") || len(dev) >= ifNameSize {
		return DNSOptions{}, fmt.Errorf("netcfg: DNS: invalid device name %q", dev)
	}
	if len(opts) > 1 {
		return DNSOptions{}, fmt.Errorf("netcfg: DNS for %s: %d option sets given, want at most one", dev, len(opts))
	}
	var o DNSOptions
	if len(opts) == 1 {
		o = opts[0]
	}
	for _, s := range servers {
		if !s.IsValid() {
			return DNSOptions{}, fmt.Errorf("netcfg: DNS for %s: invalid server address", dev)
		}
	}
	for _, d := range domains {
		if err := dnsname.CheckDomain(d); err != nil {
			return DNSOptions{}, fmt.Errorf("netcfg: DNS for %s: %w", dev, err)
		}
	}
	if o.DefaultRoute && len(servers) == 0 {
		return DNSOptions{}, fmt.Errorf("netcfg: DNS for %s: default DNS route without servers would leave every query unanswered", dev)
	}
	return o, nil
}

// applyResolved configures dev in systemd-resolved: servers, then domains
// (with "~." added for DefaultRoute), then default-route. If a step fails,
// what was set is reverted.
func applyResolved(path, dev string, servers []netip.Addr, domains []string, o DNSOptions) (undo func() error, err error) {
	if o.DefaultRoute && !slices.Contains(domains, "~.") {
		domains = append(slices.Clip(domains), "~.")
	}
	args := []string{"dns", dev}
	for _, s := range servers {
		args = append(args, s.String())
	}
	if err := runTool(path, nil, args...); err != nil {
		return nil, fmt.Errorf("netcfg: DNS for %s: %w", dev, err)
	}
	revert := func() error { return runTool(path, nil, "revert", dev) }
	if len(domains) > 0 {
		if err := runTool(path, nil, append([]string{"domain", dev}, domains...)...); err != nil {
			return nil, errors.Join(fmt.Errorf("netcfg: DNS domains for %s: %w", dev, err), revert())
		}
	}
	if o.DefaultRoute {
		if err := runTool(path, nil, "default-route", dev, "yes"); err != nil {
			return nil, errors.Join(fmt.Errorf("netcfg: DNS default route for %s: %w", dev, err), revert())
		}
	}
	u := &undoStack{}
	u.push(revert)
	return u.run, nil
}

// applyResolvconf hands resolvconf a resolv.conf fragment for dev.
func applyResolvconf(path, dev string, servers []netip.Addr, domains []string) (undo func() error, err error) {
	var conf bytes.Buffer
	for _, s := range servers {
		fmt.Fprintf(&conf, "nameserver %s\n", s)
	}
	var search []string
	for _, d := range domains {
		// "~x" are resolved routing-only domains; resolv.conf has no such thing.
		if !strings.HasPrefix(d, "~") {
			search = append(search, d)
		}
	}
	if len(search) > 0 {
		fmt.Fprintf(&conf, "search %s\n", strings.Join(search, " "))
	}
	if err := runTool(path, conf.Bytes(), "-a", dev); err != nil {
		return nil, fmt.Errorf("netcfg: DNS for %s: %w", dev, err)
	}
	u := &undoStack{}
	u.push(func() error { return runTool(path, nil, "-d", dev, "-f") })
	return u.run, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// toolEnv is the whole environment of a resolver helper. The daemon's own
// environment may hold secrets (keys, tokens) that a helper has no business
// seeing, nor passing on to hooks it runs; LANG=C keeps its messages, which
// end up in our errors, in English.
var toolEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}

// runTool runs a resolver helper with toolEnv; the error carries its command
// line and output because those tools explain failures only on stderr.
func runTool(path string, stdin []byte, args ...string) error {
	c := exec.Command(path, args...)
	c.Env = toolEnv
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", path, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
