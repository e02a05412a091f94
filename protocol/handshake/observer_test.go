package handshake

import (
	"testing"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/blake2s"

	"github.com/salvovpn/salvo/protocol/handshake/handshaketest"
)

// TestObserverCannotResume plays a passive observer that holds every byte of a login and of a resume, and
// the gateway's public key. It recomputes the handshake hash (shown to equal the real one, so the observer
// really knows everything public), derives every key that could be made from it, and tries to resume the
// victim's session with each: the gateway refuses them all. It also checks that a genuine proof does not
// verify for another client instance or session index.
func TestObserverCannotResume(t *testing.T) {
	srv, kp := newTestServer(t)
	cfg := clientCfg(kp.Public, nil)

	// The login, with the wire bytes kept. A raw Noise responder stands in for the gateway here only to
	// read its handshake hash, which the package does not expose.
	h, msg1, err := NewLogin(cfg, 21, t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := noise.NewHandshakeState(noise.Config{CipherSuite: cipherSuite, Pattern: noise.HandshakeNK,
		Prologue: prologue, StaticKeypair: noise.DHKey{Private: kp.Private[:], Public: kp.Public[:]}, Random: detRand(9)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := hs.ReadMessage(nil, msg1[headerLen:len(msg1)-2*macLen]); err != nil {
		t.Fatal(err)
	}
	body := append([]byte{byte(ResultOK), 1, 0, 0, 0, byte(DefaultSuites()[0]), 0}, mustSettings(t)...) // no ticket
	msg2 := appendHeader(nil, 0x02, 2, 21)
	msg2, cs1, cs2, err := hs.WriteMessage(msg2, body)
	if err != nil {
		t.Fatal(err)
	}
	res, keys, _, err := h.ConsumeResponse(msg2)
	if err != nil || res != ResultOK {
		t.Fatal(res, err)
	}
	obs := handshaketest.ObserverHash(kp.Public, msg1, msg2)
	if string(obs[:]) != string(hs.ChannelBinding()) {
		t.Fatal("the observer's handshake hash differs from the real one: the test does not model the observer")
	}
	if keys.ResumeKey != deriveResumeKey(cs1.UnsafeKey(), cs2.UnsafeKey()) {
		t.Fatal("client resume key is not derived from the Split keys")
	}

	// Every key the observer can make from public values.
	candidates := map[string][32]byte{
		"h":                  obs,
		"HMAC(h, v1 label)":  hmacBlake2s(obs[:], []byte("salvo resume v1")),
		"HMAC(h, v2 label)":  hmacBlake2s(obs[:], []byte(resumeKeyLabel)),
		"HASH(h)":            blake2s.Sum256(obs[:]),
		"mac1 key":           labelHash("mac1----", kp.Public),
		"cookie key":         labelHash("cookie--", kp.Public),
		"HMAC(pub, v2)":      hmacBlake2s(kp.Public[:], []byte(resumeKeyLabel)),
		"HMAC(e1||e2, v2)":   hmacBlake2s(append(append([]byte(nil), msg1[8:40]...), msg2[8:40]...), []byte(resumeKeyLabel)),
		"HMAC(zero key, v2)": deriveResumeKey([32]byte{}, [32]byte{}),
	}
	now := t0.Add(time.Minute)
	for name, key := range candidates {
		if key == keys.ResumeKey {
			t.Fatalf("the observer derived the resume key as %s", name)
		}
		now = now.Add(time.Millisecond)
		_, forged, err := NewResume(cfg, 22, 1, key, now, nil)
		if err != nil {
			t.Fatal(err)
		}
		req, _, err := srv.ConsumeRequest(forged, srcB, now, false)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if req.VerifyResume(keys.ResumeKey) {
			t.Fatalf("a resume proven with %s verified", name)
		}
		if _, _, err := srv.Accept(req, 23, fullSettings(), nil, now); err == nil {
			t.Fatalf("a resume proven with %s was accepted", name)
		}
	}

	// The genuine key, used by another instance or for another session, does not verify either: the proof
	// binds both.
	for _, tc := range []struct {
		name     string
		instance uint64
		index    uint32
	}{{"other instance", cfg.InstanceID + 2, 1}, {"other session", cfg.InstanceID, 2}} {
		other := *cfg
		other.InstanceID = tc.instance
		now = now.Add(time.Millisecond)
		_, m, err := NewResume(&other, 24, tc.index, keys.ResumeKey, now, nil)
		if err != nil {
			t.Fatal(err)
		}
		req, _, err := srv.ConsumeRequest(m, srcA, now, false)
		if err != nil {
			t.Fatal(err)
		}
		// Present it as if for the victim's session: the proof must not carry over.
		req.InstanceID, req.SessionIndex = cfg.InstanceID, 1
		if req.VerifyResume(keys.ResumeKey) {
			t.Fatalf("%s: a proof for another instance or session verified", tc.name)
		}
	}
}

func mustSettings(t *testing.T) []byte {
	t.Helper()
	st := fullSettings()
	b, err := appendSettings(nil, &st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
