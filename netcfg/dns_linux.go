package netcfg

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
)

// resolvedSocket exists while systemd-resolved runs (its varlink socket).
// A variable so tests can point it elsewhere.
var resolvedSocket = "/run/systemd/resolve/io.systemd.Resolve"

// ApplyDNS points the system resolver at servers for dev, with domains as
// search/routing domains ("~." in systemd-resolved terms routes all queries
// to dev). It uses systemd-resolved (resolvectl) when it is running, else a
// resolvconf program; otherwise it changes nothing and reports method
// DNSNone with a nil error, for the caller to log. /etc/resolv.conf is never
// edited directly: a crash would leave the host without working DNS.
//
// Servers and domains usually come from the gateway, so they are validated
// strictly: a domain with a newline would otherwise inject lines into
// resolv.conf.
func ApplyDNS(dev string, servers []netip.Addr, domains []string) (undo func() error, method string, err error) {
	if dev == "" || strings.ContainsAny(dev, " /\n\t") || len(dev) >= ifNameSize {
		return nil, "", fmt.Errorf("netcfg: DNS: invalid device name %q", dev)
	}
	for _, s := range servers {
		if !s.IsValid() {
			return nil, "", fmt.Errorf("netcfg: DNS for %s: invalid server address", dev)
		}
	}
	for _, d := range domains {
		if !validDomain(d) {
			return nil, "", fmt.Errorf("netcfg: DNS for %s: invalid domain %q", dev, d)
		}
	}
	if len(servers) == 0 && len(domains) == 0 {
		return func() error { return nil }, DNSNone, nil
	}

	if path, err := exec.LookPath("resolvectl"); err == nil && fileExists(resolvedSocket) {
		args := []string{"dns", dev}
		for _, s := range servers {
			args = append(args, s.String())
		}
		if err := runTool(path, nil, args...); err != nil {
			return nil, DNSResolved, fmt.Errorf("netcfg: DNS for %s: %w", dev, err)
		}
		if len(domains) > 0 {
			if err := runTool(path, nil, append([]string{"domain", dev}, domains...)...); err != nil {
				rerr := runTool(path, nil, "revert", dev)
				return nil, DNSResolved, errors.Join(fmt.Errorf("netcfg: DNS domains for %s: %w", dev, err), rerr)
			}
		}
		u := &undoStack{}
		u.push(func() error { return runTool(path, nil, "revert", dev) })
		return u.run, DNSResolved, nil
	}

	if path, err := exec.LookPath("resolvconf"); err == nil {
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
			return nil, DNSResolvconf, fmt.Errorf("netcfg: DNS for %s: %w", dev, err)
		}
		u := &undoStack{}
		u.push(func() error { return runTool(path, nil, "-d", dev, "-f") })
		return u.run, DNSResolvconf, nil
	}
	return func() error { return nil }, DNSNone, nil
}

// validDomain accepts DNS names and resolved's "~name" / "~." forms; nothing
// that could break out of a resolv.conf line or a command argument.
func validDomain(d string) bool {
	if d == "~." {
		return true
	}
	d = strings.TrimPrefix(d, "~")
	if d == "" || len(d) > 253 || strings.HasPrefix(d, "-") {
		return false
	}
	for _, c := range d {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
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
