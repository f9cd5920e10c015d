// Package eventsink posts the events of the event log to a webhook, for
// backends that cannot hold a WatchEvents stream (docs/events.md).
//
// One node of the deployment delivers at a time: it holds the sink's lease
// (gateway.Consumer; with the Redis engine a key in Redis with a TTL,
// renewed every third of it). The holder reads the log from the sink's
// committed cursor, queues the events it should post (bounded: past the
// bound an event is dropped, counted and logged, and the next delivery says
// so), and posts them one at a time, in log order, so each user's events
// arrive in order. A delivery that fails is retried with exponential
// backoff and full jitter until it succeeds; each success commits its
// cursor, so a restart (or another node taking the lease over) continues
// after the last event delivered: at least once, never out of order.
package eventsink

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"

	"pushgate/gateway"
	"pushgate/internal/webhook"
	"pushgate/server"
)

// Name is the sink's consumer name in the engine (gateway.Engine.Consumer).
const Name = "webhook"

// Defaults of Options (and of the flags that set them).
const (
	DefaultQueue      = 10_000
	DefaultTimeout    = 5 * time.Second
	DefaultRetryFirst = 250 * time.Millisecond
	DefaultRetryMax   = 30 * time.Second
	DefaultLeaseTTL   = 15 * time.Second
)

// readPage is how many logged events one read takes.
const readPage = 512

// Options configure a Sink. The zero value of a field means its default.
type Options struct {
	URL    string // where events are POSTed (required)
	Secret []byte // signs each POST (internal/webhook)
	// Kinds are the events posted (none: all).
	Kinds []gateway.EventKind
	// Queue caps the events waiting to be posted; past it new ones are
	// dropped (counted, logged, and announced by the next delivery).
	Queue int
	// Timeout bounds one POST.
	Timeout time.Duration
	// RetryFirst is the wait before the first retry of a failed POST; it
	// doubles up to RetryMax, each wait drawn at random up to its bound.
	RetryFirst, RetryMax time.Duration
	// LeaseTTL is how long the delivering node's lease lasts unrenewed:
	// another node takes over within it when the holder dies.
	LeaseTTL time.Duration
	Client   *http.Client
	Log      *slog.Logger
	// Registerer receives the sink's metrics; nil: not registered.
	Registerer prometheus.Registerer
}

// Delivery is the JSON body of each POST.
type Delivery struct {
	// Cursor is the event's cursor: a receiver that has seen it already
	// (a retry, or a redelivery after a restart) skips it.
	Cursor string `json:"cursor"`
	// Follows is the cursor of the event the sink had to post before this
	// one; "" when there is none (the first ever: a sink with no committed
	// cursor starts at the oldest event the log keeps) or it is unknown
	// (events were trimmed from the log before they were posted). A
	// receiver whose last cursor is another one missed events: Dropped of
	// them were dropped at the bounded queue, or some were trimmed.
	Follows string `json:"follows"`
	Dropped int64  `json:"dropped,omitempty"`
	// Event is the event as WatchEvents sends it (protojson).
	Event json.RawMessage `json:"event"`
}

type item struct {
	e       gateway.Event
	follows string
	dropped int64
}

// Sink delivers the log's events to a webhook.
type Sink struct {
	eng  gateway.Engine
	cons gateway.Consumer
	opt  Options
	log  *slog.Logger
	want func(gateway.Event) bool

	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	started atomic.Bool

	m struct {
		delivered, failures, dropped, gaps prometheus.Counter
		queued                             prometheus.Gauge
	}
}

// New makes a sink of eng's events; Start runs it.
func New(eng gateway.Engine, opt Options) (*Sink, error) {
	if opt.URL == "" {
		return nil, errors.New("eventsink: no URL")
	}
	if opt.Queue <= 0 {
		opt.Queue = DefaultQueue
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.RetryFirst <= 0 {
		opt.RetryFirst = DefaultRetryFirst
	}
	if opt.RetryMax <= 0 {
		opt.RetryMax = DefaultRetryMax
	}
	if opt.LeaseTTL <= 0 {
		opt.LeaseTTL = DefaultLeaseTTL
	}
	if opt.Client == nil {
		opt.Client = &http.Client{}
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	s := &Sink{eng: eng, cons: eng.Consumer(Name), opt: opt, log: opt.Log.With("component", "event_webhook"),
		stop: make(chan struct{}), done: make(chan struct{})}
	var mask uint32
	for _, k := range opt.Kinds {
		mask |= 1 << k
	}
	s.want = func(e gateway.Event) bool { return mask == 0 || mask&(1<<e.Kind) != 0 }
	s.m.delivered = prometheus.NewCounter(prometheus.CounterOpts{Name: "pushgate_event_webhook_delivered_total",
		Help: "Events posted to --event-webhook-url and acknowledged with a 2xx."})
	s.m.failures = prometheus.NewCounter(prometheus.CounterOpts{Name: "pushgate_event_webhook_failures_total",
		Help: "Event webhook POSTs that failed (error, timeout or non-2xx status) and are retried."})
	s.m.dropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "pushgate_event_webhook_dropped_total",
		Help: "Events not posted because --event-webhook-queue events were already waiting."})
	s.m.gaps = prometheus.NewCounter(prometheus.CounterOpts{Name: "pushgate_event_webhook_gaps_total",
		Help: "Times the sink's cursor was older than the event log kept (events trimmed before they were posted)."})
	s.m.queued = prometheus.NewGauge(prometheus.GaugeOpts{Name: "pushgate_event_webhook_queue",
		Help: "Events waiting to be posted to --event-webhook-url on this node."})
	if opt.Registerer != nil {
		for _, c := range []prometheus.Collector{s.m.delivered, s.m.failures, s.m.dropped, s.m.gaps, s.m.queued} {
			if err := opt.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Start runs the sink until Close.
func (s *Sink) Start() {
	if !s.started.Swap(true) {
		go s.run()
	}
}

// Close stops the sink: a POST in flight is abandoned (its event is posted
// again by whoever delivers next) and the lease is given up.
func (s *Sink) Close() {
	s.once.Do(func() { close(s.stop) })
	if s.started.Swap(true) {
		<-s.done
	} else {
		close(s.done)
	}
}

// run takes the lease whenever it is free and delivers while it holds it.
func (s *Sink) run() {
	defer close(s.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	for ctx.Err() == nil {
		held, err := s.cons.Acquire(ctx, s.opt.LeaseTTL)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("event webhook: cannot take the lease", "err", err)
		}
		if held {
			s.deliverWhileHeld(ctx)
		}
		sleep(ctx, s.opt.LeaseTTL/3)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	_ = s.cons.Release(rctx)
}

// deliverWhileHeld reads and posts until the lease is lost or ctx ends.
func (s *Sink) deliverWhileHeld(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	cursor, err := s.cons.Cursor(ctx)
	if err != nil {
		s.log.Warn("event webhook: cannot read the committed cursor", "err", err)
		return
	}
	s.log.Info("event webhook: delivering from this node", "after_cursor", cursor)
	queue := make(chan item, s.opt.Queue)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // the lease
		defer wg.Done()
		defer cancel()
		for {
			sleep(ctx, s.opt.LeaseTTL/3)
			if ctx.Err() != nil {
				return
			}
			held, err := s.cons.Acquire(ctx, s.opt.LeaseTTL)
			if !held && ctx.Err() == nil {
				s.log.Warn("event webhook: lease lost; another node delivers", "err", err)
				return
			}
		}
	}()
	go func() { defer wg.Done(); defer cancel(); s.read(ctx, cursor, queue) }()
	go func() { defer wg.Done(); defer cancel(); s.post(ctx, queue) }()
	wg.Wait()
	s.m.queued.Set(0)
}

// read follows the log from cursor ("": from the oldest event kept),
// queueing the events to post. It never waits for the
// receiver: when the queue is full the event is dropped.
func (s *Sink) read(ctx context.Context, cursor string, queue chan<- item) {
	w := s.eng.Watch(nil, 1024) // wakes the reader; the log is what it reads
	defer func() { s.eng.Unwatch(w) }()
	follows := cursor
	if cursor == "" {
		cursor = gateway.CursorZero
	}
	// pos is the sink's place in the log (with several logs, in each: the
	// cursors it posts are its own, gateway.ReadPos).
	var pos *gateway.ReadPos
	for pos == nil && ctx.Err() == nil {
		var err error
		pos, err = s.eng.EventReadPos(ctx, cursor)
		var ce *gateway.CursorError
		switch {
		case errors.As(err, &ce):
			s.m.gaps.Inc()
			s.log.Warn("event webhook: the committed cursor is of another layout of the event log; continuing with every event still kept", "cursor", cursor, "from", ce.From)
			cursor, follows = cmp.Or(ce.From, gateway.CursorZero), ""
		case errors.Is(err, gateway.ErrBadCursor):
			s.log.Warn("event webhook: the committed cursor cannot be read; continuing from the oldest kept event", "cursor", cursor, "err", err)
			cursor, follows = gateway.CursorZero, ""
		case err != nil:
			s.log.Warn("event webhook: cannot read the event log", "err", err)
			sleep(ctx, time.Second)
		}
	}
	if pos == nil {
		return
	}
	var dropped int64
	enqueue := func(e gateway.Event) {
		select {
		case queue <- item{e: e, follows: follows, dropped: dropped}:
			s.m.queued.Set(float64(len(queue)))
			if dropped > 0 {
				s.log.Warn("event webhook: queue has room again", "dropped", dropped)
			}
			dropped = 0
		default:
			if dropped == 0 {
				s.log.Warn("event webhook: queue full, dropping events", "queue", s.opt.Queue, "cursor", e.Cursor)
			}
			dropped++
			s.m.dropped.Inc()
		}
		follows = e.Cursor
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for ctx.Err() == nil {
		evs, err := s.eng.EventsAfter(ctx, pos.String(), readPage)
		var ce *gateway.CursorError
		switch {
		case errors.As(err, &ce):
			s.m.gaps.Inc()
			s.log.Warn("event webhook: events were trimmed from the log before they were posted; continuing from the oldest kept", "cursor", pos.String(), "oldest", ce.Oldest)
			if p, err := s.eng.EventReadPos(ctx, cmp.Or(ce.From, gateway.CursorZero)); err == nil {
				pos = p
			}
			follows = "" // the event before the next one is unknown: a gap for the receiver
			continue
		case err != nil:
			if ctx.Err() == nil {
				s.log.Warn("event webhook: cannot read the event log", "err", err)
			}
			sleep(ctx, time.Second)
			continue
		}
		for _, e := range evs {
			e.Cursor = pos.Advance(e)
			if s.want(e) {
				enqueue(e)
			}
		}
		if len(evs) == readPage {
			continue
		}
		// Wait for more: any live event (then take all that came), or the
		// tick (a watch that could not be registered).
		select {
		case <-ctx.Done():
			return
		case <-w.Lost:
			s.eng.Unwatch(w)
			w = s.eng.Watch(nil, 1024)
		case <-w.C:
			for len(w.C) > 0 {
				<-w.C
			}
		case <-tick.C:
		}
	}
}

// post delivers the queued events one at a time, retrying each until it is
// acknowledged, and commits its cursor.
func (s *Sink) post(ctx context.Context, queue <-chan item) {
	for {
		var it item
		select {
		case <-ctx.Done():
			return
		case it = <-queue:
			s.m.queued.Set(float64(len(queue)))
		}
		ev, err := protojson.Marshal(server.EventProto(it.e))
		if err != nil {
			s.log.Error("event webhook: cannot encode event", "err", err)
			continue
		}
		body, _ := json.Marshal(Delivery{Cursor: it.e.Cursor, Follows: it.follows, Dropped: it.dropped, Event: ev})
		wait := s.opt.RetryFirst
		for attempt := 1; ; attempt++ {
			err := s.send(ctx, body)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.m.failures.Inc()
			if attempt == 1 || attempt%10 == 0 {
				s.log.Warn("event webhook: delivery failed; retrying", "cursor", it.e.Cursor, "attempt", attempt, "err", err)
			}
			sleep(ctx, rand.N(wait)+1)
			wait = min(2*wait, s.opt.RetryMax)
		}
		s.m.delivered.Inc()
		if ok, err := s.cons.Commit(ctx, it.e.Cursor); !ok {
			if ctx.Err() == nil {
				s.log.Warn("event webhook: cursor not committed (lease lost?)", "cursor", it.e.Cursor, "err", err)
			}
			return
		}
	}
}

// send POSTs body once, signed.
func (s *Sink) send(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.opt.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pushgate")
	req.Header.Set(webhook.Header, webhook.Sign(s.opt.Secret, time.Now(), body))
	resp, err := s.opt.Client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
