// Package handshaketest holds what tests that play an attacker need to know about Salvo's handshake, built
// from PROTOCOL.md and from what the attacker is assumed to hold (public values, or for DecryptRequest a
// stolen gateway key). It does not import the handshake package, whose internals an attacker does not have.
package handshaketest

import (
	"encoding/binary"
	"strconv"

	"github.com/flynn/noise"
	"golang.org/x/crypto/blake2s"

	"github.com/salvovpn/salvo/protocol"
)

// Byte offsets of PROTOCOL.md's handshake messages.
const (
	headerLen = 8  // code, version, reserved, index
	keyLen    = 32 // Noise e
	macLen    = 16 // mac1 and mac2 each
)

// ObserverHash recomputes the Noise handshake hash h after a login's message 2 from what a passive observer
// has: the protocol name, the prologue, the gateway's static public key and the two datagrams (a
// clientAuthRequest with its mac1 and mac2, and the serverAuthResponse that answered it). It is what
// protocol version 1 keyed the resume key with.
func ObserverHash(gatewayPublic [32]byte, request, response []byte) [32]byte {
	mix := func(h [32]byte, data []byte) [32]byte {
		x, _ := blake2s.New256(nil)
		x.Write(h[:])
		x.Write(data)
		var out [32]byte
		x.Sum(out[:0])
		return out
	}
	// The protocol name is longer than 32 bytes, so h starts as its hash.
	h := blake2s.Sum256([]byte("Noise_NK_25519_ChaChaPoly_BLAKE2s"))
	h = mix(h, []byte("salvo v"+strconv.Itoa(protocol.Version)))
	h = mix(h, gatewayPublic[:]) // pre-message: <- s
	n := len(request) - 2*macLen
	h = mix(h, request[headerLen:headerLen+keyLen])  // -> e
	h = mix(h, request[headerLen+keyLen:n])          // encrypted payload, after es
	h = mix(h, response[headerLen:headerLen+keyLen]) // <- e
	h = mix(h, response[headerLen+keyLen:])          // encrypted payload, after ee
	return h
}

// StolenRequest is what a thief of the gateway's static private key reads in a recorded clientAuthRequest
// (PROTOCOL.md: NK's first message is encrypted to the static key alone).
type StolenRequest struct {
	Kind     byte
	Instance uint64
	Login    string
	Ticket   []byte // kind 3
	Proof    []byte // kinds 2 and 3
}

// DecryptRequest opens a recorded clientAuthRequest with the gateway's static private key and parses its
// body by PROTOCOL.md's layout. ok is false for anything that does not decrypt or parse.
func DecryptRequest(gatewayPrivate, gatewayPublic [32]byte, request []byte) (StolenRequest, bool) {
	if len(request) < headerLen+keyLen+2*macLen {
		return StolenRequest{}, false
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s),
		Pattern:       noise.HandshakeNK,
		Prologue:      []byte("salvo v" + strconv.Itoa(protocol.Version)),
		StaticKeypair: noise.DHKey{Private: gatewayPrivate[:], Public: gatewayPublic[:]},
	})
	if err != nil {
		return StolenRequest{}, false
	}
	b, _, _, err := hs.ReadMessage(nil, request[headerLen:len(request)-2*macLen])
	// timestamp 12, instance 8, kind 1, suite count n, n suites, login length, login, then the kind's fields.
	if err != nil || len(b) < 23 || len(b) < 22+int(b[21])+1 {
		return StolenRequest{}, false
	}
	r := StolenRequest{Kind: b[20], Instance: binary.LittleEndian.Uint64(b[12:20])}
	b = b[22+int(b[21]):]
	if len(b) < 1+int(b[0]) {
		return StolenRequest{}, false
	}
	r.Login, b = string(b[1:1+int(b[0])]), b[1+int(b[0]):]
	switch r.Kind {
	case 2:
		if len(b) != 4+32 {
			return StolenRequest{}, false
		}
		r.Proof = b[4:]
	case 3:
		if len(b) < 1 || len(b) != 1+int(b[0])+32 {
			return StolenRequest{}, false
		}
		r.Ticket, r.Proof = b[1:1+int(b[0])], b[1+int(b[0]):]
	}
	return r, true
}
