// Package loginlimits holds the gateway's default login rate limits, the one place both the configuration
// (what an unset key means) and the engine (what a zero field means) take them from.
package loginlimits

import "time"

const (
	// HashBudgetMiB is the password-hashing budget in argon2id MiB x passes per second: ten logins a
	// second at the default parameters (64 MiB, 2 passes), about what one core of the test machine hashes,
	// leaving the other to the data path. Users with cheaper parameters get proportionally more logins.
	HashBudgetMiB = 10 * 64 * 2
	// FailureBurst failed logins from one source (or for one login), and as many forged resumes from one
	// source, are allowed at once; then one more per FailureInterval.
	FailureBurst    = 10
	FailureInterval = 2 * time.Second
	// CommandTimeout is how long an auth command may take (auth_timeout): a client gives up a login after
	// 10 s and sends its request again after 1, 2 and 4 s, so an answer much later than this helps nobody.
	CommandTimeout = 5 * time.Second
	// CommandSessionAge is max_session_age with auth = "command" unless set: how long a session lives on
	// rekeys before its client must log in again, which is when the command is asked again.
	CommandSessionAge = time.Hour
)
