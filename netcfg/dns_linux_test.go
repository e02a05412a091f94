package netcfg

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeTool writes a shell script named name into dir that appends its
// arguments (and stdin, if any) to log, so ApplyDNS can be tested without
// touching the host's resolver.
func fakeTool(t *testing.T, dir, name, log string) {
	t.Helper()
	script := "#!/bin/sh\necho \"" + name + " $*\" >> " + log + "\n"
	if name == "resolvconf" {
		script += "case \"$1\" in -a) /bin/cat >> " + log + ";; esac\n"
	}
	must(t, os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755))
}

// TestApplyDNS proves method selection (systemd-resolved when its socket
// exists, else resolvconf, else "none" with a nil error), the exact commands
// and resolv.conf fragment produced, the undo commands, and that hostile
// domains from the gateway are refused. Only fake tools in a temp PATH run.
func TestApplyDNS(t *testing.T) {
	servers := []netip.Addr{netip.MustParseAddr("10.8.0.1"), netip.MustParseAddr("fd08::1")}
	domains := []string{"corp.example", "~."}

	bin, log := t.TempDir(), filepath.Join(t.TempDir(), "log")
	t.Setenv("PATH", bin)
	sock := filepath.Join(t.TempDir(), "io.systemd.Resolve")
	old := resolvedSocket
	resolvedSocket = sock
	t.Cleanup(func() { resolvedSocket = old })

	check := func(wantMethod string, wantLog ...string) {
		t.Helper()
		_ = os.Remove(log)
		undo, method, err := ApplyDNS("stun0", servers, domains)
		if err != nil || method != wantMethod {
			t.Fatalf("ApplyDNS = %q, %v; want %q", method, err, wantMethod)
		}
		must(t, undo())
		got, _ := os.ReadFile(log)
		if want := strings.Join(wantLog, ""); string(got) != want {
			t.Errorf("%s: tool calls\n%s\nwant\n%s", method, got, want)
		}
	}

	check(DNSNone) // nothing installed
	fakeTool(t, bin, "resolvconf", log)
	check(DNSResolvconf,
		"resolvconf -a stun0\n",
		"nameserver 10.8.0.1\nnameserver fd08::1\nsearch corp.example\n",
		"resolvconf -d stun0 -f\n")
	fakeTool(t, bin, "resolvectl", log)
	check(DNSResolvconf, // resolvectl present but resolved not running
		"resolvconf -a stun0\n",
		"nameserver 10.8.0.1\nnameserver fd08::1\nsearch corp.example\n",
		"resolvconf -d stun0 -f\n")
	must(t, os.WriteFile(sock, nil, 0o600))
	check(DNSResolved,
		"resolvectl dns stun0 10.8.0.1 fd08::1\n",
		"resolvectl domain stun0 corp.example ~.\n",
		"resolvectl revert stun0\n")

	for _, bad := range []string{"evil\nnameserver 6.6.6.6", "a b", "-x", ""} {
		if _, _, err := ApplyDNS("stun0", servers, []string{bad}); err == nil {
			t.Errorf("domain %q accepted", bad)
		}
	}
	if _, _, err := ApplyDNS("bad dev", servers, nil); err == nil {
		t.Error(`device "bad dev" accepted`)
	}
}

// TestResolverToolEnvironment proves the resolver helpers run with PATH and
// LANG=C only, never the daemon's environment (a secret planted in it must
// not reach them). The fake tool is a shell script, and the shell adds PWD
// of its own accord, so PWD is tolerated.
func TestResolverToolEnvironment(t *testing.T) {
	bin, envLog := t.TempDir(), filepath.Join(t.TempDir(), "env")
	t.Setenv("PATH", bin)
	t.Setenv("SALVO_TEST_SECRET", "hunter2")
	old := resolvedSocket
	resolvedSocket = filepath.Join(t.TempDir(), "none")
	t.Cleanup(func() { resolvedSocket = old })
	script := "#!/bin/sh\n/usr/bin/env >> " + envLog + "\n/bin/cat > /dev/null\n"
	must(t, os.WriteFile(filepath.Join(bin, "resolvconf"), []byte(script), 0o755))

	undo, method, err := ApplyDNS("stun0", []netip.Addr{netip.MustParseAddr("10.8.0.1")}, nil)
	if err != nil || method != DNSResolvconf {
		t.Fatalf("ApplyDNS = %q, %v; want %q", method, err, DNSResolvconf)
	}
	must(t, undo())
	b, err := os.ReadFile(envLog)
	must(t, err)
	var got []string
	for _, v := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasPrefix(v, "PWD=") {
			got = append(got, v)
		}
	}
	want := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	if !slices.Equal(got, append(want, want...)) { // apply and undo
		t.Errorf("tool environment:\n%s\nwant only %q (and PWD)", b, want)
	}
}

// TestApplyDNSDefaultRoute proves DNSOptions.DefaultRoute: with
// systemd-resolved the exact commands are dns, domain with "~." appended
// (once, after the given search and routing-only domains; the caller's
// slice is not written to), default-route yes, and "revert" as undo; with
// resolvconf nothing changes (the routing-only domains are left out of
// resolv.conf, as always); a failing default-route step reverts what was
// set and returns no undo; and a default route without servers or two
// option sets are refused.
func TestApplyDNSDefaultRoute(t *testing.T) {
	servers := []netip.Addr{netip.MustParseAddr("10.8.0.1")}
	bin, log := t.TempDir(), filepath.Join(t.TempDir(), "log")
	t.Setenv("PATH", bin)
	sock := filepath.Join(t.TempDir(), "io.systemd.Resolve")
	old := resolvedSocket
	resolvedSocket = sock
	t.Cleanup(func() { resolvedSocket = old })
	full := DNSOptions{DefaultRoute: true}

	check := func(domains []string, wantMethod string, wantLog ...string) {
		t.Helper()
		_ = os.Remove(log)
		undo, method, err := ApplyDNS("stun0", servers, domains, full)
		if err != nil || method != wantMethod {
			t.Fatalf("ApplyDNS(%q) = %q, %v; want %q", domains, method, err, wantMethod)
		}
		must(t, undo())
		got, _ := os.ReadFile(log)
		if want := strings.Join(wantLog, ""); string(got) != want {
			t.Errorf("%s, domains %q: tool calls\n%s\nwant\n%s", method, domains, got, want)
		}
	}

	fakeTool(t, bin, "resolvconf", log)
	check([]string{"corp.example", "~corp2.example"}, DNSResolvconf,
		"resolvconf -a stun0\n", "nameserver 10.8.0.1\nsearch corp.example\n", "resolvconf -d stun0 -f\n")

	fakeTool(t, bin, "resolvectl", log)
	must(t, os.WriteFile(sock, nil, 0o600))
	domains := make([]string, 2, 3)
	domains[0], domains[1] = "corp.example", "~corp2.example"
	check(domains, DNSResolved,
		"resolvectl dns stun0 10.8.0.1\n",
		"resolvectl domain stun0 corp.example ~corp2.example ~.\n",
		"resolvectl default-route stun0 yes\n",
		"resolvectl revert stun0\n")
	if spare := domains[:3][2]; spare != "" {
		t.Errorf("ApplyDNS wrote %q into the caller's domains slice", spare)
	}
	check([]string{"~.", "corp.example"}, DNSResolved,
		"resolvectl dns stun0 10.8.0.1\n",
		"resolvectl domain stun0 ~. corp.example\n",
		"resolvectl default-route stun0 yes\n",
		"resolvectl revert stun0\n")
	check(nil, DNSResolved,
		"resolvectl dns stun0 10.8.0.1\n",
		"resolvectl domain stun0 ~.\n",
		"resolvectl default-route stun0 yes\n",
		"resolvectl revert stun0\n")

	script := "#!/bin/sh\necho \"resolvectl $*\" >> " + log + "\n" +
		"if [ \"$1\" = default-route ]; then echo 'Failed to set default route: boom' >&2; exit 1; fi\n"
	must(t, os.WriteFile(filepath.Join(bin, "resolvectl"), []byte(script), 0o755))
	_ = os.Remove(log)
	undo, _, err := ApplyDNS("stun0", servers, nil, full)
	if err == nil || undo != nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("failing default-route: undo %v, err %v; want no undo and the tool's message", undo != nil, err)
	}
	if got, _ := os.ReadFile(log); !strings.HasSuffix(string(got), "resolvectl default-route stun0 yes\nresolvectl revert stun0\n") {
		t.Errorf("failing default-route: tool calls\n%s\nwant a revert after it", got)
	}

	if _, _, err := ApplyDNS("stun0", nil, []string{"~."}, full); err == nil {
		t.Error("a default DNS route without servers was accepted")
	}
	if _, _, err := ApplyDNS("stun0", servers, nil, full, full); err == nil {
		t.Error("two DNSOptions were accepted")
	}
}

// TestValidDomain proves which domains ApplyDNS accepts: names, with
// underscores, routing-only ones with "~", and "~.";
// but no empty labels, lone dots or tildes, double tildes, labels starting
// or ending with "-" (an option to a tool), overlong labels, trailing dots
// (the wire contract has none), spaces, newlines or other characters.
func TestValidDomain(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // should validation fail to refuse, no real tool runs
	for _, d := range []string{"corp.example", "~corp.example", "~.", "_sip._udp.example", "a-b.c", "x"} {
		if _, err := checkDNS("stun0", nil, []string{d}, nil); err != nil {
			t.Errorf("domain %q refused, want accepted", d)
		}
	}
	for _, d := range []string{"", ".", "..", "corp.example.", "~", "~~x", "~..", "a..b", ".a", "-x", "~-x", "x-.y", "a b",
		"evil\nnameserver 6.6.6.6", "é.example", strings.Repeat("a", 64) + ".example"} {
		if _, err := checkDNS("stun0", nil, []string{d}, nil); err == nil {
			t.Errorf("domain %q accepted, want refused", d)
		}
	}
	if _, _, err := ApplyDNS("-stun0", []netip.Addr{netip.MustParseAddr("10.8.0.1")}, nil); err == nil {
		t.Error(`device "-stun0" accepted: a tool would take it for an option`)
	}
}
