package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// Subprotocol is the WebSocket subprotocol of the envelope format
// (PROTOCOL.md). A connection that does not ask for it speaks raw.
const Subprotocol = "pushgate.v1"

// envelope returns the envelope encoding of m, made once:
//
//	{"op":"message","id":"…","type":"…","topic":"…","from":"…","broadcast":true,"stored":true,"ts":1732…,"data":…}
//
// JSON payloads are embedded as JSON (compacted: whitespace removed, every
// number and string kept exactly as written), text as a JSON string, and
// binary as a base64 string with "encoding":"base64". Envelopes never contain
// a raw newline, so several can share one frame separated by "\n".
func (m *Message) envelope() []byte {
	m.envOnce.Do(func() {
		b := make([]byte, 0, 96+len(m.Type)+len(m.Topic)+len(m.Data)*4/3)
		b = append(b, `{"op":"message","id":"`...)
		b = append(b, m.ID...)
		b = append(b, '"')
		if m.Type != "" {
			b = append(b, `,"type":`...)
			b = appendJSONString(b, m.Type)
		}
		if m.Topic != "" {
			b = append(b, `,"topic":`...)
			b = appendJSONString(b, m.Topic)
		}
		if m.From != "" {
			b = append(b, `,"from":`...)
			b = appendJSONString(b, m.From)
		}
		if m.broadcast {
			b = append(b, `,"broadcast":true`...)
		}
		if m.stored {
			b = append(b, `,"stored":true`...)
		}
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, m.Time.UnixMilli(), 10)
		b = append(b, `,"data":`...)
		switch m.Kind {
		case KindJSON:
			buf := bytes.NewBuffer(b)
			if err := json.Compact(buf, m.Data); err != nil {
				// Validated at the API edge; never reached. Send it as text
				// rather than break the frame.
				b = appendJSONString(b, string(m.Data))
			} else {
				b = buf.Bytes()
			}
		case KindText:
			b = appendJSONString(b, string(m.Data))
		case KindBinary:
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, m.Data)
			b = append(b, `","encoding":"base64"`...)
		}
		m.env = append(b, '}')
	})
	return m.env
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// clientOp is one frame from an envelope client.
type clientOp struct {
	Op    string          `json:"op"`
	Ref   json.RawMessage `json:"ref,omitempty"` // echoed in the reply, if any
	ID    string          `json:"id,omitempty"`  // ack
	IDs   []string        `json:"ids,omitempty"` // ack
	Topic string          `json:"topic,omitempty"`
	Type  string          `json:"type,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	Token string          `json:"token,omitempty"` // refresh
	// subscribe: resume the topic after this id, from this epoch
	LastID string `json:"last_id,omitempty"`
	Epoch  string `json:"epoch,omitempty"`
	// publish, direct
	UserID        string `json:"user_id,omitempty"`
	ExcludeSender bool   `json:"exclude_sender,omitempty"`
	// presence: the page after this user id, of at most limit users
	After string `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"`

	Subscription json.RawMessage `json:"subscription,omitempty"` // push_subscribe
}

// Errors in parsing a client frame; the client gets an error frame with code
// "bad_request" and the connection stays open.
var (
	errNotObject = errors.New("frame is not a JSON object")
	errNoOp      = errors.New(`missing "op"`)
	errBadRef    = errors.New(`"ref" must be a string or number of at most 64 bytes`)
)

// parseClientOp decodes an envelope client frame.
func parseClientOp(p []byte) (clientOp, error) {
	var op clientOp
	p = bytes.TrimSpace(p)
	if len(p) == 0 || p[0] != '{' {
		return op, errNotObject
	}
	if err := json.Unmarshal(p, &op); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return clientOp{Ref: safeRef(op.Ref)}, fmt.Errorf("field %q has the wrong type", te.Field)
		}
		return clientOp{}, errNotObject
	}
	if len(op.Ref) > 0 && safeRef(op.Ref) == nil {
		op.Ref = nil
		return op, errBadRef
	}
	if op.Op == "" {
		return op, errNoOp
	}
	return op, nil
}

// safeRef returns ref if it is a string or a number of at most 64 bytes
// (so it can be echoed), else nil.
func safeRef(ref json.RawMessage) json.RawMessage {
	if len(ref) == 0 || len(ref) > 64 {
		return nil
	}
	if c := ref[0]; c != '"' && c != '-' && (c < '0' || c > '9') {
		return nil
	}
	return ref
}

// Control frames the server sends to envelope clients.

var envPong = frame{data: []byte(`{"op":"pong"}`), typ: websocket.MessageText}

// pongFrame answers an envelope ping, echoing its ref if any.
func pongFrame(ref json.RawMessage) frame {
	if len(ref) == 0 {
		return envPong
	}
	return replyFrame("pong", ref, "")
}

// replyFrame builds {"op":op,"ref":ref,"topic":topic}.
func replyFrame(op string, ref json.RawMessage, topic string) frame {
	b := make([]byte, 0, 64)
	b = append(b, `{"op":"`...)
	b = append(b, op...)
	b = append(b, '"')
	if len(ref) > 0 {
		b = append(b, `,"ref":`...)
		b = append(b, ref...)
	}
	if topic != "" {
		b = append(b, `,"topic":`...)
		b = appendJSONString(b, topic)
	}
	return frame{data: append(b, '}'), typ: websocket.MessageText}
}

// refreshedFrame builds {"op":"refreshed","ref":ref,"exp":<unix ms>}.
func refreshedFrame(ref json.RawMessage, exp time.Time) frame {
	f := replyFrame("refreshed", ref, "")
	f.data = append(f.data[:len(f.data)-1], `,"exp":`+strconv.FormatInt(exp.UnixMilli(), 10)+`}`...)
	return f
}

// errorFrame builds {"op":"error","ref":ref,"code":code,"message":msg}.
// Codes are listed in PROTOCOL.md.
func errorFrame(ref json.RawMessage, code, msg string) frame {
	b := make([]byte, 0, 96)
	b = append(b, `{"op":"error"`...)
	if len(ref) > 0 {
		b = append(b, `,"ref":`...)
		b = append(b, ref...)
	}
	b = append(b, `,"code":"`...)
	b = append(b, code...)
	b = append(b, `","message":`...)
	b = appendJSONString(b, msg)
	return frame{data: append(b, '}'), typ: websocket.MessageText}
}

// hello is the first frame of an envelope connection.
type hello struct {
	Op        string         `json:"op"`
	ConnID    string         `json:"conn_id"`
	UserID    string         `json:"user_id"`
	Heartbeat helloHeartbeat `json:"heartbeat"`
	Topics    []string       `json:"topics"`
	Replayed  int            `json:"replayed"`
	Recovered *bool          `json:"recovered,omitempty"` // only when last_id was given
	Epoch     string         `json:"epoch"`
	ServerTS  int64          `json:"ts"`
}

type helloHeartbeat struct {
	IntervalMS int64 `json:"interval_ms"`
	TimeoutMS  int64 `json:"timeout_ms"`
}

func helloFrame(h hello) frame {
	h.Op = "hello"
	h.ServerTS = time.Now().UnixMilli()
	if h.Topics == nil {
		h.Topics = []string{}
	}
	b, _ := json.Marshal(h)
	return frame{data: b, typ: websocket.MessageText}
}
