package handshake

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flynn/noise"
)

// issueTicket logs in and hands the client a ticket, returning what the client holds.
func issueTicket(t *testing.T, srv *Server, cfg *ClientConfig, now time.Time) Ticket {
	t.Helper()
	h, msg, err := NewLogin(cfg, 31, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _, err := srv.ConsumeRequest(msg, srcA, now, false)
	if err != nil {
		t.Fatal(err)
	}
	issued := Ticket{Blob: []byte("sealed by the gateway"), Lifetime: 24 * time.Hour}
	issued.Secret[0], issued.Secret[31] = 0x5a, 0xa5
	ck, _ := complete(t, srv, h, req, 32, &issued, now)
	if !bytes.Equal(ck.Ticket.Blob, issued.Blob) || ck.Ticket.Secret != issued.Secret || ck.Ticket.Lifetime != issued.Lifetime {
		t.Fatalf("client got %v, gateway issued %v", ck.Ticket, issued)
	}
	return ck.Ticket
}

func TestTicketRequest(t *testing.T) {
	srv, kp := newTestServer(t)
	cfg := clientCfg(kp.Public, nil)
	tk := issueTicket(t, srv, cfg, t0)

	// A new gateway process (same static key, nothing remembered) takes the ticket.
	srv2 := NewServer(kp, nil, detRand(40))
	now := t0.Add(time.Minute)
	h, msg, err := NewTicketRequest(&ClientConfig{ServerPublic: kp.Public, Login: cfg.Login, InstanceID: cfg.InstanceID, Rand: detRand(41)}, 33, tk, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(msg, []byte(cfg.Password)) || bytes.Contains(msg, tk.Secret[:]) {
		t.Fatal("a ticket request carries the password or the ticket secret")
	}
	req, _, err := srv2.ConsumeRequest(msg, srcA, now, false)
	if err != nil {
		t.Fatal(err)
	}
	if req.Kind != KindTicket || !bytes.Equal(req.Ticket, tk.Blob) || req.Password != nil || req.Login != cfg.Login || req.InstanceID != cfg.InstanceID {
		t.Fatalf("ticket request: %v %q", req, req.Ticket)
	}
	if _, _, err := srv2.Accept(req, 34, fullSettings(), nil, now); !errors.Is(err, ErrResumeNotVerified) {
		t.Fatalf("Accept before VerifyTicket: %v", err)
	}
	wrong := tk.Secret
	wrong[5] ^= 1
	if req.VerifyTicket(wrong) {
		t.Fatal("wrong ticket secret verified")
	}
	if _, _, err := srv2.Accept(req, 34, fullSettings(), nil, now); !errors.Is(err, ErrResumeNotVerified) {
		t.Fatalf("Accept after a failed VerifyTicket: %v", err)
	}
	if req.VerifyResume(tk.Secret) {
		t.Fatal("a ticket request verified as a resume")
	}
	if !req.VerifyTicket(tk.Secret) {
		t.Fatal("right ticket secret refused")
	}
	ck, _ := complete(t, srv2, h, req, 34, nil, now)
	if !ck.Ticket.IsZero() {
		t.Fatal("no ticket was issued, yet the client holds one")
	}
}

// TestTicketProofIsBound: the proof covers the login, the instance and the blob, so a request that swaps
// any of them (only the client can, inside Noise) does not verify; a resume proof is never a ticket proof.
func TestTicketProofIsBound(t *testing.T) {
	var secret [32]byte
	secret[3] = 9
	e, ts := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 12)
	base := ticketProof(secret, e, ts, 7, "alice", []byte("blob"))
	for name, p := range map[string][32]byte{
		"ephemeral": ticketProof(secret, bytes.Repeat([]byte{3}, 32), ts, 7, "alice", []byte("blob")),
		"timestamp": ticketProof(secret, e, bytes.Repeat([]byte{4}, 12), 7, "alice", []byte("blob")),
		"instance":  ticketProof(secret, e, ts, 8, "alice", []byte("blob")),
		"login":     ticketProof(secret, e, ts, 7, "alicf", []byte("blob")),
		"blob":      ticketProof(secret, e, ts, 7, "alice", []byte("blob2")),
		"resume":    resumeProof(secret, e, ts, 7, 0, "alice"),
	} {
		if p == base {
			t.Errorf("the proof does not depend on the %s", name)
		}
	}
}

// TestTicketLiftedByKeyThief plays the attacker who recorded a ticket request and later stole the
// gateway's static key: it decrypts message 1, so it has the blob and the proof, but not the secret (that
// came in message 2, under ee). Its own request with the lifted blob and proof must not verify.
func TestTicketLiftedByKeyThief(t *testing.T) {
	srv, kp := newTestServer(t)
	cfg := clientCfg(kp.Public, nil)
	tk := issueTicket(t, srv, cfg, t0)
	now := t0.Add(time.Minute)
	_, msg, err := NewTicketRequest(cfg, 35, tk, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := noise.NewHandshakeState(noise.Config{CipherSuite: cipherSuite, Pattern: noise.HandshakeNK,
		Prologue: prologue, StaticKeypair: noise.DHKey{Private: kp.Private[:], Public: kp.Public[:]}, Random: detRand(42)})
	if err != nil {
		t.Fatal(err)
	}
	body, _, _, err := hs.ReadMessage(nil, msg[headerLen:len(msg)-2*macLen])
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := parseRequestBody(body)
	if err != nil || !bytes.Equal(stolen.ticket, tk.Blob) {
		t.Fatalf("the thief could not read the blob: %v", err)
	}
	// The thief's own request: its fresh ephemeral key and timestamp, the lifted blob and proof.
	later := now.Add(time.Second)
	forged := &Ticket{Blob: stolen.ticket} // secret unknown: zero
	_, fmsg, err := NewTicketRequest(&ClientConfig{ServerPublic: kp.Public, Login: cfg.Login, InstanceID: cfg.InstanceID, Rand: detRand(43)}, 36, *forged, later, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv2 := NewServer(kp, nil, detRand(44))
	req, _, err := srv2.ConsumeRequest(fmsg, srcB, later, false)
	if err != nil {
		t.Fatal(err)
	}
	req.proof = stolen.proof // what it lifted, in place of a proof under a secret it does not have
	if req.VerifyTicket(tk.Secret) {
		t.Fatal("a lifted ticket proof verified in another handshake")
	}
}

func TestTicketEncodingLimits(t *testing.T) {
	srv, kp := newTestServer(t)
	cfg := clientCfg(kp.Public, nil)
	if _, _, err := NewTicketRequest(cfg, 1, Ticket{}, t0, nil); !errors.Is(err, ErrInvalidTicket) {
		t.Fatalf("empty ticket: %v", err)
	}
	if _, _, err := NewTicketRequest(cfg, 1, Ticket{Blob: make([]byte, 256)}, t0, nil); !errors.Is(err, ErrInvalidTicket) {
		t.Fatalf("256-byte ticket: %v", err)
	}
	// The largest ticket fits the largest request the gateway accepts, with the longest login.
	long := &ClientConfig{ServerPublic: kp.Public, Login: strings.Repeat("l", 64), InstanceID: 1, Rand: detRand(5)}
	_, msg, err := NewTicketRequest(long, 1, Ticket{Blob: make([]byte, 255), Lifetime: time.Hour}, t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.ConsumeRequest(msg, srcA, t0, false); err != nil {
		t.Fatalf("largest ticket request refused: %v", err)
	}
	for _, bad := range []Ticket{{Blob: []byte("x")}, {Blob: []byte("x"), Lifetime: 31 * 24 * time.Hour}, {Blob: make([]byte, 256), Lifetime: time.Hour}} {
		if _, err := appendTicket(nil, &bad); !errors.Is(err, ErrInvalidTicket) {
			t.Errorf("%v: %v", bad, err)
		}
	}
	if s := (Ticket{Secret: [32]byte{0xee}}).String(); strings.Contains(s, "ee") || !strings.Contains(s, "redacted") {
		t.Errorf("String shows the secret: %s", s)
	}
}
