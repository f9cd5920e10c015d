package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"pushgate/gateway"
	"pushgate/gateway/token"
	"pushgate/internal/config"
)

// runToken is "pushgate token": it prints a client token signed with the
// configured key, for tests and the quickstart.
func runToken(args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pushgate token", flag.ContinueOnError)
	fs.SetOutput(stdout)
	user := fs.String("user", "", "user id the token is for (its sub); required")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	topics := fs.String("topics", "", "comma-separated topics the user may join (exact names or prefix*)")
	var mc token.MintConfig
	var secret string
	fs.StringVar(&secret, "jwt-secret", getenv("PUSHGATE_JWT_SECRET"), "HS256 secret (env PUSHGATE_JWT_SECRET)")
	fs.StringVar(&mc.PrivateKeyFile, "jwt-private-key", getenv("PUSHGATE_JWT_PRIVATE_KEY"), "PEM private key file: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA) (env PUSHGATE_JWT_PRIVATE_KEY)")
	fs.StringVar(&mc.Kid, "jwt-kid", getenv("PUSHGATE_JWT_KID"), "key id to put in the token header, for JWKS (env PUSHGATE_JWT_KID)")
	fs.StringVar(&mc.Issuer, "jwt-issuer", getenv("PUSHGATE_JWT_ISSUER"), "iss claim (env PUSHGATE_JWT_ISSUER)")
	fs.StringVar(&mc.Audience, "jwt-audience", getenv("PUSHGATE_JWT_AUDIENCE"), "aud claim (env PUSHGATE_JWT_AUDIENCE)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: pushgate token --user ID [--ttl 1h] [--topics a,b]\n\nPrints a client token signed with the configured key.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := gateway.ValidUserID(*user, 128); err != nil {
		return fmt.Errorf("--user: %v", err)
	}
	if *ttl <= 0 {
		return errors.New("--ttl must be positive")
	}
	mc.Secret = []byte(secret)
	if secret != "" && len(secret) < 32 {
		return errors.New("--jwt-secret must be at least 32 bytes")
	}
	var rules []string
	for _, t := range config.List(*topics) {
		if err := gateway.ValidTopic(trimStar(t)); err != nil {
			return fmt.Errorf("--topics %q: %v", t, err)
		}
		rules = append(rules, t)
	}
	tok, err := token.Mint(mc, *user, *ttl, rules)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// trimStar strips the trailing * of a prefix rule, for name checks.
func trimStar(t string) string {
	if len(t) > 1 && t[len(t)-1] == '*' {
		return t[:len(t)-1]
	}
	return t
}
