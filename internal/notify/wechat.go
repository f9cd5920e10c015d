package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// WeChatAPI is the official API's base URL.
const WeChatAPI = "https://api.weixin.qq.com"

// WeChat sends mini-program subscribe messages through the official HTTP
// API: an access token from /cgi-bin/token (cached until five minutes
// before it expires, fetched again when the API calls it invalid), then
// POST /cgi-bin/message/subscribe/send.
type WeChat struct {
	BaseURL string // WeChatAPI, or an emulator's or proxy's URL
	AppID   string
	Secret  string // the app secret; never logged nor put in a detail
	State   string // miniprogram_state: formal, trial or developer ("" is formal)
	Lang    string // zh_CN, en_US, zh_HK or zh_TW ("" is zh_CN)
	Client  *http.Client
	Now     func() time.Time

	mu      sync.Mutex // guards the token; held while one is fetched, so one fetch runs
	token   string
	expires time.Time
}

// WeChat's documented errcodes that pushgate treats specially. Any other
// non-zero errcode refuses the message, reported with its errcode and errmsg.
const (
	weChatBusy           = -1    // system busy: retried
	weChatBadCredential  = 40001 // access token invalid: fetched again
	weChatBadOpenID      = 40003 // invalid openid: the target is gone
	weChatBadToken       = 40014 // invalid access token: fetched again
	weChatTokenExpired   = 42001 // access token expired: fetched again
	weChatMinuteQuota    = 45009 // API call quota reached: retried
	weChatNoSubscription = 43101 // the user refused, or no subscription quota left
)

// weChatReasons names the errcodes a subscribe send is documented to
// answer, for the Detail of a refused send.
var weChatReasons = map[int]string{
	40003: "invalid openid",
	40037: "invalid template_id",
	41030: "invalid page",
	43101: "user refused the subscription or has no subscription quota left",
	47003: "template data does not match the template",
	40013: "invalid appid",
	40125: "invalid app secret",
	40164: "calling IP not on the app's allow list",
}

type weChatAnswer struct {
	ErrCode     int    `json:"errcode"`
	ErrMsg      string `json:"errmsg"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
}

func (a weChatAnswer) outcome() Outcome {
	detail := fmt.Sprintf("errcode %d: %s", a.ErrCode, a.ErrMsg)
	if r, ok := weChatReasons[a.ErrCode]; ok {
		detail = fmt.Sprintf("errcode %d (%s): %s", a.ErrCode, r, a.ErrMsg)
	}
	switch a.ErrCode {
	case 0:
		return Outcome{Result: ResultSent}
	case weChatBadOpenID:
		return Outcome{Result: ResultGone, Detail: detail}
	case weChatBusy, weChatMinuteQuota:
		return Outcome{Result: ResultFailed, Detail: detail, retry: true}
	default:
		return Outcome{Result: ResultRefused, Detail: detail}
	}
}

// call does one request and decodes WeChat's JSON answer; the URL (which
// holds the secret or the token) is kept out of errors.
func (w *WeChat) call(ctx context.Context, method, u string, body []byte) (weChatAnswer, Outcome) {
	var a weChatAnswer
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return a, Outcome{Result: ResultRefused, Detail: "wechat base URL: " + scrub(err).Error()}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := w.Client.Do(req)
	if err != nil {
		return a, Outcome{Result: ResultFailed, Detail: scrub(err).Error(), retry: true}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		o := httpOutcome(resp, nil)
		if o.Result == ResultGone { // the API itself is not found: a setup error, not a gone user
			o.Result = ResultRefused
		}
		return a, o
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&a); err != nil {
		return a, Outcome{Result: ResultFailed, Detail: "answer is not JSON: " + err.Error(), retry: true}
	}
	return a, Outcome{Result: ResultSent}
}

// scrub drops the URL from a client error: WeChat URLs carry the app
// secret or the access token.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", strings.ToLower(ue.Op), ue.Err)
	}
	return err
}

// accessToken returns the cached token or fetches one.
func (w *WeChat) accessToken(ctx context.Context) (string, Outcome) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.token != "" && w.Now().Before(w.expires) {
		return w.token, Outcome{Result: ResultSent}
	}
	q := url.Values{"grant_type": {"client_credential"}, "appid": {w.AppID}, "secret": {w.Secret}}
	a, o := w.call(ctx, http.MethodGet, strings.TrimRight(w.BaseURL, "/")+"/cgi-bin/token?"+q.Encode(), nil)
	if o.Result != ResultSent {
		return "", o
	}
	if a.ErrCode != 0 || a.AccessToken == "" {
		o := a.outcome()
		o.Detail = "access token: " + o.Detail
		if o.Result == ResultGone || o.Result == ResultSent {
			o.Result = ResultRefused
		}
		return "", o
	}
	life := time.Duration(a.ExpiresIn) * time.Second
	if life > 10*time.Minute {
		life -= 5 * time.Minute
	} else {
		life /= 2
	}
	w.token, w.expires = a.AccessToken, w.Now().Add(life)
	return w.token, Outcome{Result: ResultSent}
}

// forget drops token if it is still the cached one.
func (w *WeChat) forget(token string) {
	w.mu.Lock()
	if w.token == token {
		w.token = ""
	}
	w.mu.Unlock()
}

// Send sends a subscribe message to openid. A token the API calls invalid
// or expired is fetched again and the send repeated once.
func (w *WeChat) Send(ctx context.Context, openid string, n Notification) Outcome {
	if n.WeChatTemplateID == "" {
		return Outcome{Result: ResultRefused, Detail: "wechat_template_id: required for the wechat channel"}
	}
	data := make(map[string]map[string]string, len(n.WeChatData))
	for k, v := range n.WeChatData {
		data[k] = map[string]string{"value": v}
	}
	body, _ := json.Marshal(map[string]any{
		"touser":            openid,
		"template_id":       n.WeChatTemplateID,
		"page":              n.WeChatPage,
		"data":              data,
		"miniprogram_state": w.State,
		"lang":              w.Lang,
	})
	for try := 0; ; try++ {
		tok, o := w.accessToken(ctx)
		if o.Result != ResultSent {
			return o
		}
		u := strings.TrimRight(w.BaseURL, "/") + "/cgi-bin/message/subscribe/send?access_token=" + url.QueryEscape(tok)
		a, o := w.call(ctx, http.MethodPost, u, body)
		if o.Result != ResultSent {
			return o
		}
		switch a.ErrCode {
		case weChatBadCredential, weChatBadToken, weChatTokenExpired:
			w.forget(tok)
			if try == 0 {
				continue
			}
		}
		return a.outcome()
	}
}
