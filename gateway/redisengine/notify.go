package redisengine

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"pushgate/gateway"
)

//go:embed notify.lua
var notifySource string

var _ gateway.NotifyStore = (*Engine)(nil)

// notifyScripts parses notify.lua with scripts.lua's prelude into the
// engine's scripts.
func (e *Engine) notifyScripts() error {
	_, rest, _ := strings.Cut(scriptSource, "\n-- @prelude\n")
	prelude, _, _ := strings.Cut(rest, "\n-- @")
	for _, p := range strings.Split(notifySource, "\n-- @")[1:] {
		name, body, _ := strings.Cut(p, "\n")
		n, ok := strings.CutPrefix(name, "script ")
		if !ok {
			return fmt.Errorf("notify.lua: unknown section %q", name)
		}
		e.scripts[n] = redis.NewScript(e.publishes(prelude + "\n" + body))
	}
	return nil
}

// AddTarget implements gateway.NotifyStore.
func (e *Engine) AddTarget(ctx context.Context, userID, id string, data []byte, max int) error {
	v, err := e.call(ctx, "addtarget", userID, id, data, max)
	if err != nil {
		return err
	}
	if num(v) == 0 {
		return gateway.ErrTooManyTargets
	}
	return nil
}

// RemoveTarget implements gateway.NotifyStore.
func (e *Engine) RemoveTarget(ctx context.Context, userID, id string) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, e.opt.Timeout)
	defer cancel()
	n, err := e.rdb.HDel(cctx, e.P+":pt:"+userID, id).Result()
	if err != nil {
		return false, e.wrap(ctx, "removetarget", err)
	}
	return n > 0, nil
}

// Targets implements gateway.NotifyStore.
func (e *Engine) Targets(ctx context.Context, userID string) ([]gateway.StoredTarget, error) {
	cctx, cancel := context.WithTimeout(ctx, e.opt.Timeout)
	defer cancel()
	m, err := e.rdb.HGetAll(cctx, e.P+":pt:"+userID).Result()
	if err != nil {
		return nil, e.wrap(ctx, "targets", err)
	}
	out := make([]gateway.StoredTarget, 0, len(m))
	for id, d := range m {
		out = append(out, gateway.StoredTarget{ID: id, Data: []byte(d)})
	}
	slices.SortFunc(out, func(a, b gateway.StoredTarget) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func escMember(userID, messageID string) string { return userID + "\n" + messageID }

// ScheduleEscalation implements gateway.NotifyStore. The due time is
// kept on Redis's clock (now there plus the time left to esc.Due here),
// so nodes whose clocks differ fire it at the same moment.
func (e *Engine) ScheduleEscalation(ctx context.Context, esc gateway.Escalation, max int) error {
	flag := "0"
	if esc.IfUnacked {
		flag = "1"
	}
	delay := max0(time.Until(esc.Due).Milliseconds())
	v, err := e.call(ctx, "schedule", escMember(esc.UserID, esc.MessageID), delay, flag+string(esc.Data), max)
	if err != nil {
		return err
	}
	if num(v) == 0 {
		return gateway.ErrTooManyEscalations
	}
	return nil
}

func max0(n int64) int64 {
	if n < 0 {
		return 0
	}
	return n
}

// ClaimEscalations implements gateway.NotifyStore; due-ness is judged on
// Redis's clock (now is not used).
func (e *Engine) ClaimEscalations(ctx context.Context, _ time.Time, limit int) ([]gateway.ClaimedEscalation, error) {
	v, err := e.call(ctx, "claim", limit)
	if err != nil {
		return nil, err
	}
	return claimed(v)
}

// ClaimEscalation implements gateway.NotifyStore.
func (e *Engine) ClaimEscalation(ctx context.Context, userID, messageID string, _ time.Time) (gateway.ClaimedEscalation, bool, error) {
	v, err := e.call(ctx, "claim", 1, escMember(userID, messageID))
	if err != nil {
		return gateway.ClaimedEscalation{}, false, err
	}
	cs, err := claimed(v)
	if err != nil || len(cs) == 0 {
		return gateway.ClaimedEscalation{}, false, err
	}
	return cs[0], true, nil
}

func claimed(v any) ([]gateway.ClaimedEscalation, error) {
	r, _ := v.([]any)
	if len(r)%3 != 0 {
		return nil, fmt.Errorf("redis claim: unexpected reply %v", v)
	}
	out := make([]gateway.ClaimedEscalation, 0, len(r)/3)
	for i := 0; i < len(r); i += 3 {
		u, id, ok := strings.Cut(str(r[i]), "\n")
		if !ok {
			return nil, errors.New("redis claim: malformed member")
		}
		out = append(out, gateway.ClaimedEscalation{
			Escalation: gateway.Escalation{UserID: u, MessageID: id, Data: []byte(str(r[i+1]))},
			Cancelled:  num(r[i+2]) == 1,
		})
	}
	return out, nil
}

// PendingEscalations implements gateway.NotifyStore.
func (e *Engine) PendingEscalations() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), e.opt.Timeout)
	defer cancel()
	n, err := e.rdb.ZCard(ctx, e.P+":esc").Result()
	if err != nil {
		return -1
	}
	return n
}
