package bench

import (
	"testing"

	"github.com/salvovpn/salvo/engine"
)

// TestSessionUsers: the benchmark's users never hold more sessions than max_sessions_per_user allows
// (1024), or the gateway would replace their oldest sessions and the benchmark would count fewer.
func TestSessionUsers(t *testing.T) {
	for _, tc := range []struct{ sessions, users int }{{1, 1}, {64, 1}, {1000, 1}, {1001, 2}, {10000, 10}, {10001, 11}} {
		u := sessionUsers(tc.sessions)
		if u != tc.users {
			t.Errorf("%d sessions: %d users, want %d", tc.sessions, u, tc.users)
		}
		if per := (tc.sessions + u - 1) / u; per > 1024 {
			t.Errorf("%d sessions: %d per user, over max_sessions_per_user's cap", tc.sessions, per)
		}
	}
}

// TestSendingSessions counts only sessions whose received packets grew, matched by session index.
func TestSendingSessions(t *testing.T) {
	sess := func(idx uint32, rx uint64) engine.SessionStatus {
		return engine.SessionStatus{SessionIndex: idx, Counters: engine.CountersSnapshot{Traffic: engine.Traffic{RxPackets: rx}}}
	}
	st0 := engine.Status{Sessions: []engine.SessionStatus{sess(1, 10), sess(2, 10), sess(3, 0)}}
	st1 := engine.Status{Sessions: []engine.SessionStatus{sess(1, 11), sess(2, 10), sess(3, 0), sess(4, 5)}}
	if n := sendingSessions(st0, st1); n != 2 { // 1 sent more; 4 is new and sent
		t.Fatalf("%d sending sessions, want 2", n)
	}
}
