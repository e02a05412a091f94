package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/salvovpn/salvo/internal/secretfile"
	"github.com/salvovpn/salvo/protocol"
)

// ResolvePassword returns the client's password from, in order:
// password_file (one trailing newline removed), the environment variable
// named by password_env, or prompt (if neither is set). The caller should
// zero the returned slice when done with it.
//
// A password file that group or others can read, or that another user owns,
// is refused (secretfile). The variable named by password_env is removed from
// the environment once read. Errors never contain the password.
func ResolvePassword(c *Client, prompt func() ([]byte, error)) ([]byte, error) {
	var (
		pw     []byte
		source string
	)
	switch {
	case c.PasswordFile != "":
		source = "password_file " + c.PasswordFile
		// At most one byte more than a password with CRLF can need; refused if others can read it.
		var err error
		if pw, err = secretfile.Read(c.PasswordFile, "password_file", protocol.MaxPasswordLen+2); err != nil {
			return nil, err
		}
		if n := len(pw); n > 0 && pw[n-1] == '\n' {
			pw = pw[:n-1]
			if n := len(pw); n > 0 && pw[n-1] == '\r' {
				pw = pw[:n-1]
			}
		}
	case c.PasswordEnv != "":
		source = "password_env " + c.PasswordEnv
		v, ok := os.LookupEnv(c.PasswordEnv)
		if !ok {
			return nil, fmt.Errorf("%s: environment variable %s is not set", source, c.PasswordEnv)
		}
		pw = []byte(v)
		// Out of the environment at once: child processes (resolvectl, resolvconf) and /proc/PID/environ
		// readers must not see it. (Go cannot wipe the string it copied; the process's own environ block
		// is rewritten by Unsetenv.)
		if err := os.Unsetenv(c.PasswordEnv); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	default:
		source = "password prompt"
		if prompt == nil {
			return nil, errors.New("no password: set password_file or password_env, or run on a terminal to be prompted")
		}
		var err error
		if pw, err = prompt(); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	}
	switch {
	case len(pw) == 0:
		return nil, fmt.Errorf("%s: the password is empty", source)
	case len(pw) > protocol.MaxPasswordLen:
		clear(pw)
		return nil, fmt.Errorf("%s: the password is longer than %d bytes", source, protocol.MaxPasswordLen)
	case bytes.IndexByte(pw, '\n') >= 0:
		clear(pw)
		return nil, fmt.Errorf("%s: the password contains a line break (only one trailing newline is removed)", source)
	}
	return pw, nil
}

// ErrNotTerminal is TerminalPrompt's error when fd is not a terminal; callers
// add what to do instead.
var ErrNotTerminal = errors.New("standard input is not a terminal")

// TerminalPrompt returns a prompt that writes msg to out and reads a password
// without echo from the terminal on fd (usually os.Stdin's). It fails with
// ErrNotTerminal if fd is not a terminal rather than reading a password that
// would be echoed.
func TerminalPrompt(fd int, out io.Writer, msg string) func() ([]byte, error) {
	return func() ([]byte, error) {
		if !term.IsTerminal(fd) {
			return nil, ErrNotTerminal
		}
		fmt.Fprint(out, msg)
		pw, err := term.ReadPassword(fd)
		fmt.Fprintln(out)
		return pw, err
	}
}
