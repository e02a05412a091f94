package transport

import (
	"testing"

	"github.com/salvovpn/salvo/protocol"
)

// fuzzSealed returns datagrams the client really sealed (deterministic keys and counters), for
// both suites, keyed by content.
func fuzzSealed(tb testing.TB, s protocol.Suite) map[string]bool {
	c, _ := pair(tb, s)
	out := map[string]bool{}
	for i, n := range []int{0, 1, 33, 200} {
		b := packet(n, byte(i))
		code := protocol.CodeData
		if n == 1 {
			code = protocol.CodeDisconnect
		}
		m, err := c.Seal(code, b, n, t0)
		if err != nil {
			tb.Fatal(err)
		}
		out[string(b[:m])] = true
	}
	return out
}

// FuzzOpen feeds arbitrary datagrams to a fresh receiving keypair of each suite: Open must never
// panic, and must return OK only for a datagram the peer sealed.
func FuzzOpen(f *testing.F) {
	sealed := map[protocol.Suite]map[string]bool{}
	for _, s := range suites {
		sealed[s] = fuzzSealed(f, s)
		for d := range sealed[s] {
			f.Add([]byte(d))
			bad := []byte(d)
			bad[len(bad)-1] ^= 1
			f.Add(bad)
			f.Add([]byte(d)[:len(d)-1])
		}
	}
	f.Add([]byte{})
	f.Add([]byte{3})
	f.Add(make([]byte, 31))
	f.Add(make([]byte, 32))
	hdr := make([]byte, 48)
	protocol.PutDataHeader(hdr, protocol.CodeData, serverIndex, protocol.RejectAfterMessages)
	f.Add(hdr)
	f.Fuzz(func(t *testing.T, d []byte) {
		for _, s := range suites {
			_, srv := pair(t, s)
			b := append([]byte(nil), d...)
			code, pl, v := srv.Open(b, t0)
			if v == OK {
				if !sealed[s][string(d)] {
					t.Fatalf("%v: forged datagram accepted: %x", s, d)
				}
				if pl != len(d)-protocol.DataOverhead || (code != protocol.CodeData && code != protocol.CodeDisconnect) {
					t.Fatalf("%v: OK with code %v length %d", s, code, pl)
				}
				continue
			}
			if pl != 0 {
				t.Fatalf("%v: verdict %v with length %d", s, v, pl)
			}
		}
	})
}
