package engine_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/netip"
	"os"

	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/enginetest"
	"github.com/salvovpn/salvo/engine/ippool"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol/handshake"
	"golang.zx2c4.com/wireguard/tun"
)

// hostSetup is what a host (here, the example itself) does with the settings the gateway pushes; on Linux
// it is package daemon configuring addresses, routes and DNS, in an app extension the platform's API.
type hostSetup chan handshake.Settings

func (h hostSetup) Apply(_ tun.Device, st handshake.Settings) (func(), error) {
	h <- st
	return func() {}, nil
}

// Example runs a gateway and a client in one process over an in-memory network and TUN devices
// (package enginetest), and pings a host behind the gateway through the tunnel. A host embeds the client
// engine the same way: it hands it a socket (engine.PacketConn), a device that reads and writes vectors of
// IP packets (tun.Device) and a TunnelSetup for the pushed settings.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)
	network := enginetest.NewNetwork()
	defer network.Close()

	// The gateway: its static key, one user, an address pool, one socket and one TUN queue.
	static, err := handshake.GenerateKeypair(rand.Reader)
	if err != nil {
		panic(err)
	}
	store := users.New()
	hash, err := users.HashPassword([]byte("correct horse"), users.Params{Memory: 256, Time: 1, Threads: 1}, rand.Reader)
	if err != nil {
		panic(err)
	}
	if err := store.Add(users.User{Login: "alice", Hash: hash}); err != nil {
		panic(err)
	}
	pool, err := ippool.New(netip.MustParsePrefix("10.77.0.0/24"))
	if err != nil {
		panic(err)
	}
	gatewayAddr := netip.MustParseAddrPort("192.0.2.1:51820")
	gatewayConn, err := network.Listen(gatewayAddr)
	if err != nil {
		panic(err)
	}
	gatewayTUN := enginetest.NewTUN("salvo0", 1420)
	stateDir, err := os.MkdirTemp("", "salvo-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(stateDir)
	srv, err := engine.NewServer(engine.ServerConfig{
		Static: static, Users: store, Pool4: pool, StateDir: stateDir, Log: quiet,
		Settings: handshake.Settings{MTU: 1420, Routes: []netip.Prefix{netip.MustParsePrefix("10.201.0.0/24")}},
	}, []tun.Device{gatewayTUN}, []engine.PacketConn{gatewayConn})
	if err != nil {
		panic(err)
	}
	go srv.Run(ctx)

	// The client: a socket, a TUN device and a host that applies the settings.
	clientConn, err := network.Listen(netip.MustParseAddrPort("198.51.100.2:0"))
	if err != nil {
		panic(err)
	}
	clientTUN := enginetest.NewTUN("salvo1", 1420)
	settings := make(hostSetup, 1)
	client := engine.NewClient(engine.ClientConfig{
		Server: gatewayAddr.String(), ServerAddr: gatewayAddr, Log: quiet,
		Handshake: handshake.ClientConfig{ServerPublic: static.Public, Login: "alice", Password: "correct horse"},
		OpenTUN:   func(int) (tun.Device, error) { return clientTUN, nil },
		Setup:     settings,
	}, clientConn)
	go client.Run(ctx)
	st := <-settings
	fmt.Println("tunnel address:", st.IPv4, "routes:", st.Routes)

	// A ping from the client to 10.201.0.1, a host behind the gateway, which answers it.
	host := netip.MustParseAddr("10.201.0.1")
	clientTUN.Inject(enginetest.IPv4ICMPEcho(st.IPv4.Addr(), host, 1, 1, []byte("ping")))
	request, err := gatewayTUN.Receive(ctx)
	if err != nil {
		panic(err)
	}
	reply, ok := enginetest.EchoReply(request)
	if !ok {
		panic("the gateway's TUN got something else than the ping")
	}
	gatewayTUN.Inject(reply)
	got, err := clientTUN.Receive(ctx)
	if err != nil {
		panic(err)
	}
	p, _ := enginetest.ParsePacket(got)
	fmt.Printf("reply from %s: %q\n", p.Src, p.Payload)
	// Output:
	// tunnel address: 10.77.0.2/24 routes: [10.201.0.0/24]
	// reply from 10.201.0.1: "ping"
}
