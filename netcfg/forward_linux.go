package netcfg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	sysctlIPv4Forward = "/proc/sys/net/ipv4/ip_forward"
	sysctlIPv6Forward = "/proc/sys/net/ipv6/conf/all/forwarding"
)

// forwardKeys names the sysctls in the forwarding lock file.
var forwardKeys = map[string]string{"ipv4": sysctlIPv4Forward, "ipv6": sysctlIPv6Forward}

// EnableForwarding turns on IPv4 and/or IPv6 forwarding in the current
// namespace, shared with the other gateways of that namespace: forwarding
// goes back to what it was only when the last of them stops.
//
// They coordinate through dir/<netns-id>.forwarding.lock (dir as for Claim,
// created 0700). Every running gateway holds a shared flock on it. The first
// one (the one that finds no other holder) records the original values of
// both sysctls in the file, e.g. "ipv4=0\nipv6=0\n"; undo by the last one
// (the one that finds no other holder) writes them back and empties the file.
// If a holder crashes, its shared lock dies with it; a file that holds values
// while nobody holds the lock is therefore a crashed gateway's record, and
// those values are kept: they are the true originals, while the live sysctl
// now reads 1. Both values are recorded and restored even if only one family
// is enabled: gateways may differ in which families they enable.
//
// Note that IPv6 conf/all/forwarding=1 also makes interfaces with
// accept_ra=1 stop accepting router advertisements; a gateway that gets its
// own IPv6 address by SLAAC needs accept_ra=2 on that interface.
func EnableForwarding(dir string, v4, v6 bool) (undo func() error, err error) {
	if !v4 && !v6 {
		return func() error { return nil }, nil
	}
	ref, err := currentNS()
	if err != nil {
		return nil, err
	}
	fw, err := openForwarding(dir, v4, v6)
	if err != nil {
		ref.close()
		return nil, err
	}
	fw.ref = ref
	if err := ref.do(fw.join); err != nil {
		fw.f.Close()
		ref.close()
		return nil, err
	}
	u := &undoStack{onEmpty: ref.close}
	u.push(fw.leave)
	return u.run, nil
}

// forwarding is one gateway's share of the namespace's forwarding.
type forwarding struct {
	ref    *nsRef
	v4, v6 bool
	mu     sync.Mutex
	f      *os.File // the lock file, nil once left
}

func openForwarding(dir string, v4, v6 bool) (*forwarding, error) {
	id, err := netnsID()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("netcfg: forwarding: create lock directory: %w", err)
	}
	path := lockPath(dir, id, forwardingLock)
	f, err := openLockFile(path)
	if err != nil {
		return nil, fmt.Errorf("netcfg: forwarding: open lock file: %w", err)
	}
	return &forwarding{v4: v4, v6: v6, f: f}, nil
}

// join takes a shared lock on the file, recording the originals first if no
// other gateway holds it. Runs inside the namespace (sysctls).
//
// A blocking LOCK_EX would wait for every running gateway's shared lock, that
// is forever, so the exclusive lock is only ever tried (LOCK_NB). When it
// fails, others hold the file: a shared lock is enough, and waiting for it
// only waits out someone else's brief exclusive section. If the file is empty
// then, the last holder has just restored the originals and left; start over
// so that they are recorded again.
func (fw *forwarding) join() error {
	for {
		err := flock(fw.f, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return fw.joinFirst()
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("netcfg: forwarding: lock %s: %w", fw.f.Name(), err)
		}
		if err := flock(fw.f, unix.LOCK_SH); err != nil {
			return fmt.Errorf("netcfg: forwarding: lock %s shared: %w", fw.f.Name(), err)
		}
		rec, err := fw.readRecord()
		if err != nil {
			return err
		}
		if len(rec) == 0 {
			if err := flock(fw.f, unix.LOCK_UN); err != nil {
				return fmt.Errorf("netcfg: forwarding: unlock %s: %w", fw.f.Name(), err)
			}
			continue
		}
		return fw.switchOn()
	}
}

// joinFirst runs with the exclusive lock: no other gateway is running.
func (fw *forwarding) joinFirst() error {
	rec, err := fw.readRecord()
	if err != nil {
		return err
	}
	if err := fw.recordMissing(rec); err != nil {
		return err
	}
	if err := fw.switchOn(); err != nil {
		if rerr := fw.restore(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("netcfg: rollback: %w", rerr))
		}
		return err
	}
	// Linux converts the lock in one step. Were there a gap, only a starting
	// gateway could slip in (nobody else holds the file), and it would find
	// and keep our record.
	if err := flock(fw.f, unix.LOCK_SH); err != nil {
		return fmt.Errorf("netcfg: forwarding: lock %s shared: %w", fw.f.Name(), err)
	}
	return nil
}

// recordMissing adds the live value of every sysctl not yet in rec (all of
// them, unless a crashed gateway left its record). A sysctl that does not
// exist (IPv6 disabled) is left out.
func (fw *forwarding) recordMissing(rec map[string]string) error {
	added := false
	for key, path := range forwardKeys {
		if _, ok := rec[key]; ok {
			continue
		}
		v, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("netcfg: read %s: %w", path, err)
		}
		rec[key] = string(bytes.TrimSpace(v))
		added = true
	}
	if !added {
		return nil
	}
	return fw.writeRecord(rec)
}

func (fw *forwarding) switchOn() error {
	for _, k := range fw.wanted() {
		if err := os.WriteFile(k, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("netcfg: write 1 to %s: %w", k, err)
		}
	}
	return nil
}

func (fw *forwarding) wanted() []string {
	var keys []string
	if fw.v4 {
		keys = append(keys, sysctlIPv4Forward)
	}
	if fw.v6 {
		keys = append(keys, sysctlIPv6Forward)
	}
	return keys
}

// leave is the undo of EnableForwarding. If the exclusive lock is free, this
// is the last gateway: restore and empty the record. Otherwise another one
// still runs and needs forwarding on. (A failed upgrade also drops our shared
// lock, which is fine: we are closing the file anyway.)
func (fw *forwarding) leave() error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.f == nil {
		return nil
	}
	err := flock(fw.f, unix.LOCK_EX|unix.LOCK_NB)
	switch {
	case errors.Is(err, unix.EWOULDBLOCK):
		return fw.closeFile()
	case err != nil:
		return fmt.Errorf("netcfg: forwarding: lock %s: %w", fw.f.Name(), err)
	}
	if err := fw.ref.do(fw.restore); err != nil {
		// Stay a holder, so that a retry can try again and a gateway that
		// starts meanwhile neither waits for us nor records 1 as original.
		_ = flock(fw.f, unix.LOCK_SH)
		return err
	}
	return fw.closeFile()
}

// restore writes the recorded values back and empties the record. Needs the
// exclusive lock and the namespace.
func (fw *forwarding) restore() error {
	rec, err := fw.readRecord()
	if err != nil {
		return err
	}
	for key, v := range rec {
		path := forwardKeys[key]
		cur, err := os.ReadFile(path)
		if err == nil && string(bytes.TrimSpace(cur)) == v {
			continue
		}
		if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
			return fmt.Errorf("netcfg: restore %s to %s: %w", path, v, err)
		}
	}
	if err := fw.f.Truncate(0); err != nil {
		return fmt.Errorf("netcfg: forwarding: empty %s: %w", fw.f.Name(), err)
	}
	return nil
}

func (fw *forwarding) closeFile() error {
	err := fw.f.Close()
	fw.f = nil
	if err != nil {
		return fmt.Errorf("netcfg: forwarding: close lock file: %w", err)
	}
	return nil
}

// readRecord parses "key=value" lines; an empty file is an empty record.
// Unknown keys and values other than a number are refused rather than
// written into /proc.
func (fw *forwarding) readRecord() (map[string]string, error) {
	b, err := io.ReadAll(io.NewSectionReader(fw.f, 0, 1<<16))
	if err != nil {
		return nil, fmt.Errorf("netcfg: forwarding: read %s: %w", fw.f.Name(), err)
	}
	rec := map[string]string{}
	for _, line := range strings.Fields(string(b)) {
		key, v, ok := strings.Cut(line, "=")
		if _, known := forwardKeys[key]; !ok || !known || !isDigits(v) {
			return nil, fmt.Errorf("netcfg: forwarding: %s: bad line %q (want ipv4=N or ipv6=N)", fw.f.Name(), line)
		}
		rec[key] = v
	}
	return rec, nil
}

func (fw *forwarding) writeRecord(rec map[string]string) error {
	keys := make([]string, 0, len(rec))
	for k := range rec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, rec[k])
	}
	if err := fw.f.Truncate(0); err != nil {
		return fmt.Errorf("netcfg: forwarding: write %s: %w", fw.f.Name(), err)
	}
	if _, err := fw.f.WriteAt([]byte(b.String()), 0); err != nil {
		return fmt.Errorf("netcfg: forwarding: write %s: %w", fw.f.Name(), err)
	}
	return nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
