package batch

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The benchmarks send 64 datagrams over IPv4 loopback and read them back in the same goroutine, per op.
// BenchmarkLoopback/mmsg uses Conn (one sendmmsg, usually one recvmmsg per op); BenchmarkLoopback/plain
// uses net.UDPConn one datagram per syscall, so the ratio comes from one run on one (noisy) machine.
const benchBatch = 64

func BenchmarkLoopback(b *testing.B) {
	for _, size := range []int{64, 1420} {
		b.Run("mmsg-gso/"+strconv.Itoa(size), func(b *testing.B) { benchMmsg(b, size, Options{}) })
		b.Run("mmsg-gso-gro/"+strconv.Itoa(size), func(b *testing.B) { benchGRO(b, size) })
		b.Run("mmsg/"+strconv.Itoa(size), func(b *testing.B) { benchMmsg(b, size, Options{DisableGSO: true}) })
		b.Run("plain/"+strconv.Itoa(size), func(b *testing.B) { benchPlain(b, size) })
	}
}

// reportPerPacket reports wall time per packet and process CPU time (user+sys) per packet. On a loaded
// shared machine wall time mostly measures waiting for a core; CPU time measures the work itself.
func reportPerPacket(b *testing.B, size int, cpu0 time.Duration) {
	b.SetBytes(int64(benchBatch * size))
	pkts := float64(b.N * benchBatch)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/pkts, "ns/pkt")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/pkts, "cpu-ns/pkt")
}

// cpuTime is the CPU time (user+sys) the whole test process has used.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchMmsg(b *testing.B, size int, opt Options) {
	srv := listen(b, "udp4", "127.0.0.1:0", Options{})
	cli := listen(b, "udp4", "127.0.0.1:0", opt)
	out := make([][]byte, benchBatch)
	dst := make([]netip.AddrPort, benchBatch)
	in := make([][]byte, benchBatch)
	for i := range out {
		out[i] = make([]byte, size)
		dst[i] = srv.LocalAddr()
		in[i] = make([]byte, MaxPacket)
	}
	sizes := make([]int, benchBatch)
	from := make([]netip.AddrPort, benchBatch)
	reads := 0
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if n, err := cli.WriteBatch(out, dst); n != benchBatch || err != nil {
			b.Fatalf("WriteBatch = %d, %v", n, err)
		}
		for got := 0; got < benchBatch; {
			n, err := srv.ReadBatch(in[got:], sizes[got:], from[got:])
			if err != nil {
				b.Fatal(err)
			}
			got += n
			reads++
		}
	}
	reportPerPacket(b, size, cpu0)
	// How many ReadBatch calls one batch of 64 needed: 1 means recvmmsg drained it in one syscall.
	b.ReportMetric(float64(reads)/float64(b.N), "reads/op")
}

// benchGRO is benchMmsg with a UDP_GRO receiver: every ReadBatch gets the whole vector (at 1420 bytes
// the 64 datagrams are two GSO messages, 46+18, as they exceed 64 KiB together).
func benchGRO(b *testing.B, size int) {
	srv := listen(b, "udp4", "127.0.0.1:0", Options{EnableGRO: true})
	if !srv.GRO() {
		b.Skip("kernel without UDP GRO")
	}
	cli := listen(b, "udp4", "127.0.0.1:0", Options{})
	out := make([][]byte, benchBatch)
	dst := make([]netip.AddrPort, benchBatch)
	in := make([][]byte, benchBatch)
	for i := range out {
		out[i] = make([]byte, size)
		dst[i] = srv.LocalAddr()
		in[i] = make([]byte, MaxPacket)
	}
	sizes := make([]int, benchBatch)
	from := make([]netip.AddrPort, benchBatch)
	reads := 0
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if n, err := cli.WriteBatch(out, dst); n != benchBatch || err != nil {
			b.Fatalf("WriteBatch = %d, %v", n, err)
		}
		for got := 0; got < benchBatch; {
			n, err := srv.ReadBatch(in, sizes, from)
			if err != nil {
				b.Fatal(err)
			}
			got += n
			reads++
		}
	}
	reportPerPacket(b, size, cpu0)
	b.ReportMetric(float64(reads)/float64(b.N), "reads/op")
}

func benchPlain(b *testing.B, size int) {
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	cli, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	// Same buffer sizes as Conn's default (capped by rmem_max without FORCE; 64 datagrams fit either way).
	srv.SetReadBuffer(DefaultSocketBuffer)
	cli.SetWriteBuffer(DefaultSocketBuffer)
	dst := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	out := make([]byte, size)
	in := make([]byte, MaxPacket)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for j := 0; j < benchBatch; j++ {
			if _, err := cli.WriteToUDPAddrPort(out, dst); err != nil {
				b.Fatal(err)
			}
		}
		for j := 0; j < benchBatch; j++ {
			if _, _, err := srv.ReadFromUDPAddrPort(in); err != nil {
				b.Fatal(err)
			}
		}
	}
	reportPerPacket(b, size, cpu0)
}

// BenchmarkDirectionMutex is the cost of the per-direction lock ReadBatch/WriteBatch take once per batch.
func BenchmarkDirectionMutex(b *testing.B) {
	var mu sync.Mutex
	for i := 0; i < b.N; i++ {
		mu.Lock()
		//lint:ignore SA2001 measuring the empty critical section is the point
		mu.Unlock()
	}
}
