//go:build unix

package tickets

import (
	"io/fs"
	"syscall"
)

// inode tells a replaced file (a rename over it) from the same one rewritten in place.
func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
