// Package notifytest holds loopback emulators of the services pushgate
// notifies through, for tests: a Web Push service that checks the VAPID
// JWT and decrypts the RFC 8291 body as a browser would, the WeChat
// subscribe-message API, and a webhook receiver that checks signatures.
// Each implements the real protocol and records what it received.
package notifytest

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"pushgate/internal/notify"
	"pushgate/internal/webhook"
)

var b64 = base64.RawURLEncoding

// PushMessage is one message a PushService accepted, decrypted.
type PushMessage struct {
	Sub     string // the subscription's id
	Payload []byte
	TTL     int
	Urgency string
	Topic   string
}

// PushService emulates a Web Push service (RFC 8030) on loopback.
// Subscriptions are made for one application server key (VAPID public
// key), as a browser's pushManager.subscribe does; every push must carry
// a VAPID JWT (RFC 8292) signed by it for this origin, and an aes128gcm
// body (RFC 8291) that decrypts with the subscription's keys.
type PushService struct {
	*httptest.Server
	VAPIDPublic string

	mu       sync.Mutex
	subs     map[string]*pushSub
	rejected []string         // why requests were refused (bad JWT, body)
	Messages chan PushMessage // every accepted message
}

type pushSub struct {
	priv    *ecdh.PrivateKey
	auth    []byte
	answers []int // statuses to give before accepting, in order
	gone    bool
}

// NewPushService starts the emulator for the VAPID public key vapidPublic
// (base64url, as the server publishes it). Close it when done.
func NewPushService(vapidPublic string) *PushService {
	p := &PushService{VAPIDPublic: vapidPublic, subs: map[string]*pushSub{}, Messages: make(chan PushMessage, 100)}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	return p
}

// Subscribe makes a subscription, as a browser would, and returns it with
// its id.
func (p *PushService) Subscribe() (notify.Subscription, string) {
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	auth := make([]byte, 16)
	rand.Read(auth)
	id := rand.Text()
	p.mu.Lock()
	p.subs[id] = &pushSub{priv: priv, auth: auth}
	p.mu.Unlock()
	var s notify.Subscription
	s.Endpoint = p.URL + "/push/" + id
	s.Keys.P256dh = b64.EncodeToString(priv.PublicKey().Bytes())
	s.Keys.Auth = b64.EncodeToString(auth)
	return s, id
}

// Answer makes the next pushes to sub get these statuses (429, 500, ...)
// before it accepts again.
func (p *PushService) Answer(sub string, statuses ...int) {
	p.mu.Lock()
	p.subs[sub].answers = append(p.subs[sub].answers, statuses...)
	p.mu.Unlock()
}

// Unsubscribe makes sub gone: pushes to it get 410.
func (p *PushService) Unsubscribe(sub string) {
	p.mu.Lock()
	p.subs[sub].gone = true
	p.mu.Unlock()
}

// Rejected returns the reasons requests were refused for a bad JWT or body.
func (p *PushService) Rejected() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.rejected...)
}

func (p *PushService) reject(w http.ResponseWriter, code int, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	p.mu.Lock()
	p.rejected = append(p.rejected, msg)
	p.mu.Unlock()
	http.Error(w, msg, code)
}

func (p *PushService) serve(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutPrefix(r.URL.Path, "/push/")
	p.mu.Lock()
	s := p.subs[id]
	p.mu.Unlock()
	if !ok || r.Method != http.MethodPost || s == nil {
		http.NotFound(w, r)
		return
	}
	if err := p.checkVAPID(r.Header.Get("Authorization")); err != nil {
		p.reject(w, http.StatusUnauthorized, "vapid: %v", err)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get("TTL"))
	if err != nil || ttl < 0 {
		p.reject(w, http.StatusBadRequest, "TTL header: %q", r.Header.Get("TTL"))
		return
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "aes128gcm" {
		p.reject(w, http.StatusUnsupportedMediaType, "Content-Encoding %q", ce)
		return
	}
	if u := r.Header.Get("Urgency"); u != "" && !notify.Urgencies[u] {
		p.reject(w, http.StatusBadRequest, "Urgency %q", u)
		return
	}
	topic := r.Header.Get("Topic")
	if len(topic) > 32 || strings.Trim(topic, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		p.reject(w, http.StatusBadRequest, "Topic %q", topic)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8192))
	if len(body) > notify.RecordSize {
		p.reject(w, http.StatusRequestEntityTooLarge, "body of %d bytes", len(body))
		return
	}
	payload, err := notify.Decrypt(s.priv, s.auth, body)
	if err != nil {
		p.reject(w, http.StatusBadRequest, "body: %v", err)
		return
	}
	p.mu.Lock()
	if s.gone {
		p.mu.Unlock()
		http.Error(w, "push subscription has unsubscribed or expired", http.StatusGone)
		return
	}
	if len(s.answers) > 0 {
		code := s.answers[0]
		s.answers = s.answers[1:]
		p.mu.Unlock()
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "0")
		}
		http.Error(w, http.StatusText(code), code)
		return
	}
	p.mu.Unlock()
	p.Messages <- PushMessage{Sub: id, Payload: payload, TTL: ttl, Urgency: r.Header.Get("Urgency"), Topic: topic}
	w.Header().Set("Location", p.URL+"/message/"+rand.Text())
	w.WriteHeader(http.StatusCreated)
}

// checkVAPID verifies "vapid t=<jwt>, k=<key>" (RFC 8292 section 3): the
// key is the one subscriptions were made for, the JWT is ES256-signed by
// it, its aud is this origin, its exp within 24 hours, its sub a contact.
func (p *PushService) checkVAPID(h string) error {
	rest, ok := strings.CutPrefix(h, "vapid ")
	if !ok {
		return errors.New("no vapid Authorization")
	}
	var tok, key string
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			tok = v
		case "k":
			key = v
		}
	}
	if key != p.VAPIDPublic {
		return fmt.Errorf("k=%q is not the key the subscription was made for", key)
	}
	raw, err := b64.DecodeString(key)
	if err != nil {
		return err
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return err
	}
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(p.URL), jwt.WithExpirationRequired())
	if err != nil {
		return err
	}
	exp, _ := claims.GetExpirationTime()
	if time.Until(exp.Time) > 24*time.Hour {
		return errors.New("exp more than 24 hours ahead")
	}
	sub, _ := claims.GetSubject()
	if !strings.HasPrefix(sub, "mailto:") && !strings.HasPrefix(sub, "https:") {
		return fmt.Errorf("sub %q is neither a mailto: nor an https: URL", sub)
	}
	return nil
}

// WeChatMessage is one subscribe message the WeChat emulator accepted.
type WeChatMessage struct {
	ToUser     string                       `json:"touser"`
	TemplateID string                       `json:"template_id"`
	Page       string                       `json:"page"`
	Data       map[string]map[string]string `json:"data"`
	State      string                       `json:"miniprogram_state"`
}

// WeChat emulates the official API's /cgi-bin/token and
// /cgi-bin/message/subscribe/send, with their documented errcodes.
type WeChat struct {
	*httptest.Server
	AppID, Secret string

	mu         sync.Mutex
	token      string
	TokenCalls int
	templates  map[string][]string // template id → its field names
	quota      map[string]int      // openid → subscribe messages it accepted and not yet used
	Messages   chan WeChatMessage
}

// NewWeChat starts the emulator for one app.
func NewWeChat(appID, secret string) *WeChat {
	e := &WeChat{AppID: appID, Secret: secret, templates: map[string][]string{}, quota: map[string]int{}, Messages: make(chan WeChatMessage, 100)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cgi-bin/token", e.serveToken)
	mux.HandleFunc("POST /cgi-bin/message/subscribe/send", e.serveSend)
	e.Server = httptest.NewServer(mux)
	return e
}

// Template defines a template and its field names.
func (e *WeChat) Template(id string, fields ...string) {
	e.mu.Lock()
	e.templates[id] = fields
	e.mu.Unlock()
}

// Subscribe makes openid known and gives it n subscription quota (the
// user tapped "allow" n times in wx.requestSubscribeMessage).
func (e *WeChat) Subscribe(openid string, n int) {
	e.mu.Lock()
	e.quota[openid] += n
	e.mu.Unlock()
}

// ExpireToken makes the issued access token expired (errcode 42001).
func (e *WeChat) ExpireToken() {
	e.mu.Lock()
	e.token = "expired:" + e.token
	e.mu.Unlock()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (e *WeChat) serveToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.TokenCalls++
	switch {
	case q.Get("grant_type") != "client_credential":
		writeJSON(w, map[string]any{"errcode": 40002, "errmsg": "invalid grant_type"})
	case q.Get("appid") != e.AppID:
		writeJSON(w, map[string]any{"errcode": 40013, "errmsg": "invalid appid"})
	case q.Get("secret") != e.Secret:
		writeJSON(w, map[string]any{"errcode": 40125, "errmsg": "invalid appsecret"})
	default:
		e.token = rand.Text()
		writeJSON(w, map[string]any{"access_token": e.token, "expires_in": 7200})
	}
}

func (e *WeChat) serveSend(w http.ResponseWriter, r *http.Request) {
	var m WeChatMessage
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		writeJSON(w, map[string]any{"errcode": 47001, "errmsg": "data format error"})
		return
	}
	tok := r.URL.Query().Get("access_token")
	e.mu.Lock()
	defer e.mu.Unlock()
	fields, known := e.templates[m.TemplateID]
	quota, subscribed := e.quota[m.ToUser]
	switch {
	case tok != "" && tok == strings.TrimPrefix(e.token, "expired:") && strings.HasPrefix(e.token, "expired:"):
		writeJSON(w, map[string]any{"errcode": 42001, "errmsg": "access_token expired"})
	case tok == "" || tok != e.token:
		writeJSON(w, map[string]any{"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"})
	case !subscribed:
		writeJSON(w, map[string]any{"errcode": 40003, "errmsg": "invalid openid"})
	case !known:
		writeJSON(w, map[string]any{"errcode": 40037, "errmsg": "invalid template_id"})
	case !sameFields(fields, m.Data):
		writeJSON(w, map[string]any{"errcode": 47003, "errmsg": "argument invalid! data.thing1.value invalid"})
	case quota <= 0:
		writeJSON(w, map[string]any{"errcode": 43101, "errmsg": "user refuse to accept the msg"})
	default:
		e.quota[m.ToUser]--
		e.Messages <- m
		writeJSON(w, map[string]any{"errcode": 0, "errmsg": "ok"})
	}
}

func sameFields(want []string, data map[string]map[string]string) bool {
	if len(want) != len(data) {
		return false
	}
	for _, f := range want {
		if _, ok := data[f]["value"]; !ok {
			return false
		}
	}
	return true
}

// WebhookCall is one signed POST the receiver accepted.
type WebhookCall struct {
	Body []byte
}

// Webhook is a backend's webhook endpoint: it checks the
// Pushgate-Signature of every POST with the shared secret.
type Webhook struct {
	*httptest.Server
	Secret []byte

	mu       sync.Mutex
	answers  []int
	rejected []string
	Calls    chan WebhookCall
}

// NewWebhook starts the receiver.
func NewWebhook(secret []byte) *Webhook {
	h := &Webhook{Secret: secret, Calls: make(chan WebhookCall, 100)}
	h.Server = httptest.NewServer(http.HandlerFunc(h.serve))
	return h
}

// Answer makes the next POSTs get these statuses before it accepts again.
func (h *Webhook) Answer(statuses ...int) {
	h.mu.Lock()
	h.answers = append(h.answers, statuses...)
	h.mu.Unlock()
}

// Rejected returns why POSTs were refused (a bad signature).
func (h *Webhook) Rejected() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.rejected...)
}

func (h *Webhook) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err := webhook.Verify(h.Secret, r.Header.Get(webhook.Header), body, time.Now(), 5*time.Minute); err != nil {
		h.mu.Lock()
		h.rejected = append(h.rejected, err.Error())
		h.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	h.mu.Lock()
	if len(h.answers) > 0 {
		code := h.answers[0]
		h.answers = h.answers[1:]
		h.mu.Unlock()
		http.Error(w, http.StatusText(code), code)
		return
	}
	h.mu.Unlock()
	h.Calls <- WebhookCall{Body: body}
	w.WriteHeader(http.StatusNoContent)
}
