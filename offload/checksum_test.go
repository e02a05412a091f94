package offload

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

func TestSumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := randBytes(r, 2100)
	for n := 0; n <= 2000; n++ {
		for _, off := range []int{0, 1, 3} { // unaligned starts too
			b := buf[off : off+n]
			init := uint16(r.Uint32())
			if got, want := Sum(b, init), refSum(b, init); got != want {
				t.Fatalf("len %d off %d: Sum %#04x, reference %#04x", n, off, got, want)
			}
		}
	}
	// All-ones data drives the carry chain hardest.
	ff := make([]byte, 4099)
	for i := range ff {
		ff[i] = 0xff
	}
	for _, n := range []int{0, 1, 7, 8, 31, 32, 33, 4096, 4099} {
		if got, want := Sum(ff[:n], 0xffff), refSum(ff[:n], 0xffff); got != want {
			t.Fatalf("0xff len %d: %#04x vs %#04x", n, got, want)
		}
	}
}

func TestPseudoSums(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		a := randBytes(r, 32)
		proto := uint8(r.Uint32())
		l := int(r.Uint32N(1 << 17))
		ph := append(append([]byte(nil), a[:4]...), a[4:8]...)
		ph = append(ph, 0, proto, byte(l>>8), byte(l))
		if l >= 1<<16 { // IPv4 lengths are 16-bit; wrap like the field would
			ph[10], ph[11] = byte(l>>8), byte(l)
		}
		if got, want := PseudoSum4(proto, a[:4], a[4:8], l&0xffff), refSum(ph[:12], 0); got != want {
			t.Fatalf("v4: %#x vs %#x", got, want)
		}
		ph6 := append([]byte(nil), a...)
		ph6 = append(ph6, byte(l>>24), byte(l>>16), byte(l>>8), byte(l), 0, 0, 0, proto)
		if got, want := PseudoSum6(proto, a[:16], a[16:], l), refSum(ph6, 0); got != want {
			t.Fatalf("v6: %#x vs %#x", got, want)
		}
	}
}

func FuzzSum(f *testing.F) {
	f.Add([]byte{}, uint16(0))
	f.Add([]byte{0xff}, uint16(0xffff))
	f.Add([]byte("0123456789abcdefghijklmnopqrstuvwxyz!"), uint16(1))
	f.Fuzz(func(t *testing.T, b []byte, init uint16) {
		if got, want := Sum(b, init), refSum(b, init); got != want {
			t.Fatalf("Sum %#x, reference %#x", got, want)
		}
	})
}

func benchSum(b *testing.B, f func([]byte, uint16) uint16, n int) {
	buf := randBytes(rand.New(rand.NewPCG(5, 6)), n)
	b.SetBytes(int64(n))
	for b.Loop() {
		f(buf, 0)
	}
}

func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{40, 1420, 65535} {
		b.Run("fast/"+strconv.Itoa(n), func(b *testing.B) { benchSum(b, Sum, n) })
		b.Run("reference/"+strconv.Itoa(n), func(b *testing.B) { benchSum(b, refSum, n) })
	}
}
