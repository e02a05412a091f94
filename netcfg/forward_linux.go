package netcfg

import (
	"bytes"
	"errors"
	"fmt"
	"os"
)

const (
	sysctlIPv4Forward = "/proc/sys/net/ipv4/ip_forward"
	sysctlIPv6Forward = "/proc/sys/net/ipv6/conf/all/forwarding"
)

// EnableForwarding turns on IPv4 and/or IPv6 forwarding in the current
// namespace. Undo restores the values found before, and only for the keys it
// actually changed (if forwarding was already on, undo leaves it on).
//
// Note that IPv6 conf/all/forwarding=1 also makes interfaces with
// accept_ra=1 stop accepting router advertisements; a gateway that gets its
// own IPv6 address by SLAAC needs accept_ra=2 on that interface.
func EnableForwarding(v4, v6 bool) (undo func() error, err error) {
	ref, err := currentNS()
	if err != nil {
		return nil, err
	}
	var keys []string
	if v4 {
		keys = append(keys, sysctlIPv4Forward)
	}
	if v6 {
		keys = append(keys, sysctlIPv6Forward)
	}
	u := &undoStack{onEmpty: ref.close}
	err = ref.do(func() error {
		for _, k := range keys {
			old, err := os.ReadFile(k)
			if err != nil {
				return fmt.Errorf("netcfg: read %s: %w", k, err)
			}
			old = bytes.TrimSpace(old)
			if string(old) == "1" {
				continue
			}
			if err := os.WriteFile(k, []byte("1\n"), 0o644); err != nil {
				return fmt.Errorf("netcfg: write 1 to %s: %w", k, err)
			}
			u.push(func() error {
				return ref.do(func() error {
					if err := os.WriteFile(k, append(old, '\n'), 0o644); err != nil {
						return fmt.Errorf("netcfg: restore %s to %s: %w", k, old, err)
					}
					return nil
				})
			})
		}
		return nil
	})
	if err != nil {
		if uerr := u.run(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("netcfg: rollback: %w", uerr))
		}
		return nil, err
	}
	return u.run, nil
}
