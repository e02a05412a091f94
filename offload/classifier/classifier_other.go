//go:build !linux

package classifier

import (
	"net/netip"
	"syscall"
)

// Classifier is Linux-only; elsewhere Load always fails with ErrUnsupported.
type Classifier struct{}

// Load returns ErrUnsupported: eBPF socket programs exist only on Linux.
func Load(Config) (*Classifier, error) { return nil, ErrUnsupported }

// Supported returns ErrUnsupported.
func Supported() error { return ErrUnsupported }

func (*Classifier) AttachGroup([]syscall.RawConn) error { return ErrUnsupported }
func (*Classifier) AttachTUN(syscall.RawConn) error     { return ErrUnsupported }
func (*Classifier) AddSession(uint32) error             { return ErrUnsupported }
func (*Classifier) RemoveSession(uint32) error          { return ErrUnsupported }
func (*Classifier) SetRoute(netip.Prefix, uint32) error { return ErrUnsupported }
func (*Classifier) DeleteRoute(netip.Prefix) error      { return ErrUnsupported }
func (*Classifier) Stats() (Stats, error)               { return Stats{}, ErrUnsupported }
func (*Classifier) Close() error                        { return nil }
