package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"pushgate/gateway/limit"
	"pushgate/internal/secret"
)

// APIKeys are the named keys backends authenticate with: metadata
// "authorization: Bearer <key>". Safe for concurrent use (immutable).
type APIKeys struct {
	keys []apiKey
}

type apiKey struct {
	name string
	hash [sha256.Size]byte
}

// minKeyLen is the shortest API key accepted.
const minKeyLen = 16

// ParseAPIKeys reads "name:key" entries separated by commas (the flag and
// environment form).
func ParseAPIKeys(entries string) (*APIKeys, error) {
	return parseKeys(strings.ReplaceAll(entries, ",", "\n"), "entry")
}

// parseKeys reads "name:key" lines (blank lines and lines starting with #
// are skipped); what names a line in errors.
func parseKeys(text, what string) (*APIKeys, error) {
	k := &APIKeys{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, key, ok := strings.Cut(line, ":")
		name, key = strings.TrimSpace(name), strings.TrimSpace(key)
		switch {
		case !ok || name == "":
			return nil, fmt.Errorf("%s %d: want name:key", what, n)
		case strings.ContainsFunc(name, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
		}):
			return nil, fmt.Errorf("%s %d: name %q: use letters, digits, '-', '_' and '.'", what, n, name)
		case len(key) < minKeyLen:
			return nil, fmt.Errorf("%s %d (%s): key shorter than %d characters", what, n, name, minKeyLen)
		case secret.Weak(key) != "":
			return nil, fmt.Errorf("%s %d (%s): key %s; generate one, e.g. with openssl rand -hex 24", what, n, name, secret.Weak(key))
		case seen[name]:
			return nil, fmt.Errorf("%s %d: name %q used twice", what, n, name)
		}
		seen[name] = true
		k.keys = append(k.keys, apiKey{name: name, hash: sha256.Sum256([]byte(key))})
	}
	return k, nil
}

// LoadAPIKeys reads keys from a file of name:key lines.
func LoadAPIKeys(path string) (*APIKeys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := parseKeys(string(b), "line")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// Merge returns the keys of k and o together.
func (k *APIKeys) Merge(o *APIKeys) (*APIKeys, error) {
	out := &APIKeys{}
	seen := map[string]bool{}
	for _, set := range []*APIKeys{k, o} {
		if set == nil {
			continue
		}
		for _, key := range set.keys {
			if seen[key.name] {
				return nil, fmt.Errorf("API key name %q used twice", key.name)
			}
			seen[key.name] = true
			out.keys = append(out.keys, key)
		}
	}
	return out, nil
}

// Len is the number of keys.
func (k *APIKeys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// Valid reports whether key is one of the keys.
func (k *APIKeys) Valid(key string) bool {
	_, ok := k.lookup(key)
	return ok
}

// lookup returns the name of the key given, comparing against every key in
// constant time (hashes of equal length, no early exit).
func (k *APIKeys) lookup(given string) (string, bool) {
	h := sha256.Sum256([]byte(given))
	name := ""
	for _, key := range k.keys {
		if subtle.ConstantTimeCompare(h[:], key.hash[:]) == 1 {
			name = key.name
		}
	}
	return name, name != ""
}

// callerSlot carries the authenticated caller's name from the auth step to
// the interceptors outside it (logging, metrics), which read it after the
// call.
type callerSlot struct{ name string }

type callerKey struct{}

func withCallerSlot(ctx context.Context) (context.Context, *callerSlot) {
	s := &callerSlot{}
	return context.WithValue(ctx, callerKey{}, s), s
}

// Caller returns the API caller's name (the API key's name), or "" when
// calls are not authenticated.
func Caller(ctx context.Context) string {
	if s, ok := ctx.Value(callerKey{}).(*callerSlot); ok {
		return s.name
	}
	return ""
}

// authenticate checks the call's API key and records the caller. With no
// keys configured every call is let through as caller "".
func (o *ServerOptions) authenticate(ctx context.Context) (context.Context, error) {
	if o.APIKeys.Len() == 0 {
		return ctx, nil
	}
	var given string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			given = v[0]
		}
	}
	if given == "" {
		o.metrics.authFailures.WithLabelValues("missing_key").Inc()
		return nil, status.Error(codes.Unauthenticated, `missing API key: send metadata "authorization: Bearer <key>"`)
	}
	ok := len(given) > 7 && strings.EqualFold(given[:7], "bearer ")
	key := ""
	if ok {
		key = given[7:]
	}
	name, found := o.APIKeys.lookup(strings.TrimSpace(key))
	if !ok || !found {
		o.metrics.authFailures.WithLabelValues("bad_key").Inc()
		return nil, status.Error(codes.Unauthenticated, "invalid API key")
	}
	if s, ok := ctx.Value(callerKey{}).(*callerSlot); ok {
		s.name = name
	}
	return ctx, nil
}

// callerLimiter limits calls per second per API caller.
type callerLimiter struct {
	buckets *limit.Keyed
	metrics *grpcMetrics
}

// Limit implements the ratelimit interceptor's Limiter.
func (l callerLimiter) Limit(ctx context.Context) error {
	if l.buckets.Allow(Caller(ctx)) {
		return nil
	}
	l.metrics.rateLimited.Inc()
	return fmt.Errorf("over the rate limit for this API key; retry with backoff")
}
