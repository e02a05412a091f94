package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"time"

	"github.com/salvovpn/salvo/batch"
	"github.com/salvovpn/salvo/config"
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/offload/classifier"
	"golang.zx2c4.com/wireguard/tun"
)

// unknownSessionSample is how often per CPU the kernel filter lets a packet for an unknown session through,
// so a restarted gateway can tell its old clients (notice unknownSession) to log in again.
const unknownSessionSample = 100 * time.Millisecond

// Per-source limit on login requests in the kernel. A genuine client sends about one a second while it
// logs in; many clients behind one NAT address share the bucket, so it is generous: a thousand clients
// coming back together after a gateway restart need two or three each. A flood from one source is still
// cut by three orders of magnitude before it costs user space anything.
const (
	handshakeRatePerSource  = 200
	handshakeBurstPerSource = 400
)

// attachClassifier loads and attaches the eBPF classifier as the config asks: "off" never loads it, "on"
// fails loudly when it cannot, "auto" falls back (and logs why) when the kernel or privileges refuse.
// groups are the reuseport groups, one per listen address, each in bind order: `workers` worker sockets,
// then the handshake socket.
func attachClassifier(cfg *config.Server, workers int, groups [][]engine.PacketConn, queues []tun.Device, log *slog.Logger) (*classifier.Classifier, error) {
	if cfg.EBPF == "off" {
		return nil, nil
	}
	steer := cfg.EBPFTunSteering && len(queues) > 1
	cls, err := classifier.Load(classifier.Config{Sockets: workers, TUNSteering: steer, UnknownSample: unknownSessionSample,
		HandshakeSocket: true, HandshakeRate: handshakeRatePerSource, HandshakeBurst: handshakeBurstPerSource})
	if err == nil {
		err = attachAll(cls, groups, queues, steer)
		if err != nil {
			cls.Close()
		}
	}
	if err != nil {
		if cfg.EBPF == "auto" && (errors.Is(err, classifier.ErrUnsupported) || errors.Is(err, classifier.ErrPermission)) {
			log.Info("eBPF classifier not used (ebpf = \"auto\")", "reason", err)
			return nil, nil
		}
		return nil, fmt.Errorf("ebpf = %q: %w", cfg.EBPF, err)
	}
	log.Info("eBPF classifier attached", "reuseport_groups", len(groups), "workers_per_group", workers,
		"handshake_socket", true, "login_limit_per_source", fmt.Sprintf("%d/s, burst %d", handshakeRatePerSource, handshakeBurstPerSource),
		"early_drop", true, "tun_steering", steer)
	return cls, nil
}

func attachAll(cls *classifier.Classifier, groups [][]engine.PacketConn, queues []tun.Device, steer bool) error {
	for _, group := range groups {
		raws := make([]syscall.RawConn, 0, len(group))
		for _, c := range group {
			bc, ok := c.(*batch.Conn)
			if !ok {
				return fmt.Errorf("%w: socket is not a batch.Conn", classifier.ErrUnsupported)
			}
			rc, err := bc.SyscallConn()
			if err != nil {
				return err
			}
			raws = append(raws, rc)
		}
		if err := cls.AttachGroup(raws); err != nil {
			return err
		}
	}
	if steer {
		rc, err := queues[0].File().SyscallConn()
		if err != nil {
			return err
		}
		if err := cls.AttachTUN(rc); err != nil {
			return err
		}
	}
	return nil
}
