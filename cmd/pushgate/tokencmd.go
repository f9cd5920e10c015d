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

// tokenEnv are the variables "pushgate token" reads, by flag: the same
// ones the server reads for its key, so one environment serves both.
var tokenEnv = map[string]string{
	"jwt-secret":      "PUSHGATE_JWT_SECRET",
	"jwt-private-key": "PUSHGATE_JWT_PRIVATE_KEY",
	"jwt-kid":         "PUSHGATE_JWT_KID",
	"jwt-issuer":      "PUSHGATE_JWT_ISSUER",
	"jwt-audience":    "PUSHGATE_JWT_AUDIENCE",
}

var tokenSections = []config.Section{
	{Title: "Token", Flags: []string{"user", "ttl", "topics", "pub", "dm", "presence"}},
	{Title: "Signing key", Flags: []string{"jwt-secret", "jwt-private-key", "jwt-kid", "jwt-issuer", "jwt-audience"}},
}

// runToken is "pushgate token": it prints a client token signed with the
// configured key, for tests and the quickstart.
func runToken(args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pushgate token", flag.ContinueOnError)
	fs.SetOutput(stdout)
	user := fs.String("user", "", "user `id` the token is for (its sub); required")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	topics := fs.String("topics", "", "comma-separated `topics` the user may join (exact names or prefix*)")
	pub := fs.String("pub", "", "comma-separated `topics` the user's clients may publish to (exact names or prefix*): the pub claim")
	presence := fs.String("presence", "", "comma-separated `topics` whose presence (who is subscribed) the user's clients may read (exact names or prefix*): the presence claim")
	dm := fs.String("dm", "", "comma-separated user id `patterns` the user's clients may send messages to (op direct): the dm claim")
	var mc token.MintConfig
	var secret string
	fs.StringVar(&secret, "jwt-secret", "", "HS256 `secret`, the one pushgate verifies tokens with (at least 32 bytes)")
	fs.StringVar(&mc.PrivateKeyFile, "jwt-private-key", "", "PEM private key `file`: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA)")
	fs.StringVar(&mc.Kid, "jwt-kid", "", "key `id` to put in the token header, for JWKS")
	fs.StringVar(&mc.Issuer, "jwt-issuer", "", "iss claim")
	fs.StringVar(&mc.Audience, "jwt-audience", "", "aud claim")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: pushgate token --user ID [--ttl 1h] [--topics a,b] [--pub a,b] [--dm 'p*'] [--presence a,b]

Prints a client token for --auth jwt, signed with --jwt-secret or
--jwt-private-key (or their environment variables).

`)
		config.PrintFlags(fs.Output(), fs, tokenSections, func(name string) string { return tokenEnv[name] })
	}
	for name, env := range tokenEnv {
		if v := getenv(env); v != "" {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("%s: %v", env, err)
			}
		}
	}
	if err := config.ParseArgs(fs, args); err != nil {
		return err
	}
	if *user == "" {
		return errors.New("--user is required: the user id the token is for (pushgate token --user alice)")
	}
	if err := gateway.ValidUserID(*user, 128); err != nil {
		return fmt.Errorf("--user: %v", err)
	}
	if *ttl <= 0 {
		return errors.New("--ttl must be positive")
	}
	if secret == "" && mc.PrivateKeyFile == "" {
		return errors.New("no signing key: set --jwt-secret or PUSHGATE_JWT_SECRET to the secret pushgate runs with " +
			"(or --jwt-private-key / PUSHGATE_JWT_PRIVATE_KEY for a key pair)")
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
	var pubRules []string
	for _, t := range config.List(*pub) {
		if err := gateway.ValidTopic(trimStar(t)); err != nil {
			return fmt.Errorf("--pub %q: %v", t, err)
		}
		pubRules = append(pubRules, t)
	}
	var presenceRules []string
	for _, t := range config.List(*presence) {
		if err := gateway.ValidTopic(trimStar(t)); err != nil {
			return fmt.Errorf("--presence %q: %v", t, err)
		}
		presenceRules = append(presenceRules, t)
	}
	dmRules := config.List(*dm)
	for _, p := range dmRules {
		if err := gateway.ValidUserPattern(p); err != nil {
			return fmt.Errorf("--dm %q: %v", p, err)
		}
	}
	tok, err := token.MintGrants(mc, *user, *ttl, token.Grants{Topics: rules, Publish: pubRules, Direct: dmRules, Presence: presenceRules})
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
