package users

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const cmdPassword = "s3cret pass"

// script writes an executable shell script into a fresh directory and returns its path and directory.
func script(t *testing.T, body string) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "auth")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o700); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

func newTestCommand(t *testing.T, path string, timeout time.Duration) (*Command, *bytes.Buffer) {
	t.Helper()
	var log bytes.Buffer
	c, err := NewCommand(CommandConfig{Path: path, Timeout: timeout},
		slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	return c, &log
}

// noChildren fails unless this process has no child left, running or zombie: every run was reaped.
func noChildren(t *testing.T) {
	t.Helper()
	pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
	if !errors.Is(err, unix.ECHILD) {
		t.Fatalf("a child is left behind (wait4: pid %d, %v)", pid, err)
	}
}

// TestCommandAcceptReject: exit 0 accepts, anything else rejects; the program sees the login as its
// argument and the password on stdin.
func TestCommandAcceptReject(t *testing.T) {
	path, _ := script(t, `read -r pw
[ "$1" = alice ] && [ "$SALVO_LOGIN" = alice ] && [ "$pw" = "`+cmdPassword+`" ]
`)
	c, _ := newTestCommand(t, path, 0)
	u, err := c.Authenticate("alice", []byte(cmdPassword))
	if err != nil || u.Login != "alice" || u.Disabled || u.FixedIPv4.IsValid() {
		t.Fatalf("right password: %+v, %v", u, err)
	}
	for _, tc := range []struct{ login, password string }{{"alice", "wrong"}, {"bob", cmdPassword}, {"alice", cmdPassword + "x"}} {
		if u, err := c.Authenticate(tc.login, []byte(tc.password)); !errors.Is(err, ErrRejected) || u != (User{}) {
			t.Errorf("%s/%q: %+v, %v; want ErrRejected", tc.login, tc.password, u, err)
		}
	}
	if n := c.Runs(); n != 4 {
		t.Errorf("%d runs for 4 logins", n)
	}
	noChildren(t)
}

// TestCommandPasswordOnlyOnStdin: the program's arguments and environment hold the login but never the
// password, nor anything of the gateway's environment; its stdin holds the password and a newline.
func TestCommandPasswordOnlyOnStdin(t *testing.T) {
	t.Setenv("SALVO_TEST_GATEWAY_SECRET", "inherited")
	path, dir := script(t, `printf '%s\n' "$0" "$@" > "$(dirname "$0")/argv"
env > "$(dirname "$0")/env"
cat /proc/$$/cmdline > "$(dirname "$0")/cmdline"
cat > "$(dirname "$0")/stdin"
`)
	c, _ := newTestCommand(t, path, 0)
	if _, err := c.Authenticate("alice", []byte(cmdPassword)); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got, want := read("argv"), path+"\nalice\n"; got != want {
		t.Errorf("argv %q, want %q", got, want)
	}
	env := read("env")
	for name, text := range map[string]string{"argv": read("argv"), "cmdline": read("cmdline"), "env": env} {
		if strings.Contains(text, "s3cret") {
			t.Errorf("the password is in the program's %s: %q", name, text)
		}
	}
	if !strings.Contains(env, "SALVO_LOGIN=alice\n") || strings.Contains(env, "SALVO_TEST_GATEWAY_SECRET") {
		t.Errorf("environment %q: want SALVO_LOGIN and nothing of the gateway's", env)
	}
	if got := read("stdin"); got != cmdPassword+"\n" {
		t.Errorf("stdin %q, want the password and a newline", got)
	}
}

// TestCommandTimeoutKillsGroup: a program that hangs, with a child of its own, is killed with that child
// at the timeout; the login is rejected and nothing is left to reap.
func TestCommandTimeoutKillsGroup(t *testing.T) {
	path, dir := script(t, `sleep 1000 &
echo $! > "$(dirname "$0")/child"
sleep 1000
`)
	c, log := newTestCommand(t, path, 300*time.Millisecond)
	start := time.Now()
	_, err := c.Authenticate("alice", []byte(cmdPassword))
	took := time.Since(start)
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("hung program: %v", err)
	}
	if took > 300*time.Millisecond+commandWaitDelay+2*time.Second {
		t.Fatalf("Authenticate returned after %s with a timeout of 300ms", took)
	}
	b, err := os.ReadFile(filepath.Join(dir, "child"))
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	// The child was reparented when the program died; whoever reaps it, it must be dead (gone, or a
	// zombie of its new parent), not sleeping.
	deadline := time.Now().Add(5 * time.Second)
	for !dead(child) {
		if time.Now().After(deadline) {
			t.Fatalf("the program's child %d is still alive after the timeout", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(log.String(), "level=WARN") {
		t.Errorf("a timeout is not logged as a warning: %s", log)
	}
	noChildren(t)
}

// dead reports whether pid is gone or a zombie.
func dead(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) state ...: comm may hold spaces, so the state follows the last ')'.
	s := string(b)
	rest := s[strings.LastIndexByte(s, ')')+1:]
	state := strings.Fields(rest)[0]
	return state == "Z" || state == "X"
}

// TestCommandOutputFlood: a program that writes without end is cut off at the output bound (it dies of
// SIGPIPE rather than run to the timeout) and rejected, even though it would exit 0.
func TestCommandOutputFlood(t *testing.T) {
	path, _ := script(t, "yes flood\nexit 0\n")
	c, _ := newTestCommand(t, path, 20*time.Second)
	start := time.Now()
	_, err := c.Authenticate("alice", []byte(cmdPassword))
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "more than 65536 bytes") {
		t.Fatalf("flooding program: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("flooding program ran for %s: its output was not cut off", took)
	}
	noChildren(t)
}

// TestCommandIgnoresStdin: a program that never reads its stdin still gets an answer out: it exits 0 and
// is accepted, the unread password notwithstanding.
func TestCommandIgnoresStdin(t *testing.T) {
	path, _ := script(t, "exit 0\n")
	c, _ := newTestCommand(t, path, 0)
	if _, err := c.Authenticate("alice", []byte(cmdPassword)); err != nil {
		t.Fatal(err)
	}
}

// TestCommandLogRedactsPassword: a failing program's output reaches the log as a warning, with the
// password replaced wherever the program echoed it.
func TestCommandLogRedactsPassword(t *testing.T) {
	path, _ := script(t, `read -r pw
echo "checking $pw for $1"
echo "no such user; password was $pw" >&2
exit 3
`)
	c, log := newTestCommand(t, path, 0)
	if _, err := c.Authenticate("alice", []byte(cmdPassword)); !errors.Is(err, ErrRejected) {
		t.Fatal(err)
	}
	got := log.String()
	if strings.Contains(got, "s3cret") {
		t.Fatalf("the password reached the log: %s", got)
	}
	if !strings.Contains(got, "level=WARN") || !strings.Contains(got, "checking [password] for alice") ||
		!strings.Contains(got, "password was [password]") || !strings.Contains(got, "exit status 3") {
		t.Fatalf("log: %s", got)
	}
}

// TestCommandRefusesWithoutRunning: logins that cannot exist and passwords that cannot be written as one
// line are refused without starting the program.
func TestCommandRefusesWithoutRunning(t *testing.T) {
	path, _ := script(t, "exit 0\n")
	c, _ := newTestCommand(t, path, 0)
	if _, err := c.Authenticate("al ice", []byte(cmdPassword)); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("malformed login: %v", err)
	}
	for _, pw := range []string{"", "two\nlines", "nul\x00byte"} {
		if _, err := c.Authenticate("alice", []byte(pw)); !errors.Is(err, ErrBadPassword) {
			t.Errorf("password %q: %v", pw, err)
		}
	}
	if n := c.Runs(); n != 0 {
		t.Errorf("the program ran %d times", n)
	}
	if _, ok := c.Lookup("al ice"); ok {
		t.Error("Lookup of a malformed login")
	}
	if u, ok := c.Lookup("anyone"); !ok || u != (User{Login: "anyone"}) {
		t.Errorf("Lookup(anyone) = %+v, %v", u, ok)
	}
}

// TestCheckCommand: the program must be an absolute path to a regular executable file that group and
// others cannot change; each refusal says what is wrong.
func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	good := write("good", 0o755)
	if err := CheckCommand(good); err != nil {
		t.Fatalf("%s: %v", good, err)
	}
	for _, tc := range []struct{ path, want string }{
		{"auth.sh", "not an absolute path"},
		{filepath.Join(dir, "missing"), "no such file"},
		{dir, "not a regular file"},
		{write("plain", 0o644), "not executable"},
		{write("shared", 0o775), "group or others can change it"},
	} {
		err := CheckCommand(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.path, err, tc.want)
		}
		if _, err := NewCommand(CommandConfig{Path: tc.path}, nil); err == nil {
			t.Errorf("NewCommand(%s) accepted it", tc.path)
		}
	}
}

// TestCommandCost: every login is charged CommandParams, one default-parameter hash's worth, whatever
// the login: the budget meters command runs as it meters hashes.
func TestCommandCost(t *testing.T) {
	path, _ := script(t, "exit 0\n")
	c, _ := newTestCommand(t, path, 0)
	if c.ParamsFor("alice") != CommandParams || c.ParamsFor("nobody") != CommandParams || c.MaxParams() != CommandParams {
		t.Fatal("command logins are charged differently")
	}
	if CommandParams.Cost() != DefaultParams.Cost() || CommandParams.validate() != nil {
		t.Fatalf("CommandParams %+v: cost %d, want %d", CommandParams, CommandParams.Cost(), DefaultParams.Cost())
	}
}

// TestCommandDropsAmbientCaps: the program starts without the gateway's ambient capabilities (the packaged
// unit grants CAP_NET_ADMIN and CAP_BPF so), which a plain exec would pass on. The test runs itself again
// under setpriv with CAP_NET_ADMIN ambient, and there compares a plain exec with the command's.
func TestCommandDropsAmbientCaps(t *testing.T) {
	if os.Getenv("SALVO_TEST_AMBIENT") == "" {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil || os.Geteuid() != 0 {
			t.Skip("needs root and setpriv to give the test an ambient capability")
		}
		cmd := exec.Command(setpriv, "--inh-caps", "+net_admin", "--ambient-caps", "+net_admin", os.Args[0],
			"-test.run=^TestCommandDropsAmbientCaps$", "-test.v")
		cmd.Env = append(os.Environ(), "SALVO_TEST_AMBIENT=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestCommandDropsAmbientCaps") {
			t.Fatalf("under setpriv: %v\n%s", err, out)
		}
		return
	}
	ambient := func(status []byte) string {
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, "CapAmb:"); ok {
				return strings.TrimSpace(v)
			}
		}
		t.Fatalf("no CapAmb in %q", status)
		return ""
	}
	plain, err := exec.Command("/bin/cat", "/proc/self/status").Output()
	if err != nil {
		t.Fatal(err)
	}
	if ambient(plain) == "0000000000000000" {
		t.Fatal("a plain exec has no ambient capability either: the test proves nothing")
	}
	path, dir := script(t, `cat /proc/self/status > "$(dirname "$0")/status"
`)
	c, _ := newTestCommand(t, path, 0)
	if _, err := c.Authenticate("alice", []byte(cmdPassword)); err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		t.Fatal(err)
	}
	if got := ambient(status); got != "0000000000000000" {
		t.Fatalf("the command started with ambient capabilities %s (a plain exec: %s)", got, ambient(plain))
	}
}
