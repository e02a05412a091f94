//go:build unix

package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func ownerOf(t *testing.T, path string) (uid, gid uint32) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// TestWriteKeepsOwner: root replacing a file that belongs to another user (a gateway's users file or
// leases, owned by the account it runs as) leaves it that user's; a new file is the writer's.
func TestWriteKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "users")
	if err := Write(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if uid, _ := ownerOf(t, p); uid != 0 {
		t.Fatalf("a new file belongs to uid %d, not to root who wrote it", uid)
	}
	const nobody = 65534
	if err := os.Chown(p, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if uid, gid := ownerOf(t, p); uid != nobody || gid != nobody {
		t.Fatalf("after Write: uid %d gid %d, want %d %d", uid, gid, nobody, nobody)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("after Write: mode %v", fi.Mode())
	}
	// Only the group differs: it is kept too.
	if err := os.Chown(p, 0, nobody); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("three"), 0o600); err != nil {
		t.Fatal(err)
	}
	if uid, gid := ownerOf(t, p); uid != 0 || gid != nobody {
		t.Fatalf("after Write: uid %d gid %d, want 0 %d", uid, gid, nobody)
	}
	if b, _ := os.ReadFile(p); string(b) != "three" {
		t.Fatalf("content %q", b)
	}
}
