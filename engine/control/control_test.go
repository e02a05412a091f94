package control

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestServeQuery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl", "s.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, path, func() any { return map[string]int{"sessions": 3} }) }()
	var got map[string]int
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := Query(path, &got)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // waiting for the listener to exist; no event to await across processes
	}
	if got["sessions"] != 3 {
		t.Fatalf("got %v", got)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v", fi.Mode(), err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	if err := Query(path, &got); err == nil {
		t.Fatal("query after close succeeded")
	}
}
