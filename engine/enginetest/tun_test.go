package enginetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

// headroom stands in for protocol.Headroom: the engine reads and writes packets at an offset, so the
// data header fits in front of them.
const headroom = 16

func vector(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

func TestTUNDevice(t *testing.T) {
	d := NewTUN("salvo0", 1420)
	defer d.Close()
	if name, err := d.Name(); name != "salvo0" || err != nil {
		t.Errorf("Name = %q, %v", name, err)
	}
	if mtu, err := d.MTU(); mtu != 1420 || err != nil {
		t.Errorf("MTU = %d, %v", mtu, err)
	}
	if d.File() != nil {
		t.Error("File is not nil")
	}
	if d.BatchSize() != DefaultTUNBatchSize {
		t.Errorf("BatchSize = %d, want %d", d.BatchSize(), DefaultTUNBatchSize)
	}
	if b := NewTUN("x", 1280, WithBatchSize(7)).BatchSize(); b != 7 {
		t.Errorf("BatchSize with WithBatchSize(7) = %d", b)
	}
	if ev := <-d.Events(); ev != tun.EventUp {
		t.Errorf("first event = %v, want EventUp", ev)
	}
	select {
	case ev := <-d.Events():
		t.Errorf("second event %v before Close; EventUp comes once", ev)
	default:
	}
}

func TestTUNInjectReadAtOffset(t *testing.T) {
	d := NewTUN("salvo0", 1420)
	defer d.Close()
	pkts := []string{"one", "two", "three"}
	for _, p := range pkts {
		b := []byte(p)
		if !d.Inject(b) {
			t.Fatal("Inject refused")
		}
		copy(b, "XXX") // Inject copies
	}
	bufs, sizes := vector(8, 64)
	for i := range bufs[0][:headroom] {
		bufs[0][i] = 0xAA
	}
	k, err := d.Read(bufs, sizes, headroom)
	if err != nil || k != len(pkts) {
		t.Fatalf("Read = %d, %v; want all %d queued packets at once", k, err, len(pkts))
	}
	for i, p := range pkts {
		if got := string(bufs[i][headroom : headroom+sizes[i]]); got != p || sizes[i] != len(p) {
			t.Errorf("packet %d = %q (size %d), want %q (size excludes the offset)", i, got, sizes[i], p)
		}
	}
	for _, b := range bufs[0][:headroom] {
		if b != 0xAA {
			t.Fatal("Read wrote into the headroom before the offset")
		}
	}

	// A batch smaller than the queue takes a full batch, then the rest.
	for i := range 5 {
		d.Inject([]byte{byte(i)})
	}
	if k, _ := d.Read(bufs[:2], sizes, headroom); k != 2 {
		t.Fatalf("Read into 2 buffers = %d", k)
	}
	if k, _ := d.Read(bufs, sizes, headroom); k != 3 || bufs[2][headroom] != 4 {
		t.Fatalf("Read of the rest = %d (last %d)", k, bufs[2][headroom])
	}
	if k, err := d.Read(nil, nil, headroom); k != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", k, err)
	}
	if s := d.Stats(); s.Injected != 8 || s.Read != 8 {
		t.Fatalf("Stats = %+v", s)
	}
}

func TestTUNReadTruncates(t *testing.T) {
	d := NewTUN("salvo0", 1420)
	defer d.Close()
	d.Inject([]byte("0123456789"))
	bufs, sizes := vector(1, headroom+4)
	if k, err := d.Read(bufs, sizes, headroom); k != 1 || err != nil || sizes[0] != 4 {
		t.Fatalf("Read = %d, %v, size %d; want the packet cut to 4 bytes", k, err, sizes[0])
	}
	if s := d.Stats(); s.Truncated != 1 {
		t.Fatalf("Truncated = %d", s.Truncated)
	}
}

func TestTUNBlockedReadWakes(t *testing.T) {
	d := NewTUN("salvo0", 1420)
	defer d.Close()
	got := make(chan string)
	go func() {
		bufs, sizes := vector(4, 64)
		k, err := d.Read(bufs, sizes, headroom)
		got <- fmt.Sprintf("%d %v %s", k, err, bufs[0][headroom:headroom+sizes[0]])
	}()
	d.Inject([]byte("pkt"))
	if g := <-got; g != "1 <nil> pkt" {
		t.Fatalf("blocked Read returned %s", g)
	}
}

func TestTUNWriteReceive(t *testing.T) {
	d := NewTUN("salvo0", 1420)
	defer d.Close()
	bufs := [][]byte{
		append(make([]byte, headroom), "alpha"...),
		append(make([]byte, headroom), "beta"...),
	}
	if k, err := d.Write(bufs, headroom); k != 2 || err != nil {
		t.Fatalf("Write = %d, %v", k, err)
	}
	copy(bufs[0][headroom:], "XXXXX") // Write copies
	ctx := context.Background()
	for _, want := range []string{"alpha", "beta"} {
		p, err := d.Receive(ctx)
		if err != nil || string(p) != want {
			t.Fatalf("Receive = %q, %v; want %q", p, err, want)
		}
	}
	select {
	case p := <-d.Written():
		t.Fatalf("unexpected packet %q", p)
	default:
	}
	d.Write(bufs[1:], headroom)
	if p := <-d.Written(); string(p) != "beta" {
		t.Fatalf("Written channel gave %q", p)
	}

	if k, err := d.Write([][]byte{make([]byte, headroom), make([]byte, 3)}, headroom); k != 1 || err == nil {
		t.Fatalf("Write with a buffer shorter than the offset = %d, %v; want 1 and an error", k, err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	<-d.Written() // the empty packet from the write above
	if _, err := d.Receive(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Receive with a cancelled context = %v", err)
	}
}

func TestTUNCloseSemantics(t *testing.T) {
	d := NewTUN("salvo0", 1420)
	<-d.Events()
	errc := make(chan error)
	go func() {
		bufs, sizes := vector(1, 64)
		_, err := d.Read(bufs, sizes, headroom)
		errc <- err
	}()
	d.Write([][]byte{append(make([]byte, headroom), "last"...)}, headroom)
	d.Inject([]byte("unread")) // may or may not be taken by the Read above, which is fine

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	<-d.Closed()
	if err := <-errc; err != nil && !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read across Close = %v", err)
	}
	bufs, sizes := vector(1, 64)
	if _, err := d.Read(bufs, sizes, headroom); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close = %v, want os.ErrClosed", err)
	}
	if _, err := d.Write(bufs, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close = %v, want os.ErrClosed", err)
	}
	if d.Inject([]byte("late")) {
		t.Fatal("Inject after Close succeeded")
	}
	if _, ok := <-d.Events(); ok {
		t.Fatal("Events not closed by Close")
	}
	// What the engine wrote before Close can still be received; then Receive reports the close.
	ctx := context.Background()
	if p, err := d.Receive(ctx); string(p) != "last" || err != nil {
		t.Fatalf("Receive after Close = %q, %v; want the packet written before", p, err)
	}
	if _, err := d.Receive(ctx); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Receive after Close, drained = %v, want os.ErrClosed", err)
	}
}

func TestTUNCloseWakesBlockedRead(t *testing.T) {
	d := NewTUN("salvo0", 1420)
	errc := make(chan error)
	go func() {
		bufs, sizes := vector(1, 64)
		_, err := d.Read(bufs, sizes, headroom)
		errc <- err
	}()
	d.Close()
	if err := <-errc; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read = %v, want os.ErrClosed", err)
	}
}

func TestTUNQueuesOverflow(t *testing.T) {
	d := NewTUN("salvo0", 1420, WithQueueLen(2))
	defer d.Close()
	for i := range 5 {
		if ok := d.Inject([]byte{byte(i)}); ok != (i < 2) {
			t.Fatalf("Inject %d = %v", i, ok)
		}
	}
	bufs := make([][]byte, 5)
	for i := range bufs {
		bufs[i] = []byte{byte(i)}
	}
	if k, err := d.Write(bufs, 0); k != 5 || err != nil {
		t.Fatalf("Write into a full queue = %d, %v; want all accepted (and the excess dropped)", k, err)
	}
	want := TUNStats{Injected: 2, DroppedInject: 3, Written: 5, DroppedWritten: 3}
	if s := d.Stats(); s != want {
		t.Fatalf("Stats = %+v, want %+v", s, want)
	}
	if p := <-d.Written(); p[0] != 0 {
		t.Fatalf("queue kept %v first, want the oldest", p)
	}
}
