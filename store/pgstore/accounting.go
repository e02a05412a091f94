package pgstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/salvovpn/salvo/engine"
)

// maxQueuedRows bounds what an Accounting keeps while the database is away: at about 200 bytes a row,
// 20 MiB, hours of ended sessions on a busy gateway. Beyond it the oldest rows are dropped, and counted.
const maxQueuedRows = 100_000

// Accounting writes one row per ended session to salvo_sessions_ended. Add never blocks (the gateway calls
// it with its lock held); Run writes the queued rows in batches and keeps them while the database is
// down, so nothing is lost when it comes back (short of maxQueuedRows).
type Accounting struct {
	store   *Store
	gateway string // names this gateway in its rows
	log     *slog.Logger

	mu      sync.Mutex
	queue   []Ended
	head    uint64 // sequence number of queue[0]: rows written or dropped before it
	wake    chan struct{}
	dropped atomic.Uint64
}

// NewAccounting returns an Accounting for the gateway named gateway.
func NewAccounting(s *Store, gateway string, log *slog.Logger) *Accounting {
	return &Accounting{store: s, gateway: gateway, log: log, wake: make(chan struct{}, 1)}
}

// Add queues the record of an ended session.
func (a *Accounting) Add(e engine.SessionEnded) {
	row := Ended{Gateway: a.gateway, Login: e.User, Addresses: fmt.Sprint(e.Addresses), Endpoint: e.Endpoint,
		Reason: e.Reason, Started: e.Started, Ended: e.Ended, RxBytes: e.Traffic.RxBytes, TxBytes: e.Traffic.TxBytes,
		RxPackets: e.Traffic.RxPackets, TxPackets: e.Traffic.TxPackets}
	a.mu.Lock()
	if len(a.queue) == maxQueuedRows {
		a.queue = a.queue[1:]
		a.head++
		a.dropped.Add(1)
	}
	a.queue = append(a.queue, row)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Dropped counts rows lost to a full queue.
func (a *Accounting) Dropped() uint64 { return a.dropped.Load() }

// Queued is how many rows wait for the database.
func (a *Accounting) Queued() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.queue)
}

// Run is the goroutine "store accounting": it writes queued rows until ctx ends, then tries once more
// (for a few seconds) to write what the gateway's shutdown ended.
func (a *Accounting) Run(ctx context.Context) {
	retry := time.Second
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := a.flush(fctx); err != nil {
				a.log.Warn("accounting rows not written at shutdown", "rows", a.Queued(), "err", err)
			}
			cancel()
			return
		case <-a.wake:
		case <-time.After(retry):
		}
		if err := a.flush(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("accounting rows kept until the store is back", "rows", a.Queued(), "err", err)
			retry = min(2*retry, 30*time.Second)
			continue
		}
		retry = time.Second
	}
}

// flush writes the queue in batches of up to 1000 rows; a batch leaves the queue only once it is written.
func (a *Accounting) flush(ctx context.Context) error {
	for {
		a.mu.Lock()
		batch := append([]Ended(nil), a.queue[:min(len(a.queue), 1000)]...)
		end := a.head + uint64(len(batch)) // sequence number after the batch
		a.mu.Unlock()
		if len(batch) == 0 {
			return nil
		}
		if err := a.store.insertEnded(ctx, batch); err != nil {
			return err
		}
		a.mu.Lock()
		// Rows dropped for room meanwhile came off the front too: remove only what is still there.
		if end > a.head {
			n := min(int(end-a.head), len(a.queue))
			a.queue, a.head = a.queue[n:], a.head+uint64(n)
		}
		a.mu.Unlock()
	}
}
