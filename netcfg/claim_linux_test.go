package netcfg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/salvovpn/salvo/internal/netns"
)

func claimIn(ns *netns.NS, dir string, resources ...string) (release func() error, err error) {
	err = ns.Do(func() error {
		var err error
		release, err = Claim(dir, resources...)
		return err
	})
	return release, err
}

// wantClaimed checks err is a *ClaimError for res naming pid.
func wantClaimed(t *testing.T, err error, res string, pid int) {
	t.Helper()
	var ce *ClaimError
	if !errors.Is(err, ErrClaimed) || !errors.As(err, &ce) || ce.Resource != res || ce.PID != pid {
		t.Fatalf("err = %v, want a *ClaimError (ErrClaimed) for %s held by %d", err, res, pid)
	}
	if want := fmt.Sprintf("%s is in use by salvo process %d", res, pid); !strings.Contains(err.Error(), want) {
		t.Errorf("err = %q, want it to say %q", err, want)
	}
}

// TestClaimExclusive proves a claim cannot be taken twice (flock is per open
// file, so two claims in one process conflict like two processes), that the
// error names the resource and the holder's PID, that a failed Claim keeps
// none of its resources, that release frees the claim and removes the file
// (twice is fine), and that bad names are refused.
func TestClaimExclusive(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix)
	dir := filepath.Join(t.TempDir(), "claims")
	release, err := claimIn(ns, dir, "tun-stun0", "table-51820")
	must(t, err)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("claims directory: %v, %v; want mode 0700", fi, err)
	}

	_, err = claimIn(ns, dir, "fwmark-0x5a17", "tun-stun0")
	wantClaimed(t, err, "tun-stun0", os.Getpid())
	relMark, err := claimIn(ns, dir, "fwmark-0x5a17") // not kept by the failed Claim
	must(t, err)
	must(t, relMark())

	must(t, release())
	must(t, release())
	if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) != 0 {
		t.Errorf("files left after release: %v", files)
	}
	release, err = claimIn(ns, dir, "tun-stun0")
	must(t, err)
	must(t, release())

	for _, bad := range [][]string{{"a/b"}, {""}, {".."}, {"forwarding"}, {"x", "x"}, {"tun salvo0"}, nil} {
		if _, err := claimIn(ns, dir, bad...); err == nil || errors.Is(err, ErrClaimed) {
			t.Errorf("Claim(%q) = %v, want a validation error", bad, err)
		}
	}
}

// TestClaimCrashedHolder proves that a claim held by a process killed with
// SIGKILL (a child) is refused while it lives, naming its PID, and free
// again once it is dead, although its lock file is still there.
func TestClaimCrashedHolder(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix)
	dir := t.TempDir()
	h := startHelper(t, ns, "claim", dir+":tun-stun0")
	_, err := claimIn(ns, dir, "tun-stun0")
	wantClaimed(t, err, "tun-stun0", h.pid())
	h.kill()
	release, err := claimIn(ns, dir, "tun-stun0")
	must(t, err)
	must(t, release())
}

// TestClaimPerNamespace proves the same resource name claimed in two
// namespaces does not collide.
func TestClaimPerNamespace(t *testing.T) {
	a := netns.ForTest(t, nsPrefix)
	b := netns.ForTest(t, nsPrefix)
	dir := t.TempDir()
	relA, err := claimIn(a, dir, "tun-stun0")
	must(t, err)
	relB, err := claimIn(b, dir, "tun-stun0")
	must(t, err)
	if files, _ := filepath.Glob(filepath.Join(dir, "*.tun-stun0.lock")); len(files) != 2 {
		t.Errorf("lock files %v, want one per namespace", files)
	}
	must(t, relA())
	must(t, relB())
}
