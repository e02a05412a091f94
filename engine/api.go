package engine

import (
	"net/http"

	"github.com/salvovpn/salvo/engine/control"
)

// KickResult is the answer of POST /sessions/{user}/disconnect.
type KickResult struct {
	User  string `json:"user"`
	Ended int    `json:"ended"` // sessions ended
}

// API is the gateway's admin API, served on its control socket:
//
//	GET  /status                       Status
//	GET  /sessions                     []SessionStatus
//	POST /sessions/{user}/disconnect   KickResult; 404 when the user has no session
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
		if n == 0 {
			control.WriteError(w, http.StatusNotFound, "user "+user+" has no session on this gateway")
			return
		}
		s.log.Info("sessions ended by an administrator", "user", user, "sessions", n)
		control.WriteJSON(w, http.StatusOK, KickResult{User: user, Ended: n})
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
