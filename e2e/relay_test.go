package e2e

import (
	"net/netip"
	"sync"
	"testing"

	"github.com/salvovpn/salvo/internal/faultrelay"
)

// relay is a faultrelay.Relay in the gateway's namespace, between one client and the gateway: tests make
// the network bad through it (loss, reordering, duplication, blackouts: there is no tc netem on the test
// machines) and replay or inject datagrams as if they came from the client's endpoint.
type relay struct {
	*faultrelay.Relay
	mu       sync.Mutex
	lastData []byte // the last data packet the client sent
}

func newRelay(t *testing.T, w *world, listen, gateway netip.AddrPort) *relay {
	t.Helper()
	r := &relay{}
	cfg := faultrelay.Config{Listen: listen, Gateway: gateway, Tap: r.tap}
	must(t, w.gw.Do(func() error {
		var err error
		r.Relay, err = faultrelay.New(cfg)
		return err
	}))
	t.Cleanup(func() { r.Close() })
	return r
}

// tap keeps a copy of the client's last data packet (code 0x03 and longer than a bare keepalive).
func (r *relay) tap(dir faultrelay.Direction, b []byte) {
	if dir != faultrelay.ToGateway || len(b) <= 32 || b[0] != 0x03 {
		return
	}
	r.mu.Lock()
	r.lastData = append(r.lastData[:0], b...)
	r.mu.Unlock()
}

// inject sends b to the gateway from the client's apparent endpoint.
func (r *relay) inject(t *testing.T, b []byte) {
	t.Helper()
	if err := r.InjectToGateway(b); err != nil {
		t.Fatal(err)
	}
}

func (r *relay) recorded() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.lastData...)
}
