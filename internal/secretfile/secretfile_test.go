//go:build unix

package secretfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func writeSecret(t *testing.T, name string, mode fs.FileMode, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	// Chmod after writing: WriteFile's mode is filtered by the umask.
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantInsecure(t *testing.T, err error, parts ...string) {
	t.Helper()
	if !errors.Is(err, ErrInsecure) {
		t.Fatalf("error %v does not wrap ErrInsecure", err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

func TestCheckAcceptsPrivateFiles(t *testing.T) {
	for _, mode := range []fs.FileMode{0o600, 0o400, 0o200, 0o700, 0o000, 0o611} {
		p := writeSecret(t, "key", mode, "secret")
		if err := Check(p, "private key file"); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
}

func TestCheckRefusesGroupOrOthers(t *testing.T) {
	for _, tc := range []struct {
		mode fs.FileMode
		can  string
	}{
		{0o644, "read it"},
		{0o640, "read it"},
		{0o604, "read it"},
		{0o620, "write it"},
		{0o602, "write it"},
		{0o622, "write it"},
		{0o660, "read and write it"},
		{0o606, "read and write it"},
		{0o666, "read and write it"},
		{0o777, "read and write it"},
		{0o624, "read and write it"},
	} {
		p := writeSecret(t, "users", tc.mode, "x")
		err := Check(p, "users file")
		if err == nil {
			t.Errorf("mode %04o accepted", tc.mode)
			continue
		}
		want := "users file " + p + " is mode " + fmtMode(tc.mode) + ": group or others can " + tc.can + "; run chmod 600 " + p
		if err.Error() != want {
			t.Errorf("mode %04o:\n got %q\nwant %q", tc.mode, err, want)
		}
		wantInsecure(t, err)
	}
}

func fmtMode(m fs.FileMode) string { return fmt.Sprintf("%04o", uint32(m)) }

func TestCheckExampleMessage(t *testing.T) {
	fi := fakeInfo{mode: 0o644, uid: 0}
	err := check(fi, "/etc/salvo/users", "users file", 0)
	want := "users file /etc/salvo/users is mode 0644: group or others can read it; run chmod 600 /etc/salvo/users"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

// fakeInfo lets the owner rule be tested for any effective user without
// being root.
type fakeInfo struct {
	mode fs.FileMode
	uid  uint32
}

func (f fakeInfo) Name() string       { return "f" }
func (f fakeInfo) Size() int64        { return 0 }
func (f fakeInfo) Mode() fs.FileMode  { return f.mode }
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return f.mode.IsDir() }
func (f fakeInfo) Sys() any           { return &syscall.Stat_t{Uid: f.uid} }

func TestCheckOwner(t *testing.T) {
	for _, tc := range []struct {
		uid  uint32
		euid int
		want string // "" means accepted
	}{
		{1000, 1000, ""},
		{0, 1000, ""}, // root-owned files are trusted
		{0, 0, ""},
		{1001, 1000, "users file /u is owned by uid 1001: it must be owned by root or uid 1000 (the user salvo runs as); run chown 1000 /u"},
		{1000, 0, "users file /u is owned by uid 1000: it must be owned by root (the user salvo runs as); run chown 0 /u"},
	} {
		err := check(fakeInfo{mode: 0o600, uid: tc.uid}, "/u", "users file", tc.euid)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("uid %d euid %d: %v", tc.uid, tc.euid, err)
		case tc.want != "" && (err == nil || err.Error() != tc.want):
			t.Errorf("uid %d euid %d:\n got %v\nwant %s", tc.uid, tc.euid, err, tc.want)
		case tc.want != "":
			wantInsecure(t, err)
		}
	}
	// The owner is reported before the mode: chmod by the wrong owner would
	// not make the file trustworthy.
	err := check(fakeInfo{mode: 0o644, uid: 5}, "/u", "users file", 0)
	wantInsecure(t, err, "owned by uid 5")
}

func TestCheckOwnerReal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	p := writeSecret(t, "key", 0o600, "secret")
	if err := os.Chown(p, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	wantInsecure(t, Check(p, "private key file"), "owned by uid 4242", "chown 0 "+p)
	if _, err := Read(p, "private key file", 100); !errors.Is(err, ErrInsecure) {
		t.Fatalf("Read of a file owned by another user: %v", err)
	}
}

func TestCheckRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	wantInsecure(t, Check(dir, "users file"), "users file "+dir+" is a directory, not a regular file")
	if _, err := os.Stat("/dev/null"); err == nil {
		wantInsecure(t, Check("/dev/null", "password file"), "/dev/null is a character device")
		if _, err := Read("/dev/null", "password file", 10); !errors.Is(err, ErrInsecure) {
			t.Errorf("Read(/dev/null) = %v", err)
		}
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	wantInsecure(t, Check(fifo, "password file"), "is a named pipe")
	// Read must not block waiting for a writer.
	done := make(chan error, 1)
	go func() {
		_, err := Read(fifo, "password file", 10)
		done <- err
	}()
	select {
	case err := <-done:
		wantInsecure(t, err, "is a named pipe")
	case <-time.After(5 * time.Second):
		t.Fatal("Read blocked on a named pipe")
	}
	sock := filepath.Join(dir, "s")
	if l, err := net.Listen("unix", sock); err == nil {
		defer l.Close()
		wantInsecure(t, Check(sock, "private key file"), "is a socket")
	}
}

func TestCheckFollowsSymlinks(t *testing.T) {
	good := writeSecret(t, "good", 0o600, "secret")
	bad := writeSecret(t, "bad", 0o644, "secret")
	dir := t.TempDir()
	toGood, toBad, dangling := filepath.Join(dir, "to-good"), filepath.Join(dir, "to-bad"), filepath.Join(dir, "dangling")
	for target, link := range map[string]string{good: toGood, bad: toBad, filepath.Join(dir, "nope"): dangling} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	if err := Check(toGood, "users file"); err != nil {
		t.Errorf("symlink to a 0600 file: %v", err)
	}
	if data, err := Read(toGood, "users file", 100); err != nil || string(data) != "secret" {
		t.Errorf("Read through a symlink = %q, %v", data, err)
	}
	// The symlink's own mode (0777) is irrelevant; the target's is what counts.
	wantInsecure(t, Check(toBad, "users file"), "is mode 0644")
	if err := Check(dangling, "users file"); !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrInsecure) {
		t.Errorf("dangling symlink: %v", err)
	}
}

func TestMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing")
	for _, err := range []error{Check(p, "users file"), func() error { _, err := Read(p, "users file", 1); return err }()} {
		if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "users file: ") || !strings.Contains(err.Error(), p) {
			t.Errorf("missing file: %v", err)
		}
	}
}

func TestRead(t *testing.T) {
	p := writeSecret(t, "pw", 0o600, "hunter2\n")
	data, err := Read(p, "password file", 8)
	if err != nil || string(data) != "hunter2\n" {
		t.Fatalf("Read = %q, %v", data, err)
	}
	if _, err := Read(p, "password file", 7); err == nil || !strings.Contains(err.Error(), "password file "+p+" is larger than 7 bytes") {
		t.Fatalf("Read over the limit: %v", err)
	}
	empty := writeSecret(t, "empty", 0o600, "")
	if data, err := Read(empty, "password file", 0); err != nil || len(data) != 0 {
		t.Fatalf("Read(empty, 0) = %q, %v", data, err)
	}
	if _, err := Read(p, "password file", -1); err == nil {
		t.Fatal("negative limit accepted")
	}
	bad := writeSecret(t, "bad", 0o640, "hunter2\n")
	if data, err := Read(bad, "password file", 100); !errors.Is(err, ErrInsecure) || data != nil {
		t.Fatalf("Read of a 0640 file = %q, %v", data, err)
	}
}

// Read checks the file it opened, not whatever the path names later: the
// descriptor keeps pointing at the checked file after the path is replaced.
func TestReadChecksOpenedFile(t *testing.T) {
	p := writeSecret(t, "key", 0o600, "checked")
	f, err := os.OpenFile(p, os.O_RDONLY|openFlags, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Swap in a world-readable file under the same name.
	other := writeSecret(t, "other", 0o644, "swapped")
	if err := os.Rename(other, p); err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := check(fi, p, "key", os.Geteuid()); err != nil {
		t.Fatalf("the opened file was replaced under the descriptor: %v", err)
	}
	if _, err := Read(p, "key", 100); !errors.Is(err, ErrInsecure) {
		t.Fatalf("Read of the swapped-in 0644 file: %v", err)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/etc/salvo/users": "/etc/salvo/users",
		"/tmp/a b":         "'/tmp/a b'",
		"/tmp/it's":        `'/tmp/it'\''s'`,
		"/tmp/$x":          "'/tmp/$x'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
	p := filepath.Join(t.TempDir(), "my users")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o644)
	wantInsecure(t, Check(p, "users file"), "run chmod 600 '"+p+"'")
}

func TestReadDoesNotReturnPartialData(t *testing.T) {
	p := writeSecret(t, "big", 0o600, strings.Repeat("x", 100))
	data, err := Read(p, "private key file", 50)
	if err == nil || data != nil {
		t.Fatalf("Read over the limit returned %d bytes, %v", len(data), err)
	}
	if got, _ := Read(p, "private key file", 100); !bytes.Equal(got, bytes.Repeat([]byte("x"), 100)) {
		t.Fatal("Read at exactly the limit failed")
	}
}
