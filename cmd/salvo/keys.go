package main

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/salvovpn/salvo/protocol/handshake"
)

func cmdKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keygen", "Usage: salvo keygen [--out FILE]\n\nMakes a gateway static key pair. With --out the private key is written to\nFILE (mode 0600, refused if FILE exists) and the public key, which clients\npin as server_public_key, is printed. Without it only the private key is\nprinted, one line, as wg genkey does:\n\n  salvo keygen | tee server.key | salvo pubkey\n\n", stdout)
	out := fs.String("out", "", "write the private key to this file instead of printing it")
	if err := parse(fs, args); err != nil {
		return err
	}
	kp, err := handshake.GenerateKeypair(rand.Reader)
	if err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(stdout, kp.Private.String()) // pipes into salvo pubkey
		return nil
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if _, err := fmt.Fprintln(f, kp.Private.String()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, kp.Public.String())
	return nil
}

func cmdPubkey(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("pubkey", "Usage: salvo pubkey < private.key\n\nPrints the public key of the private key read from standard input.\n\n", stdout)
	if err := parse(fs, args); err != nil {
		return err
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && line == "" {
		return usageError{fmt.Errorf("pubkey: no private key on standard input")}
	}
	priv, err := handshake.ParseKey(strings.TrimSpace(line))
	if err != nil {
		return usageError{fmt.Errorf("pubkey: %w", err)}
	}
	pub, err := handshake.PublicFromPrivate(priv)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, pub.String())
	return nil
}
