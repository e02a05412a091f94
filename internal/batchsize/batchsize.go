// Package batchsize holds the one default for how many packets a vector holds: what a read or write call
// moves at once on the UDP sockets (package batch), the TUN device (offload, enginetest) and the engine's
// loops, and what `batch_size` is unless a configuration sets it. Every layer's zero-value default is
// this one number, so they cannot drift apart.
package batchsize

// Default is the packets per vector unless configured: large enough that a GRO/GSO train of 64 segments
// and a drained TUN queue fit in one call, small enough that one vector of 72 KiB buffers is 9 MiB.
const Default = 128
