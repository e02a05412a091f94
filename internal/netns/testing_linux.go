package netns

import (
	"os"
	"sync"
	"testing"
)

var sweptPrefixes sync.Map // prefix -> struct{}: sweep once per process

// ForTest creates a namespace for t and registers its removal with t.Cleanup.
// Without root it skips, except under CI=true where a skipped privileged test
// would silently hide regressions, so it fails instead.
func ForTest(t testing.TB, prefix string) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (CI=true: refusing to skip network namespace tests)")
		}
		t.Skip("needs root")
	}
	if _, done := sweptPrefixes.LoadOrStore(prefix, struct{}{}); !done {
		Sweep(prefix)
	}
	ns, err := Create(prefix)
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("remove namespace %s: %v", ns.Name, err)
		}
	})
	return ns
}
