package gateway

import (
	"encoding/binary"
	"errors"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// The encoding of a message between nodes (EncodeMessage), byte by byte:
//
//	0       version (1)
//	1..26   the id, 26 characters (zeros until an engine sets it; a
//	        Redis script writes it in place: withid in scripts.lua)
//	27      kind (KindJSON, KindText, KindBinary)
//	28      flags (flagBroadcast, flagStored)
//	29..36  time, ns since 1970, big-endian
//	37..44  ttl, ns, big-endian
//	45..    uvarint length of type, uvarint length of topic, then type,
//	        topic and the payload bytes, which run to the end
//
// The first byte is 1, plus 2 when the message has excluded connections
// (Message.Exclude) or a sender (Message.From), plus 4 when it comes from a
// sampled call (Message.Trace):
//
//   - with 4, 25 bytes follow the ttl (trace id, span id, trace flags) and
//     the rest moves up;
//   - with 2, after the topic's length come the uvarint lengths of the
//     excluded ids (newline-separated) and of the sender, and they follow
//     the topic in that order.
//
// A plain message is 1, as before these were added, so nodes that read
// only 1 still read every plain message (and drop, never misread, the
// others).
const (
	msgVersion    = 1
	msgExtras     = 2 // added to msgVersion
	msgTraced     = 4 // added to msgVersion
	traceBytes    = 16 + 8 + 1
	flagBroadcast = 1
	flagStored    = 2
)

// EncodeMessage returns m's encoding between nodes. An empty m.ID is
// written as 26 zeros for the engine to fill in.
func EncodeMessage(m *Message) []byte {
	ex := strings.Join(m.Exclude, "\n")
	v2 := len(m.Exclude) > 0 || m.From != ""
	traced := m.Trace.IsSampled()
	b := make([]byte, 0, 64+traceBytes+len(m.Type)+len(m.Topic)+len(ex)+len(m.From)+len(m.Data))
	version := byte(msgVersion)
	if v2 {
		version += msgExtras
	}
	if traced {
		version += msgTraced
	}
	b = append(b, version)
	if len(m.ID) == 26 {
		b = append(b, m.ID...)
	} else {
		b = append(b, "00000000000000000000000000"...)
	}
	var flags byte
	if m.broadcast {
		flags |= flagBroadcast
	}
	if m.stored {
		flags |= flagStored
	}
	b = append(b, byte(m.Kind), flags)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(m.TTL))
	if traced {
		tid, sid := m.Trace.TraceID(), m.Trace.SpanID()
		b = append(b, tid[:]...)
		b = append(b, sid[:]...)
		b = append(b, byte(m.Trace.TraceFlags()))
	}
	b = binary.AppendUvarint(b, uint64(len(m.Type)))
	b = binary.AppendUvarint(b, uint64(len(m.Topic)))
	if v2 {
		b = binary.AppendUvarint(b, uint64(len(ex)))
		b = binary.AppendUvarint(b, uint64(len(m.From)))
	}
	b = append(b, m.Type...)
	b = append(b, m.Topic...)
	b = append(b, ex...)
	b = append(b, m.From...)
	return append(b, m.Data...)
}

var errBadEncoding = errors.New("bad message encoding")

// DecodeMessage parses EncodeMessage's output.
func DecodeMessage(b []byte) (*Message, error) {
	if len(b) < 1+26+2+16 || b[0]&1 == 0 || b[0] > msgVersion+msgExtras+msgTraced {
		return nil, errBadEncoding
	}
	m := &Message{ID: string(b[1:27]), Kind: Kind(b[27])}
	flags := b[28]
	m.broadcast = flags&flagBroadcast != 0
	m.stored = flags&flagStored != 0
	m.Time = time.Unix(0, int64(binary.BigEndian.Uint64(b[29:37])))
	m.TTL = time.Duration(binary.BigEndian.Uint64(b[37:45]))
	rest := b[45:]
	if b[0]&msgTraced != 0 {
		if len(rest) < traceBytes {
			return nil, errBadEncoding
		}
		m.Trace = trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID(rest[:16]), SpanID: trace.SpanID(rest[16:24]),
			TraceFlags: trace.TraceFlags(rest[24]), Remote: true,
		})
		rest = rest[traceBytes:]
	}
	nt, k := binary.Uvarint(rest)
	if k <= 0 {
		return nil, errBadEncoding
	}
	rest = rest[k:]
	np, k := binary.Uvarint(rest)
	if k <= 0 {
		return nil, errBadEncoding
	}
	rest = rest[k:]
	var nx, nf uint64
	if b[0]&msgExtras != 0 {
		if nx, k = binary.Uvarint(rest); k <= 0 {
			return nil, errBadEncoding
		}
		rest = rest[k:]
		if nf, k = binary.Uvarint(rest); k <= 0 {
			return nil, errBadEncoding
		}
		rest = rest[k:]
	}
	if uint64(len(rest)) < nt+np+nx+nf {
		return nil, errBadEncoding
	}
	m.Type = string(rest[:nt])
	m.Topic = string(rest[nt : nt+np])
	if nx > 0 {
		m.Exclude = strings.Split(string(rest[nt+np:nt+np+nx]), "\n")
	}
	m.From = string(rest[nt+np+nx : nt+np+nx+nf])
	m.Data = rest[nt+np+nx+nf:]
	if m.Kind < KindJSON || m.Kind > KindBinary || !ValidID(m.ID) {
		return nil, errBadEncoding
	}
	return m, nil
}
