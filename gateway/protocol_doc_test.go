package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// docExamples returns the fenced blocks of PROTOCOL.md with the given info
// string.
func docExamples(t *testing.T, info string) []string {
	t.Helper()
	doc, err := os.ReadFile("../PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	lines := strings.Split(string(doc), "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```"+info {
			continue
		}
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		out = append(out, strings.Join(body, "\n"))
	}
	return out
}

// TestProtocolExamples checks every frame example in PROTOCOL.md against the
// server's own encoders and parser: a server frame must be exactly what the
// server would send for its content, a client frame must parse.
func TestProtocolExamples(t *testing.T) {
	server := docExamples(t, "json server")
	client := docExamples(t, "json client")
	batch := docExamples(t, "text server-batch")
	if len(server) < 10 || len(client) < 5 || len(batch) < 1 {
		t.Fatalf("found %d server, %d client and %d batch examples; the document has lost its examples", len(server), len(client), len(batch))
	}
	for _, ex := range server {
		checkServerFrame(t, ex)
	}
	for _, b := range batch {
		for _, line := range strings.Split(strings.TrimSpace(b), "\n") {
			checkServerFrame(t, line)
		}
	}
	for _, ex := range client {
		if strings.Contains(ex, "\n") {
			t.Errorf("client example spans lines: %s", ex)
		}
		if isPing([]byte(ex)) {
			continue // the raw-mode heartbeat
		}
		op, err := parseClientOp([]byte(ex))
		if err != nil {
			t.Errorf("client example %s: %v", ex, err)
			continue
		}
		switch op.Op {
		case "ping", "ack", "subscribe", "unsubscribe", "send", "refresh", "push_subscribe", "publish", "direct", "presence":
		default:
			t.Errorf("client example uses unknown op %q", op.Op)
		}
	}
}

func checkServerFrame(t *testing.T, ex string) {
	t.Helper()
	if strings.Contains(ex, "\n") || !json.Valid([]byte(ex)) {
		t.Errorf("server example is not one line of JSON: %s", ex)
		return
	}
	var f struct {
		Op        string          `json:"op"`
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		Topic     string          `json:"topic"`
		From      string          `json:"from"`
		Broadcast bool            `json:"broadcast"`
		Stored    bool            `json:"stored"`
		TS        int64           `json:"ts"`
		Data      json.RawMessage `json:"data"`
		Encoding  string          `json:"encoding"`
		Ref       json.RawMessage `json:"ref"`
		Code      string          `json:"code"`
		Message   string          `json:"message"`
		Exp       int64           `json:"exp"`
		TargetID  string          `json:"target_id"`
		Epoch     string          `json:"epoch"`
		LastID    string          `json:"last_id"`
		Replayed  int             `json:"replayed"`
		Recovered *bool           `json:"recovered"`
		Users     []TopicUser     `json:"users"`
		TotalU    int64           `json:"total_users"`
		TotalC    int64           `json:"total_connections"`
		Next      *string         `json:"next"`
	}
	if err := json.Unmarshal([]byte(ex), &f); err != nil {
		t.Errorf("%s: %v", ex, err)
		return
	}
	var want []byte
	switch f.Op {
	case "":
		want = rawPong.data // the raw-mode answer to "ping"
	case "message":
		if !ValidID(f.ID) {
			t.Errorf("example id %q is not a message id", f.ID)
		}
		m := &Message{ID: f.ID, Type: f.Type, Topic: f.Topic, From: f.From, broadcast: f.Broadcast, stored: f.Stored, Time: time.UnixMilli(f.TS)}
		switch {
		case f.Encoding == "base64":
			var s string
			json.Unmarshal(f.Data, &s)
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				t.Errorf("%s: bad base64: %v", ex, err)
			}
			m.Kind, m.Data = KindBinary, b
		case len(f.Data) > 0 && f.Data[0] == '"':
			var s string
			json.Unmarshal(f.Data, &s)
			m.Kind, m.Data = KindText, []byte(s)
		default:
			m.Kind, m.Data = KindJSON, f.Data
		}
		want = m.envelope()
	case "hello":
		var h hello
		json.Unmarshal([]byte(ex), &h)
		want, _ = json.Marshal(h)
	case "pong":
		want = pongFrame(f.Ref).data
	case "refreshed":
		want = refreshedFrame(f.Ref, time.UnixMilli(f.Exp)).data
	case "push_subscribed":
		want = pushSubscribedFrame(f.Ref, f.TargetID).data
	case "published":
		want = publishedFrame(f.Ref, f.ID).data
	case "subscribed":
		want = subscribedFrame(f.Ref, f.Topic, f.Epoch, f.LastID, f.Replayed, f.Recovered).data
	case "join", "leave":
		var u struct {
			UserID string `json:"user_id"`
		}
		json.Unmarshal([]byte(ex), &u)
		want = topicPresenceFrame(f.Topic, u.UserID, f.Op == "join").data
	case "presence":
		p := TopicPage{Users: f.Users, TotalUsers: f.TotalU, TotalConnections: f.TotalC}
		if f.Next != nil {
			p.More, p.Next = true, *f.Next
		}
		want = presenceFrame(f.Ref, f.Topic, p).data
	case "acked", "unsubscribed", "sent":
		want = replyFrame(f.Op, f.Ref, f.Topic).data
	case "error":
		switch f.Code {
		case "bad_request", "bad_topic", "forbidden", "too_many_topics", "unknown_op", "rate_limited", "bad_token", "too_many_targets", "unavailable":
		default:
			t.Errorf("example error code %q is not one the server sends", f.Code)
		}
		want = errorFrame(f.Ref, f.Code, f.Message).data
	default:
		t.Errorf("example op %q is not one the server sends: %s", f.Op, ex)
		return
	}
	if !bytes.Equal(want, []byte(ex)) {
		t.Errorf("example differs from what the server sends:\n  doc:    %s\n  server: %s", ex, want)
	}
}
