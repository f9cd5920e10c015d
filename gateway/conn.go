package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"pushgate/gateway/limit"
)

// rawPong answers a raw client's application-level "ping".
var rawPong = frame{data: []byte(`{"type":"pong"}`), typ: websocket.MessageText}

// closeWriteError: a write to the socket failed (the peer went away). Used
// for accounting; no close frame can be sent.
var closeWriteError = CloseReason{Code: websocket.StatusAbnormalClosure, Text: "", Label: "write_error", Reconnect: true}

// Conn is one client WebSocket connection.
//
// Concurrency: enqueue and closeWith are safe to call from any goroutine and
// never block on the network. The read loop runs on a goroutine of its own.
// The write loop runs on a goroutine that exists only while there is
// something to write, and the heartbeat is a place on one of the hub's
// schedules (heartbeat.go), so an idle connection costs one goroutine (its
// reader, parked on the socket with a minimal stack) and no timers or
// buffers beyond the socket's.
type Conn struct {
	// Immutable after construction.
	id        uint64
	userID    string
	remote    string
	opened    time.Time
	hub       *Hub
	envelope  bool     // speaks the envelope protocol (PROTOCOL.md), not raw
	topicList []string // topics joined at connect, for the hello

	// writeFn is c.writeLoop, bound once: "go c.writeLoop()" would allocate
	// a closure on every start of the write loop, that is per delivery.
	writeFn func()

	// Set once by attach, before ready; read-only after. Only the write loop
	// (which starts after ready), the heartbeat and the read loop use them.
	ws *websocket.Conn
	nc *sock         // the hijacked socket: data frames are written here, and deadlines set
	br *bufio.Reader // the library's buffered reader of nc; the read loop asks it, under mu and while !closing, whether bytes wait in it
	// The client sent bytes right behind its handshake: websocket.Accept
	// keeps them outside br's buffer (in the reader it reads from), where
	// only its first read takes them, so the read loop does not wait for
	// the socket before it. Cleared by the read loop, under mu.
	early bool

	// Guarded by mu.
	mu      sync.Mutex
	q       sendQueue // frames waiting for the write loop (and held while joining)
	ready   bool      // the handshake is done; until then frames only queue
	writing bool      // a write loop goroutine is running (or finishing the close)
	closing bool      // set once: no more enqueues; reason says why
	parked  bool      // the read loop waits in the hub's poller, with no goroutine (readpoll.go)
	reason  CloseReason
	expiry  *time.Timer         // token expiry; nil without auth
	topics  map[string]struct{} // subscriptions (the registry is in Hub.topicShards)
	rules   []string            // topics this connection may join (from its token); nil: any
	grants  grants              // what it may publish (from its token; publish.go)

	// The heartbeat (heartbeat.go). pingSent is the Hub.clock at which the
	// ping still waiting for a pong went out, 0 when none waits: set by
	// the heartbeat schedule, cleared by a pong. hbOn, hbSlot and hbPos
	// place the connection on its schedule's wheel, guarded by the
	// schedule's mu.
	pingSent      atomic.Int64
	hbOn          bool
	hbSlot, hbPos int32

	// The join protocol (Hub.register, doc.go).
	joining bool       // guarded by mu: registered, waiting for the engine's replay; pushes are held
	pending []*Message // guarded by mu: held while joining, counted in q's caps
	// topicHold: the messages of the topics with history this connection
	// is joining (Hub.joinTopic), held until the topic's replay is queued,
	// counted in q's caps. Guarded by mu.
	topicHold map[string][]*Message
	// topicLast: per topic with history, the highest id queued on this
	// connection (or its position when it joined): a message of the topic
	// at or below it is one it has (an engine catching up after a lost
	// subscription delivers kept messages again). Guarded by mu.
	topicLast map[string]string
	last      string // guarded by the user's shard mu: the highest stored message id queued (or replayed)
	joinSeq   string // guarded by the user's shard mu: the last id handed out when the connection joined
	epoch     string // guarded by the user's shard mu: the engine epoch it joined in

	// The client's rate limits, made when it first sends a frame they
	// count: the frames it may send (upstreamLimit: a connection that
	// only answers the heartbeat needs only this one), and the rest
	// (limits).
	upstream atomic.Pointer[limit.Bucket]
	lim      atomic.Pointer[connLimits]
}

// connLimits are a connection's limits on the message ids it may
// acknowledge and on its publishes (publish.go); a nil Bucket is no limit.
// A Bucket is safe for concurrent use.
type connLimits struct {
	ackIDs  *limit.Bucket
	publish *limit.Bucket
}

// limits returns c's limits on acknowledgements and publishes, made on
// first use. Buckets start full, so one made at the first frame allows
// what one made at the handshake would have.
func (c *Conn) limits() *connLimits {
	if l := c.lim.Load(); l != nil {
		return l
	}
	cfg := &c.hub.cfg
	l := &connLimits{ackIDs: newAckBucket(cfg), publish: newPublishBucket(cfg)}
	if c.lim.CompareAndSwap(nil, l) {
		return l
	}
	return c.lim.Load()
}

// upstreamLimit returns the bucket of the frames c's client may send (data
// and control frames), made on first use; nil: no limit.
func (c *Conn) upstreamLimit() *limit.Bucket {
	if b := c.upstream.Load(); b != nil {
		return b
	}
	b := newUpstreamBucket(&c.hub.cfg)
	if b == nil || c.upstream.CompareAndSwap(nil, b) {
		return b
	}
	return c.upstream.Load()
}

func (c *Conn) idString() string { return "c" + strconv.FormatUint(c.id, 10) + "-" + c.hub.tag }

// enqueueResult says what enqueue did with a frame.
type enqueueResult uint8

const (
	queued     enqueueResult = iota
	held                     // the connection is joining: held until its replay is queued (Hub.register)
	closing                  // the connection is closing; dropped
	skipped                  // a topic history message the connection has already
	overflowed               // over the queue caps: the caller must closeWith(CloseSlowConsumer)
)

// sendQueue is a connection's queue of frames for its write loop, within
// the caps QueueMessages and QueueBytes. Guarded by the connection's mu.
type sendQueue struct {
	frames []frame
	spare  []frame   // the write loop's last batch, reused as the next queue
	bytes  int       // payload bytes in frames (and held while joining)
	since  time.Time // when the oldest queued frame was queued
}

// fits reports whether a frame of size bytes may join n frames already
// waiting: a frame is always accepted when nothing waits, whatever its size.
func (q *sendQueue) fits(n, size int, cfg *Config) bool {
	return n == 0 || n < cfg.QueueMessages && q.bytes+size <= cfg.QueueBytes
}

// add appends f with no cap check.
func (q *sendQueue) add(f frame) {
	if len(q.frames) == 0 {
		q.since = time.Now()
	}
	q.frames = append(q.frames, f)
	q.bytes += f.size()
}

// take hands the queued frames to the write loop and starts an empty queue.
func (q *sendQueue) take() (batch []frame, since time.Time) {
	batch, since = q.frames, q.since
	q.frames, q.spare, q.bytes = q.spare[:0], nil, 0
	return batch, since
}

// reuse gives a written batch's array back, unless a burst made it large
// (idle connections stay small).
func (q *sendQueue) reuse(batch []frame) {
	clear(batch)
	if cap(batch) <= 64 {
		q.spare = batch[:0]
	}
}

// drop empties the queue and returns how many frames it dropped.
func (q *sendQueue) drop() int {
	n := len(q.frames)
	clear(q.frames)
	q.frames, q.bytes = q.frames[:0], 0
	return n
}

// enqueue queues f for writing. It never blocks on the network and never
// closes the connection itself (callers may hold a shard lock, which
// closing needs): on overflow the caller closes it as a slow consumer.
func (c *Conn) enqueue(f frame) enqueueResult {
	r, start := c.push(f)
	if start {
		go c.writeFn()
	}
	return r
}

// push is enqueue without starting the write loop: when it returns true the
// caller must start it (go c.writeFn()). A fan-out queues on every target
// first and starts the write loops after, so that the goroutine doing the
// fan-out is not queued behind thousands of new write loops on a busy core.
func (c *Conn) push(f frame) (enqueueResult, bool) {
	cfg := &c.hub.cfg
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		c.hub.metrics.droppedClosing.Inc()
		return closing, false
	}
	// A message a topic's history keeps (live topics' have no ttl), on a
	// topic the connection has joined: queued unless it has it already.
	kept := false
	if f.msg != nil && f.msg.Topic != "" && f.msg.TTL > 0 {
		if last, ok := c.topicLast[f.msg.Topic]; ok {
			if f.msg.ID <= last {
				c.mu.Unlock()
				return skipped, false
			}
			kept = true
		}
	}
	if !kept && f.msg != nil && f.msg.Topic != "" && c.topicHold != nil {
		if hold, ok := c.topicHold[f.msg.Topic]; ok {
			// The topic's subscribed frame and replay go first
			// (Hub.joinTopic).
			if !c.q.fits(len(hold)+len(c.q.frames), f.size(), cfg) {
				c.mu.Unlock()
				c.hub.metrics.droppedSlow.Inc()
				return overflowed, false
			}
			c.topicHold[f.msg.Topic] = append(hold, f.msg)
			c.q.bytes += f.size()
			c.mu.Unlock()
			return held, false
		}
	}
	if !kept && c.joining && f.msg != nil {
		// The hello and the replay go first (Hub.register). What is held
		// counts against the queue's caps.
		if !c.q.fits(len(c.pending), f.size(), cfg) {
			c.mu.Unlock()
			c.hub.metrics.droppedSlow.Inc()
			return overflowed, false
		}
		c.pending = append(c.pending, f.msg)
		c.q.bytes += f.size()
		c.mu.Unlock()
		return held, false
	}
	if !c.q.fits(len(c.q.frames), f.size(), cfg) {
		c.mu.Unlock()
		c.hub.metrics.droppedSlow.Inc() // this frame; closeWith counts the queued ones
		return overflowed, false
	}
	if kept {
		c.topicLast[f.msg.Topic] = f.msg.ID
	}
	c.q.add(f)
	start := c.startWriterLocked()
	c.mu.Unlock()
	return queued, start
}

// send queues a control frame and closes the connection if that overflows.
func (c *Conn) send(f frame) {
	if c.enqueue(f) == overflowed {
		c.closeWith(CloseSlowConsumer)
	}
}

// closeWith starts closing the connection for reason r. Only the first call
// has an effect. The connection leaves the online list at once; the close
// frame is written by the write loop. On CloseGoingAway what is already queued
// is written first; for every other reason it is dropped (and counted).
// Callers must not hold a shard lock.
func (c *Conn) closeWith(r CloseReason) { c.closeOnce(r) }

// closeOnce is closeWith, reporting whether this call started the close.
func (c *Conn) closeOnce(r CloseReason) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing = true
	c.reason = r
	if c.expiry != nil {
		c.expiry.Stop()
	}
	var dropped int
	if r.Code != CloseGoingAway.Code {
		dropped = c.q.drop()
	}
	var nc *sock
	if c.ready {
		nc = c.nc
	}
	start := c.startWriterLocked()
	c.mu.Unlock()

	c.hub.heartbeats.remove(c)
	c.hub.remove(c)
	switch r.Code {
	case CloseSlowConsumer.Code:
		if r.writeTimeout {
			c.hub.metrics.slowWrite.Inc()
		} else {
			c.hub.metrics.slowQueue.Inc()
		}
		c.hub.metrics.droppedSlow.Add(float64(dropped))
		// Unblock a write stuck on a peer that does not read, and bound the
		// close frame's write.
		if nc != nil {
			_ = nc.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
		}
	case CloseKicked.Code:
		c.hub.metrics.droppedKicked.Add(float64(dropped))
	default:
		c.hub.metrics.droppedClosing.Add(float64(dropped))
	}
	if start {
		go c.writeFn()
	}
	return true
}

// startWriterLocked reports whether the caller must start the write loop,
// and marks it started. Called with mu held, after queueing or closing.
func (c *Conn) startWriterLocked() bool {
	if !c.ready || c.writing || (len(c.q.frames) == 0 && !c.closing) {
		return false
	}
	c.writing = true
	return true
}

// attach hands the connection its socket once the handshake is done. Frames
// queued (and a close requested) before then are written now.
func (c *Conn) attach(ws *websocket.Conn, nc *sock, br *bufio.Reader, early bool) {
	c.mu.Lock()
	c.ws, c.nc, c.br, c.early = ws, nc, br, early
	c.ready = true
	start := c.startWriterLocked()
	c.mu.Unlock()
	if start {
		go c.writeFn()
	}
}

// closeWriteTimeout bounds the write of a close frame to a peer that may not
// be reading.
const closeWriteTimeout = time.Second

// maxBatchFrame caps one frame that joins several envelopes.
const maxBatchFrame = 256 << 10

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// writeLoop writes queued frames until the queue is empty, then exits; if the
// connection is closing it writes the close frame instead of exiting.
func (c *Conn) writeLoop() {
	for {
		if c.nc.hasPending() {
			// A non-blocking first write (writeNow) left part of its frames.
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.hub.cfg.WriteTimeout))
			err := c.nc.flushPending()
			_ = c.nc.SetWriteDeadline(time.Time{})
			if err != nil {
				c.writeFailed(err)
			}
		}
		c.mu.Lock()
		if len(c.q.frames) == 0 {
			if !c.closing {
				c.writing = false
				c.mu.Unlock()
				return
			}
			r := c.reason
			c.mu.Unlock()
			c.finish(r)
			c.wake() // a parked read loop ends now, the socket closed
			return
		}
		batch, since := c.q.take()
		c.mu.Unlock()

		_ = c.nc.SetWriteDeadline(time.Now().Add(c.hub.cfg.WriteTimeout))
		acks, err := c.writeQueued(batch, since, false)
		_ = c.nc.SetWriteDeadline(time.Time{})
		if len(acks) > 0 {
			c.ackWritten(acks)
		}
		if err != nil {
			c.writeFailed(err)
		}
		c.mu.Lock()
		c.q.reuse(batch)
		c.mu.Unlock()
	}
}

// writeNow is the write loop's first round, run by the goroutine that
// started it (a delivery, once everything is queued and its locks are
// released) without blocking: what
// is queued is written with one non-blocking write(2). Only when the socket
// does not take it all, more was queued meanwhile, or the connection is
// closing does a write loop goroutine take over; otherwise a delivery costs
// no goroutine and no deadline.
func (c *Conn) writeNow() {
	if !c.nc.canTry() {
		go c.writeFn()
		return
	}
	c.mu.Lock()
	if len(c.q.frames) == 0 || c.closing {
		c.mu.Unlock()
		go c.writeFn()
		return
	}
	batch, since := c.q.take()
	c.mu.Unlock()
	acks, err := c.writeQueued(batch, since, true)
	if len(acks) > 0 {
		go c.ackWritten(acks)
	}
	c.mu.Lock()
	c.q.reuse(batch)
	c.mu.Unlock()
	if err != nil {
		// Closing calls the engine, which may hold its locks around
		// Deliver: the write loop closes.
		go func() {
			c.writeFailed(err)
			c.writeLoop()
		}()
		return
	}
	c.mu.Lock()
	if len(c.q.frames) == 0 && !c.closing && !c.nc.hasPending() {
		c.writing = false
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	go c.writeFn()
}

// writeQueued writes a batch taken from the queue (writeBatch) and counts
// it.
func (c *Conn) writeQueued(batch []frame, since time.Time, nonblock bool) (acks []string, err error) {
	written, acks, err := c.writeBatch(batch, nonblock)
	if err == nil {
		// How long the batch's oldest frame waited to be written.
		c.hub.metrics.writeLatency.Observe(time.Since(since).Seconds())
	} else {
		c.hub.metrics.droppedWrite.Add(float64(len(batch) - written))
	}
	return acks, err
}

// writeFailed closes the connection after a failed write: as a slow
// consumer if the write timed out.
func (c *Conn) writeFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.closeWith(closeSlowWrite)
	} else {
		c.closeWith(closeWriteError)
	}
}

// ackWritten records stored messages written to a raw client: a raw client
// cannot acknowledge, so written counts as delivered, and a reload never
// shows the same order twice.
func (c *Conn) ackWritten(ids []string) { c.hub.ack(c, ids, true) }

// writeBatch writes frames in order and returns how many it wrote. It
// encodes the frames itself and writes as many as fit in one buffer with
// one write (frameWriter). An envelope connection gets all the pending
// envelopes of a backlog in one frame (separated by "\n"); a raw connection
// gets one frame per message, as sent.
//
// It returns the stored messages written to a raw client, for the caller to
// acknowledge (ackWritten). nonblock writes with tryWrite.
func (c *Conn) writeBatch(batch []frame, nonblock bool) (int, []string, error) {
	w := newFrameWriter(c.nc, c.hub.metrics)
	w.nonblock = nonblock
	defer w.release()
	if tr := c.hub.tr; tr != nil {
		start := tr.writing(batch)
		defer func() { tr.wrote(c, batch[:w.written], start) }()
	}
	var acks []string
	for i := 0; i < len(batch); {
		if c.envelope && i+1 < len(batch) && batch[i].typ != msgPing && batch[i+1].typ != msgPing {
			// Join this frame and the ones behind it (up to a ping, which
			// is a control frame of its own).
			bp := batchBufs.Get().(*[]byte)
			buf := (*bp)[:0]
			n, msgs := 0, 0
			for ; i < len(batch) && batch[i].typ != msgPing && (n == 0 || len(buf)+len(c.bytes(&batch[i])) < maxBatchFrame); i++ {
				if n > 0 {
					buf = append(buf, '\n')
				}
				buf = append(buf, c.bytes(&batch[i])...)
				n++
				if batch[i].msg != nil {
					msgs++
				}
			}
			err := w.add(websocket.MessageText, buf, n, msgs)
			*bp = buf
			batchBufs.Put(bp)
			if err != nil {
				return w.written, nil, err
			}
			continue
		}
		f := &batch[i]
		typ, data, msgs := f.typ, f.data, 0
		if f.msg != nil {
			msgs = 1
			if c.envelope {
				typ, data = websocket.MessageText, f.msg.envelope()
			} else {
				typ, data = f.msg.raw()
				if f.msg.stored {
					acks = append(acks, f.msg.ID)
				}
			}
		}
		if err := w.add(typ, data, 1, msgs); err != nil {
			return w.written, nil, err
		}
		i++
	}
	if err := w.flush(); err != nil {
		return w.written, nil, err
	}
	return len(batch), acks, nil
}

// bytes returns an envelope connection's encoding of f.
func (c *Conn) bytes(f *frame) []byte {
	if f.msg != nil {
		return f.msg.envelope()
	}
	return f.data
}

// finish ends the connection: a close frame (and the close handshake, bounded
// by the library's timeouts) where the peer can still hear one, or just the
// socket's close.
func (c *Conn) finish(r CloseReason) {
	switch r.Code {
	case CloseHeartbeatTimeout.Code, closeWriteError.Code, closeClient.Code:
		_ = c.ws.CloseNow()
	default:
		_ = c.nc.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
		_ = c.ws.Close(r.Code, r.Text)
	}
}

// setExpiry closes the connection with CloseTokenExpired at t, unless a
// later setExpiry (a token refresh) moves it.
func (c *Conn) setExpiry(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	if c.expiry == nil {
		c.expiry = time.AfterFunc(time.Until(t), func() { c.closeWith(CloseTokenExpired) })
		return
	}
	c.expiry.Reset(time.Until(t))
}

// readLoop reads client frames until the connection ends or the loop
// parks (readpoll.go), and reports which: true when it parked. It runs on
// a goroutine of its own (serveReads).
//
// While nothing is buffered it looks at the socket before calling the
// library's Read: with no bytes there it parks, or where it cannot park
// it waits for the socket to become readable (sock.waitReadable), a few
// calls deep, where inside Read it would be parked deep enough to need a
// 4 KiB stack, which the garbage collector cannot shrink. The empty pongs
// that answer the heartbeat are taken there too (the library would read
// them inside Read and wait deep for the next frame). Once the
// connection is closing, the library may read the socket itself (the
// close handshake, from the write loop), so the loop goes straight to
// Read, which takes the library's read lock.
func (c *Conn) readLoop() (parked bool) {
	for {
		c.mu.Lock()
		wait := !c.closing && c.br.Buffered() == 0 && !c.early
		c.early = false
		c.mu.Unlock()
		if wait {
			r := c.nc.peek()
			if r == nothingYet {
				if c.park() {
					return true
				}
				c.mu.Lock()
				closing := c.closing
				c.mu.Unlock()
				if closing {
					continue // to Read, which the close handshake needs
				}
				r = c.nc.waitReadable()
			}
			if r == pongRead {
				c.onPong(context.Background(), nil)
				continue
			}
		}
		typ, data, err := c.ws.Read(context.Background())
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) {
				c.closeWith(CloseMessageTooBig) // the library already sent 1009
			}
			c.closeWith(closeClient)
			return false
		}
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if closing {
			continue // read only to finish the close handshake
		}
		if !c.upstreamLimit().Allow() {
			c.rateLimited()
			continue // keep reading to complete the close handshake
		}
		if typ == websocket.MessageText && !utf8.Valid(data) {
			c.closeWith(CloseInvalidFrame)
			continue
		}
		if c.envelope {
			c.handleOp(typ, data)
		} else {
			c.handleRaw(typ, data)
		}
	}
}

// rateLimited closes the connection with 4002 (once; frames that still
// arrive while it closes are counted too).
func (c *Conn) rateLimited() {
	c.mu.Lock()
	first := !c.closing
	c.mu.Unlock()
	if first {
		c.hub.metrics.rateLimited.Inc()
		c.closeWith(CloseRateLimited)
	}
}

// handleRaw serves a raw client's frame: "ping" gets a pong; anything else
// goes to WatchEvents if the user may send upstream, and is counted.
func (c *Conn) handleRaw(typ websocket.MessageType, data []byte) {
	m := c.hub.metrics
	if typ == websocket.MessageText && isPing(data) {
		m.pingsIn.Inc()
		c.send(rawPong)
		return
	}
	m.otherIn.Inc()
	if c.hub.upstreamAllowed(c.userID, "") {
		kind := KindText
		if typ == websocket.MessageBinary {
			kind = KindBinary
		}
		if err := c.hub.upstream(Event{Kind: EventClientMessage, UserID: c.userID, ConnID: c.idString(), DataKind: kind, Data: data}); err != nil {
			m.upstreamRefused.Inc() // a raw client has no reply to get
			return
		}
		m.upstream.Inc()
	} else {
		m.upstreamRefused.Inc()
	}
}

// handleOp serves an envelope client's frame (PROTOCOL.md).
func (c *Conn) handleOp(typ websocket.MessageType, data []byte) {
	m := c.hub.metrics
	if typ == websocket.MessageText && bytes.Equal(bytes.TrimSpace(data), []byte("ping")) {
		m.pingsIn.Inc()
		c.send(envPong)
		return
	}
	if typ != websocket.MessageText {
		m.otherIn.Inc()
		c.send(errorFrame(nil, "bad_request", "binary frames are not part of the envelope protocol"))
		return
	}
	op, err := parseClientOp(data)
	if err != nil {
		m.otherIn.Inc()
		c.send(errorFrame(op.Ref, "bad_request", err.Error()))
		return
	}
	switch op.Op {
	case "ping":
		m.pingsIn.Inc()
		c.send(pongFrame(op.Ref))
	case "ack":
		m.acksIn.Inc()
		c.opAck(op)
	case "subscribe":
		m.otherIn.Inc()
		c.opSubscribe(op)
	case "unsubscribe":
		m.otherIn.Inc()
		c.opUnsubscribe(op)
	case "refresh":
		m.otherIn.Inc()
		c.refresh(op)
	case "send":
		m.otherIn.Inc()
		c.opSend(op)
	case "push_subscribe":
		m.otherIn.Inc()
		c.opPushSubscribe(op)
	case "publish", "direct":
		m.otherIn.Inc()
		c.opPublish(op)
	case "presence":
		m.otherIn.Inc()
		c.opPresence(op)
	default:
		m.otherIn.Inc()
		c.send(errorFrame(op.Ref, "unknown_op", "unknown op "+strconv.Quote(op.Op)))
	}
}

// opAck acknowledges message ids (PROTOCOL.md, "ack"). Every id must be a
// message id; a repeated id counts once; of more ids than an inbox holds
// only the newest count (older ones cannot be waiting in it). Each id counts
// against the connection's ack budget (ackIDs): past it the connection is
// closed with 4002, as for frames over the rate.
func (c *Conn) opAck(op clientOp) {
	ids := op.IDs
	if op.ID != "" {
		ids = append(ids, op.ID)
	}
	if len(ids) == 0 || len(ids) > maxAckIDs {
		c.send(errorFrame(op.Ref, "bad_request", "ack needs \"id\" or 1 to 1000 \"ids\""))
		return
	}
	for _, id := range ids {
		if !ValidID(id) {
			c.send(errorFrame(op.Ref, "bad_request", "ack ids must be message ids (26 characters of Crockford base32)"))
			return
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if n := c.hub.cfg.InboxMessages; len(ids) > n {
		ids = ids[len(ids)-n:] // ids sort by time: the newest
	}
	if !c.limits().ackIDs.AllowN(len(ids)) {
		c.rateLimited()
		return
	}
	if err := c.hub.ack(c, ids, false); err != nil {
		c.send(errorFrame(op.Ref, "unavailable", "acks cannot be recorded now; send them again"))
		return
	}
	if len(op.Ref) > 0 {
		c.send(replyFrame("acked", op.Ref, ""))
	}
}

// opSubscribe joins a topic (PROTOCOL.md, "subscribe"), after the
// client's position in it when it gives one ("last_id", "epoch").
func (c *Conn) opSubscribe(op clientOp) {
	if err := ValidTopic(op.Topic); err != nil {
		c.send(errorFrame(op.Ref, "bad_topic", "topic: "+err.Error()))
		return
	}
	var pos *TopicPosition
	switch {
	case op.LastID != "" && !ValidID(op.LastID):
		c.send(errorFrame(op.Ref, "bad_request", "last_id: not a message id (26 characters of Crockford base32)"))
		return
	case op.Epoch != "" && op.LastID == "":
		c.send(errorFrame(op.Ref, "bad_request", "epoch: only with last_id"))
		return
	case op.LastID != "":
		if err := validEpoch(op.Epoch); err != nil {
			c.send(errorFrame(op.Ref, "bad_request", "epoch: "+err.Error()))
			return
		}
		pos = &TopicPosition{LastID: op.LastID, Epoch: op.Epoch}
	}
	switch err := c.hub.subscribe(c, op.Topic, op.Ref, pos, true); {
	case errors.Is(err, errForbiddenTopic):
		c.hub.metrics.subscribeRefused.Inc()
		c.send(errorFrame(op.Ref, "forbidden", "not allowed to subscribe to "+op.Topic))
	case errors.Is(err, errTooManyTopics):
		c.hub.metrics.subscribeRefused.Inc()
		c.send(errorFrame(op.Ref, "too_many_topics", err.Error()))
	case errors.Is(err, ErrUnavailable):
		c.send(errorFrame(op.Ref, "unavailable", "subscriptions cannot be made now; try again"))
	}
}

// opUnsubscribe leaves a topic (PROTOCOL.md, "unsubscribe").
func (c *Conn) opUnsubscribe(op clientOp) {
	if err := ValidTopic(op.Topic); err != nil {
		c.send(errorFrame(op.Ref, "bad_topic", "topic: "+err.Error()))
		return
	}
	c.hub.unsubscribe(c, op.Topic)
	c.send(replyFrame("unsubscribed", op.Ref, op.Topic))
}

// opSend passes a client's message to WatchEvents (PROTOCOL.md, "send").
func (c *Conn) opSend(op clientOp) {
	m := c.hub.metrics
	if op.Topic != "" {
		if err := ValidTopic(op.Topic); err != nil {
			c.send(errorFrame(op.Ref, "bad_topic", "topic: "+err.Error()))
			return
		}
	}
	if len(op.Data) == 0 {
		c.send(errorFrame(op.Ref, "bad_request", "send needs \"data\""))
		return
	}
	if !c.hub.upstreamAllowed(c.userID, op.Topic) {
		m.upstreamRefused.Inc()
		c.send(errorFrame(op.Ref, "forbidden", "this connection may not send messages"))
		return
	}
	if err := c.hub.upstream(Event{Kind: EventClientMessage, UserID: c.userID, ConnID: c.idString(), Topic: op.Topic, Type: op.Type, DataKind: KindJSON, Data: op.Data}); err != nil {
		c.send(errorFrame(op.Ref, "unavailable", "the message could not be passed on; send it again"))
		return
	}
	m.upstream.Inc()
	if len(op.Ref) > 0 {
		c.send(replyFrame("sent", op.Ref, ""))
	}
}

// refresh replaces the connection's token with a fresh one for the same
// user, moving its expiry; the reply is "refreshed" with the new expiry.
func (c *Conn) refresh(op clientOp) {
	auth := c.hub.cfg.Auth
	if auth == nil {
		c.send(errorFrame(op.Ref, "bad_request", "this server does not use tokens"))
		return
	}
	claims, err := auth.Verify(op.Token)
	switch {
	case err != nil:
		c.send(errorFrame(op.Ref, "bad_token", "invalid token: "+err.Error()))
		return
	case claims.Subject != c.userID:
		c.send(errorFrame(op.Ref, "bad_token", "the token is for another user"))
		return
	}
	// The new token's topic rules replace the old ones: subscriptions they
	// no longer allow end now.
	rules := claims.Topics
	if rules == nil {
		rules = []string{}
	}
	var revoked []string
	c.mu.Lock()
	c.rules = rules
	c.grants = grants{pub: claims.Publish, dm: claims.Direct, presence: claims.Presence}
	for t := range c.topics {
		if !TopicAllowed(rules, t) {
			revoked = append(revoked, t)
		}
	}
	c.mu.Unlock()
	for _, t := range revoked {
		c.hub.unsubscribe(c, t)
		c.send(replyFrame("unsubscribed", nil, t))
	}
	c.setExpiry(claims.Expires)
	c.send(refreshedFrame(op.Ref, claims.Expires))
}

// maxAckIDs caps the ids in one ack frame.
const maxAckIDs = 1000

// upstreamAllowed reports whether userID may send a message upstream,
// optionally addressed to topic.
func (h *Hub) upstreamAllowed(userID, topic string) bool {
	for _, p := range h.cfg.UpstreamUsers {
		if MatchUserPattern(p, userID) {
			return true
		}
	}
	return topic != "" && len(h.cfg.UpstreamTopics) > 0 && TopicAllowed(h.cfg.UpstreamTopics, topic)
}

// isPing reports whether a raw client frame is an application heartbeat:
// the text "ping" (what mini-program heartbeats send) or a small JSON object
// whose type is "ping".
func isPing(p []byte) bool {
	p = bytes.TrimSpace(p)
	if string(p) == "ping" {
		return true
	}
	if len(p) == 0 || len(p) > 64 || p[0] != '{' || !bytes.Contains(p, []byte(`"ping"`)) {
		return false
	}
	var v struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(p, &v) == nil && v.Type == "ping"
}
