package daemon

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"

	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/store/pgstore"
)

// openStore connects to the shared database and reads its users (auth = "postgres").
func openStore(dsn string, log *slog.Logger) (*pgstore.Store, *pgstore.Backend, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pgstore.Timeout)
	defer cancel()
	st, err := pgstore.Open(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	b, err := pgstore.NewBackend(ctx, st, log)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, b, nil
}

// storeLink ties a running gateway to the shared database: users that change anywhere are re-checked
// here, kicks made on any gateway end the sessions here, kicks made here go to every gateway, leases are
// claimed in the database, and every ended session becomes an accounting row.
type storeLink struct {
	in  *serverInputs
	acc *pgstore.Accounting
	log *slog.Logger
}

// configure sets the engine's hooks before the server is made.
func (l *storeLink) configure(sc *engine.ServerConfig) {
	name, _ := os.Hostname()
	l.acc = pgstore.NewAccounting(l.in.pg, name, l.log)
	sc.OnSessionEnded = l.acc.Add
	// Leases record the gateway that holds them, and only that one renews or releases them: the name must
	// be unique, also between two gateways on one host (or two runs of one, the older one not yet gone).
	var run [4]byte
	_, _ = rand.Read(run[:])
	sc.SharedLeases = l.in.pgUsers.Leases(fmt.Sprintf("%s/%x", name, run))
	sc.ShareKick = func(user string) error {
		ctx, cancel := context.WithTimeout(context.Background(), pgstore.Timeout)
		defer cancel()
		return l.in.pg.Kick(ctx, user)
	}
}

// run starts the goroutines "store listener" and "store accounting" for srv; the returned wait ends them
// (accounting writes what is left first) and must be called after srv.Run has returned, so that the rows
// of the sessions its shutdown ended are queued.
func (l *storeLink) run(srv *engine.Server, reserve func()) (wait func()) {
	l.in.pgUsers.OnUsers = func() {
		reserve()
		if n := srv.UsersChanged(); n > 0 {
			l.log.Info("users changed in the store", "sessions_revoked", n)
		}
	}
	l.in.pgUsers.OnKick = func(user string) {
		if n := srv.Kick(user); n > 0 {
			l.log.Info("sessions ended by an administrator on another gateway", "user", user, "sessions", n)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	listened, accounted := make(chan struct{}), make(chan struct{})
	go func() { l.in.pgUsers.Run(ctx); close(listened) }()
	go func() { l.acc.Run(ctx); close(accounted) }()
	return func() {
		cancel()
		<-listened
		<-accounted
	}
}
