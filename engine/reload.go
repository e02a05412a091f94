package engine

import (
	"net/netip"
	"time"
)

// Reloadable is what a running gateway can change without dropping a session (Server.Reload). The users
// file is reloaded on its own (Users.Reload, then Server.UsersChanged).
type Reloadable struct {
	// Pushed to sessions that log in or resume from now on; live sessions keep theirs until their next
	// rekey.
	Routes, ExcludedRoutes []netip.Prefix
	DNS                    []netip.Addr
	SearchDomains          []string
	// MaxSessionsPerUser applies from the next login (sessions over a lowered limit are not ended);
	// MaxSessionAge from the next rekey.
	MaxSessionsPerUser int
	MaxSessionAge      time.Duration
	Limits             LoginLimits
}

// Reload applies r. It changes nothing when r is invalid (too many routes, a hash budget too small for
// the users file).
func (s *Server) Reload(r Reloadable) error {
	s.mu.Lock()
	st := s.cfg.Settings
	s.mu.Unlock()
	st.Routes, st.ExcludedRoutes, st.DNS, st.SearchDomains = r.Routes, r.ExcludedRoutes, r.DNS, r.SearchDomains
	if err := st.Validate(); err != nil {
		return err
	}
	if err := s.logins.setLimits(r.Limits, s.cfg.Users); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Field by field: the janitor reads Settings.Keepalive without the lock, and it does not change.
	s.cfg.Settings.Routes, s.cfg.Settings.ExcludedRoutes = st.Routes, st.ExcludedRoutes
	s.cfg.Settings.DNS, s.cfg.Settings.SearchDomains = st.DNS, st.SearchDomains
	if r.MaxSessionsPerUser > 0 {
		s.cfg.MaxSessionsPerUser = r.MaxSessionsPerUser
	}
	s.cfg.MaxSessionAge = r.MaxSessionAge
	return nil
}
