package users

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/salvovpn/salvo/protocol"
	"golang.org/x/crypto/argon2"
)

// Params are the argon2id cost parameters.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8  // lanes
}

// DefaultParams is what `salvo user add` uses: 64 MiB, 2 passes, 1 lane
// (RFC 9106's second recommended option, with more memory than its minimum).
var DefaultParams = Params{Memory: 64 * 1024, Time: 2, Threads: 1}

// Bounds on parameters read from a users file. A hostile or corrupted file
// must not be able to make each login attempt cost gigabytes or minutes.
const (
	maxMemory  = 1 << 20 // KiB, i.e. 1 GiB
	maxTime    = 100
	minSaltLen = 8
	maxSaltLen = 64
	minKeyLen  = 16
	maxKeyLen  = 64
	saltLen    = 16 // what HashPassword generates
	keyLen     = 32 // what HashPassword generates
)

// ErrMalformedHash is wrapped by every error about a hash string.
var ErrMalformedHash = errors.New("malformed argon2id hash")

// Cost is the work of one hash with p in KiB-passes: Memory (KiB) times
// Time (passes). Argon2 fills and revisits every KiB block once per pass, so
// its CPU time is roughly proportional to Cost whatever the split; the
// gateway's hashing budget is counted in this unit. Lanes (Threads) spread
// the work over cores but do not reduce it, so they do not count.
func (p Params) Cost() uint64 { return uint64(p.Memory) * uint64(p.Time) }

// measurePassword and measureSalt are the fixed input MeasureCost hashes.
var (
	measurePassword = []byte("salvo MeasureCost")
	measureSalt     = make([]byte, saltLen)
)

// MeasureCost runs one argon2id hash with p on a fixed input, as Authenticate
// would, and returns how long it took. The gateway calls it for
// Store.MaxParams() at load and on every reload, to learn how long to pad
// failed logins (see the package documentation). One run is a sample, not a
// bound: a loaded machine hashes slower, so callers should add a margin.
// The first run also pays for touching fresh memory, which errs on the slow
// (safe) side.
//
// p must be valid, as every Params from a Store is; MeasureCost panics on
// parameters HashPassword would refuse.
func MeasureCost(p Params) time.Duration {
	if err := p.validate(); err != nil {
		panic("users.MeasureCost: " + err.Error())
	}
	h := phc{params: p, salt: measureSalt, key: make([]byte, keyLen)}
	start := time.Now()
	h.verify(measurePassword)
	return time.Since(start)
}

func (p Params) validate() error {
	switch {
	case p.Threads < 1:
		return fmt.Errorf("argon2id threads p=%d must be at least 1", p.Threads)
	case p.Time < 1 || p.Time > maxTime:
		return fmt.Errorf("argon2id time t=%d must be 1..%d", p.Time, maxTime)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory:
		return fmt.Errorf("argon2id memory m=%d KiB must be %d..%d", p.Memory, 8*uint32(p.Threads), maxMemory)
	}
	return nil
}

// phc is a parsed `$argon2id$v=19$m=..,t=..,p=..$salt$hash` string.
type phc struct {
	params Params
	salt   []byte
	key    []byte
}

var b64 = base64.RawStdEncoding.Strict()

// HashPassword hashes password with argon2id, a fresh 16-byte salt read from
// rand (normally crypto/rand.Reader) and p, and returns a PHC string such as
// $argon2id$v=19$m=65536,t=2,p=1$<salt>$<hash> (unpadded standard base64).
func HashPassword(password []byte, p Params, rand io.Reader) (string, error) {
	if err := p.validate(); err != nil {
		return "", err
	}
	if len(password) == 0 {
		return "", errors.New("password is empty")
	}
	if len(password) > protocol.MaxPasswordLen {
		return "", fmt.Errorf("password is %d bytes; the protocol carries at most %d", len(password), protocol.MaxPasswordLen)
	}
	salt := make([]byte, saltLen)
	if _, err := io.ReadFull(rand, salt); err != nil {
		return "", fmt.Errorf("reading salt: %w", err)
	}
	key := argon2.IDKey(password, salt, p.Time, p.Memory, p.Threads, keyLen)
	return phc{params: p, salt: salt, key: key}.String(), nil
}

func (h phc) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
		h.params.Memory, h.params.Time, h.params.Threads, b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

// parsePHC parses and bounds-checks a hash string without hashing anything,
// so a users file can be validated at load time cheaply. Error messages never
// quote the string: it is not secret, but it is noise in a log.
func parsePHC(s string) (phc, error) {
	var h phc
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" {
		return h, fmt.Errorf("%w: want $argon2id$v=19$m=..,t=..,p=..$salt$hash", ErrMalformedHash)
	}
	if f[1] != "argon2id" {
		return h, fmt.Errorf("%w: algorithm %q, want argon2id", ErrMalformedHash, truncate(f[1]))
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return h, fmt.Errorf("%w: version %q, want v=%d", ErrMalformedHash, truncate(f[2]), argon2.Version)
	}
	kv := strings.Split(f[3], ",")
	if len(kv) != 3 {
		return h, fmt.Errorf("%w: parameters must be m=N,t=N,p=N", ErrMalformedHash)
	}
	var vals [3]uint64
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(kv[i], name+"=")
		if !ok {
			return h, fmt.Errorf("%w: parameter %d must be %s=", ErrMalformedHash, i+1, name)
		}
		// Plain decimal only: no sign, no leading zeros, so each hash has
		// exactly one spelling.
		if v == "" || (len(v) > 1 && v[0] == '0') || strings.TrimLeft(v, "0123456789") != "" {
			return h, fmt.Errorf("%w: %s=%q is not a decimal number", ErrMalformedHash, name, truncate(v))
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return h, fmt.Errorf("%w: %s=%s is out of range", ErrMalformedHash, name, truncate(v))
		}
		vals[i] = n
	}
	if vals[2] > 255 {
		return h, fmt.Errorf("%w: p=%d is out of range 1..255", ErrMalformedHash, vals[2])
	}
	h.params = Params{Memory: uint32(vals[0]), Time: uint32(vals[1]), Threads: uint8(vals[2])}
	if err := h.params.validate(); err != nil {
		return h, fmt.Errorf("%w: %v", ErrMalformedHash, err)
	}
	var err error
	if h.salt, err = b64.DecodeString(f[4]); err != nil {
		return h, fmt.Errorf("%w: salt is not unpadded base64", ErrMalformedHash)
	}
	if len(h.salt) < minSaltLen || len(h.salt) > maxSaltLen {
		return h, fmt.Errorf("%w: salt is %d bytes, want %d..%d", ErrMalformedHash, len(h.salt), minSaltLen, maxSaltLen)
	}
	if h.key, err = b64.DecodeString(f[5]); err != nil {
		return h, fmt.Errorf("%w: hash is not unpadded base64", ErrMalformedHash)
	}
	if len(h.key) < minKeyLen || len(h.key) > maxKeyLen {
		return h, fmt.Errorf("%w: hash is %d bytes, want %d..%d", ErrMalformedHash, len(h.key), minKeyLen, maxKeyLen)
	}
	return h, nil
}

func truncate(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return s
}

// VerifyPassword reports whether password matches the PHC string. An error
// means the string itself is malformed or its parameters are out of bounds.
func VerifyPassword(phcString string, password []byte) (bool, error) {
	h, err := parsePHC(phcString)
	if err != nil {
		return false, err
	}
	return h.verify(password), nil
}

func (h phc) verify(password []byte) bool {
	got := argon2.IDKey(password, h.salt, h.params.Time, h.params.Memory, h.params.Threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(got, h.key) == 1
}
