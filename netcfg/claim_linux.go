package netcfg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrClaimed is wrapped by the errors of Claim when another live process
// holds a resource.
var ErrClaimed = errors.New("resource claimed by another process")

// ClaimError reports a resource held by another process.
type ClaimError struct {
	Resource string
	PID      int    // holder's PID as written in the lock file; 0 if it could not be read
	Path     string // the lock file
}

func (e *ClaimError) Error() string {
	holder := "another salvo process"
	if e.PID > 0 {
		holder = fmt.Sprintf("salvo process %d", e.PID)
	}
	return fmt.Sprintf("netcfg: %s is in use by %s (lock file %s)", e.Resource, holder, e.Path)
}

func (e *ClaimError) Unwrap() error { return ErrClaimed }

// forwardingLock is the lock file name EnableForwarding uses; Claim refuses
// it as a resource name so that the two never share a file.
const forwardingLock = "forwarding"

// Claim takes exclusive claims on named resources of the calling thread's
// network namespace, e.g. "tun-salvo0", "table-51820", "fwmark-0x5a17" (the
// caller chooses the names; they must match [A-Za-z0-9._-]+). Each claim is
// an flock(LOCK_EX) on dir/<netns-id>.<resource>.lock, netns-id being the
// inode number of the namespace, so that the same names in two namespaces
// never collide. The holder's PID is written into the file for the error
// message of whoever finds the claim taken.
//
// A lock dies with its process, so a crashed holder never blocks the next
// start, and a process that gets a claim knows that whatever it finds under
// that name (routes in the table, rules with the fwmark) is a crashed
// predecessor's leftovers and its own to clean up.
//
// All or nothing: if any resource is held by another process, the claims
// already taken are released and the error (a *ClaimError wrapping
// ErrClaimed) names the resource and the holder's PID. Claims are per open
// file, so a second Claim of the same resource in the same process fails
// too. dir is created with mode 0700 if missing. release unlocks and removes
// the files; calling it again is a no-op.
func Claim(dir string, resources ...string) (release func() error, err error) {
	if err := validateResources(resources); err != nil {
		return nil, err
	}
	id, err := netnsID()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("netcfg: create claims directory: %w", err)
	}
	c := &claims{}
	for _, res := range resources {
		f, err := claimOne(lockPath(dir, id, res), res)
		if err != nil {
			if rerr := c.release(); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return nil, err
		}
		c.files = append(c.files, f)
	}
	return c.release, nil
}

func validateResources(resources []string) error {
	if len(resources) == 0 {
		return errors.New("netcfg: claim: no resource named")
	}
	seen := make(map[string]bool, len(resources))
	for _, r := range resources {
		switch {
		case !validResource(r):
			return fmt.Errorf("netcfg: claim: invalid resource name %q (want [A-Za-z0-9._-]+)", r)
		case r == forwardingLock:
			return fmt.Errorf("netcfg: claim: resource name %q is reserved for EnableForwarding", r)
		case seen[r]:
			return fmt.Errorf("netcfg: claim: resource %q named twice", r)
		}
		seen[r] = true
	}
	return nil
}

func validResource(r string) bool {
	if r == "" || r == "." || r == ".." {
		return false
	}
	for _, c := range r {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// netnsID returns the inode number of the calling thread's network
// namespace, which identifies it for as long as it exists.
func netnsID() (uint64, error) {
	// Lock so that the thread we ask about is the thread we are on.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("netcfg: identify network namespace: stat /proc/thread-self/ns/net: %w", err)
	}
	return st.Ino, nil
}

func lockPath(dir string, netns uint64, name string) string {
	return filepath.Join(dir, fmt.Sprintf("%d.%s.lock", netns, name))
}

// openLockFile opens (creating) a lock file. O_NOFOLLOW: a symlink planted
// in the directory must not make us truncate another file.
func openLockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
}

// claimOne locks path exclusively and writes our PID into it.
//
// The holder removes its file before unlocking (see claims.release), so a
// lock taken on a file that was just removed is worthless: a third process
// would create and lock a new file under the same name. Hence the check
// that path still names the file we locked, and the retry if not.
func claimOne(path, res string) (*os.File, error) {
	for {
		f, err := openLockFile(path)
		if err != nil {
			return nil, fmt.Errorf("netcfg: claim %s: open %s: %w", res, path, err)
		}
		if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			pid := readPID(f)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &ClaimError{Resource: res, PID: pid, Path: path}
			}
			return nil, fmt.Errorf("netcfg: claim %s: lock %s: %w", res, path, err)
		}
		same, err := sameFile(f, path)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("netcfg: claim %s: %w", res, err)
		}
		if !same {
			f.Close()
			continue
		}
		if err := writePID(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("netcfg: claim %s: write PID to %s: %w", res, path, err)
		}
		return f, nil
	}
}

// flock retries on EINTR, which a blocking lock gets when a signal arrives.
func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// sameFile reports whether path still names the open file f.
func sameFile(f *os.File, path string) (bool, error) {
	var fst, pst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		return false, fmt.Errorf("fstat %s: %w", path, err)
	}
	if err := unix.Lstat(path, &pst); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	return fst.Dev == pst.Dev && fst.Ino == pst.Ino, nil
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// readPID returns the PID in a lock file, 0 if there is none (the holder
// may not have written it yet).
func readPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// claims is what one Claim call holds.
type claims struct {
	mu    sync.Mutex
	files []*os.File
}

// release removes each file while still holding its lock, then closes it
// (which unlocks). Removing first means nobody can lock the old file after
// we are done with it and believe the claim is theirs (see claimOne).
func (c *claims) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, f := range c.files {
		if err := os.Remove(f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("netcfg: release claim: remove %s: %w", f.Name(), err))
		}
		if err := f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("netcfg: release claim: close %s: %w", f.Name(), err))
		}
	}
	c.files = nil
	return errors.Join(errs...)
}
