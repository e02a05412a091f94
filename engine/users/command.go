package users

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/salvovpn/salvo/internal/loginlimits"
)

// Command authenticates logins by running an external program, in the manner of OpenVPN's
// auth-user-pass-verify. It is the backend for auth = "command".
//
// # The contract with the program
//
//   - It is run directly (no shell) as PATH LOGIN: the login is its only argument, and is also in the
//     environment as SALVO_LOGIN. A login is 1..64 characters of [A-Za-z0-9._@-]; it may begin with "-",
//     so a script should not hand it to another program where an option could go.
//   - The password is written to its standard input, followed by one newline, and standard input is then
//     closed. The password is never in its arguments or environment, which other local users can read
//     in /proc. A password holding a newline or a NUL byte is refused without running the program (a
//     script reading a line would see only part of it).
//   - The environment holds nothing else but PATH: nothing of the gateway's own environment leaks to it.
//     Its working directory is /. It starts without the gateway's ambient capabilities (see run).
//   - Exit status 0 accepts the login; anything else (another status, a signal, a timeout, more output
//     than maxCommandOutput) rejects it, and the client is told "bad credentials" as for a wrong password.
//   - It must finish within the timeout (DefaultCommandTimeout unless configured). Then its whole process
//     group is killed with SIGKILL, and so is anything it left running in its group when it exits.
//   - Its standard output and error are read together, up to maxCommandOutput bytes, and only for the
//     gateway's log, with every occurrence of the password replaced by "[password]".
//
// # What the gateway knows of a command user
//
// Only the program knows who may log in, and it can only be asked with a password, which the gateway
// does not keep. So Lookup answers for every well-formed login: a command user is never disabled and has
// no fixed address (leases come from the pools, the same instance getting the same address as for file
// users), and a session is not ended by a reload. What ends the session of a user the program now
// rejects is the login it must make again: the configuration requires max_session_age with auth =
// "command", and the first rekey after it makes the client log in with its password, which runs the
// program.
//
// # Cost and timing
//
// Each run is charged CommandParams to the gateway's hashing budget: the cost of one hash with
// DefaultParams, so the default budget allows ten runs a second, the same as ten default-parameter
// logins. That bounds how hard anyone can make the gateway hit the program (and whatever it asks: a
// directory that locks accounts after failures, say). CommandParams' memory is small, so runs do not
// queue behind each other on the gateway's hash-memory semaphore; at most maxConcurrentCommands run at
// once.
//
// Every well-formed login runs the program once, known or not, so the gateway adds no timing of its own
// that depends on whether a user exists; and it pads every failure to its slowest answer so far, which
// hides much of the program's own timing too.
type Command struct {
	cfg   atomic.Pointer[CommandConfig]
	slots chan struct{} // bounds the runs at once
	log   *slog.Logger
	runs  atomic.Uint64
}

// CommandConfig is what Command runs.
type CommandConfig struct {
	Path    string        // absolute path of the executable
	Timeout time.Duration // 0: DefaultCommandTimeout
}

const (
	// DefaultCommandTimeout is how long the program may take by default (see loginlimits).
	DefaultCommandTimeout = loginlimits.CommandTimeout
	// maxCommandOutput bounds what is read of the program's standard output and error together; more is
	// an error (the pipe is closed, so a program that keeps writing dies of SIGPIPE).
	maxCommandOutput = 64 << 10
	// logExcerpt is how much of the output goes to the log.
	logExcerpt = 512
	// maxConcurrentCommands bounds the programs running at once. The gateway's handshake workers are its
	// only callers today, and there are fewer of them, so this only matters if logins ever run
	// concurrently.
	maxConcurrentCommands = 4
	// commandWaitDelay is how long the output pipe may stay open after the program exits: a process it
	// moved out of its process group could hold it forever.
	commandWaitDelay = 500 * time.Millisecond
)

// CommandParams is what one run of the program is charged to the hashing budget: DefaultParams' cost
// (64 MiB x 2 passes) with 4 MiB of memory, below the size at which the gateway collects garbage after a
// hash, and a small share of its hash-memory semaphore.
var CommandParams = Params{Memory: 4 * 1024, Time: 32, Threads: 1}

var (
	// ErrRejected: the program rejected the login (or failed, or took too long).
	ErrRejected = errors.New("rejected by the auth command")
	// errOutputLimit: the program wrote more than maxCommandOutput bytes.
	errOutputLimit = fmt.Errorf("wrote more than %d bytes of output", maxCommandOutput)
)

var _ Authenticator = (*Command)(nil)

// CheckCommand returns an error unless path is an absolute path to a regular file that can be executed
// and that only root or the gateway's user can change: whoever can change it decides who logs in.
func CheckCommand(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%q is not an absolute path", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	switch mode := fi.Mode(); {
	case !mode.IsRegular():
		return fmt.Errorf("%s is not a regular file", path)
	case mode.Perm()&0o111 == 0:
		return fmt.Errorf("%s is not executable (mode %04o); run chmod 755 %s", path, mode.Perm(), path)
	case mode.Perm()&0o022 != 0:
		return fmt.Errorf("%s is mode %04o: group or others can change it, and so decide who logs in; run chmod go-w %s", path, mode.Perm(), path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s is owned by uid %d: it must be owned by root or by the user salvo runs as (uid %d)", path, st.Uid, os.Geteuid())
	}
	return nil
}

// NewCommand returns a backend running cfg.Path (checked with CheckCommand). log gets a line for every
// run that fails in a way an administrator should see, never with the password.
func NewCommand(cfg CommandConfig, log *slog.Logger) (*Command, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Command{slots: make(chan struct{}, maxConcurrentCommands), log: log}
	if err := c.Set(cfg); err != nil {
		return nil, err
	}
	return c, nil
}

// Set replaces the program or its timeout (on reload); runs under way finish with the old ones.
func (c *Command) Set(cfg CommandConfig) error {
	if err := CheckCommand(cfg.Path); err != nil {
		return err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultCommandTimeout
	}
	c.cfg.Store(&cfg)
	return nil
}

// Runs is how many times the program was started.
func (c *Command) Runs() uint64 { return c.runs.Load() }

// Lookup answers for every well-formed login (see the type's documentation for why).
func (c *Command) Lookup(login string) (User, bool) {
	if CheckLogin(login) != nil {
		return User{}, false
	}
	return User{Login: login}, true
}

// ParamsFor is CommandParams for every login: each costs one run.
func (c *Command) ParamsFor(string) Params { return CommandParams }

// MaxParams is CommandParams.
func (c *Command) MaxParams() Params { return CommandParams }

// Users is nil: the gateway knows no command user before they log in.
func (c *Command) Users() []User { return nil }

// Authenticate runs the program for login and password. It returns ErrUnknownUser for a malformed
// login and ErrBadPassword for a password that cannot be written as one line, both without running it,
// and ErrRejected (wrapped) for every other failure.
func (c *Command) Authenticate(login string, password []byte) (User, error) {
	if CheckLogin(login) != nil {
		return User{}, ErrUnknownUser
	}
	if len(password) == 0 || bytes.ContainsAny(password, "\n\x00") {
		return User{}, ErrBadPassword
	}
	cfg := c.cfg.Load()
	wait := time.NewTimer(cfg.Timeout)
	defer wait.Stop()
	select {
	case c.slots <- struct{}{}:
	case <-wait.C:
		c.log.Warn("auth command: too many runs at once; login rejected", "user", login, "limit", maxConcurrentCommands)
		return User{}, fmt.Errorf("%w: too many runs at once", ErrRejected)
	}
	defer func() { <-c.slots }()
	c.runs.Add(1)
	res := run(cfg, login, password)
	if res.err == nil {
		return User{Login: login}, nil
	}
	attrs := []any{"user", login, "command", cfg.Path, "took", res.took.Round(time.Millisecond), "err", res.err}
	if len(res.output) > 0 {
		attrs = append(attrs, "output", excerpt(res.output, password))
	}
	if res.status == 1 {
		// The ordinary "no": a wrong password is not an administrator's business.
		c.log.Debug("auth command rejected the login", attrs...)
	} else {
		c.log.Warn("auth command failed; login rejected", attrs...)
	}
	return User{}, fmt.Errorf("%w: %v", ErrRejected, res.err)
}

// result is what one run did. status is the exit status, or -1 if it did not exit by itself.
type result struct {
	err    error
	status int
	output []byte
	took   time.Duration
}

// excerpt is the start of out for the log, with the password replaced wherever it occurs. The
// replacement is made in all of out first, so the cut cannot leave part of an occurrence behind.
func excerpt(out, password []byte) string {
	out = bytes.ReplaceAll(out, password, []byte("[password]"))
	if len(out) > logExcerpt {
		out = append(out[:logExcerpt:logExcerpt], "..."...)
	}
	return string(out)
}

// cappedBuffer keeps what the program writes, up to max bytes, and then fails the write, which makes
// os/exec close the pipe.
type cappedBuffer struct {
	buf  []byte
	max  int
	over bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - len(b.buf); len(p) > room {
		b.buf, b.over = append(b.buf, p[:room]...), true
		return room, errOutputLimit
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}
