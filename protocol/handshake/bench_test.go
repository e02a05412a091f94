package handshake

import (
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

// pregenerate builds n distinct login requests outside the timed region (client cost is not measured): one
// instance with strictly increasing timestamps, so every request passes the replay check once.
func pregenerate(b *testing.B, pub Key, n int) [][]byte {
	b.Helper()
	cfg := clientCfg(pub, nil)
	msgs := make([][]byte, n)
	for i := range msgs {
		_, m, err := NewLogin(cfg, uint32(i), t0.Add(time.Duration(i)), nil)
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = m
	}
	return msgs
}

func benchServer(b *testing.B, hashPassword bool) {
	srv, kp := newTestServer(b)
	msgs := pregenerate(b, kp.Public, b.N)
	st := fullSettings()
	salt := []byte("0123456789abcdef")
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		now := t0.Add(time.Duration(i))
		req, _, err := srv.ConsumeRequest(msgs[i], srcA, now, false)
		if err != nil {
			b.Fatal(err)
		}
		if hashPassword {
			// What the engine does between ConsumeRequest and Accept: the user store (elsewhere) hashes the
			// presented password with argon2id and compares it with the stored hash. Parameters m=64 MiB,
			// t=2, p=1; this dominates the cost of a login by orders of magnitude.
			_ = argon2.IDKey(req.Password, salt, 2, 64*1024, 1, 32)
		}
		if _, _, err := srv.Accept(req, uint32(i), st, nil, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
}

// BenchmarkServerHandshake is the gateway's cost per login without password hashing: mac1, Noise message 1
// (one DH), body parse, replay check, Noise message 2 (key generation and two DH), settings encoding.
func BenchmarkServerHandshake(b *testing.B) { benchServer(b, false) }

// BenchmarkServerHandshakeArgon2id adds the argon2id password check to show the combined cost.
func BenchmarkServerHandshakeArgon2id(b *testing.B) { benchServer(b, true) }

// BenchmarkRejectMac1 is the cost of dropping junk aimed at another key (mac1 only).
func BenchmarkRejectMac1(b *testing.B) {
	srv, _ := newTestServer(b)
	other := mustKeypair(b, 77)
	_, m, _ := NewLogin(clientCfg(other.Public, nil), 1, t0, nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := srv.ConsumeRequest(m, srcA, t0, false); err == nil {
			b.Fatal("accepted")
		}
	}
}

// BenchmarkRejectReplay is the cost of refusing a replayed request (no password hashing).
func BenchmarkRejectReplay(b *testing.B) {
	srv, kp := newTestServer(b)
	_, m, _ := NewLogin(clientCfg(kp.Public, nil), 1, t0, nil)
	req, _, _ := srv.ConsumeRequest(m, srcA, t0, false)
	if _, _, err := srv.Accept(req, 1, fullSettings(), nil, t0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := srv.ConsumeRequest(m, srcA, t0, false); err == nil {
			b.Fatal("accepted")
		}
	}
}

// BenchmarkClientNewLogin is the client's cost to build a request (one key generation, one DH).
func BenchmarkClientNewLogin(b *testing.B) {
	_, kp := newTestServer(b)
	cfg := clientCfg(kp.Public, nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := NewLogin(cfg, 1, t0, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckMac1 is what a receive loop spends on a request before deciding to queue it: a valid one
// (the costlier case: the whole MAC is compared) and one for another key.
func BenchmarkCheckMac1(b *testing.B) {
	srv, kp := newTestServer(b)
	other := mustKeypair(b, 77)
	_, good, _ := NewLogin(clientCfg(kp.Public, nil), 1, t0, nil)
	_, bad, _ := NewLogin(clientCfg(other.Public, nil), 1, t0, nil)
	for _, tc := range []struct {
		name string
		msg  []byte
		want error
	}{{"valid", good, nil}, {"other-key", bad, ErrMac1}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := srv.CheckMac1(tc.msg); err != tc.want {
					b.Fatal(err)
				}
			}
		})
	}
}
