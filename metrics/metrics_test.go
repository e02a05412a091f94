package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/metrics/metricstest"
)

type fakeGateway struct {
	totals engine.Totals
	logins engine.LoginStats
	asked  []bool
}

func (f *fakeGateway) Totals(perUser bool) engine.Totals {
	f.asked = append(f.asked, perUser)
	t := f.totals
	if !perUser {
		t.Users = nil
	}
	return t
}
func (f *fakeGateway) Logins() engine.LoginStats { return f.logins }

// scrape fetches h's /metrics as a Prometheus server would.
func scrape(t *testing.T, h http.Handler) metricstest.Families {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	fams, err := metricstest.Parse(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func handler(reg prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promHandler(reg))
	return mux
}

// TestScrape: every family is there with the values the gateway counted, per-user series are bounded by
// MaxUsers (the rest add up under _other) and can be turned off.
func TestScrape(t *testing.T) {
	gw := &fakeGateway{
		totals: engine.Totals{Sessions: 2, SessionsStarted: 7, SessionsEnded: map[string]uint64{"kicked": 1, "expired": 4},
			Traffic: engine.Traffic{RxBytes: 1000, TxBytes: 2000, RxPackets: 10, TxPackets: 20},
			Drops:   map[string]uint64{"bad_mac": 3}, Users: map[string]engine.Traffic{},
			Vectors: engine.VectorStats{UDPVectors: 4, UDPPackets: 40, TUNVectors: 5, TUNPackets: 50}},
		logins: engine.LoginStats{LoginsOK: 6, LoginsFailed: 2, CookiesSent: 9, PasswordHashes: 8, Handshakes: 30,
			Rejected: map[string]uint64{"wrong_key": 11}},
	}
	for i := range MaxUsers + 5 {
		gw.totals.Users[fmt.Sprintf("user%04d", i)] = engine.Traffic{RxBytes: 1, TxBytes: 2}
	}
	fams := scrape(t, handler(Registry(gw, true)))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"salvo_sessions", nil, 2},
		{"salvo_sessions_started_total", nil, 7},
		{"salvo_sessions_ended_total", []string{"reason", "expired"}, 4},
		{"salvo_logins_total", []string{"result", "ok"}, 6},
		{"salvo_logins_total", []string{"result", "bad_credentials"}, 2},
		{"salvo_logins_total", []string{"result", "cookie_demanded"}, 9},
		{"salvo_handshake_rejections_total", []string{"reason", "wrong_key"}, 11},
		{"salvo_password_hashes_total", nil, 8},
		{"salvo_handshakes_total", nil, 30},
		{"salvo_traffic_bytes_total", []string{"direction", "tx"}, 2000},
		{"salvo_traffic_packets_total", []string{"direction", "rx"}, 10},
		{"salvo_drops_total", []string{"reason", "bad_mac"}, 3},
		{"salvo_vectors_total", []string{"path", "udp"}, 4},
		{"salvo_vector_packets_total", []string{"path", "tun"}, 50},
		{"salvo_user_traffic_bytes_total", []string{"user", OtherUsers, "direction", "rx"}, 5},
		{"salvo_build_info", nil, 1},
	} {
		if got, ok := fams.Value(c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if n := len(fams["salvo_user_traffic_bytes_total"].GetMetric()); n != 2*(MaxUsers+1) {
		t.Errorf("%d per-user byte series, want %d (MaxUsers users and _other, two directions)", n, 2*(MaxUsers+1))
	}
	for _, name := range []string{"go_gc_duration_seconds", "go_memstats_alloc_bytes_total", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}

	fams = scrape(t, handler(Registry(gw, false)))
	if fams["salvo_user_traffic_bytes_total"] != nil || gw.asked[len(gw.asked)-1] {
		t.Error("per-user series with per-user metrics off")
	}
}
