package notify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
)

// Target is one place a user can be reached: a browser's push
// subscription, a WeChat mini-program openid, or a webhook URL. Exactly
// one of WebPush, OpenID and URL is set, as Channel says.
type Target struct {
	Channel string        `json:"channel"`
	WebPush *Subscription `json:"webpush,omitempty"`
	OpenID  string        `json:"openid,omitempty"`
	URL     string        `json:"url,omitempty"`
}

// MaxTargetBytes bounds one target's encoded size.
const MaxTargetBytes = 4096

// ID is the target's stable identity: the channel and the first 16 hex
// digits of the SHA-256 of its address (endpoint, openid or URL). Adding
// a target with the same address replaces it.
func (t Target) ID() string {
	h := sha256.Sum256([]byte(t.address()))
	return t.Channel + ":" + hex.EncodeToString(h[:8])
}

func (t Target) address() string {
	switch t.Channel {
	case ChannelWebPush:
		if t.WebPush != nil {
			return t.WebPush.Endpoint
		}
	case ChannelWeChat:
		return t.OpenID
	case ChannelWebhook:
		return t.URL
	}
	return ""
}

// Validate checks t; the error names the field.
func (t Target) Validate() error {
	switch t.Channel {
	case ChannelWebPush:
		if t.WebPush == nil {
			return errors.New("webpush: required for channel webpush")
		}
		if err := t.WebPush.Validate(); err != nil {
			return fmt.Errorf("webpush.%v", err)
		}
	case ChannelWeChat:
		if t.OpenID == "" || len(t.OpenID) > 128 {
			return errors.New("openid: required, at most 128 bytes")
		}
	case ChannelWebhook:
		u, err := url.Parse(t.URL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return errors.New("url: must be an http(s) URL")
		}
		if len(t.URL) > 2048 {
			return errors.New("url: longer than 2048 bytes")
		}
	default:
		return fmt.Errorf("channel: %q is not one of webpush, wechat, webhook", t.Channel)
	}
	return nil
}

// Encode is the target's stored form.
func (t Target) Encode() []byte {
	b, _ := json.Marshal(t)
	return b
}

// DecodeTarget reads Encode's form.
func DecodeTarget(b []byte) (Target, error) {
	var t Target
	err := json.Unmarshal(b, &t)
	return t, err
}
