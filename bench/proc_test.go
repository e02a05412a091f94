package bench

import (
	"os"
	"testing"
)

// TestProcKiB reads this process's memory figures the way the harness reads the tunnel's: PSS can only
// be below RSS (shared pages are divided), and both are more than nothing.
func TestProcKiB(t *testing.T) {
	pid := os.Getpid()
	rss, err := procKiB(pid, "status", "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	pss, err := pssKiB(pid)
	if err != nil {
		t.Fatal(err)
	}
	if pss == 0 || rss == 0 || pss > rss {
		t.Fatalf("PSS %d kB, RSS %d kB", pss, rss)
	}
	if _, err := procKiB(pid, "status", "NoSuchField"); err == nil {
		t.Fatal("a missing field read as a number")
	}
}
