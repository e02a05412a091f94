package daemon

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestNeedsNetAdmin(t *testing.T) {
	perm := fmt.Errorf("create TUN salvo0: %w", &os.PathError{Op: "ioctl", Path: "/dev/net/tun", Err: syscall.EPERM})
	if got := needsNetAdmin(perm).Error(); !strings.Contains(got, "needs CAP_NET_ADMIN") || !strings.Contains(got, "create TUN salvo0") {
		t.Errorf("EPERM: %q", got)
	}
	access := fmt.Errorf("users file: %w", &os.PathError{Op: "open", Path: "/etc/salvo/users", Err: syscall.EACCES})
	if got := needsNetAdmin(access); got != access {
		t.Errorf("EACCES changed: %q", got)
	}
	if needsNetAdmin(nil) != nil {
		t.Error("nil changed")
	}
}
