package protocol

import (
	"errors"
	"testing"
)

func TestParseCode(t *testing.T) {
	if _, err := ParseCode(nil); !errors.Is(err, ErrNotEnoughData) {
		t.Fatalf("empty: %v", err)
	}
	for _, b := range []byte{0x00, 0x07, 0xff} {
		if _, err := ParseCode([]byte{b}); !errors.Is(err, ErrInvalidPacketCode) {
			t.Fatalf("code %#x: %v", b, err)
		}
	}
	for c := CodeClientAuthRequest; c <= CodeNotice; c++ {
		got, err := ParseCode([]byte{byte(c), 1, 2})
		if err != nil || got != c {
			t.Fatalf("code %v: %v %v", c, got, err)
		}
		if c.String() == "invalid" {
			t.Fatalf("code %d has no name", c)
		}
	}
}

func TestDataHeaderRoundTrip(t *testing.T) {
	b := make([]byte, MinDataLen)
	PutDataHeader(b, CodeData, 0xdeadbeef, 1<<40+7)
	h, err := ParseDataHeader(b)
	if err != nil || h.Receiver != 0xdeadbeef || h.Counter != 1<<40+7 || h.Code != CodeData {
		t.Fatalf("got %+v %v", h, err)
	}
	if _, err := ParseDataHeader(b[:MinDataLen-1]); !errors.Is(err, ErrNotEnoughData) {
		t.Fatalf("short: %v", err)
	}
	b[2] = 1
	if _, err := ParseDataHeader(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("reserved: %v", err)
	}
	b[2] = 0
	b[0] = byte(CodeClientAuthRequest)
	if _, err := ParseDataHeader(b); !errors.Is(err, ErrInvalidPacketCode) {
		t.Fatalf("code: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x03})
	f.Add(make([]byte, MinDataLen))
	seed := make([]byte, MinDataLen+20)
	PutDataHeader(seed, CodeData, 1, 2)
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCode(b)
		if err == nil && !(c >= CodeClientAuthRequest && c <= CodeNotice) {
			t.Fatalf("accepted code %d", c)
		}
		h, err := ParseDataHeader(b)
		if err == nil {
			out := make([]byte, DataHeaderLen)
			PutDataHeader(out, h.Code, h.Receiver, h.Counter)
			if string(out) != string(b[:DataHeaderLen]) {
				t.Fatalf("header does not round-trip")
			}
		}
	})
}

// TestIndexFor: the index made for worker w is owned by w, for every worker count the gateway allows and
// at both ends of the index range, where the top block of n is cut short by 2^32.
func TestIndexFor(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 64, 1024} {
		for _, r := range []uint32{0, 1, 12345, 0x80000000, 0xfffffffe, 0xffffffff} {
			for _, w := range []int{0, n / 2, n - 1} {
				idx := IndexFor(r, w, n)
				if got := IndexOwner(idx, n); got != w {
					t.Errorf("n=%d r=%#x w=%d: IndexFor = %#x, owned by %d", n, r, w, idx, got)
				}
				if r/uint32(n) != idx/uint32(n) && idx/uint32(n)+1 != r/uint32(n) {
					t.Errorf("n=%d r=%#x w=%d: %#x is not in r's block or the one below", n, r, w, idx)
				}
			}
		}
	}
}
