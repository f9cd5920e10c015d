package web

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Recent is a slog.Handler that passes every record on and keeps the last
// warnings and errors for the admin page. Safe for concurrent use.
type Recent struct {
	next  slog.Handler
	ring  *ring
	attrs []slog.Attr // from WithAttrs, for the kept copy
}

// LogEntry is one kept warning or error.
type LogEntry struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
	Attrs   string    `json:"attrs"`
}

type ring struct {
	mu   sync.Mutex
	buf  []LogEntry // guarded by mu
	next int        // guarded by mu
	full bool       // guarded by mu
}

// NewRecent wraps next, keeping the last n warnings and errors.
func NewRecent(next slog.Handler, n int) *Recent {
	return &Recent{next: next, ring: &ring{buf: make([]LogEntry, n)}}
}

func (r *Recent) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || r.next.Enabled(ctx, l)
}

func (r *Recent) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelWarn {
		var b strings.Builder
		add := func(a slog.Attr) bool {
			appendAttr(&b, "", a)
			return b.Len() < maxAttrsText
		}
		for _, a := range r.attrs {
			add(a)
		}
		rec.Attrs(add)
		r.ring.add(LogEntry{Time: rec.Time, Level: rec.Level.String(), Message: rec.Message, Attrs: b.String()})
	}
	if r.next.Enabled(ctx, rec.Level) {
		return r.next.Handle(ctx, rec)
	}
	return nil
}

func (r *Recent) WithAttrs(as []slog.Attr) slog.Handler {
	return &Recent{next: r.next.WithAttrs(as), ring: r.ring, attrs: append(append([]slog.Attr{}, r.attrs...), as...)}
}

func (r *Recent) WithGroup(name string) slog.Handler {
	return &Recent{next: r.next.WithGroup(name), ring: r.ring, attrs: r.attrs}
}

// Entries returns the kept entries, newest first.
func (r *Recent) Entries() []LogEntry { return r.ring.entries() }

func (g *ring) add(e LogEntry) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buf[g.next] = e
	g.next = (g.next + 1) % len(g.buf)
	if g.next == 0 {
		g.full = true
	}
}

func (g *ring) entries() []LogEntry {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := g.next
	if g.full {
		n = len(g.buf)
	}
	out := make([]LogEntry, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, g.buf[(g.next-i+len(g.buf))%len(g.buf)])
	}
	return out
}

// maxAttrsText and maxAttrValue bound a kept entry's attributes: no more
// attributes once the text is that long, and each value cut to that many
// bytes.
const (
	maxAttrsText = 400
	maxAttrValue = 200
)

// appendAttr writes a as key=value, groups as group.key=value. Values (and
// keys) that are not plain printable ASCII words are quoted in Go syntax,
// non-ASCII escaped: attributes carry what clients sent (an Origin, a user
// id), and quoting keeps such a value from passing for more attributes (a
// fake allow_with=… hint) or hiding behind look-alike characters.
func appendAttr(b *strings.Builder, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		if a.Key != "" {
			prefix += a.Key + "."
		}
		for _, ga := range v.Group() {
			appendAttr(b, prefix, ga)
		}
		return
	}
	if a.Key == "" && v.Any() == nil {
		return // the empty attribute, which slog handlers ignore
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	b.WriteString(quoteIfNeeded(prefix + a.Key))
	b.WriteByte('=')
	s := v.String()
	if len(s) > maxAttrValue {
		cut := maxAttrValue
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	b.WriteString(quoteIfNeeded(s))
}

// quoteIfNeeded returns s as it is if it is non-empty printable ASCII with
// no space, quote, backslash or '=', else quoted with non-ASCII escaped.
func quoteIfNeeded(s string) string {
	if s == "" {
		return `""`
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\' {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}
