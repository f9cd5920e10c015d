package redisengine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"pushgate/gateway"
)

// Receipts are kept by the scripts that send, ack, join and trim, in keys
// of their own (scripts.lua, "Receipts"), so every node reads the same
// receipt and the send path makes no extra round trip.

// Receipt implements gateway.Engine.
func (e *Engine) Receipt(ctx context.Context, id string, users []string, offset, limit int) (gateway.Receipt, error) {
	args := make([]any, 0, 3+len(users))
	args = append(args, id, offset, limit)
	for _, u := range users {
		args = append(args, u)
	}
	v, err := e.call(ctx, "receipt", args...)
	if err != nil {
		return gateway.Receipt{}, err
	}
	r, _ := v.([]any)
	now := time.Now()
	if len(r) == 2 && num(r[0]) == 0 {
		return gateway.Receipt{}, gateway.NoReceipt(id, now, str(r[1]), e.cfg.ReceiptRetention, e.cfg.ReceiptMax)
	}
	if len(r) < 2 || num(r[0]) != 1 || (len(r)-2)%3 != 0 {
		return gateway.Receipt{}, fmt.Errorf("redis receipt: unexpected reply %v", v)
	}
	head := strings.Split(str(r[1]), ":")
	if len(head) != 3 {
		return gateway.Receipt{}, fmt.Errorf("redis receipt: bad header %q", str(r[1]))
	}
	out := gateway.Receipt{MessageID: id, Time: msTime(head[0]), Expires: msTime(head[1])}
	out.Total, _ = strconv.Atoi(head[2])
	for i := 2; i < len(r); i += 3 {
		u, val := str(r[i]), str(r[i+1])
		if val == "" {
			if len(users) > 0 {
				return gateway.Receipt{}, gateway.NotRecipient(id, (i-2)/3, u)
			}
			return gateway.Receipt{}, fmt.Errorf("redis receipt: no status for recipient %q", u)
		}
		rs, err := parseStatus(u, val, out.Expires, now)
		if err != nil {
			return gateway.Receipt{}, err
		}
		if rs.Escalation, err = parseEscalation(str(r[i+2])); err != nil {
			return gateway.Receipt{}, err
		}
		out.Recipients = append(out.Recipients, rs)
	}
	return out, nil
}

// Status flags (scripts.lua, "Receipts").
const (
	rcOnline = 1 << iota
	rcStored
	rcAcked
	rcImplicit
	rcTrimmed
)

// parseStatus decodes "flags:delivered:deliveredMs:ackMs:endMs:conn".
func parseStatus(u, v string, expires, now time.Time) (gateway.RecipientStatus, error) {
	f := strings.SplitN(v, ":", 6)
	if len(f) != 6 {
		return gateway.RecipientStatus{}, fmt.Errorf("redis receipt: bad status %q", v)
	}
	flags, err1 := strconv.Atoi(f[0])
	delivered, err2 := strconv.Atoi(f[1])
	if err := errors.Join(err1, err2); err != nil {
		return gateway.RecipientStatus{}, fmt.Errorf("redis receipt: bad status %q: %w", v, err)
	}
	rs := gateway.RecipientStatus{UserID: u, Online: flags&rcOnline != 0, Stored: flags&rcStored != 0,
		Delivered: delivered, DeliveredTime: msTime(f[2])}
	rs.State, rs.EndTime = gateway.ReceiptState(flags&rcAcked != 0, flags&rcTrimmed != 0, rs.Stored, delivered, expires, now)
	switch rs.State {
	case gateway.StateAcked:
		rs.AckTime, rs.AckConn, rs.AckImplicit = msTime(f[3]), f[5], flags&rcImplicit != 0
	case gateway.StateTrimmed:
		rs.EndTime = msTime(f[4])
	}
	return rs, nil
}

// msTime reads milliseconds since the epoch; "0" is the zero time.
func msTime(s string) time.Time {
	n, _ := strconv.ParseInt(s, 10, 64)
	if n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n)
}

// Receipts returns the recipients whose receipts are kept (-1 when Redis
// cannot be reached).
func (e *Engine) Receipts() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), e.opt.Timeout)
	defer cancel()
	n, err := e.rdb.Get(ctx, e.P+":rcn").Int64()
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return 0
		}
		return -1
	}
	return n
}

// escJSON is a recipient's escalation as scripts.lua's rc_esc keeps it.
type escJSON struct {
	State int64           `json:"s"`
	Due   int64           `json:"d"`
	Time  int64           `json:"t"`
	R     json.RawMessage `json:"r"` // an array; cjson writes an empty one as {}
}

type escResultJSON struct {
	Channel  string `json:"ch"`
	TargetID string `json:"tg"`
	Result   string `json:"r"`
	Detail   string `json:"dt"`
	Time     int64  `json:"tm"`
}

// parseEscalation decodes a recipient's escalation; "" is none.
func parseEscalation(v string) (*gateway.EscalationStatus, error) {
	if v == "" {
		return nil, nil
	}
	var e escJSON
	if err := json.Unmarshal([]byte(v), &e); err != nil {
		return nil, fmt.Errorf("redis receipt: bad escalation %q: %w", v, err)
	}
	out := &gateway.EscalationStatus{State: gateway.EscalationState(e.State), Due: msTime(strconv.FormatInt(e.Due, 10)),
		Time: msTime(strconv.FormatInt(e.Time, 10))}
	if len(e.R) > 0 && e.R[0] == '[' {
		var rs []escResultJSON
		if err := json.Unmarshal(e.R, &rs); err != nil {
			return nil, fmt.Errorf("redis receipt: bad escalation results %q: %w", v, err)
		}
		for _, r := range rs {
			out.Results = append(out.Results, gateway.EscalationOutcome{Time: time.UnixMilli(r.Time),
				EscalationResult: gateway.EscalationResult{Channel: r.Channel, TargetID: r.TargetID, Result: r.Result, Detail: r.Detail}})
		}
	}
	return out, nil
}

// RecordEscalationResult implements gateway.NotifyStore.
func (e *Engine) RecordEscalationResult(ctx context.Context, userID, messageID string, r gateway.EscalationResult) error {
	_, err := e.call(ctx, "escresult", userID, messageID, r.Channel, r.TargetID, r.Result, r.Detail)
	return err
}
