//go:build unix

package users

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestSaveKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the file to another user")
	}
	path := writeFile(t, "alice "+hash(t, "a")+"\n")
	if err := os.Chown(path, 4242, 4343); err != nil {
		t.Fatal(err)
	}
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s.SetDisabled("alice", true)
	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 4242 || st.Gid != 4343 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("after Save: uid %d gid %d mode %v; want 4242 4343 0600", st.Uid, st.Gid, fi.Mode())
	}
	// A new file belongs to whoever saved it.
	fresh := filepath.Join(t.TempDir(), "new")
	if err := s.Save(fresh); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(fresh); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatal("a new file was not given to the user saving it")
	}
}
