package netcfg

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// nsRef pins the namespace a call started in, so that undo functions (which
// may run much later, from any goroutine) act on the same namespace.
type nsRef struct {
	ns netns.NsHandle
}

// currentNS opens a handle on the calling thread's network namespace.
func currentNS() (*nsRef, error) {
	// Lock so that the thread we ask about is the thread we are on.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("netcfg: open current network namespace: %w", err)
	}
	return &nsRef{ns: h}, nil
}

func (r *nsRef) close() {
	if r.ns.IsOpen() {
		_ = r.ns.Close()
	}
}

// inCurrent reports whether the calling thread is in the pinned namespace. Sockets can then be opened
// directly: entering a namespace (setns), even the one a thread is already in, needs CAP_SYS_ADMIN, which
// the gateway and client otherwise do not need (CAP_NET_ADMIN does everything else). Undo functions that
// run later from another thread of another namespace still take the setns path.
func (r *nsRef) inCurrent() bool {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cur, err := netns.Get()
	if err != nil {
		return false
	}
	defer cur.Close()
	return cur.Equal(r.ns)
}

// netlink opens a netlink handle whose sockets live in the pinned namespace.
func (r *nsRef) netlink() (*netlink.Handle, error) {
	if r.inCurrent() {
		h, err := netlink.NewHandle(netlinkRoute)
		if err != nil {
			return nil, fmt.Errorf("netcfg: netlink socket: %w", err)
		}
		return h, nil
	}
	h, err := netlink.NewHandleAt(r.ns, netlinkRoute)
	if err != nil {
		return nil, fmt.Errorf("netcfg: netlink socket in namespace: %w", err)
	}
	return h, nil
}

// do runs fn on a thread that is in the pinned namespace. Needed for things
// that resolve the namespace per call rather than per socket: /proc/sys/net.
// If the thread cannot be switched back it stays locked and dies with the
// goroutine rather than leaking into the runtime's thread pool.
func (r *nsRef) do(fn func() error) error {
	runtime.LockOSThread()
	cur, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netcfg: open current network namespace: %w", err)
	}
	defer cur.Close()
	if cur.Equal(r.ns) {
		defer runtime.UnlockOSThread()
		return fn()
	}
	if err := netns.Set(r.ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netcfg: enter network namespace: %w", err)
	}
	ferr := fn()
	if err := netns.Set(cur); err != nil {
		return errors.Join(ferr, fmt.Errorf("netcfg: return to original network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}
