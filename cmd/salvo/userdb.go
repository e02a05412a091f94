package main

import (
	"context"
	"time"

	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/store/pgstore"
)

// userDB is where `salvo user` reads and changes users: a users file, or the store several gateways share.
// String names it for messages.
type userDB interface {
	list() ([]users.User, error)
	lookup(login string) (users.User, bool, error)
	add(u users.User) error
	del(login string) error
	setPassword(login, hash string) error
	setDisabled(login string, disabled bool) error
	// commit makes the changes durable and says how they take effect.
	commit() (string, error)
	String() string
}

// fileDB is a users file: changes are made in memory and saved by commit.
type fileDB struct {
	store *users.Store
	path  string
}

func (f *fileDB) list() ([]users.User, error) { return f.store.Users(), nil }
func (f *fileDB) lookup(login string) (users.User, bool, error) {
	u, ok := f.store.Lookup(login)
	return u, ok, nil
}
func (f *fileDB) add(u users.User) error                 { return f.store.Add(u) }
func (f *fileDB) del(login string) error                 { return f.store.Delete(login) }
func (f *fileDB) setPassword(login, hash string) error   { return f.store.SetPassword(login, hash) }
func (f *fileDB) setDisabled(login string, d bool) error { return f.store.SetDisabled(login, d) }
func (f *fileDB) String() string                         { return "users file " + f.path }
func (f *fileDB) commit() (string, error) {
	return "run salvo reload (or send the gateway SIGHUP) to apply it", f.store.Save(f.path)
}

// storeDB is the shared store: every change is made (and announced to the gateways) at once.
type storeDB struct {
	st  *pgstore.Store
	ctx context.Context
	end context.CancelFunc
}

// storeWait bounds the whole command's wait for the database.
const storeWait = 15 * time.Second

func openStoreDB(dsn string) (*storeDB, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeWait)
	st, err := pgstore.Open(ctx, dsn)
	if err != nil {
		cancel()
		return nil, err
	}
	return &storeDB{st: st, ctx: ctx, end: cancel}, nil
}

func (s *storeDB) close() { s.st.Close(); s.end() }

func (s *storeDB) list() ([]users.User, error) { return s.st.Users(s.ctx) }
func (s *storeDB) lookup(login string) (users.User, bool, error) {
	return s.st.User(s.ctx, login)
}
func (s *storeDB) add(u users.User) error               { return s.st.AddUser(s.ctx, u) }
func (s *storeDB) del(login string) error               { return s.st.DeleteUser(s.ctx, login) }
func (s *storeDB) setPassword(login, hash string) error { return s.st.SetPassword(s.ctx, login, hash) }
func (s *storeDB) setDisabled(login string, d bool) error {
	return s.st.SetDisabled(s.ctx, login, d)
}
func (s *storeDB) String() string { return "the user store" }
func (s *storeDB) commit() (string, error) {
	return "every gateway sharing the store applies it within a second", nil
}
