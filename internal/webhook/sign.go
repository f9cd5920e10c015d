// Package webhook signs the HTTP POSTs pushgate sends to backends (the
// event sink, the escalation webhook) and checks such signatures, for
// receivers written in Go and for the tests.
//
// A signed request carries the header
//
//	Pushgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>
//
// where the HMAC is keyed with the shared secret and taken over
// "<t>.<body>": the timestamp, a dot, and the request body byte for byte.
// A receiver recomputes it, compares in constant time, and refuses a
// timestamp too far from its clock (Verify's tolerance), so a captured
// request cannot be replayed later.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Header is the name of the signature header.
const Header = "Pushgate-Signature"

// Sign returns the Header value for body sent at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Errors of Verify.
var (
	ErrNoSignature  = errors.New("webhook: no " + Header + " header, or not of the form t=<unix seconds>,v1=<hex>")
	ErrBadSignature = errors.New("webhook: signature does not match the body")
	ErrStale        = errors.New("webhook: signature timestamp outside the tolerance")
)

// Verify checks header (the Header value) against body, and that its
// timestamp is within tolerance of now.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrNoSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrBadSignature
}
