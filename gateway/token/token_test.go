package token

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

type keys struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
	ed  ed25519.PrivateKey
}

func newKeys(t testing.TB) keys {
	r, _ := rsa.GenerateKey(rand.Reader, 2048)
	e, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, d, _ := ed25519.GenerateKey(rand.Reader)
	return keys{r, e, d}
}

func writePEM(t testing.TB, typ string, der []byte) string {
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pubPEM(t testing.TB, pub any) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, "PUBLIC KEY", der)
}

func sign(t testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func valid(sub string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestVerify(t *testing.T) {
	k := newKeys(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	rsaPub := pubPEM(t, &k.rsa.PublicKey)
	ecPub := pubPEM(t, &k.ec.PublicKey)
	edPub := pubPEM(t, k.ed.Public())

	jwks := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS := func(kid string, pub *rsa.PublicKey) {
		b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
			"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig",
			"n": b64(pub.N.Bytes()), "e": b64([]byte{1, 0, 1}),
		}, {
			"kid": "ed-1", "kty": "OKP", "crv": "Ed25519", "x": b64(k.ed.Public().(ed25519.PublicKey)),
		}}})
		os.WriteFile(jwks, b, 0o600)
	}
	writeJWKS("rsa-1", &k.rsa.PublicKey)

	hs := Config{Secret: secret, Audience: "pushgate", Issuer: "shop", Leeway: 5 * time.Second, MaxLifetime: 24 * time.Hour}
	noMax := hs
	noMax.MaxLifetime = 0
	// raw signs header and payload as written (HS256).
	raw := func(header, payload string) string {
		ss := b64([]byte(header)) + "." + b64([]byte(payload))
		sig, err := jwt.SigningMethodHS256.Sign(ss, secret)
		if err != nil {
			t.Fatal(err)
		}
		return ss + "." + b64(sig)
	}
	const hsHead = `{"alg":"HS256","typ":"JWT"}`
	exp := time.Now().Add(time.Hour).Unix()
	// claimsJSON is valid claims (aud, iss, exp) and the given members.
	claimsJSON := func(members ...string) string {
		return fmt.Sprintf(`{"aud":"pushgate","iss":"shop","exp":%d,%s}`, exp, strings.Join(members, ","))
	}
	with := func(c jwt.MapClaims, kv ...any) jwt.MapClaims {
		c["aud"], c["iss"] = "pushgate", "shop"
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	now := time.Now()
	noneTok := func() string {
		s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, with(valid("u"))).SignedString(jwt.UnsafeAllowNoneSignatureType)
		return s
	}()
	// Key confusion: an HS256 token whose "secret" is the RSA public key PEM.
	rsaPEM, _ := os.ReadFile(rsaPub)

	cases := []struct {
		name   string
		cfg    Config
		tok    string
		sub    string // want this subject, or:
		reason string // want this error reason
	}{
		{"HS256", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u1")), ""), "u1", ""},
		{"RS256", Config{PublicKeyFile: rsaPub}, sign(t, jwt.SigningMethodRS256, k.rsa, valid("u2"), ""), "u2", ""},
		{"ES256", Config{PublicKeyFile: ecPub}, sign(t, jwt.SigningMethodES256, k.ec, valid("u3"), ""), "u3", ""},
		{"EdDSA", Config{PublicKeyFile: edPub}, sign(t, jwt.SigningMethodEdDSA, k.ed, valid("u4"), ""), "u4", ""},
		{"JWKS RS256 by kid", Config{JWKSFile: jwks}, sign(t, jwt.SigningMethodRS256, k.rsa, valid("u5"), "rsa-1"), "u5", ""},
		{"JWKS EdDSA by kid", Config{JWKSFile: jwks}, sign(t, jwt.SigningMethodEdDSA, k.ed, valid("u6"), "ed-1"), "u6", ""},
		{"topics claim", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u7"), "topics", []string{"store:1", "todo:*"}), ""), "u7", ""},
		{"within leeway", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u8"), "exp", now.Add(-2*time.Second).Unix()), ""), "u8", ""},

		{"malformed", hs, "not.a.token", "", "malformed"},
		{"garbage", hs, "💥", "", "malformed"},
		{"alg none", hs, noneTok, "", "bad_alg"},
		{"HS256 when only RS256 is configured", Config{PublicKeyFile: rsaPub}, sign(t, jwt.SigningMethodHS256, rsaPEM, valid("u"), ""), "", "bad_alg"},
		{"RS256 when only HS256 is configured", hs, sign(t, jwt.SigningMethodRS256, k.rsa, with(valid("u")), ""), "", "bad_alg"},
		{"bad signature", hs, sign(t, jwt.SigningMethodHS256, []byte("another secret, 32 bytes long!!"), with(valid("u")), ""), "", "bad_signature"},
		{"expired", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u"), "exp", now.Add(-time.Minute).Unix()), ""), "", "expired"},
		{"not yet valid", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u"), "nbf", now.Add(time.Minute).Unix()), ""), "", "not_yet_valid"},
		{"no exp", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u"), "exp", nil), ""), "", "no_expiry"},
		{"wrong aud", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u"), "aud", "other"), ""), "", "bad_audience"},
		{"wrong iss", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u"), "iss", "evil"), ""), "", "bad_issuer"},
		{"unknown kid", Config{JWKSFile: jwks}, sign(t, jwt.SigningMethodRS256, k.rsa, valid("u"), "rsa-9"), "", "unknown_kid"},
		{"kid of another algorithm", Config{JWKSFile: jwks}, sign(t, jwt.SigningMethodEdDSA, k.ed, valid("u"), "rsa-1"), "", "bad_alg"},
		{"no sub", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid(""), "sub", nil), ""), "", "no_subject"},

		// Strict parsing: exact names, no duplicates, numbers as numbers.
		{"SUB in upper case", hs, raw(hsHead, claimsJSON(`"SUB":"u"`)), "", "no_subject"},
		{"Exp in mixed case", hs, raw(hsHead, fmt.Sprintf(`{"sub":"u","aud":"pushgate","iss":"shop","Exp":%d}`, exp)), "", "no_expiry"},
		{"two sub claims", hs, raw(hsHead, claimsJSON(`"sub":"u"`, `"sub":"victim"`)), "", "bad_claim"},
		{"two sub claims, one escaped", hs, raw(hsHead, claimsJSON(`"sub":"u"`, `"\u0073ub":"victim"`)), "", "bad_claim"},
		{"exp as a string", hs, raw(hsHead, fmt.Sprintf(`{"sub":"u","aud":"pushgate","iss":"shop","exp":"%d"}`, exp)), "", "bad_claim"},
		{"exp null", hs, raw(hsHead, `{"sub":"u","aud":"pushgate","iss":"shop","exp":null}`), "", "bad_claim"},
		{"exp out of range", hs, raw(hsHead, `{"sub":"u","aud":"pushgate","iss":"shop","exp":1e300}`), "", "bad_claim"},
		{"exp with a fraction", hs, raw(hsHead, fmt.Sprintf(`{"sub":"u9","aud":"pushgate","iss":"shop","exp":%d.5}`, exp)), "u9", ""},
		{"nbf as a string", hs, raw(hsHead, claimsJSON(`"sub":"u"`, `"nbf":"0"`)), "", "bad_claim"},
		{"iat as a string", hs, raw(hsHead, claimsJSON(`"sub":"u"`, `"iat":"0"`)), "", "bad_claim"},
		{"sub as a number", hs, raw(hsHead, claimsJSON(`"sub":42`)), "", "bad_claim"},
		{"aud as a number", hs, raw(hsHead, fmt.Sprintf(`{"sub":"u","aud":1,"iss":"shop","exp":%d}`, exp)), "", "bad_claim"},
		{"aud as an array", hs, raw(hsHead, fmt.Sprintf(`{"sub":"u10","aud":["x","pushgate"],"iss":"shop","exp":%d}`, exp)), "u10", ""},
		{"topics not an array", hs, raw(hsHead, claimsJSON(`"sub":"u"`, `"topics":"store:*"`)), "", "bad_claim"},
		{"topics null", hs, raw(hsHead, claimsJSON(`"sub":"u11"`, `"topics":null`)), "u11", ""},
		{"pub not an array", hs, raw(hsHead, claimsJSON(`"sub":"u"`, `"pub":"todo:*"`)), "", "bad_claim"},
		{"dm of numbers", hs, raw(hsHead, claimsJSON(`"sub":"u"`, `"dm":[1]`)), "", "bad_claim"},
		{"pub and dm null", hs, raw(hsHead, claimsJSON(`"sub":"u15"`, `"pub":null`, `"dm":null`)), "u15", ""},
		{"data after the claims", hs, raw(hsHead, claimsJSON(`"sub":"u"`)+`{}`), "", "malformed"},
		{"iat in the future", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u"), "iat", now.Add(time.Minute).Unix()), ""), "", "not_yet_valid"},
		{"iat in the future, within leeway", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u12"), "iat", now.Add(2*time.Second).Unix()), ""), "u12", ""},
		{"crit header", hs, raw(`{"alg":"HS256","typ":"JWT","crit":["exp"]}`, claimsJSON(`"sub":"u"`)), "", "bad_header"},
		{"two alg headers", hs, raw(`{"alg":"HS256","alg":"HS256"}`, claimsJSON(`"sub":"u"`)), "", "bad_header"},
		{"kid as a number", hs, raw(`{"alg":"HS256","kid":7}`, claimsJSON(`"sub":"u"`)), "", "bad_header"},

		// Lifetime.
		{"valid for a year", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u"), "exp", now.Add(365*24*time.Hour).Unix()), ""), "", "too_long_lived"},
		{"valid for a year, no maximum", noMax, sign(t, jwt.SigningMethodHS256, secret, with(valid("u13"), "exp", now.Add(365*24*time.Hour).Unix()), ""), "u13", ""},
		{"issued long ago, exp soon", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u"), "iat", now.Add(-48*time.Hour).Unix()), ""), "", "too_long_lived"},
		{"valid for the maximum", hs, sign(t, jwt.SigningMethodHS256, secret, with(valid("u14"), "exp", now.Add(24*time.Hour).Unix()), ""), "u14", ""},
	}
	for _, tc := range cases {
		v, err := NewVerifier(tc.cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		c, err := v.Verify(tc.tok)
		var te *Error
		switch {
		case tc.reason == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.reason == "" && c.Subject != tc.sub:
			t.Errorf("%s: subject %q, want %q", tc.name, c.Subject, tc.sub)
		case tc.reason != "" && (!errors.As(err, &te) || te.Reason != tc.reason):
			t.Errorf("%s: err = %v (%+v), want reason %s", tc.name, err, te, tc.reason)
		}
	}

	// Rotation: a new JWKS with a new kid is picked up without a restart.
	v, _ := NewVerifier(Config{JWKSFile: jwks})
	k2 := newKeys(t)
	tok2 := sign(t, jwt.SigningMethodRS256, k2.rsa, valid("rotated"), "rsa-2")
	if _, err := v.Verify(tok2); err == nil {
		t.Fatal("unknown key accepted before rotation")
	}
	writeJWKS("rsa-2", &k2.rsa.PublicKey)
	future := time.Now().Add(2 * time.Second)
	os.Chtimes(jwks, future, future)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := v.Verify(tok2)
		if err == nil && c.Subject == "rotated" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotated key not picked up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestMintVerifies(t *testing.T) {
	k := newKeys(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	der, _ := x509.MarshalPKCS8PrivateKey(k.ec)
	ecPriv := writePEM(t, "PRIVATE KEY", der)
	for _, tc := range []struct {
		mc  MintConfig
		cfg Config
	}{
		{MintConfig{Secret: secret, Issuer: "shop", Audience: "pushgate"}, Config{Secret: secret, Issuer: "shop", Audience: "pushgate"}},
		{MintConfig{PrivateKeyFile: ecPriv}, Config{PublicKeyFile: pubPEM(t, &k.ec.PublicKey)}},
	} {
		tok, err := Mint(tc.mc, "merchant-42", time.Hour, []string{"store:*"})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := NewVerifier(tc.cfg)
		c, err := v.Verify(tok)
		if err != nil || c.Subject != "merchant-42" || len(c.Topics) != 1 || c.Topics[0] != "store:*" || time.Until(c.Expires) < 59*time.Minute ||
			c.Publish != nil || c.Direct != nil {
			t.Fatalf("minted token: %+v, %v", c, err)
		}
		tok, err = MintGrants(tc.mc, "merchant-42", time.Hour, Grants{Publish: []string{"todo:*"}, Direct: []string{"shop-*", "admin"}})
		if err != nil {
			t.Fatal(err)
		}
		c, err = v.Verify(tok)
		if err != nil || c.Topics != nil || !slices.Equal(c.Publish, []string{"todo:*"}) || !slices.Equal(c.Direct, []string{"shop-*", "admin"}) {
			t.Fatalf("minted token with pub and dm: %+v, %v", c, err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	v, _ := NewVerifier(Config{Secret: secret})
	good, _ := Mint(MintConfig{Secret: secret}, "u", time.Hour, nil)
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.")
	f.Add("a.b.c")
	// Near misses for the strict reading: duplicate names, a string exp, crit.
	enc := base64.RawURLEncoding.EncodeToString
	for _, hp := range [][2]string{
		{`{"alg":"HS256"}`, `{"sub":"u","sub":"v","exp":9999999999}`},
		{`{"alg":"HS256"}`, `{"sub":"u","exp":"9999999999"}`},
		{`{"alg":"HS256","crit":["b64"],"b64":false}`, `{"sub":"u","exp":9999999999}`},
	} {
		ss := enc([]byte(hp[0])) + "." + enc([]byte(hp[1]))
		sig, _ := jwt.SigningMethodHS256.Sign(ss, secret)
		f.Add(ss + "." + enc(sig))
	}
	f.Add(strings.Repeat(".", 10))
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.Verify(tok)
		if err == nil && (c.Subject == "" || c.Expires.IsZero()) {
			t.Fatalf("accepted %q without sub/exp", tok)
		}
		if err == nil && tok != good && !strings.HasPrefix(tok, good[:strings.LastIndexByte(good, '.')]) {
			t.Fatalf("accepted a token that was not signed with the secret: %q", tok)
		}
	})
}
