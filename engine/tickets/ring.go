package tickets

import (
	"bytes"
	"crypto/cipher"
	crand "crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/salvovpn/salvo/internal/atomicfile"
	"github.com/salvovpn/salvo/internal/secretfile"
)

// idLen is the key ID in front of every ticket: it picks the key without trying each one.
const idLen = 4

type key struct {
	id      [idLen]byte
	created time.Time
	raw     [chacha20poly1305.KeySize]byte
	aead    cipher.AEAD
}

// Ring holds the ticket keys, newest first, and keeps them in a file. Safe for concurrent use.
//
// The file is the authority. A ring looks at it at most once a second (one stat) and, when it changed,
// takes its keys as they are: so deleting the file revokes every ticket within a second (clients then log
// in with their passwords once), and replacing it replaces the keys. Gateways that share one file (on
// shared storage) share their tickets that way: one that rotates writes its new key, the others pick it
// up, and one about to rotate looks first and takes a key another made. Only while the file cannot be
// written does a ring keep keys the file does not have (in memory, for this process).
type Ring struct {
	path string // "" keeps the keys in memory only
	rand io.Reader

	mu        sync.Mutex
	keys      []*key
	seen      fileStamp // of the file when it was last read or written
	lastCheck time.Time
	unsaved   bool // the newest key could not be written: keep it whatever the file says
}

// fileStamp tells one version of the key file from another without reading it.
type fileStamp struct {
	exists bool
	mod    time.Time
	size   int64
	ino    uint64
}

func stamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{exists: true, mod: fi.ModTime(), size: fi.Size(), ino: inode(fi)}
}

// checkEvery bounds how often a ring stats its file.
const checkEvery = time.Second

// maxKeys bounds the key file: with RotateEvery >= Lifetime at most two keys are live, plus one another
// gateway made a moment ago.
const maxKeys = 4

// clockSlack is how far in the future a key or a ticket may be dated (another gateway's clock).
const clockSlack = time.Minute

// Load reads the ring from path, or starts an empty one when the file does not exist. An empty path keeps
// the keys in memory (tickets then do not survive a restart). rand nil is crypto/rand.
func Load(path string, rand io.Reader) (*Ring, error) {
	if rand == nil {
		rand = crand.Reader
	}
	r := &Ring{path: path, rand: rand}
	if path == "" {
		return r, nil
	}
	st := stamp(path)
	keys, err := readKeys(path)
	if err != nil {
		return nil, err
	}
	r.keys, r.seen = keys, st
	return r, nil
}

// readKeys reads a key file: nil for a missing file.
func readKeys(path string) ([]*key, error) {
	b, err := secretfile.Read(path, "ticket key file", 4096)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keys []*key
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := parseKey(line)
		if err != nil {
			return nil, fmt.Errorf("ticket key file %s, line %d: %w (delete the file to start over: clients then log in with their passwords once)", path, n+1, err)
		}
		if len(keys) == maxKeys {
			return nil, fmt.Errorf("ticket key file %s: more than %d keys", path, maxKeys)
		}
		keys = append(keys, k)
	}
	slices.SortStableFunc(keys, func(x, y *key) int { return y.created.Compare(x.created) })
	return keys, nil
}

func parseKey(line string) (*key, error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return nil, errors.New(`want "<unix seconds> <base64 key>"`)
	}
	secs, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || secs <= 0 {
		return nil, errors.New("bad creation time")
	}
	raw, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil || len(raw) != chacha20poly1305.KeySize {
		return nil, errors.New("bad key: want 32 bytes of base64")
	}
	return newKey([32]byte(raw), time.Unix(secs, 0))
}

func newKey(raw [32]byte, created time.Time) (*key, error) {
	aead, err := chacha20poly1305.NewX(raw[:])
	if err != nil {
		return nil, err
	}
	k := &key{created: created, raw: raw, aead: aead}
	sum := blake2s.Sum256(append([]byte("salvo ticket key id\x00"), raw[:]...))
	copy(k.id[:], sum[:])
	return k, nil
}

// syncLocked takes the file's keys if it changed since the ring last read or wrote it (at most once per
// checkEvery unless force). A file that cannot be read leaves the keys as they are.
func (r *Ring) syncLocked(now time.Time, force bool) {
	if r.path == "" || !force && now.Sub(r.lastCheck) < checkEvery && !now.Before(r.lastCheck) {
		return
	}
	r.lastCheck = now
	st := stamp(r.path)
	if st == r.seen {
		return
	}
	keys, err := readKeys(r.path)
	if err != nil {
		return
	}
	if r.unsaved && len(r.keys) > 0 {
		keys = append([]*key{r.keys[0]}, keys...) // ours, which the file never got
	}
	r.keys, r.seen = keys, st
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
// after a restart.
var ErrNotSaved = errors.New("tickets: new ticket key not saved; tickets will not survive a restart")

// Prepare makes sure a current key exists (creating and saving one if needed), so that a gateway finds a
// state directory it cannot write at start rather than at its first login.
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
		if !k.created.After(now.Add(clockSlack)) {
			if now.Sub(k.created) < RotateEvery {
				return k
			}
			return nil
		}
	}
	return nil
}

// currentLocked returns the sealing key, rotating (and saving) when it is due, and forgets keys whose
// tickets have all expired. Called with r.mu held. A key that cannot be saved is used anyway, with an
// error wrapping ErrNotSaved.
func (r *Ring) currentLocked(now time.Time) (*key, error) {
	r.syncLocked(now, false)
	if k := r.sealerLocked(now); k != nil {
		return k, nil
	}
	// Another gateway sharing the file may have rotated already: take its key rather than make one.
	r.syncLocked(now, true)
	if k := r.sealerLocked(now); k != nil {
		return k, nil
	}
	var raw [32]byte
	if _, err := io.ReadFull(r.rand, raw[:]); err != nil {
		return nil, err
	}
	k, err := newKey(raw, now)
	if err != nil {
		return nil, err
	}
	// A replaced key stops sealing now, so its last tickets expire Lifetime later: keep it that long. Keys
	// dated in the future (another clock) are kept for opening.
	keys := []*key{k}
	for _, old := range r.keys {
		if now.Sub(old.created) < RotateEvery+Lifetime && len(keys) < maxKeys {
			keys = append(keys, old)
		}
	}
	slices.SortStableFunc(keys, func(x, y *key) int { return y.created.Compare(x.created) })
	r.keys = keys
	if err := r.persistLocked(); err != nil {
		r.unsaved = true
		return k, fmt.Errorf("%w: %w", ErrNotSaved, err)
	}
	r.unsaved = false
	return k, nil
}

func (r *Ring) persistLocked() error {
	if r.path == "" {
		return nil
	}
	var b bytes.Buffer
	b.WriteString("# Salvo session ticket keys. As secret as the gateway's private key: whoever reads this file\n" +
		"# can forge a session for any user. Deleting it revokes every ticket; clients log in again.\n")
	for _, k := range r.keys {
		fmt.Fprintf(&b, "%d %s\n", k.created.Unix(), base64.StdEncoding.EncodeToString(k.raw[:]))
	}
	if err := atomicfile.Write(r.path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("saving ticket keys: %w", err)
	}
	r.seen = stamp(r.path)
	return nil
}
