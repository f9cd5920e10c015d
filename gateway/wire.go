package gateway

import (
	"encoding/binary"
	"errors"
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
// A message with a sampled Trace is version 2: 25 bytes follow the ttl
// (trace id, span id, trace flags) and the rest moves up. Version 1 is
// unchanged, so nodes of a version that knows only it take every message
// of an untraced deployment.
const (
	msgVersion    = 1
	msgTraced     = 2
	traceBytes    = 16 + 8 + 1
	flagBroadcast = 1
	flagStored    = 2
)

// EncodeMessage returns m's encoding between nodes. An empty m.ID is
// written as 26 zeros for the engine to fill in.
func EncodeMessage(m *Message) []byte {
	b := make([]byte, 0, 64+traceBytes+len(m.Type)+len(m.Topic)+len(m.Data))
	traced := m.Trace.IsSampled()
	if traced {
		b = append(b, msgTraced)
	} else {
		b = append(b, msgVersion)
	}
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
	b = append(b, m.Type...)
	b = append(b, m.Topic...)
	return append(b, m.Data...)
}

var errBadEncoding = errors.New("bad message encoding")

// DecodeMessage parses EncodeMessage's output.
func DecodeMessage(b []byte) (*Message, error) {
	if len(b) < 1+26+2+16 || (b[0] != msgVersion && b[0] != msgTraced) {
		return nil, errBadEncoding
	}
	m := &Message{ID: string(b[1:27]), Kind: Kind(b[27])}
	flags := b[28]
	m.broadcast = flags&flagBroadcast != 0
	m.stored = flags&flagStored != 0
	m.Time = time.Unix(0, int64(binary.BigEndian.Uint64(b[29:37])))
	m.TTL = time.Duration(binary.BigEndian.Uint64(b[37:45]))
	rest := b[45:]
	if b[0] == msgTraced {
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
	if k <= 0 || uint64(len(rest)-k) < nt+np {
		return nil, errBadEncoding
	}
	rest = rest[k:]
	m.Type = string(rest[:nt])
	m.Topic = string(rest[nt : nt+np])
	m.Data = rest[nt+np:]
	if m.Kind < KindJSON || m.Kind > KindBinary || !ValidID(m.ID) {
		return nil, errBadEncoding
	}
	return m, nil
}
