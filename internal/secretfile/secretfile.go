// Package secretfile refuses to use a secret file (the gateway's private key,
// the users file, a client's password file) that other users could read or
// replace.
//
// The rule is OpenSSH's for private keys: the file must be a regular file
// (a symlink is followed; a directory, device, pipe or socket is refused),
// neither its group nor others may read or write it, and it must be owned by
// the effective user or by root. Root is accepted as an owner because a file
// only root can change is no less trustworthy; any other owner could have
// swapped the contents for their own key or password hashes.
//
// Errors say what the file is, where it is, what is wrong and the command
// that fixes it, for example:
//
//	users file /etc/salvo/users is mode 0644: group or others can read it; run chmod 600 /etc/salvo/users
//
// Every refusal wraps [ErrInsecure]. Errors from the file system (a missing
// file, say) wrap the underlying error instead, so errors.Is(err,
// fs.ErrNotExist) still works.
package secretfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// ErrInsecure is wrapped by every error about a file's type, owner or mode.
var ErrInsecure = errors.New("insecure secret file")

// groupOtherRW are the permission bits that let someone other than the owner
// read or write the file. Execute bits alone expose nothing and are allowed.
const groupOtherRW fs.FileMode = 0o066

type insecureError struct{ msg string }

func (e *insecureError) Error() string { return e.msg }
func (e *insecureError) Unwrap() error { return ErrInsecure }

// Check returns an error unless the file at path (after following symlinks)
// is a regular file that only its owner can read or write and that is owned
// by the effective user or by root. what names the file in errors, such as
// "users file" or "private key file".
//
// Check alone leaves a window between the check and a later open; to read a
// secret, use [Read], which checks the file it has opened.
func Check(path, what string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return check(fi, path, what, os.Geteuid())
}

// Read opens path once, checks the opened file as [Check] does (with
// f.Stat, so a rename between the check and the read cannot slip another
// file in), and returns its contents. A file larger than max bytes is an
// error; at most max+1 bytes are read to find out.
//
// The file is opened without blocking, so a named pipe at path is refused
// rather than hanging the caller until someone writes to it.
func Read(path, what string, max int64) ([]byte, error) {
	if max < 0 {
		return nil, fmt.Errorf("%s %s: negative size limit %d", what, path, max)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|openFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := check(fi, path, what, os.Geteuid()); err != nil {
		return nil, err
	}
	if fi.Size() > max {
		return nil, tooLarge(path, what, max)
	}
	// The size can change after Stat (or be unknown, as in /proc), so the
	// limit is enforced on what is actually read.
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if int64(len(data)) > max {
		clear(data)
		return nil, tooLarge(path, what, max)
	}
	return data, nil
}

func tooLarge(path, what string, max int64) error {
	return fmt.Errorf("%s %s is larger than %d bytes; is it the right file?", what, path, max)
}

// check applies the rule to fi, the information of the file at path, for a
// process whose effective user id is euid.
func check(fi fs.FileInfo, path, what string, euid int) error {
	mode := fi.Mode()
	if !mode.IsRegular() {
		return &insecureError{fmt.Sprintf("%s %s is %s, not a regular file; point the configuration at the file itself",
			what, path, typeName(mode))}
	}
	if uid, ok := owner(fi); ok && uid != 0 && int64(uid) != int64(euid) {
		want := fmt.Sprintf("root or uid %d (the user salvo runs as)", euid)
		if euid == 0 {
			want = "root (the user salvo runs as)"
		}
		return &insecureError{fmt.Sprintf("%s %s is owned by uid %d: it must be owned by %s; run chown %d %s",
			what, path, uid, want, euid, shellQuote(path))}
	}
	if perm := mode.Perm(); perm&groupOtherRW != 0 {
		var can string
		switch r, w := perm&0o044 != 0, perm&0o022 != 0; {
		case r && w:
			can = "read and write it"
		case r:
			can = "read it"
		default:
			can = "write it"
		}
		return &insecureError{fmt.Sprintf("%s %s is mode %04o: group or others can %s; run chmod 600 %s",
			what, path, perm, can, shellQuote(path))}
	}
	return nil
}

func typeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeDevice != 0 && m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link" // only from a caller that used Lstat
	}
	return "not a regular file (" + m.Type().String() + ")"
}

// shellQuote returns path as it can be pasted into a shell command.
func shellQuote(path string) string {
	if path != "" && strings.Trim(path, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:@,") == "" {
		return path
	}
	return "'" + strings.ReplaceAll(path, "'", `'\''`) + "'"
}
