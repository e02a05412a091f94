//go:build unix

package secretfile

import (
	"io/fs"
	"syscall"
)

// O_NONBLOCK makes opening a named pipe return at once instead of waiting
// for a writer; reads of regular files are unaffected by it.
const openFlags = syscall.O_NONBLOCK | syscall.O_NOCTTY

func owner(fi fs.FileInfo) (uid uint32, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}
