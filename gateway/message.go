package gateway

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"

	"github.com/coder/websocket"
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

// Message is one push, ready for the wire. It is immutable once handed to
// the Hub and shared by every recipient: fan-out never copies or re-encodes
// it.
type Message struct {
	ID   string // unique, sortable by creation time (see NewID)
	Type string // label from the backend; not sent to raw clients
	Kind Kind
	Data []byte
}

// frame is one queued WebSocket message. Frames share the Message's bytes.
type frame struct {
	typ  websocket.MessageType
	data []byte
}

// rawFrame is the raw-protocol encoding of m: the payload exactly as sent.
func (m *Message) rawFrame() frame {
	if m.Kind == KindBinary {
		return frame{websocket.MessageBinary, m.Data}
	}
	return frame{websocket.MessageText, m.Data}
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
