// Package atomicfile replaces files so that a crash at any moment leaves either the old or the new
// content, never a mix or nothing.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with data: it writes a temporary file in the same directory with mode perm, syncs
// it, renames it over path and syncs the directory, so the rename itself is durable. The temporary file is
// removed on any failure.
//
// A file that is replaced keeps its owner and group: root editing the users file of a gateway that runs as
// another user must not leave it a file that user can no longer read. Changing the owner needs root (or
// CAP_CHOWN); without it, replacing another user's file fails before anything is renamed.
func Write(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = keepOwner(f, path); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
