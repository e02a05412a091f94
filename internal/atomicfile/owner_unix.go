//go:build unix

package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// keepOwner gives the temporary file f the owner and group of the file at
// path, if path exists and they differ. Changing the owner needs root (or
// CAP_CHOWN); without it, replacing another user's file fails here rather
// than leaving that user unable to read it.
func keepOwner(f *os.File, path string) error {
	old, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	want, ok := old.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	cur, err := f.Stat()
	if err != nil {
		return err
	}
	have, ok := cur.Sys().(*syscall.Stat_t)
	if !ok || have.Uid == want.Uid && have.Gid == want.Gid {
		return nil
	}
	if have.Uid == want.Uid {
		// Only the group differs. The file is mode 0600, so its group grants
		// nothing; keep it if allowed, but do not fail over it.
		_ = f.Chown(-1, int(want.Gid))
		return nil
	}
	if err := f.Chown(int(want.Uid), int(want.Gid)); err != nil {
		return fmt.Errorf("keeping the file's owner uid %d: %w", want.Uid, err)
	}
	return nil
}
