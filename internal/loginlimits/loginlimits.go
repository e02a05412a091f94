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
)
