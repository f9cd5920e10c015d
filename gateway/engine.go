package gateway

import (
	"context"
	"errors"
	"time"
)

// Engine is what the nodes of a deployment share: message ids, inboxes,
// presence, idempotency keys and the routing of every message to the nodes
// that hold its recipients. The gRPC API and the admin page call it; the hub
// calls it for its connections (join, leave, subscribe, ack, upstream). It
// reaches connections only through the Node it was made with, by the same
// calls whatever the engine: so there is one send path, one join protocol
// and one ordering argument (doc.go).
//
// Two engines exist: the memory engine (NewMemoryEngine, one node) and
// package redisengine (many nodes over Redis). Both are run by the same test
// suites. All methods are safe for concurrent use.
type Engine interface {
	// SendToUsers delivers p to every connection of each user (distinct
	// ids, in order) and, when p.TTL > 0, keeps it in each user's inbox. One
	// message id for all of them, in order in every recipient's stream.
	SendToUsers(ctx context.Context, userIDs []string, p Push) (Sent, error)
	// Broadcast delivers p to every connection except those of the users
	// in exclude. Live only (p.TTL is ignored).
	Broadcast(ctx context.Context, p Push, exclude []string) (Sent, error)
	// Publish delivers p to every subscriber of topic. A topic with a
	// history rule (Config.HistoryOf) keeps it too, for
	// TopicHistoryTTL(rule, p.TTL), in the same step that gives it its id
	// and delivers it (history.go); other topics are live only.
	Publish(ctx context.Context, topic string, p Push) (Sent, error)
	// Disconnect closes every connection of userID with CloseKicked (text,
	// if not empty, in the close frame) and returns how many.
	Disconnect(ctx context.Context, userID, text string) (int, error)
	// Presence reports each of userIDs, in order (offline: Connections 0).
	Presence(ctx context.Context, userIDs []string) ([]OnlineUser, error)
	// ListOnline returns up to limit online users whose id sorts after
	// the given one ("" for the first page) and for which match returns
	// true (nil: all).
	ListOnline(ctx context.Context, after string, limit int, match func(userID string) bool) (OnlinePage, error)
	// Watch registers a WatchEvents stream on this node for kinds (none:
	// all) with room for buffer events; the engine makes sure events of
	// every node reach it. Unwatch removes it.
	Watch(kinds []EventKind, buffer int) *Watcher
	Unwatch(w *Watcher)
	// EventsAfter returns up to limit logged events after cursor (an
	// Event.Cursor, or CursorZero for the oldest kept), in log order. A
	// cursor whose event is no longer kept, or from a log that was lost,
	// is a *CursorError; one that cannot be read wraps ErrBadCursor.
	// Every event an engine hands to Node.Emit is logged first, with its
	// cursor, atomically with the change it reports. To resume without a
	// gap, Watch first, then read EventsAfter until it returns fewer than
	// limit, then skip live events at or before the last one read.
	//
	// With several logs (the sharded Redis engine) cursor is a ReadPos's
	// String(), and the events come with their own log's cursor (and
	// Event.Log): the reader's ReadPos turns them into its cursors. Each
	// log's events come in that log's order; across logs in the order of
	// their times, as far as one call reads.
	EventsAfter(ctx context.Context, cursor string, limit int) ([]Event, error)
	// EventReadPos returns where a reader that resumes after cursor (an
	// Event.Cursor, CursorZero, or "" for live events only) stands, with
	// the errors of EventsAfter. Call it after Watch: with several logs,
	// "" reads where each log ends now, and the live events up to there
	// are Covered.
	EventReadPos(ctx context.Context, cursor string) (*ReadPos, error)
	// EventLogLen returns the events the log keeps (-1: cannot be read now).
	EventLogLen() int64
	// Consumer returns the engine's record of the named consumer of the
	// event log (the webhook sink): its committed cursor and a lease, so
	// that one node of the deployment consumes at a time.
	Consumer(name string) Consumer
	// Users, Connections and Inboxed are the deployment's totals, for the
	// admin page and metrics: -1 when they cannot be read now.
	Users() int64
	Connections() int64
	Inboxed() int64
	// Up reports whether the engine can serve calls now (readiness).
	Up() bool
	// Receipt returns a page of message id's receipt (a SendToUsers
	// message): the recipients users, in that order, or when users is
	// empty up to limit recipients from offset, in the order of the send.
	// It fails with ErrNoReceipt when no receipt is kept for id (the
	// error's text says why when the engine can tell), and with
	// ErrNotRecipient for a user in users the message was not sent to.
	Receipt(ctx context.Context, id string, users []string, offset, limit int) (Receipt, error)
	// Receipts returns the recipients whose receipts are kept (the
	// deployment's, for the metrics): -1 when it cannot be read now.
	Receipts() int64

	// Join records that this node holds one more connection of j.UserID,
	// so that every send that runs after it reaches the node, and returns
	// what the connection must see first (the hub's register).
	Join(ctx context.Context, j JoinRequest) (Joined, error)
	// Left says that this node's connections of userID changed (one
	// closed); the engine reads the node's count (Node.UserConns). It never
	// blocks.
	Left(userID string)
	// Subscribe makes sure topic is routed to this node before it returns
	// (a subscriber joined here). Unsubscribed says one left (never blocks).
	Subscribe(ctx context.Context, topic string) error
	Unsubscribed(topic string)
	// TopicHistory reads the kept messages of a topic with a history rule
	// after r.LastID, and the epoch of what keeps them (history.go). The
	// hub calls it once Subscribe has returned.
	TopicHistory(ctx context.Context, r TopicHistoryRequest) (TopicHistory, error)
	// TopicUserChanged says that this node's subscriptions of userID to
	// topic changed (one added or removed); the engine reads the node's
	// count (Node.TopicUserConns) and records the user's presence on the
	// topic, reporting a join or leave (EventTopicJoin, EventTopicLeave)
	// when the topic matches Config.TopicPresenceEvents. It never blocks.
	// The hub calls it before Subscribe for a subscription it added, so
	// an engine may write both in one step.
	TopicUserChanged(topic, userID string)
	// TopicPresence returns up to limit users subscribed to topic,
	// anywhere in the deployment, whose id sorts after the given one (""
	// for the first page), with their subscribed connections.
	TopicPresence(ctx context.Context, topic, after string, limit int) (TopicPage, error)
	// Ack removes acknowledged messages from userID's inbox and reports
	// each one that was there to WatchEvents. implicit: written to a raw
	// connection; then Ack must not block (it is called by a write loop).
	Ack(ctx context.Context, userID, connID string, ids []string, implicit bool) error
	// Upstream hands a client's message, or an escalation's result, to the
	// WatchEvents streams of every node.
	Upstream(ctx context.Context, e Event) error

	// Close stops the engine; call it after the hub's Shutdown.
	Close(ctx context.Context) error
}

// Consumer is a consumer of the event log whose position the engine keeps
// (the memory engine in this process, the Redis engine in Redis, so that it
// outlives the node). Only the node holding its lease may commit.
type Consumer interface {
	// Acquire takes the lease for ttl, or renews it when this node holds
	// it, and reports whether this node holds it now.
	Acquire(ctx context.Context, ttl time.Duration) (bool, error)
	// Cursor returns the committed cursor ("" when none was committed).
	Cursor(ctx context.Context) (string, error)
	// Commit records cursor if this node still holds the lease, and
	// reports whether it did.
	Commit(ctx context.Context, cursor string) (bool, error)
	// Release gives the lease up, if this node holds it.
	Release(ctx context.Context) error
}

// NewEngine makes an engine that reaches this node's connections through
// node. NewHub calls it once, before the hub serves.
type NewEngine func(node Node) (Engine, error)

// Node is what an engine may call on the hub: this node's connections. All
// methods are safe for concurrent use and never block on the network; none
// calls back into the engine.
type Node interface {
	// Config is the gateway's configuration, defaults applied.
	Config() Config
	// Deliver queues m on this node's connections of userIDs, once per
	// connection, and returns how many took it. m.ID must grow with the
	// order in which the engine hands a user's messages to Deliver (doc.go):
	// a joining connection holds m until its replay is queued, and a
	// connection skips m when m is from before it joined, or is stored and
	// the connection already has it or a later stored message.
	Deliver(userIDs []string, m *Message) int
	// DeliverBroadcast queues m on every connection here except those of
	// the users in exclude.
	DeliverBroadcast(m *Message, exclude []string) int64
	// DeliverTopic queues m on this node's subscribers of m.Topic.
	DeliverTopic(m *Message) int64
	// DeliverTopicPresence tells this node's envelope subscribers of topic
	// that userID joined it (its first subscription in the deployment) or
	// left it (its last): a "join" or "leave" frame (PROTOCOL.md). Engines
	// call it for the topics matching Config.TopicPresenceEvents.
	DeliverTopicPresence(topic, userID string, join bool)
	// CloseUser closes userID's connections here with CloseKicked.
	CloseUser(userID, text string) int
	// Evict closes every connection here with CloseEngineUnavailable,
	// spread over window (on a goroutine of its own), and returns how many:
	// the engine cannot serve them from this node any more.
	Evict(window time.Duration) int
	// Emit queues e for this node's WatchEvents streams. It never blocks
	// and does no per-stream work, so an engine may call it under its own
	// locks; the streams get events in the order of the calls.
	Emit(e Event)
	// Watch, Unwatch and Watchers manage this node's WatchEvents streams.
	Watch(kinds []EventKind, buffer int) *Watcher
	Unwatch(w *Watcher)
	Watchers() int
	// CutWatchers ends every WatchEvents stream here as one that fell
	// behind (Watcher.Lost): the engine may have failed to bring them some
	// events (its link was down), so they resume from their cursors.
	CutWatchers()
	// UserConns returns this node's connections of userID (joining ones
	// included) and when the oldest opened.
	UserConns(userID string) (n int, since time.Time)
	// TopicConns returns this node's subscribers of topic.
	TopicConns(topic string) int
	// TopicUserConns returns this node's connections of userID subscribed
	// to topic.
	TopicUserConns(topic, userID string) int
	// Connections returns this node's open connections.
	Connections() int64
	// ForgetSeen makes the connections that joined in another epoch than
	// epoch forget which stored ids they have seen: the engine's ids
	// started again (its store lost its data).
	ForgetSeen(epoch string)
	// CountInbox adds to the inbox metrics.
	CountInbox(c InboxCounts)
}

// InboxCounts is inbox work an engine did, for the metrics.
type InboxCounts struct {
	Acked, Trimmed, Expired, Replayed int
	// Full: messages not stored because all inboxes together were at
	// their cap (Config.InboxTotalMessages, InboxTotalBytes).
	Full int
	// ReceiptsEvicted: receipts dropped before their time to stay within
	// Config.ReceiptMax.
	ReceiptsEvicted int
	// Topic histories (history.go): messages kept; dropped for the rule's
	// count, for their ttl; not kept for Config.TopicHistoryTotal.
	TopicStored, TopicTrimmed, TopicExpired, TopicFull int
}

// Push is a message a caller asks to send: what the backend gave, before
// it has an id.
type Push struct {
	Type string        // label from the backend; envelope clients see it
	Kind Kind          // how Data is framed
	Data []byte        // the payload exactly as the backend sent it
	TTL  time.Duration // > 0: kept in the recipients' inboxes (sends to users), or for at most this long in a topic's history
	// ExcludeConns: connection ids (the hello's conn_id, unique in the
	// deployment) that must not receive it; Broadcast and Publish only.
	ExcludeConns []string
	// From: the user whose client published it (Message.From); "" for a
	// backend's message.
	From string
	// Idempotency, when Key is set, makes a repeat of the call within
	// Window return the first call's result and send nothing.
	Idempotency Idempotency
}

// Idempotency is a call's idempotency key. The engine records it with the
// send, in one step, so that a repeat on any node gets the first result.
type Idempotency struct {
	Key    string        // the caller and its key; "" for none
	Hash   [32]byte      // of the method and the request: a key reused for another request is an error
	Window time.Duration // how long the first result is kept
}

// Sent is the result of a send.
type Sent struct {
	ID          string     // the message id
	Time        time.Time  // when the engine accepted it
	Users       []Delivery // SendToUsers: one per user, in order
	Connections int64      // Broadcast, Publish: connections it was queued on
	// Replayed: the call repeated an idempotency key; this is the first
	// call's result and nothing was sent (SendToUsers).
	Replayed bool
}

// Delivery is the outcome of a message for one user.
type Delivery struct {
	UserID    string
	Online    bool // the user had at least one open connection
	Delivered int  // connections the message was queued on
	Stored    bool // the message went into the user's inbox
	// MessageID is the id this user's copy got when it differs from
	// Sent.ID (a sharded engine whose shard had to hand out a later id,
	// docs/cluster.md); "" when it is Sent.ID.
	MessageID string
}

// JoinRequest is a connection joining through the engine.
type JoinRequest struct {
	UserID string
	ConnID string
	LastID string // resume after this id ("" for the whole inbox)
	Epoch  string // the epoch the client's LastID is from ("" unknown)
	Resume bool   // the client asked to resume (gave a last_id)
}

// Joined is what a joining connection must see first.
type Joined struct {
	Epoch    string     // the engine's inbox epoch, for the hello
	Seq      string     // the last id handed out when the connection joined: live messages up to it are not this connection's
	Replay   []*Message // the inbox after LastID, in order
	Complete bool       // nothing after LastID was lost
}

// OnlineUser is the presence of one user.
type OnlineUser struct {
	UserID      string
	Connections int
	Since       time.Time // when the oldest open connection was opened; zero when offline
}

// OnlinePage is one page of ListOnline.
type OnlinePage struct {
	Users            []OnlineUser // ordered by UserID (byte order)
	More             bool         // users sorting after the last one exist
	TotalUsers       int64
	TotalConnections int64
}

// TopicUser is one subscriber of a topic: a user and how many of its
// connections, on every node, are subscribed.
type TopicUser struct {
	UserID      string `json:"user_id"`
	Connections int    `json:"connections"`
}

// TopicPage is one page of TopicPresence.
type TopicPage struct {
	Users []TopicUser // ordered by UserID (byte order)
	// More: users sorting after Next may exist; the next page starts after
	// Next (the last user the engine looked at: it may have left out users
	// that had just gone, so Next can sort after the last of Users).
	More bool
	Next string
	// TotalUsers and TotalConnections count the topic's subscribers in the
	// deployment.
	TotalUsers       int64
	TotalConnections int64
}

// ErrUnavailable marks errors that mean the engine cannot be reached; the
// API answers them with UNAVAILABLE.
var ErrUnavailable = errors.New("push engine unavailable")

// ErrIdempotencyConflict: the key was used for a different request within
// its window.
var ErrIdempotencyConflict = errors.New("idempotency key already used for a different request")

// ErrIdempotencyFull: the engine remembers as many idempotency results as
// it may (Config.IdempotencyEntries); the send was not made. The API answers
// it with RESOURCE_EXHAUSTED.
var ErrIdempotencyFull = errors.New("too many idempotency keys remembered")

// NewMessage makes the message an engine delivers for p: m.ID and m.Time
// set, stored when p.TTL > 0 and it goes to users (not a broadcast, not a
// topic; an engine sets the ttl of a message a topic's history keeps).
func (p *Push) NewMessage(id string, t time.Time, topic string, broadcast bool) *Message {
	m := &Message{ID: id, Type: p.Type, Kind: p.Kind, Data: p.Data, Topic: topic, Time: t, From: p.From, broadcast: broadcast}
	if broadcast || topic != "" {
		m.Exclude = p.ExcludeConns
	} else {
		m.TTL = p.TTL
		m.stored = p.TTL > 0
	}
	return m
}
