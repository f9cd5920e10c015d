package notify_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pushgate/internal/notify"
	"pushgate/internal/notify/notifytest"
)

const wait = 20 * time.Second // generous: the machine may be loaded

func newVAPID(t *testing.T) *notify.VAPID {
	t.Helper()
	priv, pub, err := notify.GenerateVAPID()
	if err != nil {
		t.Fatal(err)
	}
	v, err := notify.ParseVAPID(priv, "mailto:ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if v.Public != pub {
		t.Fatalf("public key derived from the private one is %s, generated %s", v.Public, pub)
	}
	return v
}

type rig struct {
	d   *notify.Dispatcher
	reg *prometheus.Registry
}

func newRig(t *testing.T, cfg notify.Config) rig {
	t.Helper()
	reg := prometheus.NewRegistry()
	if cfg.Backoff == 0 {
		cfg.Backoff = 20 * time.Millisecond
	}
	now := time.Now
	client := notify.NewHTTPClient()
	if cfg.WebPush != nil {
		cfg.WebPush.Client, cfg.WebPush.Now = client, now
	}
	if cfg.WeChat != nil {
		cfg.WeChat.Client, cfg.WeChat.Now = client, now
	}
	if cfg.Webhook != nil {
		cfg.Webhook.Client, cfg.Webhook.Now = client, now
	}
	d := notify.NewDispatcher(cfg, reg)
	t.Cleanup(d.Close)
	return rig{d: d, reg: reg}
}

// send submits j and waits for its outcome.
func (r rig) send(t *testing.T, j notify.Job) notify.Outcome {
	t.Helper()
	done := make(chan notify.Outcome, 1)
	j.Done = func(o notify.Outcome) { done <- o }
	if j.Deadline.IsZero() {
		j.Deadline = time.Now().Add(wait)
	}
	r.d.Submit(j)
	select {
	case o := <-done:
		return o
	case <-time.After(2 * wait):
		t.Fatal("no outcome")
		return notify.Outcome{}
	}
}

func (r rig) count(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i, l := range m.GetLabel() {
				if i >= len(labels) || l.GetValue() != labels[i] {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestWebPushDeliversEncryptedPayload(t *testing.T) {
	v := newVAPID(t)
	ps := notifytest.NewPushService(v.Public)
	defer ps.Close()
	r := newRig(t, notify.Config{WebPush: &notify.WebPush{VAPID: v}})
	sub, id := ps.Subscribe()
	n := notify.Notification{Title: "New order", Body: "#1042 paid: 88.00", URL: "/admin/orders/1042", Tag: "order-1042", Urgency: "high"}
	o := r.send(t, notify.Job{UserID: "merchant-7", MessageID: "m1", Target: notify.Target{Channel: notify.ChannelWebPush, WebPush: &sub},
		Notification: n, Deadline: time.Now().Add(10 * time.Minute)})
	if o.Result != notify.ResultSent {
		t.Fatalf("outcome %+v, rejected %q", o, ps.Rejected())
	}
	m := <-ps.Messages
	want := notify.Push{Notification: n, MessageID: "m1", UserID: "merchant-7"}.Payload()
	if m.Sub != id || !bytes.Equal(m.Payload, want) {
		t.Fatalf("push service decrypted %q for %s, want %q for %s", m.Payload, m.Sub, want, id)
	}
	if m.TTL < 590 || m.TTL > 600 {
		t.Errorf("TTL %d, want the 600 s left to the deadline", m.TTL)
	}
	if m.Urgency != "high" || len(m.Topic) != 32 {
		t.Errorf("Urgency %q Topic %q, want high and a 32-character topic", m.Urgency, m.Topic)
	}
	if got := r.count(t, "pushgate_notify_sends_total", "webpush", "sent"); got != 1 {
		t.Errorf("sends_total{webpush,sent} = %v, want 1", got)
	}
}

func TestWebPushSignedWithAnotherKeyIsRefused(t *testing.T) {
	v := newVAPID(t)
	ps := notifytest.NewPushService(v.Public)
	defer ps.Close()
	r := newRig(t, notify.Config{WebPush: &notify.WebPush{VAPID: newVAPID(t)}})
	sub, _ := ps.Subscribe()
	o := r.send(t, notify.Job{UserID: "u", Target: notify.Target{Channel: notify.ChannelWebPush, WebPush: &sub}, Notification: notify.Notification{Title: "x"}})
	if o.Result != notify.ResultRefused || !strings.Contains(o.Detail, "401") {
		t.Fatalf("outcome %+v, want refused with 401", o)
	}
	if rej := ps.Rejected(); len(rej) != 1 || !strings.Contains(rej[0], "vapid") {
		t.Fatalf("push service rejected %q, want one VAPID refusal", rej)
	}
}

func TestWebPushRetries429And5xx(t *testing.T) {
	v := newVAPID(t)
	ps := notifytest.NewPushService(v.Public)
	defer ps.Close()
	r := newRig(t, notify.Config{WebPush: &notify.WebPush{VAPID: v}})
	sub, id := ps.Subscribe()
	ps.Answer(id, http.StatusTooManyRequests, http.StatusServiceUnavailable, http.StatusInternalServerError)
	o := r.send(t, notify.Job{UserID: "u", Target: notify.Target{Channel: notify.ChannelWebPush, WebPush: &sub}, Notification: notify.Notification{Title: "x"}})
	if o.Result != notify.ResultSent {
		t.Fatalf("outcome %+v, want sent after retries", o)
	}
	<-ps.Messages
	if got := r.count(t, "pushgate_notify_retries_total", "webpush"); got != 3 {
		t.Errorf("retries_total = %v, want 3", got)
	}
}

func TestWebPushRetriesStopAtDeadline(t *testing.T) {
	v := newVAPID(t)
	ps := notifytest.NewPushService(v.Public)
	defer ps.Close()
	r := newRig(t, notify.Config{WebPush: &notify.WebPush{VAPID: v}, Backoff: 100 * time.Millisecond})
	sub, id := ps.Subscribe()
	ps.Answer(id, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503)
	start := time.Now()
	o := r.send(t, notify.Job{UserID: "u", Target: notify.Target{Channel: notify.ChannelWebPush, WebPush: &sub},
		Notification: notify.Notification{Title: "x"}, Deadline: start.Add(time.Second)})
	if o.Result != notify.ResultFailed || !strings.Contains(o.Detail, "503") {
		t.Fatalf("outcome %+v, want failed with 503", o)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("gave up after %v; the deadline was 1s away", el)
	}
}

func TestWebPushGoneTarget(t *testing.T) {
	v := newVAPID(t)
	ps := notifytest.NewPushService(v.Public)
	defer ps.Close()
	r := newRig(t, notify.Config{WebPush: &notify.WebPush{VAPID: v}})
	sub, id := ps.Subscribe()
	ps.Unsubscribe(id)
	o := r.send(t, notify.Job{UserID: "u", Target: notify.Target{Channel: notify.ChannelWebPush, WebPush: &sub}, Notification: notify.Notification{Title: "x"}})
	if o.Result != notify.ResultGone {
		t.Fatalf("outcome %+v, want gone (410)", o)
	}
	sub.Endpoint = ps.URL + "/push/no-such-subscription"
	if o := r.send(t, notify.Job{UserID: "u", Target: notify.Target{Channel: notify.ChannelWebPush, WebPush: &sub}, Notification: notify.Notification{Title: "x"}}); o.Result != notify.ResultGone {
		t.Fatalf("outcome %+v, want gone (404)", o)
	}
}

func TestEncryptDecrypt(t *testing.T) {
	priv, _ := ecdh.P256().GenerateKey(rand.Reader)
	auth := make([]byte, 16)
	rand.Read(auth)
	var s notify.Subscription
	s.Endpoint = "https://push.example.com/x"
	s.Keys.P256dh = base64.RawURLEncoding.EncodeToString(priv.PublicKey().Bytes())
	s.Keys.Auth = base64.RawURLEncoding.EncodeToString(auth)
	for _, n := range []int{0, 1, 100, notify.MaxWebPushPayload} {
		p := bytes.Repeat([]byte{'a', 2, 0}, n/3+1)[:n]
		body, err := notify.Encrypt(s, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(body) > notify.RecordSize {
			t.Fatalf("%d-byte payload made a %d-byte body", n, len(body))
		}
		got, err := notify.Decrypt(priv, auth, body)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("%d bytes: decrypted %d bytes, %v", n, len(got), err)
		}
	}
	if _, err := notify.Encrypt(s, make([]byte, notify.MaxWebPushPayload+1)); err == nil {
		t.Fatal("a payload over the limit was encrypted")
	}
}

// TestUnreachableServiceNeverBlocksSubmit: a push service that never
// answers holds the workers, and Submit still returns at once, dropping
// (and counting) what the queue cannot hold.
func TestUnreachableServiceNeverBlocksSubmit(t *testing.T) {
	v := newVAPID(t)
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)
	r := newRig(t, notify.Config{WebPush: &notify.WebPush{VAPID: v}, Workers: 1, Queue: 2})
	ps := notifytest.NewPushService(v.Public)
	defer ps.Close()
	sub, _ := ps.Subscribe()
	sub.Endpoint = srv.URL + "/push/x"
	start := time.Now()
	accepted := 0
	for range 10 {
		if r.d.Submit(notify.Job{UserID: "u", Target: notify.Target{Channel: notify.ChannelWebPush, WebPush: &sub},
			Notification: notify.Notification{Title: "x"}, Deadline: time.Now().Add(time.Minute)}) {
			accepted++
		}
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("10 Submits took %v", el)
	}
	if accepted > 3 {
		t.Fatalf("%d of 10 accepted with one worker and a queue of 2", accepted)
	}
	if got := r.count(t, "pushgate_notify_sends_total", "webpush", "dropped"); got != float64(10-accepted) {
		t.Fatalf("sends_total{webpush,dropped} = %v, want %d", got, 10-accepted)
	}
}

func TestWeChatSubscribeMessages(t *testing.T) {
	e := notifytest.NewWeChat("wx0123456789abcdef", "app-secret-0123456789")
	defer e.Close()
	e.Template("TPL_ORDER", "thing1", "amount2")
	e.Subscribe("openid-A", 1)
	r := newRig(t, notify.Config{WeChat: &notify.WeChat{BaseURL: e.URL, AppID: e.AppID, Secret: e.Secret, State: "developer"}})
	n := notify.Notification{Title: "New order", WeChatTemplateID: "TPL_ORDER", WeChatPage: "pages/order?id=1042",
		WeChatData: map[string]string{"thing1": "Order #1042", "amount2": "88.00"}}
	job := func(openid string, n notify.Notification) notify.Job {
		return notify.Job{UserID: "u", Target: notify.Target{Channel: notify.ChannelWeChat, OpenID: openid}, Notification: n}
	}
	if o := r.send(t, job("openid-A", n)); o.Result != notify.ResultSent {
		t.Fatalf("first send: %+v", o)
	}
	m := <-e.Messages
	if m.ToUser != "openid-A" || m.TemplateID != "TPL_ORDER" || m.Page != "pages/order?id=1042" || m.Data["amount2"]["value"] != "88.00" || m.State != "developer" {
		t.Fatalf("emulator got %+v", m)
	}
	// The quota of one is used: 43101.
	if o := r.send(t, job("openid-A", n)); o.Result != notify.ResultRefused || !strings.Contains(o.Detail, "43101") || !strings.Contains(o.Detail, "subscription quota") {
		t.Fatalf("send past the quota: %+v, want refused 43101", o)
	}
	if o := r.send(t, job("openid-unknown", n)); o.Result != notify.ResultGone || !strings.Contains(o.Detail, "40003") {
		t.Fatalf("unknown openid: %+v, want gone 40003", o)
	}
	bad := n
	bad.WeChatTemplateID = "TPL_NONE"
	if o := r.send(t, job("openid-A", bad)); o.Result != notify.ResultRefused || !strings.Contains(o.Detail, "40037") {
		t.Fatalf("unknown template: %+v, want refused 40037", o)
	}
	bad = n
	bad.WeChatData = map[string]string{"thing1": "x"}
	if o := r.send(t, job("openid-A", bad)); o.Result != notify.ResultRefused || !strings.Contains(o.Detail, "47003") {
		t.Fatalf("wrong fields: %+v, want refused 47003", o)
	}
	if e.TokenCalls != 1 {
		t.Fatalf("token fetched %d times for five sends, want 1 (cached)", e.TokenCalls)
	}
	// An expired token is fetched again and the send repeated.
	e.Subscribe("openid-A", 1)
	e.ExpireToken()
	if o := r.send(t, job("openid-A", n)); o.Result != notify.ResultSent {
		t.Fatalf("send with an expired token: %+v", o)
	}
	<-e.Messages
	if e.TokenCalls != 2 {
		t.Fatalf("token fetched %d times, want 2", e.TokenCalls)
	}
}

func TestWeChatBadSecretIsReportedNotLeaked(t *testing.T) {
	e := notifytest.NewWeChat("wx0123456789abcdef", "app-secret-0123456789")
	defer e.Close()
	e.Template("T", "thing1")
	e.Subscribe("o", 5)
	r := newRig(t, notify.Config{WeChat: &notify.WeChat{BaseURL: e.URL, AppID: e.AppID, Secret: "wrong-secret-value-xyz"}})
	o := r.send(t, notify.Job{UserID: "u", Target: notify.Target{Channel: notify.ChannelWeChat, OpenID: "o"},
		Notification: notify.Notification{Title: "x", WeChatTemplateID: "T", WeChatData: map[string]string{"thing1": "y"}}})
	if o.Result != notify.ResultRefused || !strings.Contains(o.Detail, "40125") {
		t.Fatalf("outcome %+v, want refused 40125", o)
	}
	// An unreachable API: the error must not carry the URL and its secret.
	e.Close()
	o = r.send(t, notify.Job{UserID: "u", Target: notify.Target{Channel: notify.ChannelWeChat, OpenID: "o"},
		Notification: notify.Notification{Title: "x", WeChatTemplateID: "T"}, Deadline: time.Now().Add(300 * time.Millisecond)})
	if o.Result != notify.ResultFailed || strings.Contains(o.Detail, "wrong-secret-value-xyz") {
		t.Fatalf("outcome %+v: want failed, without the secret", o)
	}
}

func TestWebhookSignedPost(t *testing.T) {
	secret := []byte("webhook-secret-0123456789abcdef")
	h := notifytest.NewWebhook(secret)
	defer h.Close()
	r := newRig(t, notify.Config{Webhook: &notify.Webhook{Secret: secret}})
	target := notify.Target{Channel: notify.ChannelWebhook, URL: h.URL + "/hooks/push"}
	n := notify.Notification{Title: "New order", Body: "#1042", WeChatTemplateID: "TPL", WeChatData: map[string]string{"thing1": "a"}}
	h.Answer(http.StatusBadGateway)
	if o := r.send(t, notify.Job{UserID: "merchant-7", MessageID: "m9", Target: target, Notification: n}); o.Result != notify.ResultSent {
		t.Fatalf("outcome %+v", o)
	}
	c := <-h.Calls
	var got notify.WebhookBody
	if err := json.Unmarshal(c.Body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Type != "notification" || got.UserID != "merchant-7" || got.MessageID != "m9" || got.TargetID != target.ID() ||
		got.Notification.Title != "New order" || got.WeChat == nil || got.WeChat.TemplateID != "TPL" {
		t.Fatalf("webhook got %s", c.Body)
	}
	h.Answer(http.StatusGone)
	if o := r.send(t, notify.Job{UserID: "u", Target: target, Notification: n}); o.Result != notify.ResultGone {
		t.Fatalf("410: %+v, want gone", o)
	}
	other := newRig(t, notify.Config{Webhook: &notify.Webhook{Secret: []byte("another-secret-0123456789abcdef")}})
	if o := other.send(t, notify.Job{UserID: "u", Target: target, Notification: n}); o.Result != notify.ResultRefused {
		t.Fatalf("wrong secret: %+v, want refused", o)
	}
	if rej := h.Rejected(); len(rej) != 1 {
		t.Fatalf("receiver rejected %q, want one bad signature", rej)
	}
}

func TestUnconfiguredChannel(t *testing.T) {
	r := newRig(t, notify.Config{})
	o := r.send(t, notify.Job{UserID: "u", Target: notify.Target{Channel: notify.ChannelWeChat, OpenID: "o"}, Notification: notify.Notification{Title: "x"}})
	if o.Result != notify.ResultUnconfigured {
		t.Fatalf("outcome %+v", o)
	}
}

func TestValidation(t *testing.T) {
	v := newVAPID(t)
	ps := notifytest.NewPushService(v.Public)
	defer ps.Close()
	good, _ := ps.Subscribe()
	bad := func(f func(*notify.Subscription)) *notify.Subscription {
		s := good
		f(&s)
		return &s
	}
	for _, c := range []struct {
		t    notify.Target
		want string
	}{
		{notify.Target{Channel: "sms"}, "channel:"},
		{notify.Target{Channel: "webpush"}, "webpush:"},
		{notify.Target{Channel: "webpush", WebPush: bad(func(s *notify.Subscription) { s.Endpoint = "ftp://x/y" })}, "webpush.endpoint:"},
		{notify.Target{Channel: "webpush", WebPush: bad(func(s *notify.Subscription) { s.Keys.P256dh = "AAAA" })}, "webpush.keys.p256dh:"},
		{notify.Target{Channel: "webpush", WebPush: bad(func(s *notify.Subscription) { s.Keys.Auth = "AAAA" })}, "webpush.keys.auth:"},
		{notify.Target{Channel: "wechat"}, "openid:"},
		{notify.Target{Channel: "webhook", URL: "javascript:alert(1)"}, "url:"},
		{notify.Target{Channel: "webhook", URL: "/relative"}, "url:"},
	} {
		err := c.t.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q...", c.t, err, c.want)
		}
	}
	if err := (notify.Target{Channel: "webpush", WebPush: &good}).Validate(); err != nil {
		t.Errorf("good subscription: %v", err)
	}
	if err := (notify.Target{Channel: "webhook", URL: "https://backend.example.com/hook"}).Validate(); err != nil {
		t.Errorf("good webhook: %v", err)
	}
	for _, c := range []struct {
		n    notify.Notification
		want string
	}{
		{notify.Notification{}, "title:"},
		{notify.Notification{Title: "x", Body: strings.Repeat("b", notify.MaxNotificationBytes)}, "notification:"},
		{notify.Notification{Title: "x", Urgency: "now"}, "urgency:"},
	} {
		err := c.n.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q...", c.n, err, c.want)
		}
	}
	// The largest valid notification still fits one push message.
	n := notify.Notification{Title: strings.Repeat("t", notify.MaxNotificationBytes)}
	if err := n.Validate(); err != nil {
		t.Fatal(err)
	}
	if p := (notify.Push{Notification: n, MessageID: strings.Repeat("m", 64), UserID: strings.Repeat("u", 128)}).Payload(); len(p) > notify.MaxWebPushPayload {
		t.Fatalf("largest notification makes a %d-byte payload, over %d", len(p), notify.MaxWebPushPayload)
	}
	if _, err := notify.ParseVAPID("not-a-key", "mailto:a@b"); err == nil {
		t.Error("bad VAPID key accepted")
	}
}
