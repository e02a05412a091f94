package transport

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/replay"
)

var (
	t0     = time.Unix(1_700_000_000, 0)
	suites = []protocol.Suite{protocol.SuiteAES256GCM, protocol.SuiteChaCha20Poly1305}
)

const (
	clientIndex = 0x11223344
	serverIndex = 0x55667788
)

// pair returns the two ends of one session: the client (initiator) sends with k1, the server with k2.
func pair(tb testing.TB, suite protocol.Suite) (client, server *Keypair) {
	tb.Helper()
	var k1, k2 [32]byte
	for i := range k1 {
		k1[i], k2[i] = byte(i), byte(0xa0+i)
	}
	c, err := NewKeypair(suite, k1, k2, clientIndex, serverIndex, true, t0)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := NewKeypair(suite, k2, k1, serverIndex, clientIndex, false, t0)
	if err != nil {
		tb.Fatal(err)
	}
	return c, s
}

// packet returns a buffer with headroom, an n-byte plaintext pattern and exact room for the tag.
func packet(n int, seed byte) []byte {
	b := make([]byte, protocol.DataOverhead+n)
	for i := 0; i < n; i++ {
		b[protocol.DataHeaderLen+i] = seed + byte(i*7)
	}
	return b
}

func plain(n int, seed byte) []byte {
	return packet(n, seed)[protocol.DataHeaderLen : protocol.DataHeaderLen+n]
}

var sizesToTest = []int{0, 1, 15, 16, 17, 64, 1420, 9000, MaxPlaintextLen}

func TestRoundTripSingle(t *testing.T) {
	for _, s := range suites {
		c, srv := pair(t, s)
		for i, n := range sizesToTest {
			for _, code := range []protocol.Code{protocol.CodeData, protocol.CodeDisconnect} {
				b := packet(n, byte(i))
				m, err := c.Seal(code, b, n, t0)
				if err != nil || m != n+protocol.DataOverhead {
					t.Fatalf("%v n=%d: Seal = %d, %v", s, n, m, err)
				}
				h, err := protocol.ParseDataHeader(b[:m])
				if err != nil || h.Code != code || h.Receiver != serverIndex {
					t.Fatalf("%v: header %+v %v", s, h, err)
				}
				if n >= 16 && bytes.Equal(b[16:16+n], plain(n, byte(i))) {
					t.Fatalf("%v n=%d: payload not encrypted", s, n)
				}
				gotCode, pl, v := srv.Open(b[:m], t0.Add(time.Second))
				if v != OK || gotCode != code || pl != n {
					t.Fatalf("%v n=%d: Open = %v %d %v", s, n, gotCode, pl, v)
				}
				if !bytes.Equal(b[16:16+pl], plain(n, byte(i))) {
					t.Fatalf("%v n=%d: plaintext differs", s, n)
				}
			}
		}
		sent, _ := c.Stats()
		_, recv := srv.Stats()
		if want := uint64(2 * len(sizesToTest)); sent != want || recv != want {
			t.Fatalf("stats sent %d received %d, want %d", sent, recv, want)
		}
	}
}

func TestRoundTripBatch(t *testing.T) {
	for _, s := range suites {
		c, srv := pair(t, s)
		for round := 0; round < 3; round++ {
			bufs := make([][]byte, 0, 70)
			sizes := make([]int, 0, 70)
			for i := 0; i < 70; i++ {
				n := sizesToTest[i%len(sizesToTest)]
				// Extra capacity: the datagram must still be exactly n+32.
				b := append(packet(n, byte(i)), make([]byte, i)...)
				bufs, sizes = append(bufs, b[:16]), append(sizes, n)
			}
			if err := c.SealBatch(bufs, sizes, t0); err != nil {
				t.Fatal(err)
			}
			for i := range bufs {
				n := sizesToTest[i%len(sizesToTest)]
				if sizes[i] != n+protocol.DataOverhead {
					t.Fatalf("size %d = %d", i, sizes[i])
				}
				h, _ := protocol.ParseDataHeader(bufs[i][:sizes[i]])
				if want := uint64(round*70 + i); h.Counter != want || h.Code != protocol.CodeData {
					t.Fatalf("packet %d: header %+v, want counter %d", i, h, want)
				}
			}
			verdicts := make([]Verdict, len(bufs))
			if ok := openEach(srv, bufs, sizes, verdicts, t0); ok != len(bufs) {
				t.Fatalf("openEach ok=%d verdicts %v", ok, verdicts)
			}
			for i := range bufs {
				n := sizesToTest[i%len(sizesToTest)]
				if verdicts[i] != OK || sizes[i] != n || !bytes.Equal(bufs[i][16:16+n], plain(n, byte(i))) {
					t.Fatalf("packet %d: %v size %d", i, verdicts[i], sizes[i])
				}
			}
		}
	}
}

func TestTamperEveryByte(t *testing.T) {
	for _, s := range suites {
		c, srv := pair(t, s)
		const n = 40
		for _, code := range []protocol.Code{protocol.CodeData, protocol.CodeDisconnect} {
			orig := packet(n, 3)
			m, err := c.Seal(code, orig, n, t0)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < m; i++ {
				for _, flip := range []byte{0x01, 0x80, 0xff} {
					b := append([]byte(nil), orig[:m]...)
					b[i] ^= flip
					_, _, v := srv.Open(b, t0)
					want := BadMAC
					switch {
					case i == 0: // code: becomes another code or swaps data/disconnect
						if c2 := protocol.Code(b[0]); c2 != protocol.CodeData && c2 != protocol.CodeDisconnect {
							want = BadHeader
						}
					case i < 4: // reserved bytes must be zero
						want = BadHeader
					case i < 8: // receiver index
						want = WrongKey
					case i >= 12 && i < 16 && b[15] != 0: // counter made >= RejectAfterMessages
						if b[15] == 0xff && bytes.Equal(b[9:15], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
							want = Expired
						}
					}
					if v != want {
						t.Fatalf("%v %v: byte %d ^%#x: %v, want %v", s, code, i, flip, v, want)
					}
				}
			}
			// The untouched datagram still opens: no failed attempt moved the window.
			if _, _, v := srv.Open(orig[:m], t0); v != OK {
				t.Fatalf("%v: original after tampering: %v", s, v)
			}
		}
	}
}

func TestCodeIsAuthenticated(t *testing.T) {
	// Turning a disconnect into data (or back) must fail: the code is part of the AD.
	c, srv := pair(t, protocol.SuiteChaCha20Poly1305)
	b := packet(1, 0)
	m, _ := c.Seal(protocol.CodeDisconnect, b, 1, t0)
	b[0] = byte(protocol.CodeData)
	if _, _, v := srv.Open(b[:m], t0); v != BadMAC {
		t.Fatalf("code swap: %v", v)
	}
}

func TestCrossDirectionAndCrossSuite(t *testing.T) {
	for _, s := range suites {
		c, srv := pair(t, s)
		b := packet(100, 1)
		m, _ := c.Seal(protocol.CodeData, b, 100, t0)
		// The client cannot open its own packet even with the index patched: wrong direction key.
		b2 := append([]byte(nil), b[:m]...)
		protocol.PutDataHeader(b2, protocol.CodeData, clientIndex, 0)
		if _, _, v := c.Open(b2, t0); v != BadMAC {
			t.Fatalf("%v: own packet opened: %v", s, v)
		}
		// A peer with the same keys but the other suite must fail too.
		other := protocol.SuiteChaCha20Poly1305
		if s == other {
			other = protocol.SuiteAES256GCM
		}
		_, srv2 := pair(t, other)
		if _, _, v := srv2.Open(append([]byte(nil), b[:m]...), t0); v != BadMAC {
			t.Fatalf("%v opened under %v: %v", s, other, v)
		}
		if _, _, v := srv.Open(b[:m], t0); v != OK {
			t.Fatalf("%v: %v", s, v)
		}
	}
}

func TestReplayAndReorder(t *testing.T) {
	for _, s := range suites {
		c, srv := pair(t, s)
		const k = 300
		dgrams := make([][]byte, k)
		for i := range dgrams {
			b := packet(20, byte(i))
			m, err := c.Seal(protocol.CodeData, b, 20, t0)
			if err != nil {
				t.Fatal(err)
			}
			dgrams[i] = b[:m]
		}
		keep := make([][]byte, k)
		for i := range dgrams {
			keep[i] = append([]byte(nil), dgrams[i]...)
		}
		// Newest first, then everything else backwards: all within the window, all OK.
		for i := k - 1; i >= 0; i-- {
			if _, _, v := srv.Open(dgrams[i], t0); v != OK {
				t.Fatalf("%v: reordered packet %d: %v", s, i, v)
			}
		}
		for i := range keep {
			if _, _, v := srv.Open(append([]byte(nil), keep[i]...), t0); v != Replay {
				t.Fatalf("%v: replayed packet %d: %v", s, i, v)
			}
		}
		// A packet that falls behind the window is Replay even though it is authentic.
		old := packet(5, 0)
		mOld, _ := c.Seal(protocol.CodeData, old, 5, t0)
		c.sendCounter.Add(replay.WindowSize + 10)
		newer := packet(5, 0)
		mNew, _ := c.Seal(protocol.CodeData, newer, 5, t0)
		if _, _, v := srv.Open(newer[:mNew], t0); v != OK {
			t.Fatal(v)
		}
		if _, _, v := srv.Open(old[:mOld], t0); v != Replay {
			t.Fatalf("too old: %v", v)
		}
	}
}

func TestExpiryByTime(t *testing.T) {
	c, srv := pair(t, protocol.SuiteAES256GCM)
	b := packet(10, 0)
	m, err := c.Seal(protocol.CodeData, b, 10, t0.Add(protocol.RejectAfterTime-time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	dead := t0.Add(protocol.RejectAfterTime)
	if _, _, v := srv.Open(append([]byte(nil), b[:m]...), dead); v != Expired {
		t.Fatalf("open after RejectAfterTime: %v", v)
	}
	if _, err := c.Seal(protocol.CodeData, packet(1, 0), 1, dead); !errors.Is(err, ErrKeyExpired) {
		t.Fatalf("seal after RejectAfterTime: %v", err)
	}
	bufs, sizes := [][]byte{packet(1, 0)}, []int{1}
	if err := c.SealBatch(bufs, sizes, dead); !errors.Is(err, ErrKeyExpired) || sizes[0] != 1 {
		t.Fatalf("SealBatch after RejectAfterTime: %v", err)
	}
	verdicts := []Verdict{Unset}
	if openEach(srv, [][]byte{b}, []int{m}, verdicts, dead) != 0 || verdicts[0] != Expired {
		t.Fatalf("openEach after RejectAfterTime: %v", verdicts)
	}
	if !c.Expired(dead) || c.Expired(dead.Add(-time.Nanosecond)) {
		t.Fatal("Expired boundary")
	}
	if _, _, v := srv.Open(b[:m], dead.Add(-time.Nanosecond)); v != OK {
		t.Fatalf("open just before expiry: %v", v)
	}
}

func TestNeedsRekey(t *testing.T) {
	c, srv := pair(t, protocol.SuiteChaCha20Poly1305)
	if c.NeedsRekey(t0.Add(protocol.RekeyAfterTime - 1)) {
		t.Fatal("rekey too early")
	}
	if !c.NeedsRekey(t0.Add(protocol.RekeyAfterTime)) {
		t.Fatal("no rekey after RekeyAfterTime")
	}
	if srv.NeedsRekey(t0.Add(protocol.RekeyAfterTime)) {
		t.Fatal("responder asked to rekey")
	}
	c.sendCounter.Store(protocol.RekeyAfterMessages - 1)
	if c.NeedsRekey(t0) {
		t.Fatal("rekey one message early")
	}
	if _, err := c.Seal(protocol.CodeData, packet(0, 0), 0, t0); err != nil {
		t.Fatal(err)
	}
	if !c.NeedsRekey(t0) {
		t.Fatal("no rekey after RekeyAfterMessages")
	}
}

func TestCounterExhaustion(t *testing.T) {
	const limit = protocol.RejectAfterMessages
	for _, s := range suites {
		c, srv := pair(t, s)
		c.sendCounter.Store(limit - 3)
		// A batch of 4 does not fit in the 3 counters left: nothing sealed, nothing consumed.
		bufs := [][]byte{packet(1, 1), packet(1, 2), packet(1, 3), packet(1, 4)}
		sizes := []int{1, 1, 1, 1}
		if err := c.SealBatch(bufs, sizes, t0); !errors.Is(err, ErrKeyExpired) {
			t.Fatalf("oversized batch at the limit: %v", err)
		}
		if sizes[0] != 1 || bufs[0][0] != 0 {
			t.Fatal("failed batch modified its buffers")
		}
		if err := c.SealBatch(bufs[:2], sizes[:2], t0); err != nil {
			t.Fatal(err)
		}
		last := packet(0, 0)
		m, err := c.Seal(protocol.CodeData, last, 0, t0)
		if err != nil {
			t.Fatal(err)
		}
		if h, _ := protocol.ParseDataHeader(last[:m]); h.Counter != limit-1 {
			t.Fatalf("last counter %d", h.Counter)
		}
		// Exhausted: every further attempt fails and the counter never moves, so it cannot wrap.
		for i := 0; i < 20000; i++ {
			if _, err := c.Seal(protocol.CodeData, packet(0, 0), 0, t0); !errors.Is(err, ErrKeyExpired) {
				t.Fatalf("seal past the limit: %v", err)
			}
			sizes[0] = 1
			if err := c.SealBatch(bufs[:1], sizes[:1], t0); !errors.Is(err, ErrKeyExpired) {
				t.Fatalf("batch past the limit: %v", err)
			}
		}
		if got := c.sendCounter.Load(); got != limit {
			t.Fatalf("counter moved to %d", got)
		}
		if sent, _ := c.Stats(); sent != limit {
			t.Fatalf("Stats sent %d", sent)
		}
		// The receiver accepts the very last counter and never one at the limit.
		if _, _, v := srv.Open(last[:m], t0); v != OK {
			t.Fatalf("last valid counter: %v", v)
		}
		forged := packet(0, 0)
		protocol.PutDataHeader(forged, protocol.CodeData, serverIndex, limit)
		if _, _, v := srv.Open(forged[:protocol.MinDataLen], t0); v != Expired {
			t.Fatalf("counter at limit: %v", v)
		}
	}
}

func TestFastPathHandover(t *testing.T) {
	// Crossing fastPathLimit with a batch must hand out consecutive counters, then go on via CAS.
	c, srv := pair(t, protocol.SuiteAES256GCM)
	c.sendCounter.Store(fastPathLimit - 2)
	bufs := [][]byte{packet(1, 0), packet(1, 0), packet(1, 0), packet(1, 0)}
	sizes := []int{1, 1, 1, 1}
	if err := c.SealBatch(bufs, sizes, t0); err != nil {
		t.Fatal(err)
	}
	m, err := c.Seal(protocol.CodeData, packet(1, 0), 1, t0)
	if err != nil || m != 33 || c.sendCounter.Load() != fastPathLimit+3 {
		t.Fatalf("after handover: %d %v counter %d", m, err, c.sendCounter.Load())
	}
	verdicts := make([]Verdict, 4)
	if ok := openEach(srv, bufs, sizes, verdicts, t0); ok != 4 {
		t.Fatalf("%v", verdicts)
	}
}

func TestWrongReceiverIndex(t *testing.T) {
	c, srv := pair(t, protocol.SuiteChaCha20Poly1305)
	b := packet(8, 0)
	m, _ := c.Seal(protocol.CodeData, b, 8, t0)
	if _, _, v := c.Open(b[:m], t0); v != WrongKey {
		t.Fatalf("open with sender's keypair: %v", v)
	}
	if _, _, v := srv.Open(b[:m], t0); v != OK {
		t.Fatal(v)
	}
}

func TestTruncatedAndMalformed(t *testing.T) {
	for _, s := range suites {
		c, srv := pair(t, s)
		b := packet(0, 0)
		m, _ := c.Seal(protocol.CodeData, b, 0, t0)
		for l := 0; l < protocol.MinDataLen; l++ {
			if _, pl, v := srv.Open(b[:l], t0); v != BadHeader || pl != 0 {
				t.Fatalf("%v: length %d: %v", s, l, v)
			}
		}
		// Other codes are not data.
		for code := 0; code < 256; code++ {
			if code == int(protocol.CodeData) || code == int(protocol.CodeDisconnect) {
				continue
			}
			x := append([]byte(nil), b[:m]...)
			x[0] = byte(code)
			if _, _, v := srv.Open(x, t0); v != BadHeader {
				t.Fatalf("code %d: %v", code, v)
			}
		}
		// Batch: sizes beyond the buffer, negative sizes and nil buffers are BadHeader.
		bufs := [][]byte{nil, b, b, b[:0:0]}
		sizes := []int{5, -1, cap(b) + 1, 0}
		verdicts := make([]Verdict, 4)
		if ok := openEach(srv, bufs, sizes, verdicts, t0); ok != 0 {
			t.Fatal(ok)
		}
		for i, v := range verdicts {
			if v != BadHeader {
				t.Fatalf("%v: entry %d: %v", s, i, v)
			}
		}
		// Mismatched slice lengths: only the common prefix is processed, nothing panics.
		verdicts = make([]Verdict, 1)
		if ok := openEach(srv, [][]byte{b, b}, []int{m, m, m}, verdicts, t0); ok != 1 || verdicts[0] != OK {
			t.Fatalf("short verdicts: %d %v", ok, verdicts)
		}
		if openEach(srv, nil, nil, nil, t0) != 0 {
			t.Fatal("empty batch")
		}
	}
}

func TestSealErrors(t *testing.T) {
	c, _ := pair(t, protocol.SuiteAES256GCM)
	cases := []struct {
		b    []byte
		n    int
		want error
	}{
		{nil, 0, ErrBufferTooSmall},
		{make([]byte, 31), 0, ErrBufferTooSmall},
		{make([]byte, 16, 47), 16, ErrBufferTooSmall},
		{make([]byte, 64), -1, ErrBufferTooSmall},
		{make([]byte, 70000), MaxPlaintextLen + 1, ErrPacketTooLarge},
	}
	for i, tc := range cases {
		if _, err := c.Seal(protocol.CodeData, tc.b, tc.n, t0); !errors.Is(err, tc.want) {
			t.Fatalf("case %d: %v, want %v", i, err, tc.want)
		}
		sizes := []int{1, tc.n}
		if err := c.SealBatch([][]byte{packet(1, 0), tc.b}, sizes, t0); !errors.Is(err, tc.want) || sizes[0] != 1 {
			t.Fatalf("batch case %d: %v, want %v", i, err, tc.want)
		}
	}
	if sent, _ := c.Stats(); sent != 0 {
		t.Fatalf("failed seals consumed %d counters", sent)
	}
	for _, code := range []protocol.Code{0, protocol.CodeClientAuthRequest, protocol.CodeNotice, 0xff} {
		if _, err := c.Seal(code, packet(1, 0), 1, t0); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("code %v: %v", code, err)
		}
	}
	if err := c.SealBatch(make([][]byte, 2), make([]int, 1), t0); !errors.Is(err, ErrBatchMismatch) {
		t.Fatal(err)
	}
	if err := c.SealBatch(nil, nil, t0); err != nil {
		t.Fatal(err)
	}
}

func TestNewKeypairErrors(t *testing.T) {
	var a, b [32]byte
	b[0] = 1
	if _, err := NewKeypair(0, a, b, 1, 2, true, t0); !errors.Is(err, ErrInvalidSuite) {
		t.Fatal(err)
	}
	if _, err := NewKeypair(protocol.SuiteAES256GCM, a, a, 1, 2, true, t0); !errors.Is(err, ErrIdenticalKeys) {
		t.Fatal(err)
	}
	kp, err := NewKeypair(protocol.SuiteAES256GCM, a, b, 1, 2, true, t0)
	if err != nil || kp.LocalIndex() != 1 || kp.RemoteIndex() != 2 || kp.Suite() != protocol.SuiteAES256GCM || !kp.Created().Equal(t0) {
		t.Fatalf("accessors: %v", err)
	}
}

func TestVerdictString(t *testing.T) {
	seen := map[string]bool{}
	for v := Unset; v <= Expired; v++ {
		s := v.String()
		if s == "invalid" || seen[s] {
			t.Fatalf("verdict %d: %q", v, s)
		}
		seen[s] = true
	}
	if Verdict(200).String() != "invalid" {
		t.Fatal("unknown verdict")
	}
}

func TestConcurrentSealOneOpener(t *testing.T) {
	for _, s := range suites {
		c, srv := pair(t, s)
		const senders, batches, per = 4, 50, 16
		ch := make(chan []byte, 256)
		var wg sync.WaitGroup
		for g := 0; g < senders; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for k := 0; k < batches; k++ {
					bufs := make([][]byte, per)
					sizes := make([]int, per)
					for i := range bufs {
						sizes[i] = 1 + (g*7+i)%100
						bufs[i] = packet(sizes[i], byte(g))
					}
					if k%5 == 0 { // mix in single-packet seals
						m, err := c.Seal(protocol.CodeData, bufs[0], sizes[0], t0)
						if err != nil {
							t.Error(err)
							return
						}
						ch <- bufs[0][:m]
						continue
					}
					if err := c.SealBatch(bufs, sizes, t0); err != nil {
						t.Error(err)
						return
					}
					for i := range bufs {
						ch <- bufs[i][:sizes[i]]
					}
				}
			}(g)
		}
		go func() { wg.Wait(); close(ch) }()
		seen := map[uint64]bool{}
		for d := range ch {
			h, _ := protocol.ParseDataHeader(d)
			if seen[h.Counter] {
				t.Fatalf("%v: counter %d used twice", s, h.Counter)
			}
			seen[h.Counter] = true
			if _, _, v := srv.Open(d, t0); v != OK {
				t.Fatalf("%v: counter %d: %v", s, h.Counter, v)
			}
		}
		want := senders * (batches/5 + (batches-batches/5)*per)
		if len(seen) != want {
			t.Fatalf("%v: %d packets, want %d", s, len(seen), want)
		}
	}
}

func TestConcurrentOpeners(t *testing.T) {
	// Two goroutines open the same datagrams: each must be accepted exactly once.
	c, srv := pair(t, protocol.SuiteChaCha20Poly1305)
	const k = 500
	dgrams := make([][]byte, k)
	for i := range dgrams {
		b := packet(30, byte(i))
		m, _ := c.Seal(protocol.CodeData, b, 30, t0)
		dgrams[i] = b[:m]
	}
	var oks [2]int
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, d := range dgrams {
				if _, _, v := srv.Open(append([]byte(nil), d...), t0); v == OK {
					oks[g]++
				}
			}
		}()
	}
	wg.Wait()
	if oks[0]+oks[1] != k {
		t.Fatalf("accepted %d+%d, want %d", oks[0], oks[1], k)
	}
}

func TestBatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	for _, s := range suites {
		c, srv := pair(t, s)
		bufs, sizes, verdicts := batch(64, 1420)
		seal := testing.AllocsPerRun(200, func() {
			for i := range sizes {
				sizes[i] = 1420
			}
			if err := c.SealBatch(bufs, sizes, t0); err != nil {
				t.Fatal(err)
			}
		})
		// Open the same sealed vector every run: restore the ciphertext and forget the counters so
		// each run does the full successful work.
		saved, savedSizes := make([][]byte, len(bufs)), append([]int(nil), sizes...)
		for i := range bufs {
			saved[i] = append([]byte(nil), bufs[i][:sizes[i]]...)
		}
		open := testing.AllocsPerRun(200, func() {
			for i := range bufs {
				copy(bufs[i], saved[i])
			}
			copy(sizes, savedSizes)
			srv.window = replay.Window{}
			if ok := openEach(srv, bufs, sizes, verdicts, t0); ok != len(bufs) {
				t.Fatalf("ok %d: %v", ok, verdicts[0])
			}
		})
		single := testing.AllocsPerRun(200, func() {
			m, _ := c.Seal(protocol.CodeData, bufs[0], 64, t0)
			srv.Open(bufs[0][:m], t0)
		})
		if seal != 0 || open != 0 || single != 0 {
			t.Fatalf("%v: allocs SealBatch %v Open of a vector %v Seal+Open %v", s, seal, open, single)
		}
	}
}

// batch makes a vector of k buffers with room for n-byte packets.
func batch(k, n int) (bufs [][]byte, sizes []int, verdicts []Verdict) {
	bufs, sizes, verdicts = make([][]byte, k), make([]int, k), make([]Verdict, k)
	for i := range bufs {
		bufs[i] = packet(n, byte(i))
		sizes[i] = n
	}
	return
}

func ExampleKeypair_SealBatch() {
	var k1, k2 [32]byte
	k2[0] = 1
	now := time.Now()
	client, _ := NewKeypair(protocol.SuiteAES256GCM, k1, k2, 1, 2, true, now)
	gateway, _ := NewKeypair(protocol.SuiteAES256GCM, k2, k1, 2, 1, false, now)

	buf := make([]byte, protocol.Headroom+5+protocol.TagLen)
	copy(buf[protocol.Headroom:], "hello")
	bufs, sizes := [][]byte{buf}, []int{5}
	_ = client.SealBatch(bufs, sizes, now)

	_, n, verdict := gateway.Open(bufs[0][:sizes[0]], now)
	fmt.Println(verdict, string(buf[protocol.Headroom:protocol.Headroom+n]))
	// Output: ok hello
}

// openEach opens bufs[i][:sizes[i]] in place with Open, as a receive loop does: verdicts[i] is packet i's
// verdict and, for OK packets, sizes[i] becomes the plaintext length. It processes the first
// min(len(bufs), len(sizes), len(verdicts)) entries and returns how many were OK.
func openEach(kp *Keypair, bufs [][]byte, sizes []int, verdicts []Verdict, now time.Time) (ok int) {
	for i := range min(len(bufs), len(sizes), len(verdicts)) {
		if sizes[i] < 0 || sizes[i] > cap(bufs[i]) {
			verdicts[i] = BadHeader // a size the buffer cannot hold: the caller's mistake, not a packet
			continue
		}
		_, pl, v := kp.Open(bufs[i][:sizes[i]], now)
		verdicts[i] = v
		if v == OK {
			sizes[i] = pl
			ok++
		}
	}
	return ok
}
