package gateway

import (
	"crypto/rand"
	"encoding/binary"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.opentelemetry.io/otel/trace"
)

// Kind is how a payload is framed on the wire.
type Kind uint8

const (
	// KindJSON is a JSON document, written as a text frame byte-for-byte.
	KindJSON Kind = iota + 1
	// KindText is UTF-8 text, written as a text frame.
	KindText
	// KindBinary is opaque bytes, written as a binary frame.
	KindBinary
)

// Message is one push, ready for the wire. The hub assigns ID; after that
// it is immutable and shared by every recipient: fan-out never copies it,
// and each wire encoding is made at most once.
type Message struct {
	ID    string        // unique, sortable by creation time (see NewID); set by the Hub
	Type  string        // label from the backend; envelope clients see it
	Kind  Kind          // how Data is framed
	Data  []byte        // the payload exactly as the backend sent it
	Topic string        // set by Publish
	TTL   time.Duration // > 0: kept in recipients' inboxes (SendToUser/SendToUsers)
	Time  time.Time     // when the hub accepted it; set by the Hub
	// Exclude: connection ids (the hello's conn_id) that must not receive
	// it (Broadcast, Publish).
	Exclude []string
	// From: the user who published it from a client (client publish; set
	// by the server from the connection's identity, never by the client).
	// Envelope clients see it.
	From string
	// Trace is the span of the call that sent it when that call is
	// sampled (SampledSpan), else invalid: the hub's spans for it join
	// that trace.
	Trace trace.SpanContext

	broadcast bool // set by Broadcast; envelope clients see it
	stored    bool // in at least one inbox, so a raw write acks it

	envOnce sync.Once
	env     []byte // the envelope encoding, made once on first use
}

// frame is one queued WebSocket message: a push (encoded per the
// connection's protocol) or a control frame of this connection's own.
type frame struct {
	msg  *Message
	data []byte // control frame bytes, when msg == nil
	typ  websocket.MessageType
}

// msgPing is a frame's typ for a WebSocket ping (heartbeat.go): the
// write loop writes it as a control frame, never joined with others.
const msgPing websocket.MessageType = 9

// size is what the frame counts against the queue's byte cap.
func (f *frame) size() int {
	if f.msg != nil {
		return len(f.msg.Data)
	}
	return len(f.data)
}

// raw returns the raw-protocol encoding: the payload exactly as sent.
func (m *Message) raw() (websocket.MessageType, []byte) {
	if m.Kind == KindBinary {
		return websocket.MessageBinary, m.Data
	}
	return websocket.MessageText, m.Data
}

// ids hands out message ids: 26 characters of Crockford base32 encoding a
// 48-bit millisecond timestamp and 80 bits that start random each
// millisecond and count up within it, so ids from one node sort in the order
// they were made (the ULID layout).
var ids struct {
	sync.Mutex
	ms   uint64
	hi   uint16 // top 16 of the 80 counter bits
	lo   uint64 // low 64
	last uint64 // last ms handed out, to stay monotonic if the clock steps back
}

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a new message id. Safe for concurrent use.
func NewID() string {
	ids.Lock()
	ms := uint64(time.Now().UnixMilli())
	if ms < ids.last {
		ms = ids.last
	}
	if ms != ids.ms {
		var b [10]byte
		_, _ = rand.Read(b[:])
		ids.ms = ms
		ids.hi = binary.BigEndian.Uint16(b[:2]) & 0x7fff // room to count up
		ids.lo = binary.BigEndian.Uint64(b[2:])
	} else {
		ids.lo++
		if ids.lo == 0 {
			ids.hi++
		}
	}
	ids.last = ms
	hi, lo := ids.hi, ids.lo
	ids.Unlock()

	// 128 bits: ms(48) | hi(16) | lo(64), written as 26 base32 digits (130 bits,
	// the first digit holds only 3).
	var out [26]byte
	// Low 64 bits then the high 64 bits, 5 bits at a time from the right.
	h := ms<<16 | uint64(hi)
	l := lo
	for i := 25; i >= 0; i-- {
		out[i] = crockford[l&31]
		l = l>>5 | h<<59
		h >>= 5
	}
	return string(out[:])
}

// ValidID reports whether s has the form of a message id.
func ValidID(s string) bool {
	if len(s) != 26 || s[0] > '7' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(crockford, s[i]) < 0 {
			return false
		}
	}
	return true
}
