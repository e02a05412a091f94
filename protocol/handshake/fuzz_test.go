package handshake

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/salvovpn/salvo/protocol"
)

// fuzzClient rebuilds the same pending handshake every time (deterministic randomness), so a response the
// server produced for it during setup stays a valid seed for every fuzz iteration.
func fuzzClient(t testing.TB, pub Key) (*ClientHandshake, []byte) {
	h, msg, err := NewLogin(clientCfg(pub, nil), 21, t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h, msg
}

func FuzzConsumeRequest(f *testing.F) {
	srv, kp := newTestServer(f)
	cfg := clientCfg(kp.Public, nil)
	h, msg, _ := NewLogin(cfg, 1, t0, nil)
	f.Add(msg, false)
	_, cr, _ := srv.ConsumeRequest(msg, srcA, t0, true)
	f.Add(cr, true)
	ck, err := h.ConsumeCookieReply(cr, t0)
	if err != nil {
		f.Fatal(err)
	}
	_, withCookie, _ := NewLogin(cfg, 2, t0, ck)
	f.Add(withCookie, true)
	_, resume, _ := NewResume(cfg, 3, 4, [32]byte{1}, t0, nil)
	f.Add(resume, false)
	f.Add(NewNotice(NoticeKeyMismatch, 1), false)
	f.Add([]byte{1, 1, 0, 0}, false)
	f.Fuzz(func(t *testing.T, d []byte, underLoad bool) {
		req, reply, err := srv.ConsumeRequest(d, srcA, t0, underLoad)
		switch {
		case err == nil:
			if req == nil || reply != nil || !validLogin(req.Login) || len(req.Suites) == 0 {
				t.Fatalf("bad success: %+v", req)
			}
			if _, err := srv.Reject(req, ResultBadCredentials); err != nil {
				t.Fatal(err)
			}
		case errors.Is(err, ErrMac1):
			if r, i, err := ParseNotice(reply); err != nil || r != NoticeKeyMismatch || i != leU32(d[4:8]) {
				t.Fatal("bad notice")
			}
		case errors.Is(err, ErrCookieRequired):
			if len(reply) != protocol.CookieReplyLen {
				t.Fatal("bad cookie reply")
			}
		default:
			if req != nil || reply != nil {
				t.Fatal("error with results")
			}
		}
	})
}

func leU32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func FuzzConsumeResponse(f *testing.F) {
	srv, kp := newTestServer(f)
	_, msg := fuzzClient(f, kp.Public)
	req, _, err := srv.ConsumeRequest(msg, srcA, t0, false)
	if err != nil {
		f.Fatal(err)
	}
	ok, _, err := srv.Accept(req, 5, fullSettings(), nil, t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ok)
	srv2 := NewServer(kp, nil, detRand(10))
	req, _, _ = srv2.ConsumeRequest(msg, srcA, t0, false)
	withTicket, _, err := srv2.Accept(req, 5, fullSettings(), &Ticket{Blob: []byte("opaque"), Lifetime: time.Hour}, t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(withTicket)
	req, _, _ = NewServer(kp, nil, detRand(9)).ConsumeRequest(msg, srcA, t0, false)
	fail, _ := srv.Reject(req, ResultRateLimited)
	f.Add(fail)
	f.Add(ok[:minResponseLen])
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, d []byte) {
		h, _ := fuzzClient(t, kp.Public)
		res, keys, st, err := h.ConsumeResponse(d)
		if err != nil {
			if res != 0 || !reflect.DeepEqual(keys, SessionKeys{}) {
				t.Fatal("error with results")
			}
			return
		}
		if !res.Valid() {
			t.Fatal("invalid result")
		}
		if res == ResultOK {
			if err := st.Validate(); err != nil || !keys.Suite.Valid() {
				t.Fatalf("accepted invalid settings or suite: %v", err)
			}
		}
	})
}

func FuzzConsumeCookieReply(f *testing.F) {
	srv, kp := newTestServer(f)
	_, msg := fuzzClient(f, kp.Public)
	_, cr, err := srv.ConsumeRequest(msg, srcA, t0, true)
	if !errors.Is(err, ErrCookieRequired) {
		f.Fatal(err)
	}
	f.Add(cr)
	f.Add(cr[:protocol.CookieReplyLen-1])
	f.Add([]byte{4, 0, 0, 0, 21, 0, 0, 0})
	f.Fuzz(func(t *testing.T, d []byte) {
		h, _ := fuzzClient(t, kp.Public)
		c, err := h.ConsumeCookieReply(d, t0)
		if (err == nil) != (c != nil) {
			t.Fatal("inconsistent result")
		}
		if err == nil && !bytes.Equal(d, cr) {
			// Only the gateway's own reply can open; a different datagram that opens is a forgery.
			t.Fatalf("forged cookie reply accepted: %x", d)
		}
	})
}

func FuzzParseNotice(f *testing.F) {
	f.Add(NewNotice(NoticeKeyMismatch, 7))
	f.Add(NewNotice(NoticeUnknownSession, 0xffffffff))
	f.Add([]byte{6, 3, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, d []byte) {
		r, i, err := ParseNotice(d)
		if err == nil && !bytes.Equal(NewNotice(r, i), d) {
			t.Fatalf("non-canonical notice accepted: %x", d)
		}
	})
}

func FuzzRequestBody(f *testing.F) {
	var rb requestBody
	putTAI64N(rb.ts[:], t0)
	rb.instanceID, rb.kind, rb.suites, rb.login, rb.password = 5, KindLogin, aesPref, "bob", []byte("pw")
	b, _ := appendRequestBody(nil, &rb)
	f.Add(b)
	rb.kind, rb.password, rb.sessionIndex, rb.proof = KindResume, nil, 9, [32]byte{1, 2, 3}
	b, _ = appendRequestBody(nil, &rb)
	f.Add(b)
	rb.kind, rb.sessionIndex, rb.ticket = KindTicket, 0, []byte("opaque ticket")
	b, _ = appendRequestBody(nil, &rb)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, d []byte) {
		got, err := parseRequestBody(d)
		if err != nil {
			return
		}
		// One message, one encoding: whatever parses re-encodes to the same bytes.
		re, err := appendRequestBody(nil, &got)
		if err != nil || !bytes.Equal(re, d) {
			t.Fatalf("re-encode mismatch: %v\n%x\n%x", err, d, re)
		}
	})
}

func FuzzSettings(f *testing.F) {
	for _, s := range []Settings{fullSettings(), maxSettings(), {MTU: 1500}} {
		b, err := appendSettings(nil, &s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, d []byte) {
		s, err := decodeSettings(d)
		if err != nil {
			return
		}
		re, err := appendSettings(nil, &s)
		if err != nil || !bytes.Equal(re, d) {
			t.Fatalf("re-encode mismatch: %v\n%x\n%x", err, d, re)
		}
	})
}
