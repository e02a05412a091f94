// Package metrics serves a gateway's counters to Prometheus (github.com/prometheus/client_golang).
//
// Nothing is counted here: the engine counts with atomics as it goes (per worker on the data path), and
// a scrape reads those counters once (Collect). So metrics cost nothing per packet, and a gateway nobody
// scrapes pays nothing at all.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/internal/buildinfo"
)

// Gateway is what the collector reads: *engine.Server.
type Gateway interface {
	Totals(perUser bool) engine.Totals
	Logins() engine.LoginStats
}

// MaxUsers bounds the user label: past it, the traffic of the remaining users (in no particular order) is
// reported under user="_other", so a users file of any size cannot blow up the series count.
const MaxUsers = 1000

// OtherUsers is the user label of the traffic of users past MaxUsers.
const OtherUsers = "_other"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("salvo_"+name, help, labels, nil)
}

var (
	descSessions        = desc("sessions", "Sessions live now.")
	descSessionsStarted = desc("sessions_started_total", "Sessions that went live (a login confirmed by the client's first packet).")
	descSessionsEnded   = desc("sessions_ended_total", "Sessions that ended, by reason.", "reason")
	descLogins          = desc("logins_total", "Password logins by result (cookie_demanded: the sender had to prove its address first).", "result")
	descResumes         = desc("resumes_total", "Rekeys without a password that succeeded.")
	descTickets         = desc("ticket_logins_total", "New sessions from a session ticket (no password hash), by result (refused: sent to the password).", "result")
	descRejected        = desc("handshake_rejections_total", "Handshake requests refused before any login logic, by reason.", "reason")
	descHashes          = desc("password_hashes_total", "argon2id password hashes computed.")
	descHandshakes      = desc("handshakes_total", "Handshake requests the gateway processed (after queueing).")
	descBytes           = desc("traffic_bytes_total", "Tunnel payload bytes: rx from clients, tx to clients.", "direction")
	descPackets         = desc("traffic_packets_total", "Tunnel packets: rx from clients, tx to clients.", "direction")
	descUserBytes       = desc("user_traffic_bytes_total", "Tunnel payload bytes per user.", "user", "direction")
	descUserPackets     = desc("user_traffic_packets_total", "Tunnel packets per user.", "user", "direction")
	descDrops           = desc("drops_total", "Packets dropped, by reason.", "reason")
	descVectors         = desc("vectors_total", "Data-path read calls (vectors): udp from the network, tun from the device.", "path")
	descVectorPackets   = desc("vector_packets_total", "Packets those read calls returned; / vectors_total = the mean vector length.", "path")
	descBuild           = desc("build_info", "The running build (value 1).", "version", "commit", "goversion")
)

// collector turns a scrape into one Totals and one LoginStats read.
type collector struct {
	gw      Gateway
	perUser bool
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	t := c.gw.Totals(c.perUser)
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(t.Sessions))
	counter(descSessionsStarted, t.SessionsStarted)
	for reason, n := range t.SessionsEnded {
		counter(descSessionsEnded, n, reason)
	}
	l := c.gw.Logins()
	counter(descLogins, l.LoginsOK, "ok")
	counter(descLogins, l.LoginsFailed, "bad_credentials")
	counter(descLogins, l.RateLimited, "rate_limited")
	counter(descLogins, l.Busy, "busy")
	counter(descLogins, l.Unavailable, "store_unavailable")
	counter(descLogins, l.CookiesSent, "cookie_demanded")
	counter(descResumes, l.Resumes)
	counter(descTickets, l.TicketLogins, "ok")
	counter(descTickets, l.TicketsRefused, "refused")
	for reason, n := range l.Rejected {
		counter(descRejected, n, reason)
	}
	counter(descHashes, l.PasswordHashes)
	counter(descHandshakes, l.Handshakes)
	traffic := func(bytes, packets *prometheus.Desc, tr engine.Traffic, labels ...string) {
		counter(bytes, tr.RxBytes, append(labels, "rx")...)
		counter(bytes, tr.TxBytes, append(labels, "tx")...)
		counter(packets, tr.RxPackets, append(labels, "rx")...)
		counter(packets, tr.TxPackets, append(labels, "tx")...)
	}
	traffic(descBytes, descPackets, t.Traffic)
	var other engine.Traffic
	n := 0
	for user, tr := range t.Users {
		if n++; n > MaxUsers {
			other = other.Plus(tr)
			continue
		}
		traffic(descUserBytes, descUserPackets, tr, user)
	}
	if n > MaxUsers {
		traffic(descUserBytes, descUserPackets, other, OtherUsers)
	}
	for reason, n := range t.Drops {
		counter(descDrops, n, reason)
	}
	v := t.Vectors
	counter(descVectors, v.UDPVectors, "udp")
	counter(descVectors, v.TUNVectors, "tun")
	counter(descVectorPackets, v.UDPPackets, "udp")
	counter(descVectorPackets, v.TUNPackets, "tun")
	b := buildinfo.Read()
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, b.Version, b.Commit, b.GoVersion)
}

// Registry holds the gateway's collector and the Go runtime's and process's (GC cycles, allocations,
// goroutines, CPU, RSS). perUser adds the per-user traffic series.
func Registry(gw Gateway, perUser bool) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{gw: gw, perUser: perUser},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func promHandler(reg prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Serve serves reg at /metrics on addr (TCP) until ctx ends. The listener is opened before Serve returns
// an error for it, so a busy or bad address fails the start, not a later scrape.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry) (func() error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promHandler(reg))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	wait := func() error {
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	return wait, nil
}
