package enginetest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/salvovpn/salvo/internal/batchsize"
)

const (
	// DefaultTUNBatchSize is what BatchSize reports unless WithBatchSize says otherwise; it matches the
	// engine's default vector length.
	DefaultTUNBatchSize = batchsize.Default
	// DefaultTUNQueueLen bounds each direction's queue, in packets, unless WithQueueLen says otherwise.
	DefaultTUNQueueLen = 1024
)

var _ tun.Device = (*TUN)(nil)

// TUNOption configures a TUN made by NewTUN.
type TUNOption func(*TUN)

// WithBatchSize sets what BatchSize reports (n < 1 means 1). Read and Write accept any number of packets
// regardless; the engine sizes its vectors from it.
func WithBatchSize(n int) TUNOption {
	return func(t *TUN) { t.batchSize = max(n, 1) }
}

// WithQueueLen sets the length, in packets, of both the queue Inject fills and the queue Write fills
// (n < 1 means 1).
func WithQueueLen(n int) TUNOption {
	return func(t *TUN) { t.queueLen = max(n, 1) }
}

// TUNStats counts a TUN's packets. Directions are the engine's: Read is what the engine took from the
// device, Written what it gave to it.
type TUNStats struct {
	Injected      uint64 // packets queued by Inject for the engine to Read
	DroppedInject uint64 // packets Inject could not queue: the queue was full or the device closed
	Read          uint64 // packets returned by Read
	Truncated     uint64 // packets Read cut short because the engine's buffer was too small
	Written       uint64 // packets accepted by Write
	// DroppedWritten counts written packets lost because the test did not Receive them fast enough,
	// as the OS drops what it cannot take.
	DroppedWritten uint64
}

// TUN is an in-memory tun.Device. The test plays the operating system: Inject hands the engine a packet to
// Read (a packet an application sent into the tunnel), and Receive or Written returns packets the engine
// Wrote (packets the tunnel delivers to the system). Both directions have bounded queues that drop, and
// count, what does not fit.
type TUN struct {
	name      string
	mtu       int
	batchSize int
	queueLen  int

	// toEngine holds injected packets until the engine Reads them; fromEngine holds packets the engine
	// Wrote until the test Receives them. Neither is ever closed, so a send racing with Close cannot
	// panic; done tells both sides the device is gone.
	toEngine   chan []byte
	fromEngine chan []byte
	events     chan tun.Event
	done       chan struct{}
	closeOnce  sync.Once

	injected, droppedInject, read, truncated, written, droppedWritten atomic.Uint64
}

// NewTUN returns an open device with the given name and MTU; Events delivers tun.EventUp once.
func NewTUN(name string, mtu int, opts ...TUNOption) *TUN {
	t := &TUN{
		name:      name,
		mtu:       mtu,
		batchSize: DefaultTUNBatchSize,
		queueLen:  DefaultTUNQueueLen,
		events:    make(chan tun.Event, 1),
		done:      make(chan struct{}),
	}
	for _, o := range opts {
		o(t)
	}
	t.toEngine = make(chan []byte, t.queueLen)
	t.fromEngine = make(chan []byte, t.queueLen)
	t.events <- tun.EventUp
	return t
}

// Inject queues a copy of pkt for the engine's Read, as if the system had routed it into the tunnel. It
// does not block: it reports false, and counts a drop, if the queue is full or the device is closed.
func (t *TUN) Inject(pkt []byte) bool {
	select {
	case <-t.done:
		t.droppedInject.Add(1)
		return false
	default:
	}
	select {
	case t.toEngine <- clone(pkt):
		t.injected.Add(1)
		return true
	default:
		t.droppedInject.Add(1)
		return false
	}
}

// Receive returns the next packet the engine wrote, waiting for one if need be. After Close it still
// returns the packets written before, then os.ErrClosed. It returns ctx.Err() if ctx ends first.
func (t *TUN) Receive(ctx context.Context) ([]byte, error) {
	select {
	case p := <-t.fromEngine:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.done:
		select {
		case p := <-t.fromEngine:
			return p, nil
		default:
			return nil, os.ErrClosed
		}
	}
}

// Written is the queue Receive reads from, for a test that selects over several sources or checks that
// nothing arrived. It is never closed; the packets are the test's to keep.
func (t *TUN) Written() <-chan []byte { return t.fromEngine }

// Closed is closed once Close has been called, so a test can await the engine tearing the device down.
func (t *TUN) Closed() <-chan struct{} { return t.done }

// Stats returns the device's counters.
func (t *TUN) Stats() TUNStats {
	return TUNStats{
		Injected:       t.injected.Load(),
		DroppedInject:  t.droppedInject.Load(),
		Read:           t.read.Load(),
		Truncated:      t.truncated.Load(),
		Written:        t.written.Load(),
		DroppedWritten: t.droppedWritten.Load(),
	}
}

// File returns nil: there is no file descriptor behind the device.
func (t *TUN) File() *os.File { return nil }

// Read takes up to len(bufs) injected packets: packet i goes to bufs[i][offset:] and sizes[i] is its
// length (not counting offset). It blocks until at least one packet is queued, then takes as many more
// as are queued without waiting for them. A packet longer than len(bufs[i])-offset is truncated and
// counted in TUNStats.Truncated. After Close it returns os.ErrClosed.
func (t *TUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	_ = sizes[:len(bufs)] // fail before consuming a packet, not after
	select {
	case <-t.done:
		return 0, os.ErrClosed
	default:
	}
	var p []byte
	select {
	case p = <-t.toEngine:
	case <-t.done:
		return 0, os.ErrClosed
	}
	put := func(i int, p []byte) {
		sizes[i] = copy(bufs[i][offset:], p)
		if sizes[i] < len(p) {
			t.truncated.Add(1)
		}
	}
	put(0, p)
	n := 1
	for ; n < len(bufs); n++ {
		select {
		case p = <-t.toEngine:
			put(n, p)
			continue
		default:
		}
		break // nothing more queued: return what we have rather than wait for a full batch
	}
	t.read.Add(uint64(n))
	return n, nil
}

// Write hands the packets bufs[i][offset:] to the test, copying each, and returns how many it accepted.
// It does not block: a packet that does not fit in the queue is dropped and counted, as the system drops
// what it cannot take. After Close it returns os.ErrClosed.
func (t *TUN) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-t.done:
		return 0, os.ErrClosed
	default:
	}
	for i, b := range bufs {
		if len(b) < offset {
			return i, fmt.Errorf("enginetest: TUN write: buffer %d is %d bytes, shorter than offset %d", i, len(b), offset)
		}
		t.written.Add(1)
		select {
		case t.fromEngine <- clone(b[offset:]):
		default:
			t.droppedWritten.Add(1)
		}
	}
	return len(bufs), nil
}

// MTU returns the MTU given to NewTUN.
func (t *TUN) MTU() (int, error) { return t.mtu, nil }

// Name returns the name given to NewTUN.
func (t *TUN) Name() (string, error) { return t.name, nil }

// Events delivers tun.EventUp once and is closed by Close.
func (t *TUN) Events() <-chan tun.Event { return t.events }

// Close closes the device: Read and Write return os.ErrClosed from then on, and a blocked Read wakes.
// Packets not yet Read are discarded; packets not yet Received can still be. Calling it again does
// nothing and returns nil.
func (t *TUN) Close() error {
	t.closeOnce.Do(func() {
		close(t.done)
		close(t.events)
	})
	return nil
}

// BatchSize returns the value set by WithBatchSize, DefaultTUNBatchSize by default.
func (t *TUN) BatchSize() int { return t.batchSize }
