package protocol

// Sizes of the handshake messages (PROTOCOL.md, "Handshake"). They are wire vocabulary like the codes and
// the data header: the handshake package builds and parses these messages, and the classifier and the
// receive loops check lengths with them before any cryptography.
const (
	HandshakeHeaderLen = 8  // code, version, 2 reserved, sender index
	KeyLen             = 32 // Curve25519 public key (Noise e)
	MacLen             = 16 // mac1 and mac2: keyed BLAKE2s-128
	TAI64NLen          = 12 // the login's timestamp
	ProofLen           = 32 // a resume's proof
	MaxSuites          = 8  // AEAD suites a client may offer
	MaxLoginLen        = 64 // bytes of a login name (1-byte length on the wire)
	MaxPasswordLen     = 128
	CookieLen          = 16
	CookieNonceLen     = 24  // XChaCha20-Poly1305 nonce of a cookie reply
	MaxTicketLen       = 255 // an opaque session ticket (1-byte length on the wire)
	TicketSecretLen    = 32  // the secret that proves a ticket's holder

	// The request body: timestamp, instance, kind, suite count, then the kind's fields; MaxRequestBodyLen
	// is the longest (the ticket branch).
	requestFixed      = TAI64NLen + 8 + 1 + 1
	minRequestBody    = requestFixed + 1 + 2 + 1                                                 // one suite, 1-byte login, empty password
	MaxRequestBodyLen = requestFixed + MaxSuites + 1 + MaxLoginLen + 1 + MaxTicketLen + ProofLen // the ticket branch

	// MinRequestLen and MaxRequestLen bound a clientAuthRequest datagram.
	MinRequestLen = HandshakeHeaderLen + KeyLen + minRequestBody + TagLen + 2*MacLen
	MaxRequestLen = HandshakeHeaderLen + KeyLen + MaxRequestBodyLen + TagLen + 2*MacLen
	// MinResponseLen is the shortest serverAuthResponse: header, Noise e, a 1-byte failure body and its tag.
	MinResponseLen = HandshakeHeaderLen + KeyLen + 1 + TagLen
	// CookieReplyLen is the exact size of a cookieReply datagram.
	CookieReplyLen = HandshakeHeaderLen + CookieNonceLen + CookieLen + TagLen
	// NoticeLen is the exact size of a notice datagram.
	NoticeLen = 8
)

// The login and resume bodies fit in what a ticket body may use: a negative constant does not convert to
// uint, so this fails to compile otherwise.
const (
	_ = uint(MaxRequestBodyLen - (requestFixed + MaxSuites + 1 + MaxLoginLen + 4 + ProofLen))
	_ = uint(MaxRequestBodyLen - (requestFixed + MaxSuites + 1 + MaxLoginLen + 1 + MaxPasswordLen))
)
