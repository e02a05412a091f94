// Package control serves a running gateway's or client's status over a unix socket that only root can
// open, and reads it for `salvo status`.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Serve answers every connection on path with the JSON encoding of status(). It removes a stale socket
// file first and the socket on return. The directory is created 0700 and the socket chmod 0600, so only
// root (the owner) can connect.
func Serve(ctx context.Context, path string, status func() any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("control socket %s: another process is listening there", path)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	defer os.Remove(path)
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("control socket %s: %w", path, err)
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			// One request line ("status"); anything else is answered the same way for now.
			_, _ = bufio.NewReader(c).ReadString('\n')
			_ = json.NewEncoder(c).Encode(status())
		}()
	}
}

// Query connects to path and decodes the status into out.
func Query(path string, out any) error {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no Salvo process is listening on %s (is it running? see --socket)", path)
		}
		return fmt.Errorf("connect %s: %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("status\n")); err != nil {
		return fmt.Errorf("query %s: %w", path, err)
	}
	if err := json.NewDecoder(c).Decode(out); err != nil {
		return fmt.Errorf("read status from %s: %w", path, err)
	}
	return nil
}
