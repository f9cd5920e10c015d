package webhook

import (
	"errors"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	body := []byte(`{"cursor":"1-7","event":{}}`)
	at := time.Unix(1_800_000_000, 0)
	h := Sign(secret, at, body)
	if err := Verify(secret, h, body, at.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("Verify(own signature) = %v", err)
	}
	cases := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"other body", secret, h, []byte(`{"cursor":"1-8","event":{}}`), at, ErrBadSignature},
		{"other secret", []byte("another secret of thirty-two byte"), h, body, at, ErrBadSignature},
		{"too old", secret, h, body, at.Add(6 * time.Minute), ErrStale},
		{"from the future", secret, h, body, at.Add(-6 * time.Minute), ErrStale},
		{"no header", secret, "", body, at, ErrNoSignature},
		{"no v1", secret, "t=1800000000", body, at, ErrNoSignature},
	}
	for _, c := range cases {
		if err := Verify(c.secret, c.header, c.body, c.now, 5*time.Minute); !errors.Is(err, c.want) {
			t.Errorf("%s: Verify = %v, want %v", c.name, err, c.want)
		}
	}
}
