package transport

import (
	"testing"

	"github.com/salvovpn/salvo/protocol"
)

const (
	benchBatch = 64
	benchSize  = 1420
)

func suiteName(s protocol.Suite) string { return s.String() }

// BenchmarkSealBatch seals a vector of 64 packets of 1420 bytes per iteration.
func BenchmarkSealBatch(b *testing.B) {
	for _, s := range suites {
		b.Run(suiteName(s), func(b *testing.B) {
			c, _ := pair(b, s)
			bufs, sizes, _ := batch(benchBatch, benchSize)
			b.SetBytes(benchBatch * benchSize)
			b.ReportAllocs()
			for b.Loop() {
				for i := range sizes {
					sizes[i] = benchSize
				}
				if err := c.SealBatch(bufs, sizes, t0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchBatch, "ns/packet")
		})
	}
}

// BenchmarkOpenVector opens a vector of 64 freshly sealed packets per iteration, one Open each (as the
// receive loops do); the sealing runs
// with the timer stopped so only the open side is measured.
func BenchmarkOpenVector(b *testing.B) {
	for _, s := range suites {
		b.Run(suiteName(s), func(b *testing.B) {
			c, srv := pair(b, s)
			bufs, sizes, verdicts := batch(benchBatch, benchSize)
			b.SetBytes(benchBatch * benchSize)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for j := range sizes {
					sizes[j] = benchSize
				}
				if err := c.SealBatch(bufs, sizes, t0); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if ok := openEach(srv, bufs, sizes, verdicts, t0); ok != benchBatch {
					b.Fatalf("ok %d: %v", ok, verdicts[0])
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchBatch, "ns/packet")
		})
	}
}

// BenchmarkSealSmall seals one 64-byte packet per iteration (per-packet overhead dominates).
func BenchmarkSealSmall(b *testing.B) {
	for _, s := range suites {
		b.Run(suiteName(s), func(b *testing.B) {
			c, _ := pair(b, s)
			buf := packet(64, 0)
			b.SetBytes(64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Seal(protocol.CodeData, buf, 64, t0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSealBatchParallel: several goroutines sealing into one keypair (shared counter).
func BenchmarkSealBatchParallel(b *testing.B) {
	for _, s := range suites {
		b.Run(suiteName(s), func(b *testing.B) {
			c, _ := pair(b, s)
			b.SetBytes(benchBatch * benchSize)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				bufs, sizes, _ := batch(benchBatch, benchSize)
				for pb.Next() {
					for i := range sizes {
						sizes[i] = benchSize
					}
					if err := c.SealBatch(bufs, sizes, t0); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkRawAEADBatch is the floor for BenchmarkSealBatch: the same 64 x 1420-byte seals straight
// through cipher.AEAD, without headers, counters, expiry checks or the nonce pool.
func BenchmarkRawAEADBatch(b *testing.B) {
	for _, s := range suites {
		b.Run(suiteName(s), func(b *testing.B) {
			c, _ := pair(b, s)
			bufs, _, _ := batch(benchBatch, benchSize)
			var nonce [12]byte
			b.SetBytes(benchBatch * benchSize)
			b.ReportAllocs()
			for b.Loop() {
				for _, buf := range bufs {
					c.send.Seal(buf[16:16], nonce[:], buf[16:16+benchSize], buf[:16])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchBatch, "ns/packet")
		})
	}
}
