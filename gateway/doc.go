// Package gateway is pushgate's WebSocket side: the edge that accepts and
// authenticates connections, their read and write loops, the registry of
// this node's connections (Hub), and the seam to the engine that the nodes
// of a deployment share.
//
// # The model
//
// Two halves meet at one seam.
//
//   - The Engine owns what nodes share: message ids, inboxes, presence (with
//     its grace), idempotency keys, the event log (every event with its
//     cursor, eventlog.go), and the routing of each message to the nodes
//     that hold its recipients. The gRPC API and the admin page call
//     the Engine; so does the hub, for its connections (Join, Left,
//     Subscribe, Unsubscribed, TopicUserChanged, Ack, Upstream). It also
//     keeps topic presence: who is subscribed to each topic
//     (TopicPresence, presence.go).
//   - The Hub owns this node's connections and is the Node an engine
//     delivers through: Deliver (a user's message), DeliverBroadcast,
//     DeliverTopic, CloseUser, Evict (close every connection: the engine
//     cannot serve them from this node), Emit (an event for this node's
//     WatchEvents streams, queued and never blocking), DeliverTopicPresence
//     (a topic's join and leave frames), and the local counts an engine
//     reads (UserConns, TopicConns, TopicUserConns, Connections).
//
// The memory engine (MemoryEngine, one node) and the Redis engine (package
// redisengine, many nodes) deliver through the same Node calls, so there is
// one send path, one join protocol and one ordering argument, and the same
// test suites run on both.
//
// # A message's path
//
// SendToUser with the memory engine:
//
//  1. server.Service validates the request and turns it into a Push (the
//     payload bytes as sent, the ttl, the idempotency key).
//  2. memoryEngine.SendToUsers: under the lock stripe of each recipient
//     (several in index order), the message gets its id (NewID, which only
//     grows), goes into each inbox when ttl > 0, and is handed to
//     Node.Deliver.
//  3. Hub.Deliver: under the user's shard lock, the message is queued on
//     each of the user's connections (Conn.enqueue: bounded, never blocks);
//     a connection still joining holds it (see Joining).
//  4. The connection's write loop, started when its queue became non-empty,
//     writes the queued frames in order with a deadline; an envelope
//     connection gets a backlog as one frame, a raw one a frame per message.
//     A stored message written to a raw connection is acknowledged for it
//     (Engine.Ack, implicit).
//
// SendToUser with the Redis engine:
//
//  1. As above.
//  2. redisengine.Engine.SendToUsers runs the "send" script: in one atomic
//     step it gives the message its id (greater than every id handed out
//     before), stores it in the inboxes, records the idempotency key, and
//     publishes it once to each node that holds a recipient (the node's
//     channel), returning the connections Redis counts.
//  3. Each such node's receive loop reads its channel in order and hands
//     the message to Node.Deliver: from here on the path is the memory
//     engine's step 3 and 4.
//
// Broadcast and Publish take the same path through DeliverBroadcast and
// DeliverTopic (with Redis, through the broadcast channel and the channels
// of the nodes with subscribers); they are live only.
//
// # Ordering
//
// Within one user's stream, ids grow in the order the engine hands the
// user's messages to Deliver: the memory engine assigns the id and calls
// Deliver under the user's stripe; the Redis engine assigns it in the script
// and every node receives its channel in script order. Deliver queues under
// the user's shard lock and a connection's queue is written in order. So
// every connection of a user, on any node, receives the user's messages in
// id order, and "after id X" (resume) is exact.
//
// # Joining
//
// A connection joins in three steps (Hub.register):
//
//  1. It enters the hub's registry in the joining state: from now on what
//     is delivered to it is held (Conn.pending, within the queue's caps).
//  2. Engine.Join records it (presence) and, in the same critical section
//     (the user's stripe, or one script), reads the inbox after the
//     client's last id (the replay) and the last id handed out (Seq).
//  3. Under the user's shard lock, the hello, the replay and the held
//     messages with an id above Seq are queued in that order, and the
//     connection goes live.
//
// A held message with an id up to Seq was sent before the join: it is
// either in the replay (stored) or was never this connection's (live). A
// message with a greater id was sent after the join recorded the
// connection, so it reached the connection's node and was held. So each
// message reaches a joining connection exactly once, after its replay.
// Deliver also skips a stored message a connection already has (its id is
// not above the highest stored id queued to it), which makes an engine's
// catch-up after a lost subscription safe to repeat.
//
// # Locks
//
// In the order they may be taken:
//
//  1. the engine's own locks (the memory engine's user stripes, several in
//     index order, then its event log's lock, under which an event gets
//     its cursor and is handed to Emit; the Redis engine's presence and
//     topic stripes);
//  2. the hub's shard and topic-shard locks (one at a time);
//  3. a connection's mu.
//
// The hub never calls the engine while it holds a lock of its own, and
// never writes to a socket under any lock: write loops do the I/O. Emit,
// which engines call under their locks, only queues the event: one
// goroutine per hub, running while events wait, hands them to the
// WatchEvents streams under no lock. A
// connection that overflows inside Deliver is closed on another goroutine,
// since closing calls the engine (Left) and the engine may hold its stripe.
package gateway
