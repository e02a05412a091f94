package engine

import (
	"slices"
	"testing"

	"github.com/salvovpn/salvo/engine/enginetest"
	"golang.zx2c4.com/wireguard/tun"
)

// TestWorkersOwnTheirSockets: with 3 workers, 2 listen addresses and a single-queue TUN, each worker owns
// its socket on both addresses (and no other), writes to the one queue, and only worker 0 reads it; with
// as many queues as workers each reads and writes its own.
func TestWorkersOwnTheirSockets(t *testing.T) {
	for _, queues := range []int{1, 3} {
		s := &Server{workers: 3, layout: socketLayout{workers: 3}, sockets: make([]*sender, 6)}
		for range queues {
			s.queues = append(s.queues, tun.Device(enginetest.NewTUN("salvo0", 1420)))
		}
		ws := newWorkers(s)
		var all []int
		for id, w := range ws {
			if len(w.sockets) != 2 {
				t.Fatalf("queues=%d: worker %d has sockets %v", queues, id, w.sockets)
			}
			for _, c := range w.sockets {
				if s.layout.worker(c) != id {
					t.Fatalf("queues=%d: worker %d owns socket %d of worker %d", queues, id, c, s.layout.worker(c))
				}
			}
			all = append(all, w.sockets...)
			wantReads := []int{id}
			if queues == 1 {
				wantReads = nil
				if id == 0 {
					wantReads = []int{0}
				}
			}
			if !slices.Equal(w.reads, wantReads) || w.writeQueue != s.queues[id%queues] {
				t.Fatalf("queues=%d: worker %d reads %v, writes %v", queues, id, w.reads, w.writeQueue)
			}
		}
		slices.Sort(all)
		if !slices.Equal(all, []int{0, 1, 2, 3, 4, 5}) {
			t.Fatalf("queues=%d: sockets owned %v, want each once", queues, all)
		}
	}
}
