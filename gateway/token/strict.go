package token

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A token's header and claims are read here, strictly, rather than through
// the JWT library's decoding (which, like encoding/json, matches names
// case-insensitively, keeps the last of duplicate names and takes a
// NumericDate written as a string):
//
//   - header and claims are JSON objects in which no name appears twice
//     (after unescaping: "sub" and "\u0073ub" are the same name);
//   - names match exactly: "SUB" is not "sub";
//   - exp, nbf and iat are JSON numbers (Unix seconds, fractions allowed)
//     from 0 to the end of the year 9999, never strings;
//   - sub and iss are strings, aud a string or an array of strings, topics,
//     pub, dm and presence arrays of strings (or null, the same as absent);
//   - a "crit" header is refused: this verifier understands no extension,
//     and RFC 7515 (4.1.11) says a token naming one it does not understand
//     is invalid; "kid", if present, is a string.
//
// Other names are ignored.

// maxNumericDate is 9999-12-31T23:59:59Z.
const maxNumericDate = 253402300799

// decodeSegment decodes one base64url part of a token (no padding, no
// stray bits) and reads it as a JSON object.
func decodeSegment(seg string) (map[string]json.RawMessage, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return nil, errors.New("not base64url")
	}
	return strictObject(b)
}

// strictObject reads a JSON object whose names are all different, and
// nothing after it.
func strictObject(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	m := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, errors.New("not a JSON object")
		}
		name, _ := t.(string)
		if _, dup := m[name]; dup {
			return nil, &dupError{name}
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, errors.New("not a JSON object")
		}
		m[name] = v
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, errors.New("not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return m, nil
}

type dupError struct{ name string }

func (e *dupError) Error() string { return strconv.Quote(e.name) + " appears twice" }

// checkHeader applies the header rules above to a token's first part.
func checkHeader(tok string) error {
	head, _, ok := strings.Cut(tok, ".")
	if !ok {
		return &Error{"malformed", "malformed token"}
	}
	h, err := decodeSegment(head)
	var dup *dupError
	switch {
	case errors.As(err, &dup):
		return &Error{"bad_header", "header: " + err.Error()}
	case err != nil:
		return &Error{"malformed", "malformed token"}
	}
	if crit, ok := h["crit"]; ok {
		var names []string
		_ = json.Unmarshal(crit, &names)
		return &Error{"bad_header", fmt.Sprintf("header: crit names extensions this server does not understand (%s)", strings.Join(names, ", "))}
	}
	if kid, ok := h["kid"]; ok && !isJSONString(kid) {
		return &Error{"bad_header", "header: kid must be a string"}
	}
	return nil
}

// rawClaims is what a token claims, read strictly.
type rawClaims struct {
	sub         string
	iss         string
	hasIss      bool
	aud         []string
	exp         time.Time
	nbf, iat    time.Time
	hasExp      bool
	hasNbf      bool
	hasIat      bool
	topics      []string
	topicsGiven bool // present and not null
	pub, dm     []string
	presence    []string
}

// parseClaims reads a token's second part by the rules above.
func parseClaims(tok string) (rawClaims, error) {
	var c rawClaims
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, &Error{"malformed", "malformed token"}
	}
	m, err := decodeSegment(parts[1])
	var dup *dupError
	switch {
	case errors.As(err, &dup):
		return c, &Error{"bad_claim", "claims: " + err.Error()}
	case err != nil:
		return c, &Error{"malformed", "malformed token"}
	}
	bad := func(name, want string) error {
		return &Error{"bad_claim", fmt.Sprintf("claim %s must be %s", name, want)}
	}
	if v, ok := m["sub"]; ok {
		if !isJSONString(v) || json.Unmarshal(v, &c.sub) != nil {
			return c, bad("sub", "a string")
		}
	}
	if v, ok := m["iss"]; ok {
		if !isJSONString(v) || json.Unmarshal(v, &c.iss) != nil {
			return c, bad("iss", "a string")
		}
		c.hasIss = true
	}
	if v, ok := m["aud"]; ok {
		var one string
		if isJSONString(v) && json.Unmarshal(v, &one) == nil {
			c.aud = []string{one}
		} else if !isStringArray(v, &c.aud) {
			return c, bad("aud", "a string or an array of strings")
		}
	}
	for _, d := range []struct {
		name string
		t    *time.Time
		has  *bool
	}{{"exp", &c.exp, &c.hasExp}, {"nbf", &c.nbf, &c.hasNbf}, {"iat", &c.iat, &c.hasIat}} {
		v, ok := m[d.name]
		if !ok {
			continue
		}
		t, ok := numericDate(v)
		if !ok {
			return c, bad(d.name, "a number of seconds since 1970 (not a string)")
		}
		*d.t, *d.has = t, true
	}
	if v, ok := m["topics"]; ok && string(v) != "null" {
		if !isStringArray(v, &c.topics) {
			return c, bad("topics", "an array of strings")
		}
		c.topicsGiven = true
	}
	for _, a := range []struct {
		name string
		out  *[]string
	}{{"pub", &c.pub}, {"dm", &c.dm}, {"presence", &c.presence}} {
		if v, ok := m[a.name]; ok && string(v) != "null" {
			if !isStringArray(v, a.out) {
				return c, bad(a.name, "an array of strings")
			}
		}
	}
	return c, nil
}

// numericDate reads a JSON number of seconds since 1970 (RFC 7519's
// NumericDate), within 0 and maxNumericDate.
func numericDate(v json.RawMessage) (time.Time, bool) {
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return time.Time{}, false // a string, null, true, an array…
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f < 0 || f > maxNumericDate {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

func isJSONString(v json.RawMessage) bool { return len(v) > 0 && v[0] == '"' }

// isStringArray reports whether v is a JSON array of strings, and sets out.
func isStringArray(v json.RawMessage, out *[]string) bool {
	if len(v) == 0 || v[0] != '[' {
		return false
	}
	var items []json.RawMessage
	if json.Unmarshal(v, &items) != nil {
		return false
	}
	s := make([]string, len(items))
	for i, it := range items {
		if !isJSONString(it) || json.Unmarshal(it, &s[i]) != nil {
			return false
		}
	}
	*out = s
	return true
}

// validate checks the claims against the configuration at now: sub and exp
// required, exp, nbf and iat within the leeway, the lifetime within
// MaxLifetime, then audience and issuer.
func (c rawClaims) validate(cfg *Config, now time.Time) error {
	lw := cfg.Leeway
	switch {
	case c.sub == "":
		return &Error{"no_subject", "token has no sub"}
	case !c.hasExp:
		return &Error{"no_expiry", "token has no exp"}
	case !now.Before(c.exp.Add(lw)):
		return &Error{"expired", "token expired"}
	case c.hasNbf && now.Add(lw).Before(c.nbf):
		return &Error{"not_yet_valid", "token not valid yet"}
	case c.hasIat && now.Add(lw).Before(c.iat):
		return &Error{"not_yet_valid", "token issued in the future (iat)"}
	case cfg.MaxLifetime > 0 && c.exp.Sub(now) > cfg.MaxLifetime+lw,
		cfg.MaxLifetime > 0 && c.hasIat && c.exp.Sub(c.iat) > cfg.MaxLifetime:
		return &Error{"too_long_lived", fmt.Sprintf("token lifetime over the maximum of %v", cfg.MaxLifetime)}
	case cfg.Audience != "" && !slices.Contains(c.aud, cfg.Audience):
		return &Error{"bad_audience", "wrong or missing audience"}
	case cfg.Issuer != "" && (!c.hasIss || c.iss != cfg.Issuer):
		return &Error{"bad_issuer", "wrong or missing issuer"}
	}
	return nil
}
