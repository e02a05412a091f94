package users

// Authenticator is what the gateway checks logins against: the users file (*Store), an external command
// (*Command), and whatever store comes next (a database). The engine sees nothing else, so every backend
// gets the same rate limits, hashing budget and failure padding: those live in the caller, keyed on what
// these methods return.
//
// Every method is safe for concurrent use and answers from memory or local work; only Authenticate may
// take long (one hash, one command run), and the caller bounds how many run at once.
type Authenticator interface {
	// Authenticate checks login and password. Every failure is "bad credentials" to the client, whatever
	// the error says; the returned User is zero on every error.
	Authenticate(login string, password []byte) (User, error)
	// Lookup returns what the backend knows of login now, without a password. The gateway asks on every
	// rekey (and reload): a session lives on while Lookup returns its user, not disabled, with the Hash it
	// logged in with.
	Lookup(login string) (User, bool)
	// ParamsFor is what Authenticate(login, ...) costs, in argon2id parameters: the gateway charges its
	// Cost to the hashing budget and holds its Memory (up to a cap) while Authenticate runs.
	ParamsFor(login string) Params
	// MaxParams is the costliest ParamsFor can return: it sizes the budget and the failure padding.
	MaxParams() Params
	// Users lists the users the backend knows of, for their fixed addresses (reserved in the pools at
	// start and reload, honoured when leases are restored). A backend that knows no one returns nil.
	Users() []User
}

var _ Authenticator = (*Store)(nil)
