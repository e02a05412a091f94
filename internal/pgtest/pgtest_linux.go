// Package pgtest runs a throwaway PostgreSQL server for tests: the real server from the distribution's
// postgresql package (scripts/deps.sh installs it), initialised in a fresh directory and listening only on
// a unix socket in it, never on the network. It is stopped and removed when the test ends, however it
// ends.
package pgtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Server is one running test database server.
type Server struct {
	t    testing.TB
	dir  string // data directory; the socket lives here too
	bin  string // directory of initdb and pg_ctl
	cred *syscall.Credential
	// DSN connects as the superuser to the "postgres" database over the unix socket.
	DSN string
}

// binDir finds the server's programs: on PATH (a pg_ctl next to initdb), else under
// /usr/lib/postgresql/<version>/bin, the newest version first.
func binDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(real), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "pg_ctl")); err == nil {
			return dirs[i], nil
		}
	}
	return "", errors.New("pgtest: no PostgreSQL server programs (pg_ctl, initdb); run scripts/deps.sh, which installs Debian's postgresql")
}

// account is who the server runs as: PostgreSQL refuses to run as root, and tests run as root. The
// distribution's "postgres" account if it exists, else nobody.
func account() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("pgtest: no postgres or nobody account to run the server as")
}

// Start initialises and starts a server; it fails the test if that is impossible (a missing server is a
// broken test machine, not a reason to skip).
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	cred, err := account()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parent is root's 0700 directory, which the server's account cannot enter.
	dir, err := os.MkdirTemp("", "salvo-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, dir: dir, bin: bin, cred: cred,
		DSN: fmt.Sprintf("host=%s port=5432 user=postgres dbname=postgres sslmode=disable", dir)}
	if out, err := s.run("initdb", "--pgdata", filepath.Join(dir, "data"), "--username", "postgres",
		"--auth", "trust", "--no-sync", "--encoding", "UTF8"); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) run(prog string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(s.bin, prog), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=" + s.bin + ":/usr/bin:/bin", "LANG=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd.CombinedOutput()
}

// Restart starts the server (again, after Stop), on the same data, and waits until it accepts connections.
func (s *Server) Restart() {
	s.t.Helper()
	// Only the unix socket: no TCP listener at all; fsync off, since the data is thrown away.
	opts := fmt.Sprintf("-c listen_addresses='' -c unix_socket_directories='%s' -c fsync=off -c full_page_writes=off", s.dir)
	if out, err := s.run("pg_ctl", "start", "--wait", "--timeout", "60", "--pgdata", filepath.Join(s.dir, "data"),
		"--log", filepath.Join(s.dir, "server.log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
		s.t.Fatalf("pgtest: pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// Stop stops the server at once (connections are cut, as when a database host goes away). It may be
// called more than once.
func (s *Server) Stop() {
	if _, err := os.Stat(filepath.Join(s.dir, "data", "postmaster.pid")); err != nil {
		return
	}
	if out, err := s.run("pg_ctl", "stop", "--wait", "--mode", "immediate", "--pgdata", filepath.Join(s.dir, "data")); err != nil &&
		!strings.Contains(string(out), "is not running") {
		s.t.Errorf("pgtest: pg_ctl stop: %v\n%s", err, out)
	}
}
