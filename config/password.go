package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// MaxPasswordLen is the longest password the login message can carry
// (PROTOCOL.md: 1-byte length, 0..128).
const MaxPasswordLen = 128

// ResolvePassword returns the client's password from, in order:
// password_file (one trailing newline removed), the environment variable
// named by password_env, or prompt (if neither is set). The caller should
// zero the returned slice when done with it.
//
// The password file's permissions are not checked; keep it mode 0600, owned
// by the user running the client. Errors never contain the password.
func ResolvePassword(c *Client, prompt func() ([]byte, error)) ([]byte, error) {
	var (
		pw     []byte
		source string
	)
	switch {
	case c.PasswordFile != "":
		source = "password_file " + c.PasswordFile
		f, err := os.Open(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		// Read at most one byte more than a password with CRLF can need.
		pw, err = io.ReadAll(io.LimitReader(f, MaxPasswordLen+3))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
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
	case len(pw) > MaxPasswordLen:
		clear(pw)
		return nil, fmt.Errorf("%s: the password is longer than %d bytes", source, MaxPasswordLen)
	case bytes.IndexByte(pw, '\n') >= 0:
		clear(pw)
		return nil, fmt.Errorf("%s: the password contains a line break (only one trailing newline is removed)", source)
	}
	return pw, nil
}

// TerminalPrompt returns a prompt for ResolvePassword that writes msg to
// out and reads a password without echo from the terminal on fd (usually
// os.Stdin's). It fails if fd is not a terminal rather than reading a
// password that would be echoed.
func TerminalPrompt(fd int, out io.Writer, msg string) func() ([]byte, error) {
	return func() ([]byte, error) {
		if !term.IsTerminal(fd) {
			return nil, errors.New("standard input is not a terminal; set password_file or password_env")
		}
		fmt.Fprint(out, msg)
		pw, err := term.ReadPassword(fd)
		fmt.Fprintln(out)
		return pw, err
	}
}
