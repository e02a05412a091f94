package tickets

import (
	"bytes"
	"context"
	"crypto/cipher"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
)

// idLen is the key ID in front of every ticket: it picks the key without trying each one.
const idLen = 4

type key struct {
	id   [idLen]byte
	key  StoredKey
	aead cipher.AEAD
}

// StoredKey is a ticket key as a KeyStore keeps it.
type StoredKey struct {
	Created time.Time
	Raw     [chacha20poly1305.KeySize]byte
}

// KeyStore is where a Ring keeps its keys: a file (Load), or a database several gateways share
// (store/pgstore). Gateways on one KeyStore open each other's tickets.
type KeyStore interface {
	// Version changes whenever the keys do; a Ring asks at most once a second.
	Version(ctx context.Context) (string, error)
	// Keys returns the stored keys.
	Keys(ctx context.Context) ([]StoredKey, error)
	// Rotate stores candidate unless a key created at or after freshAfter (and not after notAfter) is
	// there already (another gateway rotated first), forgets keys created before dropBefore, and returns
	// the keys stored now. It is atomic against other gateways' Rotate.
	Rotate(ctx context.Context, candidate StoredKey, freshAfter, notAfter, dropBefore time.Time) ([]StoredKey, error)
}

// Ring holds the ticket keys, newest first. Safe for concurrent use.
//
// The KeyStore is the authority. A ring asks it for its version at most once a second and, when it
// changed, takes its keys as they are: deleting a key file revokes every ticket within a second (clients
// then log in with their passwords once), and gateways sharing a store share their keys. One about to
// rotate asks first and takes a key another gateway made. Only while the store cannot be written does a
// ring keep a key the store does not have (in memory, for this process).
type Ring struct {
	store KeyStore // nil keeps the keys in memory only
	rand  io.Reader

	mu        sync.Mutex
	keys      []*key
	seen      string // the store's version when last read or written
	lastCheck time.Time
	unsaved   *key // the newest key, which the store could not take: kept whatever the store says
	// remote stores (a database) are asked from a goroutine of their own, so a slow or unreachable one
	// never holds up a handshake; checking is set while one is out.
	remote   bool
	checking bool
	// askedAt and quietUntil limit askNowLocked: once a second, and not for failBackoff after a failure.
	askedAt, quietUntil time.Time
}

// failBackoff is how long a remote store that failed is not asked on the handshake path.
const failBackoff = 10 * time.Second

// Remote is implemented by key stores that are asked over the network: a Ring then asks them in the
// background rather than on the handshake path.
type Remote interface{ Remote() bool }

// checkEvery bounds how often a ring asks its store for its version.
const checkEvery = time.Second

// storeTimeout bounds one question to the store (on the handshake path).
const storeTimeout = 2 * time.Second

// clockSlack is how far in the future a key or a ticket may be dated (another gateway's clock).
const clockSlack = time.Minute

// NewRing returns a ring on store (nil: in memory only, so tickets do not survive a restart), with its
// keys read. rand nil is crypto/rand.
func NewRing(store KeyStore, rand io.Reader) (*Ring, error) {
	if rand == nil {
		rand = crand.Reader
	}
	r := &Ring{store: store, rand: rand}
	if store == nil {
		return r, nil
	}
	if rs, ok := store.(Remote); ok {
		r.remote = rs.Remote()
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	v, err := store.Version(ctx)
	if err != nil {
		return nil, err
	}
	stored, err := store.Keys(ctx)
	if err != nil {
		return nil, err
	}
	if r.keys, err = toKeys(stored); err != nil {
		return nil, err
	}
	r.seen = v
	return r, nil
}

// Load returns a ring on the key file at path (FileStore), or in memory for an empty path.
func Load(path string, rand io.Reader) (*Ring, error) {
	if path == "" {
		return NewRing(nil, rand)
	}
	return NewRing(FileStore(path), rand)
}

func toKeys(stored []StoredKey) ([]*key, error) {
	keys := make([]*key, 0, len(stored))
	for _, s := range stored {
		k, err := newKey(s)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	slices.SortStableFunc(keys, func(x, y *key) int { return y.key.Created.Compare(x.key.Created) })
	return keys, nil
}

func newKey(s StoredKey) (*key, error) {
	aead, err := chacha20poly1305.NewX(s.Raw[:])
	if err != nil {
		return nil, err
	}
	k := &key{key: s, aead: aead}
	sum := blake2s.Sum256(append([]byte("salvo ticket key id\x00"), s.Raw[:]...))
	copy(k.id[:], sum[:])
	return k, nil
}

// syncLocked takes the store's keys if they changed since the ring last read or wrote them, at most once
// per checkEvery; a remote store is asked in the background. A store that cannot be asked leaves the keys
// as they are.
func (r *Ring) syncLocked(now time.Time) {
	if r.store == nil || now.Sub(r.lastCheck) < checkEvery && !now.Before(r.lastCheck) {
		return
	}
	r.lastCheck = now
	if r.remote {
		if !r.checking {
			r.checking = true
			go r.syncInBackground(r.seen) // the goroutine "ticket key sync", one at a time
		}
		return
	}
	if v, keys, changed, err := r.read(r.seen); err == nil && changed {
		r.applyLocked(v, keys)
	}
}

// askNowLocked asks a remote store at once (a ticket under an unknown key is in the hand).
func (r *Ring) askNowLocked(now time.Time) {
	if !r.remote || now.Before(r.quietUntil) || now.Sub(r.askedAt) < checkEvery && !now.Before(r.askedAt) {
		return
	}
	r.askedAt = now
	v, keys, changed, err := r.read(r.seen)
	switch {
	case err != nil:
		r.quietUntil = now.Add(failBackoff)
	case changed:
		r.applyLocked(v, keys)
	}
}

func (r *Ring) syncInBackground(seen string) {
	v, keys, changed, err := r.read(seen)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checking = false
	if err == nil && changed && r.seen == seen { // nothing newer was applied meanwhile
		r.applyLocked(v, keys)
	}
}

// read asks the store for its keys if its version is not seen; changed reports that it was not.
func (r *Ring) read(seen string) (v string, keys []*key, changed bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if v, err = r.store.Version(ctx); err != nil || v == seen {
		return "", nil, false, err
	}
	stored, err := r.store.Keys(ctx)
	if err != nil {
		return "", nil, false, err
	}
	if keys, err = toKeys(stored); err != nil {
		return "", nil, false, err
	}
	return v, keys, true, nil
}

func (r *Ring) applyLocked(v string, keys []*key) {
	if r.unsaved != nil {
		keys = append([]*key{r.unsaved}, keys...) // ours, which the store never got
	}
	r.keys, r.seen = keys, v
}

// findLocked returns the key with the given ID, or nil.
func (r *Ring) findLocked(id []byte) *key {
	for _, k := range r.keys {
		if bytes.Equal(k.id[:], id) {
			return k
		}
	}
	return nil
}

// ErrNotSaved wraps a failure to save a new key: it seals tickets all the same, but they will not open
// after a restart (nor on other gateways).
var ErrNotSaved = errors.New("tickets: new ticket key not saved; tickets will not survive a restart")

// Prepare makes sure a current key exists (creating and saving one if needed), so that a gateway finds a
// key store it cannot write at start rather than at its first login.
func (r *Ring) Prepare(now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, err := r.currentLocked(now)
	return err
}

// sealerLocked is the newest key that may seal now: less than RotateEvery old, and not dated in the future
// beyond clockSlack (a key another gateway made with a clock ahead still opens its tickets, but does not
// seal here). nil when a new key is due.
func (r *Ring) sealerLocked(now time.Time) *key {
	for _, k := range r.keys {
		if !k.key.Created.After(now.Add(clockSlack)) {
			if now.Sub(k.key.Created) < RotateEvery {
				return k
			}
			return nil
		}
	}
	return nil
}

// currentLocked returns the sealing key, rotating when it is due. Called with r.mu held. A key the store
// cannot take is used anyway, with an error wrapping ErrNotSaved.
func (r *Ring) currentLocked(now time.Time) (*key, error) {
	r.syncLocked(now)
	if k := r.sealerLocked(now); k != nil {
		return k, nil
	}
	var raw [32]byte
	if _, err := io.ReadFull(r.rand, raw[:]); err != nil {
		return nil, err
	}
	k, err := newKey(StoredKey{Created: now, Raw: raw})
	if err != nil {
		return nil, err
	}
	// A replaced key stops sealing now, so its last tickets expire Lifetime later: keep it that long.
	dropBefore := now.Add(-RotateEvery - Lifetime)
	if r.store == nil {
		r.keys = append([]*key{k}, r.keys...)
		r.keys = slices.DeleteFunc(r.keys, func(x *key) bool { return x.key.Created.Before(dropBefore) })
		return k, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	stored, err := r.store.Rotate(ctx, k.key, now.Add(-RotateEvery), now.Add(clockSlack), dropBefore)
	if err != nil {
		r.unsaved = k
		r.keys = append([]*key{k}, r.keys...)
		return k, fmt.Errorf("%w: %w", ErrNotSaved, err)
	}
	keys, err := toKeys(stored)
	if err != nil {
		return nil, err
	}
	r.unsaved, r.keys = nil, keys
	if v, err := r.store.Version(ctx); err == nil {
		r.seen = v
	}
	if s := r.sealerLocked(now); s != nil {
		return s, nil // ours, or the one another gateway made first
	}
	return k, nil
}
