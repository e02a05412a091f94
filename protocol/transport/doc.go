// Package transport seals and opens Salvo data packets (protocol.CodeData and protocol.CodeDisconnect)
// with the session keys of one handshake, in place and in batches.
//
// # Wire format and buffers
//
//	0      code
//	1..3   reserved, zero
//	4..7   receiver index (chosen by the peer that receives the packet)
//	8..15  counter, little endian
//	16..   ciphertext || 16-byte tag      (AD = the 16 header bytes)
//
// Why 16 bytes of header: the data plane reads IP packets into buffers that keep protocol.Headroom
// (16) bytes free in front of the packet. The header is written into that headroom and the AEAD
// encrypts b[16:16+n] onto itself, appending the tag into the tailroom, so sealing never copies the
// payload; opening decrypts the ciphertext onto itself and the IP packet ends up exactly where the
// TUN writer wants it. 16 is also the AES block size and keeps the payload 16-byte aligned when the
// buffer is, and it is just enough for code, reserved bytes, a 32-bit index and a 64-bit counter.
// Because the whole header is the associated data, flipping any header bit (code, reserved bytes,
// index or counter) makes the tag fail.
//
// # Nonces: why they never repeat
//
// The nonce is 4 zero bytes || the 64-bit counter (little endian). Each direction has its own key,
// so uniqueness is needed per Keypair send side only, and the counter provides it:
//
//   - Counters are taken from one atomic counter; a batch of k packets reserves k consecutive values
//     with one atomic operation, so two goroutines never obtain the same value.
//   - Values are valid only below protocol.RejectAfterMessages (2^64 - 2^13 - 1). A batch that does
//     not fit entirely below the limit seals nothing and returns ErrKeyExpired.
//   - The counter must never wrap to 0. While it is below 2^62 a plain atomic add is used (one
//     instruction, no retry); a handful of concurrent adds cannot carry it from 2^62 to 2^64. Once it
//     has reached 2^62 every reservation uses a compare-and-swap loop that refuses to move the counter
//     past the limit, so from then on it is bounded by RejectAfterMessages. (Reaching 2^62 takes
//     centuries at line rate; the slow path exists so the property holds by construction, and tests
//     reach it through the unexported counter.)
//   - The receiver rejects counters >= RejectAfterMessages before any cryptography and keeps an
//     RFC 6479 window (package replay) of the last 8128 counters, updated only after the tag
//     verified, so a replayed or forged packet can neither be accepted twice nor move the window.
//
// Keys also age out: a Keypair refuses to seal or open after protocol.RejectAfterTime, and the
// initiator is told to rekey (NeedsRekey) after protocol.RekeyAfterTime or RekeyAfterMessages.
package transport
