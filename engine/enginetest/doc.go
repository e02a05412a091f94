// Package enginetest runs the gateway and client engines against each other in one process: an in-memory
// UDP network (Network, Conn) in place of batch.Conn sockets and an in-memory TUN device (TUN) in place of
// the kernel's. Nothing needs root or a network namespace, so whole-tunnel tests run under -race in the
// ordinary `go test` of the engine package.
//
// The network is also the attacker's vantage point. A Tap sees every datagram the engines send, a Filter
// drops the ones a test wants lost (loss, blackouts, or suppression by an on-path attacker), and Inject
// delivers a datagram from any source address, spoofed or not. Rebind moves a Conn to a new address while
// the engine keeps using the same object, which is how a NAT rebinding looks to the gateway.
//
// # Wiring a tunnel
//
// A test gives the gateway one Conn and one TUN, and the client its own Conn and a TUN handed out by
// OpenTUN (this package does not import engine, so the sketch below is not compiled here):
//
//	n := enginetest.NewNetwork()
//	t.Cleanup(n.Close)
//	gwConn, _ := n.Listen(netip.MustParseAddrPort("192.0.2.1:51820"))
//	clConn, _ := n.Listen(netip.MustParseAddrPort("198.51.100.7:0")) // port 0: a free port
//	gwTUN := enginetest.NewTUN("salvo0", 1420)
//	clTUN := enginetest.NewTUN("salvo1", 1420)
//
//	srv, _ := engine.NewServer(serverCfg, []tun.Device{gwTUN}, []engine.PacketConn{gwConn})
//	cl := engine.NewClient(engine.ClientConfig{
//		ServerAddr: gwConn.LocalAddr(),
//		OpenTUN:    func(int) (tun.Device, error) { return clTUN, nil },
//		Setup:      noSetup{}, // nothing to configure on a fake device
//		// ...handshake config...
//	}, clConn)
//	go srv.Run(ctx)
//	go cl.Run(ctx)
//
//	// A packet the client's OS sends into the tunnel comes out of the gateway's TUN.
//	clTUN.Inject(enginetest.IPv4UDP(clientIP, hostIP, 4000, 53, []byte("hello")))
//	pkt, err := gwTUN.Receive(ctx)
//	src, dst, payload, ok := enginetest.ParseIP(pkt)
//
// An attacker test records the wire with a Recorder and replays or forges datagrams:
//
//	rec := enginetest.NewRecorder()
//	n.SetTap(rec.Tap)
//	d, _ := rec.Wait(ctx, func(d enginetest.Datagram) bool { return d.To == gwConn.LocalAddr() })
//	n.Inject(netip.MustParseAddrPort("203.0.113.9:4444"), d.To, d.Data) // replay from elsewhere
//
// # Concurrency
//
// The package starts no goroutines of its own: every datagram is carried by the goroutine that calls
// WriteBatch or Inject, and every callback (Tap, Filter) runs on that goroutine. Delivery is therefore
// over when WriteBatch or Inject returns: the datagram is queued at its receiver or counted as dropped,
// so a test never waits for the network itself, only for the engines. All methods are safe for
// concurrent use.
package enginetest
