package lograte

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Default rate: a message may be written 10 times at once, then once a
// second.
const (
	DefaultBurst = 10
	DefaultEvery = time.Second
)

// Handler passes records to the handler it wraps, at most burst at once and
// then one per every for each message; Debug records are never limited.
type Handler struct {
	next        slog.Handler
	every       time.Duration
	burst       int
	state       *state // shared by the handlers WithAttrs and WithGroup derive
	dropped     *atomic.Int64
	maxDistinct int
}

type state struct {
	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

// New wraps next with the default rate.
func New(next slog.Handler) *Handler {
	return &Handler{next: next, every: DefaultEvery, burst: DefaultBurst, state: &state{limiters: map[string]*rate.Limiter{}},
		dropped: new(atomic.Int64), maxDistinct: 10000}
}

// Suppressed counts the records not written.
func (h *Handler) Suppressed() int64 { return h.dropped.Load() }

func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level > slog.LevelDebug && !h.allow(r.Message, r.Time) {
		h.dropped.Add(1)
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *Handler) allow(msg string, now time.Time) bool {
	h.state.mu.Lock()
	defer h.state.mu.Unlock()
	l := h.state.limiters[msg]
	if l == nil {
		if len(h.state.limiters) >= h.maxDistinct { // messages are the code's constants; this is a guard
			clear(h.state.limiters)
		}
		l = rate.NewLimiter(rate.Every(h.every), h.burst)
		h.state.limiters[msg] = l
	}
	return l.AllowN(now, 1)
}

func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	return &c
}

func (h *Handler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}
