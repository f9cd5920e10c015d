// Package notify reaches users who have no open connection: Web Push to a
// browser's push service, WeChat mini-program subscribe messages, and a
// signed webhook to the backend (which may relay to SMS, e-mail, FCM or
// APNs). A Dispatcher runs the sends on a bounded queue and a fixed number
// of workers, so a slow or unreachable provider never blocks the caller;
// 429 and 5xx answers are retried with backoff until the message's
// deadline, and a target the provider reports gone (404, 410, an unknown
// openid) is reported so its owner can remove it.
package notify

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Channel names, as targets, events and metric labels spell them.
const (
	ChannelWebPush = "webpush"
	ChannelWeChat  = "wechat"
	ChannelWebhook = "webhook"
)

// Result of one send, as events and metric labels spell it.
type Result string

const (
	// ResultSent: the provider accepted the message.
	ResultSent Result = "sent"
	// ResultGone: the target no longer exists (HTTP 404 or 410, WeChat
	// 40003 invalid openid); its owner should remove it.
	ResultGone Result = "gone"
	// ResultRefused: the provider refused this message for good (a 4xx,
	// a WeChat errcode such as 43101 no subscription quota); Detail says why.
	ResultRefused Result = "refused"
	// ResultFailed: retries (429, 5xx, network errors) ran out of time.
	ResultFailed Result = "failed"
	// ResultDropped: the dispatcher's queue was full; nothing was sent.
	ResultDropped Result = "dropped"
	// ResultUnconfigured: the channel is not set up on this node.
	ResultUnconfigured Result = "unconfigured"
	// ResultNoTarget: the user has no target for the message's channels.
	ResultNoTarget Result = "no_target"
)

// Outcome is what one attempt (or, from the Dispatcher, one send with its
// retries) came to.
type Outcome struct {
	Result Result
	Detail string // the provider's reason: status, errcode and errmsg

	retry      bool          // the attempt may be repeated (429, 5xx, network)
	retryAfter time.Duration // the provider's Retry-After, if any
}

// httpOutcome classifies a provider's HTTP answer.
func httpOutcome(resp *http.Response, err error) Outcome {
	if err != nil {
		return Outcome{Result: ResultFailed, Detail: err.Error(), retry: true}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	detail := resp.Status
	if len(snippet) > 0 {
		detail += ": " + string(snippet)
	}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return Outcome{Result: ResultSent}
	case c == http.StatusNotFound || c == http.StatusGone:
		return Outcome{Result: ResultGone, Detail: detail}
	case c == http.StatusTooManyRequests || c >= 500:
		return Outcome{Result: ResultFailed, Detail: detail, retry: true, retryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	default:
		return Outcome{Result: ResultRefused, Detail: detail}
	}
}

// retryAfter reads a Retry-After header in seconds (the HTTP-date form is
// taken as no advice).
func retryAfter(v string) time.Duration {
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	return 0
}

// Notification is what the user is shown. Title is required; the rest is
// optional.
type Notification struct {
	Title   string `json:"title"`
	Body    string `json:"body,omitempty"`
	URL     string `json:"url,omitempty"`  // opened on click
	Icon    string `json:"icon,omitempty"` // image URL
	Tag     string `json:"tag,omitempty"`  // a newer notification with the same tag replaces the older
	Urgency string `json:"-"`              // very-low, low, normal, high ("" is normal)

	// WeChat subscribe message: the template, the mini-program page to open
	// and the template's fields (thing1: "...", amount2: "...").
	WeChatTemplateID string            `json:"-"`
	WeChatPage       string            `json:"-"`
	WeChatData       map[string]string `json:"-"`
}

// Limits of a notification's fields.
const (
	MaxNotificationBytes = 3072 // all text fields together, so the Web Push payload fits
	MaxWeChatFields      = 20
)

// Urgencies are the Web Push Urgency values (RFC 8030 section 5.3).
var Urgencies = map[string]bool{"": true, "very-low": true, "low": true, "normal": true, "high": true}

// Validate checks n; the error names the field.
func (n Notification) Validate() error {
	if n.Title == "" {
		return errors.New("title: required")
	}
	size := len(n.Title) + len(n.Body) + len(n.URL) + len(n.Icon) + len(n.Tag) + len(n.WeChatTemplateID) + len(n.WeChatPage)
	for k, v := range n.WeChatData {
		size += len(k) + len(v)
	}
	if size > MaxNotificationBytes {
		return fmt.Errorf("notification: %d bytes, over the limit of %d", size, MaxNotificationBytes)
	}
	if !Urgencies[n.Urgency] {
		return fmt.Errorf("urgency: %q is not one of very-low, low, normal, high", n.Urgency)
	}
	if len(n.WeChatData) > MaxWeChatFields {
		return fmt.Errorf("wechat_data: %d fields, over the limit of %d", len(n.WeChatData), MaxWeChatFields)
	}
	return nil
}

// Push is the JSON a Web Push message carries to the service worker
// (pushgate-sw.js) and a webhook carries to the backend.
type Push struct {
	Notification
	MessageID string `json:"message_id,omitempty"`
	UserID    string `json:"user_id,omitempty"`
}

// Payload encodes p.
func (p Push) Payload() []byte {
	b, _ := json.Marshal(p)
	return b
}

// topic turns a notification tag into a Web Push Topic header, which
// allows at most 32 characters of the base64url alphabet: the first 32 of
// the tag's SHA-256 in base64url.
func topic(tag string) string {
	if tag == "" {
		return ""
	}
	h := sha256.Sum256([]byte(tag))
	return base64.RawURLEncoding.EncodeToString(h[:])[:32]
}
