package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/control"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// comeBack brings s back to a gateway that lost its session, as a client does: its resume is refused
// ("unknown session"), then its session ticket starts a new session, without a password.
func (s *benchSession) comeBack(ctx context.Context, server netip.AddrPort) error {
	_, _, err := s.conn.handshake(ctx, server, func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
		return handshake.NewResume(&s.hc, randomIndex(), s.kp.RemoteIndex(), s.resumeKey, time.Now(), ck)
	})
	if err == nil {
		return errors.New("a restarted gateway accepted a resume of a session it cannot have")
	}
	if !strings.Contains(err.Error(), handshake.ResultUnknownSession.String()) {
		return fmt.Errorf("resume: %w", err)
	}
	if s.ticket.IsZero() {
		return errors.New("no session ticket to come back with")
	}
	keys, _, err := s.conn.handshake(ctx, server, func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
		return handshake.NewTicketRequest(&s.hc, randomIndex(), s.ticket, time.Now(), ck)
	})
	if err != nil {
		return fmt.Errorf("ticket: %w", err)
	}
	return s.install(keys, server)
}

// forEach runs f on every session, inFlight at a time (sessions that share a socket must go one at a time),
// and returns how long that took.
func forEach(sessions []*benchSession, inFlight int, f func(*benchSession) error) (time.Duration, error) {
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, inFlight)
	for g := range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(sessions); i = int(next.Add(1) - 1) {
				if err := f(sessions[i]); err != nil {
					errs[g] = fmt.Errorf("session %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// measureRestart SIGKILLs the gateway, starts it again on the same configuration (and so the same state
// directory: leases and ticket keys), and brings every session back (comeBack). It records how long the
// gateway took to answer again, how long until every session was back, and what the restarted gateway
// counted; it returns the new gateway.
func measureRestart(ctx context.Context, res *SessionsResult, gw *daemon, restart func() (*daemon, error), sock string,
	sessions []*benchSession, server netip.AddrPort, inFlight int) (*daemon, error) {
	_ = gw.cmd.Process.Kill()
	<-gw.done
	killed := time.Now()
	ngw, err := restart()
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 10*time.Second, "the restarted gateway's control socket", []*daemon{ngw}, func() (bool, error) {
		var st engine.Status
		return control.Query(sock, &st) == nil, nil
	}); err != nil {
		return ngw, err
	}
	res.RestartUpSeconds = time.Since(killed).Seconds()
	// A return can take longer than the gateway's idle timeout (with the classifier's per-source limit on
	// handshakes, all from one address): keep the sessions already back alive, as their clients would.
	back := make([]atomic.Bool, len(sessions))
	stop := make(chan struct{})
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Second):
			}
			for i, s := range sessions {
				if back[i].Load() {
					_ = s.keepalive(server)
				}
			}
		}
	}()
	index := make(map[*benchSession]int, len(sessions))
	for i, s := range sessions {
		index[s] = i
	}
	took, err := forEach(sessions, inFlight, func(s *benchSession) error {
		err := s.comeBack(ctx, server)
		back[index[s]].Store(err == nil)
		return err
	})
	close(stop)
	<-kept
	if err != nil {
		return ngw, err
	}
	if err := allLive(ctx, ngw, sock, sessions); err != nil {
		return ngw, err
	}
	res.ReturnSeconds = took.Seconds()
	res.ReturnAfterKillSeconds = time.Since(killed).Seconds()
	st, err := queryStatus(sock)
	if err != nil {
		return ngw, err
	}
	if st.Logins != nil {
		res.ReturnPasswordHashes, res.ReturnTicketLogins = st.Logins.PasswordHashes, st.Logins.TicketLogins
	}
	return ngw, nil
}
