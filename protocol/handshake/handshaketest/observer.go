// Package handshaketest holds what tests that play an attacker need to know about Salvo's handshake, built
// from PROTOCOL.md and public values only (it does not import the handshake package, whose internals an
// attacker does not have).
package handshaketest

import (
	"strconv"

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
