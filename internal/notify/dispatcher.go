package notify

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config of a Dispatcher. A nil channel is not configured: sends to it
// end unconfigured.
type Config struct {
	Workers    int           // concurrent sends (default DefaultWorkers)
	Queue      int           // sends waiting for a worker; past it Submit drops (default DefaultQueue)
	Timeout    time.Duration // one attempt's deadline (default 10s)
	Backoff    time.Duration // first retry's wait, doubled each time (default 500ms)
	MaxBackoff time.Duration // longest wait between retries (default 30s)

	WebPush *WebPush
	WeChat  *WeChat
	Webhook *Webhook
}

// Defaults of Config (and of the flags that set them).
const (
	DefaultWorkers = 8
	DefaultQueue   = 1000
)

// Job is one notification to one target.
type Job struct {
	UserID       string
	MessageID    string
	Target       Target
	Notification Notification
	// Deadline ends the retries; Web Push's TTL header is the time left
	// to it. Zero means one minute from Submit.
	Deadline time.Time
	// Done, if set, gets the final outcome, once, on a worker goroutine
	// (or on Submit's for a dropped job).
	Done func(Outcome)
}

// Dispatcher runs Jobs on a bounded queue and a fixed set of workers.
type Dispatcher struct {
	cfg   Config
	queue chan Job
	wg    sync.WaitGroup
	stop  context.CancelFunc
	ctx   context.Context

	sends   *prometheus.CounterVec // by channel, result
	retries *prometheus.CounterVec // by channel
	queued  prometheus.Gauge
}

// NewHTTPClient is the HTTP client the channels use: no redirects
// followed (a push service or webhook that redirects is answering
// something else), and a bound on idle connections.
func NewHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 8,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// NewDispatcher starts the workers and registers the metrics on reg.
func NewDispatcher(cfg Config, reg prometheus.Registerer) *Dispatcher {
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	ctx, stop := context.WithCancel(context.Background())
	d := &Dispatcher{
		cfg: cfg, queue: make(chan Job, cfg.Queue), ctx: ctx, stop: stop,
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pushgate_notify_sends_total",
			Help: "Offline notifications by channel (webpush, wechat, webhook) and result (sent, gone, refused, failed, dropped, unconfigured)."},
			[]string{"channel", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pushgate_notify_retries_total",
			Help: "Offline notification attempts repeated after a 429, 5xx or network error, by channel."}, []string{"channel"}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pushgate_notify_queued",
			Help: "Offline notifications waiting for a worker (--notify-queue bounds them)."}),
	}
	if reg != nil {
		reg.MustRegister(d.sends, d.retries, d.queued)
	}
	for range cfg.Workers {
		d.wg.Add(1)
		go d.work()
	}
	return d
}

// Submit queues j without blocking. It returns false, and reports
// ResultDropped to j.Done, when the queue is full or the dispatcher closed.
func (d *Dispatcher) Submit(j Job) bool {
	if j.Deadline.IsZero() {
		j.Deadline = time.Now().Add(time.Minute)
	}
	if d.ctx.Err() == nil {
		select {
		case d.queue <- j:
			d.queued.Inc()
			return true
		default:
		}
	}
	d.finish(j, Outcome{Result: ResultDropped, Detail: "notification queue full"})
	return false
}

// Close stops the workers: sends in flight are cancelled and queued ones
// end failed. It waits for the workers.
func (d *Dispatcher) Close() {
	d.stop()
	d.wg.Wait()
}

func (d *Dispatcher) finish(j Job, o Outcome) {
	d.sends.WithLabelValues(j.Target.Channel, string(o.Result)).Inc()
	if j.Done != nil {
		j.Done(o)
	}
}

func (d *Dispatcher) work() {
	defer d.wg.Done()
	for {
		select {
		case <-d.ctx.Done():
			for {
				select {
				case j := <-d.queue:
					d.queued.Dec()
					d.finish(j, Outcome{Result: ResultFailed, Detail: "shutting down"})
				default:
					return
				}
			}
		case j := <-d.queue:
			d.queued.Dec()
			d.finish(j, d.run(j))
		}
	}
}

// run sends j, retrying while the outcome says so and the deadline allows.
func (d *Dispatcher) run(j Job) Outcome {
	wait := d.cfg.Backoff
	for {
		o := d.attempt(j)
		if !o.retry {
			return o
		}
		w := max(wait, o.retryAfter)
		w = min(w, d.cfg.MaxBackoff)
		if time.Until(j.Deadline) <= w {
			o.Detail = "gave up before the deadline: " + o.Detail
			return o
		}
		d.retries.WithLabelValues(j.Target.Channel).Inc()
		t := time.NewTimer(w)
		select {
		case <-d.ctx.Done():
			t.Stop()
			return Outcome{Result: ResultFailed, Detail: "shutting down: " + o.Detail}
		case <-t.C:
		}
		wait = min(2*wait, d.cfg.MaxBackoff)
	}
}

func (d *Dispatcher) attempt(j Job) Outcome {
	left := time.Until(j.Deadline)
	if left <= 0 {
		return Outcome{Result: ResultFailed, Detail: "deadline passed"}
	}
	ctx, cancel := context.WithTimeout(d.ctx, min(left, d.cfg.Timeout))
	defer cancel()
	push := Push{Notification: j.Notification, MessageID: j.MessageID, UserID: j.UserID}
	switch j.Target.Channel {
	case ChannelWebPush:
		if d.cfg.WebPush == nil || j.Target.WebPush == nil {
			return Outcome{Result: ResultUnconfigured, Detail: "no VAPID key configured"}
		}
		return d.cfg.WebPush.Send(ctx, *j.Target.WebPush, push.Payload(), left, j.Notification.Urgency, topic(j.Notification.Tag))
	case ChannelWeChat:
		if d.cfg.WeChat == nil {
			return Outcome{Result: ResultUnconfigured, Detail: "no WeChat app id configured"}
		}
		return d.cfg.WeChat.Send(ctx, j.Target.OpenID, j.Notification)
	case ChannelWebhook:
		if d.cfg.Webhook == nil {
			return Outcome{Result: ResultUnconfigured, Detail: "no webhook secret configured"}
		}
		body, _ := json.Marshal(WebhookBody{Type: "notification", UserID: j.UserID, MessageID: j.MessageID,
			TargetID: j.Target.ID(), Notification: j.Notification, WeChat: weChatPart(j.Notification)})
		return d.cfg.Webhook.Send(ctx, j.Target.URL, body)
	}
	return Outcome{Result: ResultRefused, Detail: "channel: unknown"}
}

// WebhookBody is the JSON a webhook target receives.
type WebhookBody struct {
	Type         string       `json:"type"` // "notification"
	UserID       string       `json:"user_id"`
	MessageID    string       `json:"message_id,omitempty"`
	TargetID     string       `json:"target_id"`
	Notification Notification `json:"notification"`
	WeChat       *WeChatPart  `json:"wechat,omitempty"`
}

// WeChatPart carries a notification's WeChat fields to a webhook, so a
// backend can send the subscribe message itself.
type WeChatPart struct {
	TemplateID string            `json:"template_id"`
	Page       string            `json:"page,omitempty"`
	Data       map[string]string `json:"data,omitempty"`
}

func weChatPart(n Notification) *WeChatPart {
	if n.WeChatTemplateID == "" {
		return nil
	}
	return &WeChatPart{TemplateID: n.WeChatTemplateID, Page: n.WeChatPage, Data: n.WeChatData}
}
