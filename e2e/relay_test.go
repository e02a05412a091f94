package e2e

import (
	"net"
	"net/netip"
	"sync"
	"testing"
)

// relay is a UDP middlebox inside a test namespace: it forwards between one client and the gateway and
// lets a test replay, corrupt or inject datagrams as if they came from the client's endpoint. (There is no
// tc netem on the test machines; loss, duplication and reordering are done here.)
type relay struct {
	front    *net.UDPConn // the client talks to this
	back     *net.UDPConn // this talks to the gateway
	gateway  netip.AddrPort
	mu       sync.Mutex
	client   netip.AddrPort
	lastData []byte // the last data packet the client sent
}

func newRelay(t *testing.T, w *world, listen, gateway netip.AddrPort) *relay {
	t.Helper()
	r := &relay{gateway: gateway}
	must(t, w.gw.Do(func() error {
		var err error
		if r.front, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen)); err != nil {
			return err
		}
		r.back, err = net.ListenUDP("udp", nil)
		return err
	}))
	t.Cleanup(func() { r.front.Close(); r.back.Close() })
	go r.forward()
	go r.backward()
	return r
}

func (r *relay) forward() {
	buf := make([]byte, 65536)
	for {
		n, from, err := r.front.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		r.client = from
		if n > 32 && buf[0] == 0x03 {
			r.lastData = append(r.lastData[:0], buf[:n]...)
		}
		r.mu.Unlock()
		_, _ = r.back.WriteToUDPAddrPort(buf[:n], r.gateway)
	}
}

func (r *relay) backward() {
	buf := make([]byte, 65536)
	for {
		n, _, err := r.back.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		to := r.client
		r.mu.Unlock()
		_, _ = r.front.WriteToUDPAddrPort(buf[:n], to)
	}
}

// inject sends b to the gateway from the client's apparent endpoint.
func (r *relay) inject(t *testing.T, b []byte) {
	t.Helper()
	if _, err := r.back.WriteToUDPAddrPort(b, r.gateway); err != nil {
		t.Fatal(err)
	}
}

func (r *relay) recorded() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.lastData...)
}
