// Package control is the admin API of a running gateway or client: HTTP over a unix socket that only root
// can open. The daemon decides the routes; this package serves them and is the client `salvo status`,
// `salvo kick` and the tests use.
//
// Routes (see the engine's handlers): GET /status on both; on the gateway also GET /sessions and
// POST /sessions/{user}/disconnect. Errors are JSON objects {"error": "..."} with a matching status code.
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// requestTimeout bounds one admin request, both ways: a stuck client cannot hold the daemon's goroutines.
const requestTimeout = 5 * time.Second

// Serve serves h on a unix socket at path until ctx ends. It refuses to take over a socket another process
// is listening on, removes a stale socket file first and its own socket on return. The directory is created
// 0700 and the socket chmod 0600, so only root (the owner) can connect.
func Serve(ctx context.Context, path string, h http.Handler) error {
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
	defer os.Remove(path)
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	srv := &http.Server{Handler: h, ReadTimeout: requestTimeout, WriteTimeout: requestTimeout,
		ReadHeaderTimeout: requestTimeout, MaxHeaderBytes: 16 << 10}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	return nil
}

// WriteJSON answers with v as JSON and the given status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers with {"error": msg}.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, map[string]string{"error": msg})
}

// ErrNotListening is Do's error when nothing listens on the socket (it does not exist, or refuses).
var ErrNotListening = errors.New("no Salvo process is listening")

func client(path string) *http.Client {
	return &http.Client{Timeout: requestTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// Do sends method urlPath (e.g. "GET", "/status") to the daemon listening on path and decodes the JSON
// answer into out (nil: ignore it). A non-2xx answer becomes an error carrying the daemon's message.
func Do(path, method, urlPath string, out any) error {
	req, err := http.NewRequest(method, "http://salvo"+urlPath, nil)
	if err != nil {
		return err
	}
	resp, err := client(path).Do(req)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
			return fmt.Errorf("%w on %s (is it running? see --socket)", ErrNotListening, path)
		case errors.Is(err, os.ErrPermission):
			return fmt.Errorf("connect %s: permission denied (the control socket is root's)", path)
		}
		return fmt.Errorf("connect %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s on %s: %w", method, urlPath, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s %s on %s: %s", method, urlPath, path, resp.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(out); err != nil {
		return fmt.Errorf("%s %s on %s: bad answer: %w", method, urlPath, path, err)
	}
	return nil
}

// Query reads GET /status into out.
func Query(path string, out any) error { return Do(path, http.MethodGet, "/status", out) }
