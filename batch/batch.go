// Package batch moves packets in vectors ("salvos"): a UDP connection that reads and writes many
// datagrams per system call (recvmmsg/sendmmsg on Linux), with UDP GSO on the way out and GRO on the way
// in. Callers own the buffers: a Conn copies nothing into memory of its own except GRO trains, which it
// splits into the caller's vector.
package batch

// MaxPacket is the largest datagram (and the largest GRO train) a Conn handles; a caller's buffers of this
// size hold any UDP payload.
const MaxPacket = 65535
