package control

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServeQuery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl", "s.sock")
	ctx, cancel := context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]int{"sessions": 3})
	})
	mux.HandleFunc("POST /sessions/{user}/disconnect", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("user") != "alice" {
			WriteError(w, http.StatusNotFound, "no session for user "+r.PathValue("user"))
			return
		}
		WriteJSON(w, http.StatusOK, map[string]int{"ended": 1})
	})
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, path, mux) }()
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
	if err := Do(path, http.MethodPost, "/sessions/alice/disconnect", &got); err != nil || got["ended"] != 1 {
		t.Fatalf("POST: %v %v", got, err)
	}
	if err := Do(path, http.MethodPost, "/sessions/bob/disconnect", nil); err == nil || !strings.Contains(err.Error(), "no session for user bob") {
		t.Fatalf("error message not passed on: %v", err)
	}
	if err := Do(path, http.MethodGet, "/sessions/alice/disconnect", nil); err == nil {
		t.Fatal("GET on a POST route succeeded")
	}
	// A second server on the same path refuses to take over.
	if err := Serve(ctx, path, mux); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second Serve: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	if err := Query(path, &got); err == nil || !strings.Contains(err.Error(), "no Salvo process") {
		t.Fatalf("query after close: %v", err)
	}
}
