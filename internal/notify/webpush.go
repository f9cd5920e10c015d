package notify

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Web Push (RFC 8030) with message encryption (RFC 8291, aes128gcm,
// RFC 8188) and VAPID (RFC 8292), on the standard library's crypto/ecdh,
// crypto/hkdf and crypto/ecdsa. The encryption is some sixty lines and the
// tests need its inverse anyway; a library would add a dependency for
// little, and the ones available hide the HTTP answer this channel turns
// into retry, gone and refused.

// RecordSize is the aes128gcm record size pushgate sends: one record
// carries the whole payload, and push services accept bodies of 4096 bytes.
const RecordSize = 4096

// headerSize is the aes128gcm header: salt (16), record size (4), key id
// length (1) and the key id, the sender's uncompressed P-256 key (65).
const headerSize = 16 + 4 + 1 + 65

// MaxWebPushPayload is the largest payload one Web Push message carries:
// the 4096 bytes less the header, the padding delimiter and the GCM tag.
const MaxWebPushPayload = RecordSize - headerSize - 1 - 16

// Subscription is a browser's push subscription (PushSubscription.toJSON()):
// the push service endpoint and the user agent's keys.
type Subscription struct {
	Endpoint string `json:"endpoint"`
	Keys     struct {
		P256dh string `json:"p256dh"` // base64url uncompressed P-256 public key
		Auth   string `json:"auth"`   // base64url 16-byte auth secret
	} `json:"keys"`
}

// decodeB64 reads base64url with or without padding (browsers send it
// without; some libraries add it).
func decodeB64(s string) ([]byte, error) {
	for len(s)%4 != 0 && len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

var b64 = base64.RawURLEncoding

// Validate checks the subscription's shape; the error names the field.
func (s Subscription) Validate() error {
	u, err := url.Parse(s.Endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return errors.New("endpoint: must be an http(s) URL")
	}
	if len(s.Endpoint) > 2048 {
		return errors.New("endpoint: longer than 2048 bytes")
	}
	pub, err := decodeB64(s.Keys.P256dh)
	if err != nil {
		return errors.New("keys.p256dh: not base64url")
	}
	if _, err := ecdh.P256().NewPublicKey(pub); err != nil {
		return errors.New("keys.p256dh: not an uncompressed P-256 public key")
	}
	auth, err := decodeB64(s.Keys.Auth)
	if err != nil {
		return errors.New("keys.auth: not base64url")
	}
	if len(auth) != 16 {
		return fmt.Errorf("keys.auth: %d bytes, want 16", len(auth))
	}
	return nil
}

// Encrypt encrypts payload for the subscription's keys per RFC 8291, as
// one aes128gcm record (RFC 8188) of RecordSize.
func Encrypt(s Subscription, payload []byte) ([]byte, error) {
	if len(payload) > MaxWebPushPayload {
		return nil, fmt.Errorf("payload of %d bytes is over the %d a push message carries", len(payload), MaxWebPushPayload)
	}
	uaBytes, err := decodeB64(s.Keys.P256dh)
	if err != nil {
		return nil, errors.New("keys.p256dh: not base64url")
	}
	uaPub, err := ecdh.P256().NewPublicKey(uaBytes)
	if err != nil {
		return nil, errors.New("keys.p256dh: not an uncompressed P-256 public key")
	}
	auth, err := decodeB64(s.Keys.Auth)
	if err != nil || len(auth) != 16 {
		return nil, errors.New("keys.auth: not 16 bytes of base64url")
	}
	asPriv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	shared, err := asPriv.ECDH(uaPub)
	if err != nil {
		return nil, err
	}
	asPub := asPriv.PublicKey().Bytes()
	key, nonce, err := contentKeys(shared, auth, salt, uaPub.Bytes(), asPub)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	plain := make([]byte, 0, len(payload)+1)
	plain = append(plain, payload...)
	plain = append(plain, 2) // delimiter of the last record, no padding
	out := make([]byte, 0, headerSize+len(plain)+gcm.Overhead())
	out = append(out, salt...)
	out = binary.BigEndian.AppendUint32(out, RecordSize)
	out = append(out, byte(len(asPub)))
	out = append(out, asPub...)
	return gcm.Seal(out, nonce, plain, nil), nil
}

// contentKeys derives the content encryption key and nonce (RFC 8291
// section 3.4, RFC 8188 section 2.2).
func contentKeys(shared, auth, salt, uaPub, asPub []byte) (key, nonce []byte, err error) {
	info := "WebPush: info\x00" + string(uaPub) + string(asPub)
	ikm, err := hkdf.Key(sha256.New, shared, auth, info, 32)
	if err != nil {
		return nil, nil, err
	}
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, nil, err
	}
	if key, err = hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16); err != nil {
		return nil, nil, err
	}
	nonce, err = hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	return key, nonce, err
}

// Decrypt is Encrypt's inverse, for the holder of the subscription's
// private key: a user agent, or a test's push service. It reads one record.
func Decrypt(priv *ecdh.PrivateKey, auth, body []byte) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("aes128gcm: body shorter than its header")
	}
	salt := body[:16]
	idlen := int(body[20])
	if len(body) < 21+idlen {
		return nil, errors.New("aes128gcm: body shorter than its key id")
	}
	asPubBytes := body[21 : 21+idlen]
	asPub, err := ecdh.P256().NewPublicKey(asPubBytes)
	if err != nil {
		return nil, fmt.Errorf("aes128gcm: key id is not a P-256 key: %v", err)
	}
	shared, err := priv.ECDH(asPub)
	if err != nil {
		return nil, err
	}
	key, nonce, err := contentKeys(shared, auth, salt, priv.PublicKey().Bytes(), asPubBytes)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, nonce, body[21+idlen:], nil)
	if err != nil {
		return nil, fmt.Errorf("aes128gcm: %v", err)
	}
	i := bytes.LastIndexByte(plain, 2)
	if i < 0 || len(bytes.TrimRight(plain[i+1:], "\x00")) != 0 {
		return nil, errors.New("aes128gcm: no last-record delimiter")
	}
	return plain[:i], nil
}

// VAPID is an application server's key pair (RFC 8292) and its contact.
type VAPID struct {
	Private *ecdsa.PrivateKey
	Public  string // base64url uncompressed public key, as browsers take it
	Subject string // mailto: or https: contact, sent as the JWT's sub
}

// GenerateVAPID makes a new key pair, as base64url strings: the private
// key's 32 bytes and the uncompressed public key's 65.
func GenerateVAPID() (private, public string, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	d, err := k.Bytes()
	if err != nil {
		return "", "", err
	}
	pub, err := k.PublicKey.Bytes()
	if err != nil {
		return "", "", err
	}
	return b64.EncodeToString(d), b64.EncodeToString(pub), nil
}

// ParseVAPID reads a base64url private key (as GenerateVAPID prints it)
// and derives the public key. subject is the contact the push service may
// use (mailto:ops@example.com or an https URL).
func ParseVAPID(private, subject string) (*VAPID, error) {
	d, err := decodeB64(private)
	if err != nil {
		return nil, errors.New("not base64url")
	}
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		return nil, errors.New("not a P-256 private key (32 bytes, base64url)")
	}
	u, err := url.Parse(subject)
	if err != nil || (u.Scheme != "mailto" && u.Scheme != "https") {
		return nil, errors.New("subject must be a mailto: or https: URL")
	}
	pub, err := k.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	return &VAPID{Private: k, Public: b64.EncodeToString(pub), Subject: subject}, nil
}

// authorization is the Authorization header value for endpoint: a JWT for
// the endpoint's origin valid for 12 hours (RFC 8292 allows up to 24).
func (v *VAPID) authorization(endpoint string, now time.Time) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", err
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"aud": u.Scheme + "://" + u.Host,
		"exp": now.Add(12 * time.Hour).Unix(),
		"sub": v.Subject,
	})
	s, err := tok.SignedString(v.Private)
	if err != nil {
		return "", err
	}
	return "vapid t=" + s + ", k=" + v.Public, nil
}

// WebPush sends to push services.
type WebPush struct {
	VAPID  *VAPID
	Client *http.Client
	Now    func() time.Time
}

// Send posts one encrypted message. ttl is the push service's TTL header
// (how long it may hold the message for an offline browser); urgency is
// very-low, low, normal or high ("" for normal); topic collapses messages
// with the same topic that the service still holds ("" for none).
func (w *WebPush) Send(ctx context.Context, s Subscription, payload []byte, ttl time.Duration, urgency, topic string) Outcome {
	body, err := Encrypt(s, payload)
	if err != nil {
		return Outcome{Result: ResultRefused, Detail: err.Error()}
	}
	auth, err := w.VAPID.authorization(s.Endpoint, w.Now())
	if err != nil {
		return Outcome{Result: ResultRefused, Detail: "endpoint: " + err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Endpoint, bytes.NewReader(body))
	if err != nil {
		return Outcome{Result: ResultRefused, Detail: "endpoint: " + err.Error()}
	}
	req.Header.Set("Content-Encoding", "aes128gcm")
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Authorization", auth)
	req.Header.Set("TTL", strconv.Itoa(int(ttl/time.Second)))
	if urgency != "" {
		req.Header.Set("Urgency", urgency)
	}
	if topic != "" {
		req.Header.Set("Topic", topic)
	}
	resp, err := w.Client.Do(req)
	if errors.Is(err, errPrivateDial) {
		return Outcome{Result: ResultRefused, Detail: "endpoint: " + errPrivateDial.Error()}
	}
	return httpOutcome(resp, err)
}
