// Package token verifies and mints the JSON Web Tokens that identify
// WebSocket clients: the user id is the "sub" claim, and an optional
// "topics" claim lists the topics the user may join.
package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Config says which keys and claims a Verifier accepts. At least one key
// source must be set.
type Config struct {
	// Secret is the HS256 shared secret.
	Secret []byte
	// PublicKeyFile is a PEM public key (or certificate): RSA → RS256,
	// EC P-256 → ES256, Ed25519 → EdDSA.
	PublicKeyFile string
	// JWKSFile is a JSON Web Key Set; tokens pick a key by "kid". The file
	// is re-read when it changes, so keys can rotate without a restart.
	JWKSFile string
	// Audience and Issuer, when set, must match "aud" and "iss".
	Audience string
	Issuer   string
	// Leeway is the clock skew allowed on exp, nbf and iat. Default 0.
	Leeway time.Duration
	// MaxLifetime, when positive, refuses tokens that are valid for longer:
	// whose exp is more than MaxLifetime (plus the leeway) from now, or
	// more than MaxLifetime after their iat. 0: no maximum.
	MaxLifetime time.Duration
}

// Claims is what a verified token says.
type Claims struct {
	Subject string    // the user id
	Expires time.Time // exp plus the leeway: when the token stops being accepted
	Topics  []string  // topic rules from "topics"; nil when the claim is absent
	// Publish: topic rules from "pub", the topics the user's clients may
	// publish to (exact, or "prefix*"); Direct: user id patterns from "dm",
	// the users they may send a message to (MatchUserPattern's syntax).
	// nil when the claim is absent.
	Publish []string
	Direct  []string
	// Presence: topic rules from "presence", the topics whose presence
	// (who is subscribed) the user's clients may read; nil when absent.
	Presence []string
}

// Error is a verification failure with a short reason for the client
// and for metrics.
type Error struct {
	Reason string // malformed, bad_alg, bad_signature, bad_header, bad_claim, expired, not_yet_valid, too_long_lived, bad_audience, bad_issuer, unknown_kid, no_subject, no_expiry
	Detail string
}

func (e *Error) Error() string { return e.Detail }

// Verifier checks tokens. Safe for concurrent use.
type Verifier struct {
	cfg    Config
	secret []byte
	pub    crypto.PublicKey // from PublicKeyFile
	pubAlg string

	mu       sync.Mutex
	jwks     map[string]jwk // guarded by mu
	jwksMod  time.Time      // guarded by mu: mtime of the loaded JWKS
	jwksSeen time.Time      // guarded by mu: when the file was last checked
}

type jwk struct {
	alg string
	key any
}

// NewVerifier loads the configured keys.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{cfg: cfg, secret: cfg.Secret}
	if cfg.PublicKeyFile != "" {
		b, err := os.ReadFile(cfg.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		v.pub, v.pubAlg, err = parsePublicPEM(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.PublicKeyFile, err)
		}
	}
	if cfg.JWKSFile != "" {
		if err := v.loadJWKS(true); err != nil {
			return nil, err
		}
	}
	if len(v.secret) == 0 && v.pub == nil && cfg.JWKSFile == "" {
		return nil, errors.New("no key: set a secret, a public key file or a JWKS file")
	}
	return v, nil
}

// Algorithms lists the signing algorithms this verifier accepts: those of
// its keys, nothing else (never "none").
func (v *Verifier) Algorithms() []string {
	var algs []string
	seen := map[string]bool{}
	add := func(a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			algs = append(algs, a)
		}
	}
	if len(v.secret) > 0 {
		add("HS256")
	}
	add(v.pubAlg)
	v.mu.Lock()
	for _, k := range v.jwks {
		add(k.alg)
	}
	v.mu.Unlock()
	return algs
}

// Verify checks a token's algorithm, header, signature and claims. Header
// and claims are read strictly (strict.go): exact names, no duplicates,
// NumericDates as numbers, no "crit".
func (v *Verifier) Verify(tok string) (Claims, error) {
	if v.cfg.JWKSFile != "" {
		_ = v.loadJWKS(false) // a broken rewrite keeps the last good set
	}
	algs := v.Algorithms()
	// The algorithm is checked first, on its own, so that "none" or a
	// public-key/secret confusion is reported as what it is.
	if t, _, err := jwt.NewParser().ParseUnverified(tok, &jwt.RegisteredClaims{}); err == nil {
		if !slices.Contains(algs, t.Method.Alg()) {
			return Claims{}, &Error{"bad_alg", "algorithm " + t.Method.Alg() + " not accepted"}
		}
	} else if h, ok := headerAlg(tok); ok && !slices.Contains(algs, h) {
		return Claims{}, &Error{"bad_alg", "algorithm " + h + " not accepted"}
	}
	// The header before the signature: an extension it names could change
	// what the signature covers.
	if err := checkHeader(tok); err != nil {
		return Claims{}, err
	}
	// The signature, by the library; the claims are then read and checked
	// here, strictly (strict.go).
	_, err := jwt.NewParser(jwt.WithValidMethods(algs), jwt.WithStrictDecoding(), jwt.WithoutClaimsValidation()).
		Parse(tok, v.keyFor)
	if err != nil {
		return Claims{}, classify(err)
	}
	c, err := parseClaims(tok)
	if err != nil {
		return Claims{}, err
	}
	if err := c.validate(&v.cfg, time.Now()); err != nil {
		return Claims{}, err
	}
	// Expires includes the leeway, so that a connection lives exactly as
	// long as its token would be accepted.
	out := Claims{Subject: c.sub, Expires: c.exp.Add(v.cfg.Leeway)}
	if c.topicsGiven {
		out.Topics = c.topics
	}
	out.Publish, out.Direct, out.Presence = c.pub, c.dm, c.presence
	return out, nil
}

var errUnknownKid = errors.New("unknown kid")

// headerAlg reads "alg" from a token's header, for tokens the library will
// not parse unverified (such as "none").
func headerAlg(tok string) (string, bool) {
	head, _, ok := strings.Cut(tok, ".")
	if !ok {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return "", false
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(b, &h) != nil || h.Alg == "" {
		return "", false
	}
	return h.Alg, true
}

// keyFor picks the key for a token by its algorithm and kid. The algorithm
// has already been checked against Algorithms; each key serves only its own
// algorithm, so an HS256 token can never be checked with a public key.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if kid, ok := t.Header["kid"].(string); ok && v.cfg.JWKSFile != "" {
		v.mu.Lock()
		k, found := v.jwks[kid]
		v.mu.Unlock()
		if !found {
			return nil, errUnknownKid
		}
		if k.alg != alg {
			return nil, fmt.Errorf("kid %q is a %s key, token says %s", kid, k.alg, alg)
		}
		return k.key, nil
	}
	switch {
	case alg == "HS256" && len(v.secret) > 0:
		return v.secret, nil
	case alg == v.pubAlg && v.pub != nil:
		return v.pub, nil
	case v.cfg.JWKSFile != "":
		return nil, errUnknownKid // JWKS keys need a kid
	}
	return nil, fmt.Errorf("no %s key", alg)
}

// classify names the library's signature-stage errors (claims are checked
// in strict.go).
func classify(err error) error {
	switch {
	case errors.Is(err, errUnknownKid):
		return &Error{"unknown_kid", "unknown key id"}
	case errors.Is(err, jwt.ErrTokenMalformed):
		return &Error{"malformed", "malformed token"}
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if errors.Is(err, jwt.ErrTokenUnverifiable) {
			return &Error{"bad_alg", "algorithm not accepted"}
		}
		return &Error{"bad_signature", "bad signature"}
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return &Error{"bad_alg", "algorithm or key not accepted"}
	}
	return &Error{"malformed", "invalid token"}
}

func parsePublicPEM(b []byte) (crypto.PublicKey, string, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, "", errors.New("no PEM block")
	}
	var key any
	var err error
	switch blk.Type {
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(blk.Bytes); err == nil {
			key = cert.PublicKey
		}
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(blk.Bytes)
	default:
		key, err = x509.ParsePKIXPublicKey(blk.Bytes)
	}
	if err != nil {
		return nil, "", err
	}
	alg, err := algOf(key)
	return key, alg, err
}

func algOf(key any) (string, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return "RS256", nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", errors.New("only P-256 EC keys (ES256) are supported")
		}
		return "ES256", nil
	case ed25519.PublicKey:
		return "EdDSA", nil
	}
	return "", fmt.Errorf("unsupported key type %T", key)
}

// loadJWKS (re)reads the JWKS file if it changed; at most once a second
// unless force.
func (v *Verifier) loadJWKS(force bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := time.Now()
	if !force && now.Sub(v.jwksSeen) < time.Second {
		return nil
	}
	v.jwksSeen = now
	fi, err := os.Stat(v.cfg.JWKSFile)
	if err != nil {
		return err
	}
	if !force && fi.ModTime().Equal(v.jwksMod) {
		return nil
	}
	b, err := os.ReadFile(v.cfg.JWKSFile)
	if err != nil {
		return err
	}
	keys, err := parseJWKS(b)
	if err != nil {
		return fmt.Errorf("%s: %w", v.cfg.JWKSFile, err)
	}
	v.jwks, v.jwksMod = keys, fi.ModTime()
	return nil
}

// parseJWKS reads a JSON Web Key Set: RSA, EC P-256, Ed25519 (OKP) and
// oct (HS256) keys, each with a kid.
func parseJWKS(b []byte) (map[string]jwk, error) {
	var set struct {
		Keys []struct {
			Kid, Kty, Alg, Use, Crv, N, E, X, Y, K string
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, err
	}
	out := make(map[string]jwk, len(set.Keys))
	for i, k := range set.Keys {
		if k.Kid == "" {
			return nil, fmt.Errorf("key %d has no kid", i)
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		dec := func(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
		var key any
		var alg string
		switch k.Kty {
		case "RSA":
			n, err1 := dec(k.N)
			e, err2 := dec(k.E)
			if err := errors.Join(err1, err2); err != nil || len(n) == 0 || len(e) == 0 {
				return nil, fmt.Errorf("key %q: bad RSA n/e", k.Kid)
			}
			key, alg = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, "RS256"
		case "EC":
			if k.Crv != "P-256" {
				return nil, fmt.Errorf("key %q: only P-256 EC keys are supported", k.Kid)
			}
			x, err1 := dec(k.X)
			y, err2 := dec(k.Y)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("key %q: bad EC x/y", k.Kid)
			}
			if len(x) != 32 || len(y) != 32 {
				return nil, fmt.Errorf("key %q: EC x and y must be 32 bytes", k.Kid)
			}
			// The uncompressed point; parsing checks that it is on the curve.
			pk, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
			if err != nil {
				return nil, fmt.Errorf("key %q: %v", k.Kid, err)
			}
			key, alg = pk, "ES256"
		case "OKP":
			x, err := dec(k.X)
			if k.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("key %q: only Ed25519 OKP keys are supported", k.Kid)
			}
			key, alg = ed25519.PublicKey(x), "EdDSA"
		case "oct":
			s, err := dec(k.K)
			if err != nil || len(s) < 32 {
				return nil, fmt.Errorf("key %q: oct keys need at least 32 bytes", k.Kid)
			}
			key, alg = s, "HS256"
		default:
			return nil, fmt.Errorf("key %q: unsupported kty %q", k.Kid, k.Kty)
		}
		if k.Alg != "" && k.Alg != alg {
			return nil, fmt.Errorf("key %q: alg %s does not fit a %s key", k.Kid, k.Alg, alg)
		}
		out[k.Kid] = jwk{alg: alg, key: key}
	}
	if len(out) == 0 {
		return nil, errors.New("no signing keys")
	}
	return out, nil
}

// MintConfig is what Mint signs with: a secret (HS256) or a PEM private key
// (RSA → RS256, EC P-256 → ES256, Ed25519 → EdDSA), with an optional kid.
type MintConfig struct {
	Secret         []byte
	PrivateKeyFile string
	Kid            string
	Issuer         string
	Audience       string
}

// Mint returns a signed token for userID, valid for ttl, granting topics
// (topic names or "prefix*" rules; none: the claim is left out).
func Mint(mc MintConfig, userID string, ttl time.Duration, topics []string) (string, error) {
	return MintGrants(mc, userID, ttl, Grants{Topics: topics})
}

// Grants are what a minted token allows: the claims "topics", "pub",
// "dm" and "presence" (each left out when empty).
type Grants struct {
	Topics   []string // topics the user may join
	Publish  []string // topics the user's clients may publish to
	Direct   []string // user id patterns they may send a message to
	Presence []string // topics whose presence they may read
}

// MintGrants is Mint with the client-publish claims too.
func MintGrants(mc MintConfig, userID string, ttl time.Duration, g Grants) (string, error) {
	topics := g.Topics
	now := time.Now()
	claims := struct {
		jwt.RegisteredClaims
		Topics   []string `json:"topics,omitempty"`
		Pub      []string `json:"pub,omitempty"`
		DM       []string `json:"dm,omitempty"`
		Presence []string `json:"presence,omitempty"`
	}{RegisteredClaims: jwt.RegisteredClaims{
		Subject:   userID,
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		Issuer:    mc.Issuer,
	}, Topics: topics, Pub: g.Publish, DM: g.Direct, Presence: g.Presence}
	if mc.Audience != "" {
		claims.Audience = jwt.ClaimStrings{mc.Audience}
	}
	var method jwt.SigningMethod
	var key any
	switch {
	case mc.PrivateKeyFile != "":
		b, err := os.ReadFile(mc.PrivateKeyFile)
		if err != nil {
			return "", err
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return "", fmt.Errorf("%s: no PEM block", mc.PrivateKeyFile)
		}
		var pk any
		switch blk.Type {
		case "RSA PRIVATE KEY":
			pk, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			pk, err = x509.ParseECPrivateKey(blk.Bytes)
		default:
			pk, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", mc.PrivateKeyFile, err)
		}
		switch pk.(type) {
		case *rsa.PrivateKey:
			method = jwt.SigningMethodRS256
		case *ecdsa.PrivateKey:
			method = jwt.SigningMethodES256
		case ed25519.PrivateKey:
			method = jwt.SigningMethodEdDSA
		default:
			return "", fmt.Errorf("%s: unsupported key type %T", mc.PrivateKeyFile, pk)
		}
		key = pk
	case len(mc.Secret) > 0:
		method, key = jwt.SigningMethodHS256, mc.Secret
	default:
		return "", errors.New("no signing key: set a secret or a private key file")
	}
	t := jwt.NewWithClaims(method, claims)
	if mc.Kid != "" {
		t.Header["kid"] = mc.Kid
	}
	return t.SignedString(key)
}
