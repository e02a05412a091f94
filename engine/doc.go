// Package engine is Salvo's data and control plane: the gateway (Server) and the client (Client), over
// interfaces it is given. It opens no socket or device and configures nothing on the host: package daemon
// wires it to Linux (batched UDP sockets, TUN queues, netcfg); the tests wire it to engine/enginetest.
//
// The gateway, one worker per TUN queue, each worker with one socket per listen address:
//
//	UDP socket ──ReadBatch──▶ receiveLoop ─┬─ data: parse header, find keypair by receiver index,
//	 (recvmmsg, GRO)          "udp receive" │   open in place (AEAD, replay window), check the inner
//	                                        │   source is the session's ──▶ TUN queue Write (GRO)
//	                                        └─ 0x01 login ──▶ handshake queue ──▶ handshakeWorker
//	                                                          (intakeLoop        "handshake": Noise,
//	                                                           "handshake intake" password, session)
//	                                                           reads a handshake socket, if any)
//	TUN queue ──Read──▶ tunLoop "tun read": find the session by inner destination, seal in place
//	 (virtio-net-hdr)           ──▶ WriteBatch (sendmmsg, GSO) on the worker's socket of the session's
//	                                listen address
//	janitor: expires silent sessions and unconfirmed logins, retires old keys, sends keepalives, saves leases.
//
// The client mirrors it with one socket and one TUN device: a receive loop and a TUN loop (the
// goroutines started in Client.Run), and maintain, its control loop (logins, rekeys, keepalives,
// reconnects, notices). The host gives the client a tun.Device (vectors of IP packets to read and write)
// and a TunnelSetup, which applies the pushed settings; both are all a host needs to provide (see
// Example).
//
// Buffers: each loop owns one vector (BatchSize buffers of bufSize bytes with protocol.Headroom in front),
// allocated once; packets are opened and sealed in place, so the hot paths do not allocate. Where a
// packet can be dropped, and which DropReason counts it, is in ARCHITECTURE.md.
package engine
