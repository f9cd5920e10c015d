package server

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// idempotency remembers the responses of calls made with an idempotency key
// for a window, per caller. A repeated call gets the first response and does
// nothing; a concurrent repeat waits for the first to finish. A call that
// fails is forgotten, so its retry runs again. Safe for concurrent use.
type idempotency struct {
	window time.Duration
	store  IdempotencyStore // nil: this node's memory
	log    *slog.Logger

	mu        sync.Mutex
	entries   map[string]*idemEntry // guarded by mu
	nextSweep time.Time             // guarded by mu
}

type idemEntry struct {
	hash    [sha256.Size]byte // of the method and the request: a key reused for another request is an error
	done    chan struct{}     // closed when resp/err are set
	resp    proto.Message
	err     error
	expires time.Time // guarded by idempotency.mu
}

func newIdempotency(window time.Duration) *idempotency {
	return &idempotency{window: window, entries: make(map[string]*idemEntry)}
}

// do runs fn once per (caller, key) within the window and returns its
// response to every call with that key.
func (s *idempotency) do(ctx context.Context, method, key string, req proto.Message, newResp func() proto.Message, fn func() (proto.Message, error)) (proto.Message, error) {
	if key == "" {
		return fn()
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		return nil, err
	}
	hash := sha256.Sum256(append([]byte(method+"\x00"), b...))
	k := Caller(ctx) + "\x00" + key
	if s.store != nil {
		return s.shared(ctx, k, hash, newResp, fn)
	}
	for {
		now := time.Now()
		s.mu.Lock()
		if now.After(s.nextSweep) {
			for k, e := range s.entries {
				if now.After(e.expires) {
					delete(s.entries, k)
				}
			}
			s.nextSweep = now.Add(s.window / 10)
		}
		e, ok := s.entries[k]
		if ok && now.After(e.expires) {
			delete(s.entries, k)
			ok = false
		}
		if !ok {
			e = &idemEntry{hash: hash, done: make(chan struct{}), expires: now.Add(s.window)}
			s.entries[k] = e
			s.mu.Unlock()
			resp, err := fn()
			s.mu.Lock()
			e.resp, e.err = resp, err
			if err != nil && s.entries[k] == e {
				delete(s.entries, k) // not remembered: a retry runs again
			} else {
				e.expires = time.Now().Add(s.window)
			}
			s.mu.Unlock()
			close(e.done)
			return resp, err
		}
		s.mu.Unlock()
		if e.hash != hash {
			return nil, invalid("message.idempotency_key", "already used for a different request within the idempotency window")
		}
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		if e.err == nil {
			return proto.Clone(e.resp), nil
		}
		// The first call failed and was forgotten: try again.
	}
}

// IdempotencyStore keeps idempotency keys where every node sees them (the
// Redis engine), so a retry that lands on another node still gets the first
// call's response. Values are opaque bytes.
type IdempotencyStore interface {
	// Claim stores val under key for ttl unless key exists; then it returns
	// the existing value.
	Claim(ctx context.Context, key string, val []byte, ttl time.Duration) (claimed bool, existing []byte, err error)
	// Put stores val under key for ttl.
	Put(ctx context.Context, key string, val []byte, ttl time.Duration) error
	// Release deletes key.
	Release(ctx context.Context, key string) error
}

// claimTTL bounds how long a call in progress holds its key: if its node
// dies, a retry runs again after this.
const claimTTL = 30 * time.Second

// shared is do with an IdempotencyStore. A stored value is the request's
// hash, then 'P' (in progress) or 'D' and the marshaled response.
func (s *idempotency) shared(ctx context.Context, k string, hash [sha256.Size]byte, newResp func() proto.Message, fn func() (proto.Message, error)) (proto.Message, error) {
	pending := append(hash[:len(hash):len(hash)], 'P')
	for {
		claimed, v, err := s.store.Claim(ctx, k, pending, min(claimTTL, s.window))
		if err != nil {
			return nil, storeError(ctx, err)
		}
		if claimed {
			resp, err := fn()
			if err != nil {
				// Not remembered: a retry runs again. (If the release fails
				// too, the claim lapses after claimTTL.)
				_ = s.store.Release(context.WithoutCancel(ctx), k)
				return nil, err
			}
			b, merr := proto.Marshal(resp)
			if merr == nil {
				merr = s.store.Put(context.WithoutCancel(ctx), k, append(hash[:len(hash):len(hash)], append([]byte{'D'}, b...)...), s.window)
			}
			if merr != nil && s.log != nil {
				// The call did what it says: answer it. Only a retry after
				// the claim lapses could repeat it.
				s.log.WarnContext(ctx, "idempotency key not recorded", "message_id", messageID(resp), "err", merr)
			}
			return resp, nil
		}
		if len(v) < sha256.Size+1 || [sha256.Size]byte(v[:sha256.Size]) != hash {
			return nil, invalid("message.idempotency_key", "already used for a different request within the idempotency window")
		}
		if v[sha256.Size] == 'D' {
			resp := newResp()
			if err := proto.Unmarshal(v[sha256.Size+1:], resp); err != nil {
				return nil, status.Errorf(codes.Internal, "stored response: %v", err)
			}
			return resp, nil
		}
		// The first call is still running (on some node): wait for it.
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

func storeError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Errorf(codes.Unavailable, "idempotency keys unavailable, retry later: %v", err)
}

// messageID returns the message_id of a send response, for error texts.
func messageID(m proto.Message) string {
	if r, ok := m.(interface{ GetMessageId() string }); ok {
		return r.GetMessageId()
	}
	return "?"
}
