package handshake

import (
	"testing"
	"time"
)

// mutations yields every truncation, one appended byte, and every single-bit flip of msg.
func mutations(msg []byte, f func(desc string, m []byte)) {
	for n := range len(msg) {
		f("truncated", append([]byte(nil), msg[:n]...))
	}
	f("extended", append(append([]byte(nil), msg...), 0))
	for i := range msg {
		for bit := range 8 {
			m := append([]byte(nil), msg...)
			m[i] ^= 1 << bit
			f("flip", m)
		}
	}
}

// Every byte of every handshake message matters: no truncation, extension or bit flip is accepted, nothing
// panics, and the genuine message still works afterwards (the mutations did not poison any state).
func TestMutatedMessages(t *testing.T) {
	srv, kp := newTestServer(t)
	cfg := clientCfg(kp.Public, nil)

	// Request, under load with a valid cookie so that mac2 is checked as well.
	h0, m0, _ := NewLogin(cfg, 3, t0, nil)
	_, cr, err := srv.ConsumeRequest(m0, srcA, t0, true)
	if err == nil {
		t.Fatal("expected cookie reply")
	}
	cookieReply := cr
	ck, err := h0.ConsumeCookieReply(cr, t0)
	if err != nil {
		t.Fatal(err)
	}
	// Cookie reply mutations against the handshake it answers.
	mutations(cookieReply, func(desc string, m []byte) {
		if c, err := h0.ConsumeCookieReply(m, t0); err == nil || c != nil {
			t.Fatalf("cookie reply %s %x accepted", desc, m)
		}
	})
	if _, err := h0.ConsumeCookieReply(cookieReply, t0); err != nil {
		t.Fatalf("genuine cookie reply after mutations: %v", err)
	}

	now := t0.Add(time.Second)
	h, msg, _ := NewLogin(cfg, 4, now, ck)
	mutations(msg, func(desc string, m []byte) {
		if req, _, err := srv.ConsumeRequest(m, srcA, now, true); err == nil || req != nil {
			t.Fatalf("request %s %x accepted", desc, m)
		}
	})
	req, _, err := srv.ConsumeRequest(msg, srcA, now, true)
	if err != nil {
		t.Fatalf("genuine request after mutations: %v", err)
	}
	resp, _, err := srv.Accept(req, 8, fullSettings(), nil, now)
	if err != nil {
		t.Fatal(err)
	}
	mutations(resp, func(desc string, m []byte) {
		if _, _, _, err := h.ConsumeResponse(m); err == nil {
			t.Fatalf("response %s %x accepted", desc, m)
		}
	})
	if res, _, _, err := h.ConsumeResponse(resp); err != nil || res != ResultOK {
		t.Fatalf("genuine response after mutations: %v %v", res, err)
	}

	// A failure response too.
	h2, msg2, _ := NewLogin(cfg, 5, now.Add(time.Second), nil)
	req2, _, err := srv.ConsumeRequest(msg2, srcA, now.Add(time.Second), false)
	if err != nil {
		t.Fatal(err)
	}
	resp2, err := srv.Reject(req2, ResultBadCredentials)
	if err != nil {
		t.Fatal(err)
	}
	mutations(resp2, func(desc string, m []byte) {
		if _, _, _, err := h2.ConsumeResponse(m); err == nil {
			t.Fatalf("failure response %s %x accepted", desc, m)
		}
	})
	if res, _, _, err := h2.ConsumeResponse(resp2); err != nil || res != ResultBadCredentials {
		t.Fatalf("genuine failure response after mutations: %v %v", res, err)
	}
}
