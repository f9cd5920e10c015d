package notify

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pushgate/gateway"
)

// Store is what the Escalator needs from the engine: targets and pending
// escalations (gateway.NotifyStore), and a way to report results to every
// node's WatchEvents streams (Upstream).
type Store interface {
	gateway.NotifyStore
	Upstream(ctx context.Context, e gateway.Event) error
}

// EscalatorConfig bounds an Escalator. The zero value of a field means
// its default.
type EscalatorConfig struct {
	MaxTargets int           // push targets per user (default DefaultMaxTargets)
	MaxPending int           // escalations waiting, cluster-wide (default DefaultMaxPending)
	Poll       time.Duration // how often each node claims due escalations (default 1s)
	Timeout    time.Duration // one store call made off a request (default 5s)
	Egress     Egress        // what targets may name
}

// Defaults of EscalatorConfig (and of the flags that set them).
const (
	DefaultMaxTargets = 10
	DefaultMaxPending = 100000
)

// Spec is a message's escalation, as a send asks for it.
type Spec struct {
	Notification Notification
	After        time.Duration // 0: only recipients offline at send time
	Channels     []string      // empty: every target
	Deadline     time.Time     // retries end (the message's expiry)
}

// Escalator notifies the recipients of a message who are not reached:
// offline ones at once, online ones that do not acknowledge within After
// through the store's pending escalations, claimed by whichever node polls
// first. It hands each notification to the Dispatcher, removes a target
// the provider reports gone, and reports every result on WatchEvents.
type Escalator struct {
	store Store
	disp  *Dispatcher
	cfg   EscalatorConfig
	log   *slog.Logger

	escalations *prometheus.CounterVec // by result
}

// NewEscalator makes an Escalator; call Run to fire due escalations.
func NewEscalator(store Store, disp *Dispatcher, cfg EscalatorConfig, log *slog.Logger, reg prometheus.Registerer) *Escalator {
	if cfg.MaxTargets <= 0 {
		cfg.MaxTargets = DefaultMaxTargets
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	x := &Escalator{store: store, disp: disp, cfg: cfg, log: log,
		escalations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pushgate_escalations_total",
			Help: "Message escalations, by result: scheduled (kept in the engine until due: at once for a recipient offline at send time, after `after` for one online), fired, cancelled (acked first), no_target, unscheduled (refused: --notify-max-pending, or the engine unavailable)."},
			[]string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(x.escalations, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushgate_escalations_pending",
			Help: "Escalations waiting to fire (offline recipients until the next poll, online ones for their after), cluster-wide (--notify-max-pending bounds them; -1: the engine cannot say now)."},
			func() float64 { return float64(store.PendingEscalations()) }))
	}
	return x
}

// MaxTargets is the per-user bound on targets.
func (x *Escalator) MaxTargets() int { return x.cfg.MaxTargets }

// AddTarget validates t and keeps it as one of userID's targets,
// returning its id. gateway.ErrTooManyTargets past the bound.
func (x *Escalator) AddTarget(ctx context.Context, userID string, t Target) (string, error) {
	if err := t.Validate(); err != nil {
		return "", err
	}
	if err := x.cfg.Egress.Check(t); err != nil {
		return "", err
	}
	b := t.Encode()
	if len(b) > MaxTargetBytes {
		return "", fmt.Errorf("target: %d bytes encoded, over the limit of %d", len(b), MaxTargetBytes)
	}
	id := t.ID()
	return id, x.store.AddTarget(ctx, userID, id, b, x.cfg.MaxTargets)
}

// AddWebPush keeps a subscription a client handed over
// (PushSubscription.toJSON()) as one of userID's targets. Its endpoint
// must be https: pushgate posts to it, and the client, not the backend,
// chose it. Validation errors name the field ("subscription.keys.auth: ...").
func (x *Escalator) AddWebPush(ctx context.Context, userID string, subscription []byte) (string, error) {
	var s Subscription
	if err := json.Unmarshal(subscription, &s); err != nil {
		return "", errors.New("subscription: not a PushSubscription JSON object")
	}
	if err := s.Validate(); err != nil {
		return "", fmt.Errorf("subscription.%v", err)
	}
	if err := x.cfg.Egress.Check(Target{Channel: ChannelWebPush, WebPush: &s}); err != nil {
		return "", fmt.Errorf("subscription.%s", strings.TrimPrefix(err.Error(), "webpush."))
	}
	if !strings.HasPrefix(s.Endpoint, "https://") {
		return "", errors.New("subscription.endpoint: must be https (a push service's URL)")
	}
	return x.AddTarget(ctx, userID, Target{Channel: ChannelWebPush, WebPush: &s})
}

// RemoveTarget removes userID's target id.
func (x *Escalator) RemoveTarget(ctx context.Context, userID, id string) (bool, error) {
	return x.store.RemoveTarget(ctx, userID, id)
}

// Targets returns userID's targets, in id order.
func (x *Escalator) Targets(ctx context.Context, userID string) ([]Target, error) {
	st, err := x.store.Targets(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]Target, 0, len(st))
	for _, s := range st {
		t, err := DecodeTarget(s.Data)
		if err != nil {
			x.log.Error("stored push target unreadable", "user", userID, "target", s.ID, "err", err)
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

// escData is a Spec as the store keeps it.
type escData struct {
	Title      string            `json:"t"`
	Body       string            `json:"b,omitempty"`
	URL        string            `json:"u,omitempty"`
	Icon       string            `json:"i,omitempty"`
	Tag        string            `json:"g,omitempty"`
	Urgency    string            `json:"y,omitempty"`
	TemplateID string            `json:"wt,omitempty"`
	Page       string            `json:"wp,omitempty"`
	Data       map[string]string `json:"wd,omitempty"`
	Channels   []string          `json:"c,omitempty"`
	Deadline   int64             `json:"d"` // unix ms
}

func encodeSpec(s Spec) []byte {
	n := s.Notification
	b, _ := json.Marshal(escData{Title: n.Title, Body: n.Body, URL: n.URL, Icon: n.Icon, Tag: n.Tag, Urgency: n.Urgency,
		TemplateID: n.WeChatTemplateID, Page: n.WeChatPage, Data: n.WeChatData, Channels: s.Channels, Deadline: s.Deadline.UnixMilli()})
	return b
}

func decodeSpec(b []byte) (Spec, error) {
	var d escData
	if err := json.Unmarshal(b, &d); err != nil {
		return Spec{}, err
	}
	return Spec{Notification: Notification{Title: d.Title, Body: d.Body, URL: d.URL, Icon: d.Icon, Tag: d.Tag, Urgency: d.Urgency,
		WeChatTemplateID: d.TemplateID, WeChatPage: d.Page, WeChatData: d.Data}, Channels: d.Channels, Deadline: time.UnixMilli(d.Deadline)}, nil
}

// Escalate applies spec to a send's recipients. Every escalation goes
// through the store's pending escalations, claimed by whichever node polls
// first: those of recipients offline at send time due at once (fired
// whatever becomes of the message), those of online recipients due after
// spec.After unless they acknowledge first. So a node that stops right
// after the send leaves them to the others. It never fails the send: what
// cannot be scheduled is counted and reported on WatchEvents.
func (x *Escalator) Escalate(ctx context.Context, sent gateway.Sent, spec Spec) {
	data := encodeSpec(spec)
	for _, d := range sent.Users {
		id := cmp.Or(d.MessageID, sent.ID) // the id this user's copy got
		esc := gateway.Escalation{UserID: d.UserID, MessageID: id, Due: sent.Time, Data: data}
		switch {
		case !d.Online:
		case spec.After > 0:
			esc.Due, esc.IfUnacked = sent.Time.Add(spec.After), true
		default:
			continue
		}
		if err := x.store.ScheduleEscalation(ctx, esc, x.cfg.MaxPending); err != nil {
			x.escalations.WithLabelValues("unscheduled").Inc()
			detail := err.Error()
			if errors.Is(err, gateway.ErrTooManyEscalations) {
				detail += " (--notify-max-pending)"
			}
			x.report(d.UserID, id, "", "", ResultDropped, "not scheduled: "+detail)
			continue
		}
		x.escalations.WithLabelValues("scheduled").Inc()
	}
}

// Run claims due escalations every Poll until ctx ends, and fires those
// whose message is still unacknowledged.
func (x *Escalator) Run(ctx context.Context) {
	t := time.NewTicker(x.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			cctx, cancel := context.WithTimeout(ctx, x.cfg.Timeout)
			cs, err := x.store.ClaimEscalations(cctx, time.Now(), 100)
			cancel()
			if err != nil {
				x.log.Warn("claiming due escalations failed; trying again", "err", err)
				break
			}
			for _, c := range cs {
				if c.Cancelled {
					x.escalations.WithLabelValues("cancelled").Inc()
					continue
				}
				spec, err := decodeSpec(c.Data)
				if err != nil {
					x.log.Error("stored escalation unreadable", "user", c.UserID, "message", c.MessageID, "err", err)
					continue
				}
				x.escalations.WithLabelValues("fired").Inc()
				x.fire(ctx, c.UserID, c.MessageID, spec)
			}
			if len(cs) < 100 {
				break
			}
		}
	}
}

// fire sends spec's notification to userID's targets (those of its
// channels), each through the dispatcher.
func (x *Escalator) fire(ctx context.Context, userID, messageID string, spec Spec) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), x.cfg.Timeout)
	targets, err := x.Targets(cctx, userID)
	cancel()
	if err != nil {
		x.report(userID, messageID, "", "", ResultFailed, "reading the user's push targets: "+err.Error())
		return
	}
	n := 0
	for _, t := range targets {
		if len(spec.Channels) > 0 && !slices.Contains(spec.Channels, t.Channel) {
			continue
		}
		n++
		id := t.ID()
		x.disp.Submit(Job{UserID: userID, MessageID: messageID, Target: t, Notification: spec.Notification, Deadline: spec.Deadline,
			Done: func(o Outcome) {
				if o.Result == ResultGone {
					ctx, cancel := context.WithTimeout(context.Background(), x.cfg.Timeout)
					if _, err := x.store.RemoveTarget(ctx, userID, id); err != nil {
						x.log.Warn("gone push target not removed", "user", userID, "target", id, "err", err)
					}
					cancel()
				}
				x.report(userID, messageID, t.Channel, id, o.Result, o.Detail)
			}})
	}
	if n == 0 {
		x.escalations.WithLabelValues("no_target").Inc()
		x.report(userID, messageID, "", "", ResultNoTarget, "the user has no push target for the message's channels")
	}
}

// report records an escalation's result in the message's receipt and puts
// it on every node's WatchEvents streams.
func (x *Escalator) report(userID, messageID, channel, targetID string, r Result, detail string) {
	ctx, cancel := context.WithTimeout(context.Background(), x.cfg.Timeout)
	defer cancel()
	res := gateway.EscalationResult{Channel: channel, TargetID: targetID, Result: string(r), Detail: detail}
	if err := x.store.RecordEscalationResult(ctx, userID, messageID, res); err != nil {
		x.log.Warn("escalation result not recorded in the receipt", "user", userID, "message", messageID, "result", r, "err", err)
	}
	err := x.store.Upstream(ctx, gateway.Event{Kind: gateway.EventMessageEscalated, Time: time.Now(), UserID: userID, MessageID: messageID,
		Escalation: &res})
	if err != nil {
		x.log.Warn("escalation result not reported", "user", userID, "message", messageID, "result", r, "err", err)
	}
}
