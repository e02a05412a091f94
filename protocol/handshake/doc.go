// Package handshake implements Salvo's session handshake (PROTOCOL.md: clientAuthRequest 0x01,
// serverAuthResponse 0x02, cookieReply 0x04 and notice 0x06) as pure state machines: no sockets, no clocks
// (the caller passes now), randomness from an io.Reader. It never logs, and its errors never carry secrets.
//
// The handshake is Noise_NK_25519_ChaChaPoly_BLAKE2s with prologue "salvo v2" (github.com/flynn/noise). The
// client pins the gateway's static key and has none of its own; it proves who it is with a login and
// password (kind 1) or, to rekey a live session, with a proof under that session's resume key (kind 2),
// both inside the encrypted first message.
//
// Client side: NewLogin or NewResume build a request datagram and a ClientHandshake, which consumes the
// matching serverAuthResponse (keys and settings, or an authenticated failure Result) or a cookieReply.
//
// Server side: Server.ConsumeRequest performs every check that costs no password hashing, cheapest first:
// length, code and version; mac1; mac2 when the caller says the gateway is under load; Noise decryption;
// body syntax; timestamp within ±3 minutes; timestamp strictly newer than the last accepted one for the same
// (login, instance). The engine then checks the credentials (argon2id, in the user store, not here) or calls
// Request.VerifyResume, and answers with Server.Accept or Server.Reject.
//
// # What it protects
//
//   - The gateway's identity: only the holder of the pinned private key can decrypt message 1 and produce a
//     message 2 that decrypts, so a man in the middle can neither learn the password nor answer, and even a
//     failure result ("bad credentials") cannot be forged.
//   - The password: it only ever travels inside Noise encryption to the pinned key.
//   - Forward secrecy: session keys come from ephemeral-ephemeral and ephemeral-static DH; a later theft of
//     the gateway key does not decrypt recorded sessions (it does expose recorded passwords, because NK's
//     first message is encrypted to the static key alone).
//   - Replay of requests: the TAI64N timestamp must be fresh and strictly newer per (login, instance); only
//     Accept records timestamps, so unauthenticated traffic cannot lock a user out, and a replay is refused
//     before any password hashing.
//   - Cheap rejection: mac1 (keyed by the gateway public key) drops junk and wrong-key clients with one
//     BLAKE2s; under load, mac2 with a cookie bound to the source address forces a round trip before any
//     Curve25519 work, so spoofed sources cannot make the gateway do DH.
//   - Resume: the resume key is HMAC-BLAKE2s of the previous handshake's two Split keys, which only the two
//     ends know (never from the handshake hash, which anyone on the path can recompute); the proof covers
//     this handshake's ephemeral key and timestamp, the client instance, the session index and the login, so
//     it cannot be moved to another handshake, session or client instance.
//
// # What it does not protect
//
//   - Anyone holding the gateway private key can impersonate the gateway and learn passwords.
//   - Header fields outside the Noise payload (indexes, version) are covered only by mac1, which anyone who
//     knows the public key can compute: an on-path attacker can rewrite the sender index, which only breaks
//     that handshake (a denial of service it could cause by dropping packets anyway).
//   - Traffic analysis: packet codes and sizes are in clear; a passive observer sees that and when a
//     handshake happened. mac1 uses the public key, so an observer who knows a gateway's key can recognise
//     requests addressed to it.
//   - Notices are unauthenticated hints, used only to give up or re-login sooner than a timeout would.
//   - Weak passwords: argon2id slows guessing, nothing more.
package handshake
