package engine

import (
	"fmt"
	"net/http"

	"github.com/salvovpn/salvo/engine/control"
)

// KickResult is the answer of POST /sessions/{user}/disconnect.
type KickResult struct {
	User  string `json:"user"`
	Ended int    `json:"ended"` // sessions ended on this gateway
	// Shared: the kick was also sent to every gateway sharing this one's store (ServerConfig.ShareKick).
	Shared bool `json:"shared,omitempty"`
}

// API is the gateway's admin API, served on its control socket:
//
//	GET  /status                       Status
//	GET  /sessions                     []SessionStatus
//	POST /sessions/{user}/disconnect   KickResult; 404 when the user has no session (and the kick is not
//	                                   shared with other gateways)
func (s *Server) API() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		control.WriteJSON(w, http.StatusOK, s.Status())
	})
	mux.HandleFunc("GET /sessions", func(w http.ResponseWriter, r *http.Request) {
		control.WriteJSON(w, http.StatusOK, s.Status().Sessions)
	})
	mux.HandleFunc("POST /sessions/{user}/disconnect", func(w http.ResponseWriter, r *http.Request) {
		user := r.PathValue("user")
		n := s.Kick(user)
		res := KickResult{User: user, Ended: n}
		if share := s.cfg.ShareKick; share != nil {
			if err := share(user); err != nil {
				control.WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("ended %d sessions of %s here, but could not tell the other gateways: %v", n, user, err))
				return
			}
			res.Shared = true
		} else if n == 0 {
			control.WriteError(w, http.StatusNotFound, "user "+user+" has no session on this gateway")
			return
		}
		s.log.Info("sessions ended by an administrator", "user", user, "sessions", n, "shared", res.Shared)
		control.WriteJSON(w, http.StatusOK, res)
	})
	return mux
}

// API is the client's admin API: GET /status.
func (c *Client) API() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		control.WriteJSON(w, http.StatusOK, c.Status())
	})
	return mux
}
