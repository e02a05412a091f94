package handshake

import (
	"bytes"
	"crypto/hmac"
	"encoding/binary"
	"hash"
	"testing"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/blake2s"

	"github.com/salvovpn/salvo/protocol"
)

// TestAgainstRawNoise plays the gateway with flynn/noise directly and PROTOCOL.md's byte layout built by
// hand, so the client is checked against the spec rather than against this package's own server: header
// layout, body offsets, and that the first Split key protects client -> gateway.
func TestAgainstRawNoise(t *testing.T) {
	kp := mustKeypair(t, 1)
	cfg := clientCfg(kp.Public, chaOnly)
	h, msg, err := NewLogin(cfg, 0x0a0b0c0d, t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if msg[0] != 1 || msg[1] != 2 || msg[2] != 0 || msg[3] != 0 || binary.LittleEndian.Uint32(msg[4:8]) != 0x0a0b0c0d {
		t.Fatalf("request header %x", msg[:8])
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s),
		Pattern:       noise.HandshakeNK,
		Prologue:      []byte("salvo v2"),
		StaticKeypair: noise.DHKey{Private: kp.Private[:], Public: kp.Public[:]},
		Random:        detRand(4),
	})
	if err != nil {
		t.Fatal(err)
	}
	body, _, _, err := hs.ReadMessage(nil, msg[8:len(msg)-32])
	if err != nil {
		t.Fatal(err)
	}
	// timestamp(12) instance(8) kind(1) n(1) suites(n) loginlen login pwlen pw
	if binary.LittleEndian.Uint64(body[12:20]) != cfg.InstanceID || body[20] != 1 || body[21] != 1 || body[22] != 1 ||
		int(body[23]) != len(cfg.Login) || string(body[24:24+len(cfg.Login)]) != cfg.Login ||
		string(body[25+len(cfg.Login):]) != cfg.Password {
		t.Fatalf("request body layout %x", body)
	}
	// result 0, session index, suite, a 3-byte ticket with its secret (32 x 7) and lifetime (3600 s), MTU
	// 1400, keepalive 30, IPv4 10.1.2.3/24, no IPv6, one route 0.0.0.0/0, no excluded, one DNS 10.1.2.1,
	// one domain "lan".
	rb := []byte{0, 0x44, 0x33, 0x22, 0x11, byte(protocol.SuiteChaCha20Poly1305), 3, 't', 'k', 't'}
	rb = append(rb, bytes.Repeat([]byte{7}, 32)...)
	rb = append(rb, 0x10, 0x0e, 0, 0)
	rb = append(rb, 0x78, 0x05, 30, 0, 24, 10, 1, 2, 3, 0, 1, 4, 0, 0, 0, 0, 0, 0, 1, 4, 10, 1, 2, 1, 1, 3, 'l', 'a', 'n')
	resp := []byte{2, 2, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a}
	resp, cs1, cs2, err := hs.WriteMessage(resp, rb)
	if err != nil {
		t.Fatal(err)
	}
	res, keys, st, err := h.ConsumeResponse(resp)
	if err != nil || res != ResultOK {
		t.Fatal(res, err)
	}
	if keys.Send != cs1.UnsafeKey() || keys.Recv != cs2.UnsafeKey() {
		t.Fatal("client Send is not the first Split key")
	}
	if keys.RemoteIndex != 0x11223344 || keys.Suite != protocol.SuiteChaCha20Poly1305 {
		t.Fatal("index or suite")
	}
	if string(keys.Ticket.Blob) != "tkt" || keys.Ticket.Secret != [32]byte(bytes.Repeat([]byte{7}, 32)) || keys.Ticket.Lifetime != time.Hour {
		t.Fatalf("ticket %v", keys.Ticket)
	}
	if st.MTU != 1400 || st.Keepalive.Seconds() != 30 || st.IPv4.String() != "10.1.2.3/24" || st.IPv6.IsValid() ||
		len(st.Routes) != 1 || st.Routes[0].String() != "0.0.0.0/0" || len(st.ExcludedRoutes) != 0 ||
		len(st.DNS) != 1 || st.DNS[0].String() != "10.1.2.1" || len(st.SearchDomains) != 1 || st.SearchDomains[0] != "lan" {
		t.Fatalf("settings %+v", st)
	}
	// The resume key is HMAC-BLAKE2s(k1 || k2, label), computed here with the standard library's HMAC so the
	// check does not go through this package's helper.
	k1, k2 := cs1.UnsafeKey(), cs2.UnsafeKey()
	m := hmac.New(func() hash.Hash { h, _ := blake2s.New256(nil); return h }, append(k1[:], k2[:]...))
	m.Write([]byte("salvo v2 resume key"))
	if !bytes.Equal(keys.ResumeKey[:], m.Sum(nil)) {
		t.Fatal("resume key is not HMAC-BLAKE2s(k1 || k2, \"salvo v2 resume key\")")
	}
}
