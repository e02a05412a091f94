//go:build !linux

package users

import "errors"

// run: the program's process group, capabilities and reaping are done with Linux system calls.
func run(*CommandConfig, string, []byte) result {
	return result{err: errors.New("an auth command is only supported on Linux"), status: -1}
}
