package tickets

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/salvovpn/salvo/internal/atomicfile"
	"github.com/salvovpn/salvo/internal/secretfile"
)

// FileStore keeps ticket keys in a file (0600, checked like the private key), one "unix-seconds base64"
// line per key. Gateways on shared storage can share one; two that rotate in the same instant may lose
// one key (a database has no such race).
type FileStore string

// maxKeys bounds the key file: with RotateEvery >= Lifetime at most two keys are live, plus one another
// gateway made a moment ago.
const maxKeys = 4

// Version is the file's modification time, size and inode; "" for no file.
func (f FileStore) Version(context.Context) (string, error) {
	fi, err := os.Stat(string(f))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprint(fi.ModTime().UnixNano(), fi.Size(), inode(fi)), nil
}

// Keys reads the file: none when it does not exist.
func (f FileStore) Keys(context.Context) ([]StoredKey, error) {
	path := string(f)
	b, err := secretfile.Read(path, "ticket key file", 4096)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keys []StoredKey
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
	return keys, nil
}

func parseKey(line string) (StoredKey, error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return StoredKey{}, errors.New(`want "<unix seconds> <base64 key>"`)
	}
	secs, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || secs <= 0 {
		return StoredKey{}, errors.New("bad creation time")
	}
	raw, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil || len(raw) != 32 {
		return StoredKey{}, errors.New("bad key: want 32 bytes of base64")
	}
	return StoredKey{Created: time.Unix(secs, 0), Raw: [32]byte(raw)}, nil
}

// Rotate reads the file again and writes it with candidate unless it holds a fresh key.
func (f FileStore) Rotate(ctx context.Context, candidate StoredKey, freshAfter, notAfter, dropBefore time.Time) ([]StoredKey, error) {
	keys, err := f.Keys(ctx)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if !k.Created.Before(freshAfter) && !k.Created.After(notAfter) {
			return keys, nil
		}
	}
	out := []StoredKey{candidate}
	for _, k := range keys {
		if !k.Created.Before(dropBefore) && len(out) < maxKeys {
			out = append(out, k)
		}
	}
	var b bytes.Buffer
	b.WriteString("# Salvo session ticket keys. As secret as the gateway's private key: whoever reads this file\n" +
		"# can forge a session for any user. Deleting it revokes every ticket; clients log in again.\n")
	for _, k := range out {
		fmt.Fprintf(&b, "%d %s\n", k.Created.Unix(), base64.StdEncoding.EncodeToString(k.Raw[:]))
	}
	if err := atomicfile.Write(string(f), b.Bytes(), 0o600); err != nil {
		return nil, fmt.Errorf("saving ticket keys: %w", err)
	}
	return out, nil
}
