package engine

import (
	"testing"

	"github.com/salvovpn/salvo/protocol"
)

// TestSocketLayout: every socket number maps back to its group and worker, a sibling stays in its group
// and belongs to the asked worker, and an index made for a worker is owned by it.
func TestSocketLayout(t *testing.T) {
	for _, workers := range []int{1, 2, 3, 8} {
		l := socketLayout{workers: workers}
		for group := range 3 {
			for w := range workers {
				c := l.socket(group, w)
				if l.group(c) != group || l.worker(c) != w {
					t.Fatalf("workers=%d: socket(%d, %d) = %d, back to (%d, %d)", workers, group, w, c, l.group(c), l.worker(c))
				}
				for w2 := range workers {
					if s := l.sibling(c, w2); l.group(s) != group || l.worker(s) != w2 {
						t.Fatalf("workers=%d: sibling(%d, %d) = %d", workers, c, w2, s)
					}
				}
				if got := l.owner(protocol.IndexFor(0xfffffff0, w, workers)); got != w {
					t.Fatalf("workers=%d: index for %d owned by %d", workers, w, got)
				}
			}
		}
	}
}
