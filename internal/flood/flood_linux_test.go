package flood

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/salvovpn/salvo/internal/netns"
	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// TestFloodArrivesFromForgedSources: datagrams of every kind reach a socket in another namespace from the
// forged sources, at about the asked rate, and are what the kind says.
func TestFloodArrivesFromForgedSources(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, raw sockets)")
	}
	a := netns.ForTest(t, "salvo-flood-a")
	b := netns.ForTest(t, "salvo-flood-b")
	must(t, netns.Veth(a, "fa", b, "fb"))
	must(t, a.AddAddr("fa", "10.98.0.1/24"))
	must(t, b.AddAddr("fb", "10.98.0.2/24"))
	must(t, a.LinkUp("fa"))
	must(t, b.LinkUp("fb"))
	must(t, b.AddRoute("10.99.0.0/16", "10.98.0.1")) // the forged sources are reachable: rp_filter agrees
	var sources []netip.Addr
	for i := range 200 {
		sources = append(sources, netip.AddrFrom4([4]byte{10, 99, byte(i / 100), byte(1 + i%100)}))
	}
	kp, err := handshake.GenerateKeypair(nil)
	must(t, err)
	srv := handshake.NewServer(kp, nil, nil)
	for i, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			// A socket per kind, so nothing left over from the last flood is counted.
			port := 51820 + i
			var conn *net.UDPConn
			must(t, b.Do(func() error {
				var err error
				conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 98, 0, 2), Port: port})
				return err
			}))
			defer conn.Close()
			seen := map[netip.Addr]bool{}
			got := make(chan int, 1)
			go func() {
				buf := make([]byte, 2048)
				n := 0
				// Building the login pool takes seconds under -race before the first datagram goes out.
				_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
				for {
					m, from, err := conn.ReadFromUDPAddrPort(buf)
					if err != nil {
						got <- n
						return
					}
					n++
					seen[from.Addr()] = true
					d := buf[:m]
					switch kind {
					case JunkLogin:
						if d[0] != byte(protocol.CodeClientAuthRequest) {
							t.Errorf("junk-0x01 datagram starts with %#x", d[0])
						}
					case UnknownIndex:
						if _, err := protocol.ParseDataHeader(d); err != nil {
							t.Errorf("unknown-index datagram: %v", err)
						}
					case Login:
						if err := srv.CheckMac1(d); err != nil {
							t.Errorf("login datagram: %v", err)
						}
					case Junk:
						if _, err := protocol.ParseCode(d); err == nil {
							t.Errorf("junk with a valid code %#x", d[0])
						}
					}
					if n == 1000 {
						got <- n
						return
					}
				}
			}()
			var res Result
			must(t, a.Do(func() error {
				var err error
				res, err = Run(context.Background(), Config{Kind: kind, Sources: sources,
					Target: netip.AddrPortFrom(netip.MustParseAddr("10.98.0.2"), uint16(port)), Rate: 20000, Duration: 200 * time.Millisecond, GatewayKey: kp.Public})
				return err
			}))
			n := <-got
			if n < 1000 || len(seen) < 150 {
				t.Fatalf("%d datagrams from %d sources arrived (%d sent)", n, len(seen), res.Sent)
			}
			if pps := res.PPS(); pps < 10000 || pps > 30000 {
				t.Fatalf("rate %.0f/s, asked 20000", pps)
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
