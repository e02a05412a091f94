package daemon

import (
	"fmt"
	"os"
	"time"

	"github.com/salvovpn/salvo/offload"
)

// Environment switches, for tests and for kernels or devices that misbehave: each forces one offload off
// or shortens a timer. They are read in readSwitches, once per run, and nowhere else.
const (
	EnvNoTunOffload = "SALVO_NO_TUN_OFFLOAD" // open the TUN without IFF_VNET_HDR
	EnvNoUDPGSO     = "SALVO_NO_UDP_GSO"     // send every datagram separately (no UDP_SEGMENT)
	EnvNoUDPGRO     = "SALVO_NO_UDP_GRO"     // receive every datagram separately (no UDP_GRO)
	// EnvTunImpl picks the TUN offload code: "salvo" (default, package offload) or "wireguard" (the
	// wireguard-go tun package), so both can be measured in one benchmark run.
	EnvTunImpl = "SALVO_TUN_IMPL"
	// EnvRekeyAfter shortens the client's rekey interval (a Go duration, at most 120s) so tests can watch
	// rekeys happen under load.
	EnvRekeyAfter = "SALVO_REKEY_AFTER"
)

// switches are the environment switches of one run.
type switches struct {
	tun        offload.Options
	noUDPGSO   bool
	noUDPGRO   bool
	rekeyAfter time.Duration // 0: the protocol's interval
}

func readSwitches() (switches, error) {
	sw := switches{
		tun:      offload.Options{VNetHdr: os.Getenv(EnvNoTunOffload) == "", Impl: os.Getenv(EnvTunImpl)},
		noUDPGSO: os.Getenv(EnvNoUDPGSO) != "",
		noUDPGRO: os.Getenv(EnvNoUDPGRO) != "",
	}
	if v := os.Getenv(EnvRekeyAfter); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return switches{}, fmt.Errorf("%s: %w", EnvRekeyAfter, err)
		}
		sw.rekeyAfter = d
	}
	return sw, nil
}
